package main

import (
	"net/http"
	"net/http/pprof"

	"github.com/alecthomas/kingpin/v2"
)

// pprofPrefix is where the profiling endpoints are served.
const pprofPrefix = "/debug/pprof/"

// addPprofFlag adds the hidden --web.enable-pprof flag to cmd. It is off
// by default: profiles are for measuring the exporter (ct-drill
// --cpu-profile), not for production scrapes.
func addPprofFlag(cmd *kingpin.CmdClause, enabled *bool) {
	cmd.Flag("web.enable-pprof", "Serve Go runtime profiles under "+pprofPrefix+" (for measuring the exporter; off by default).").
		Hidden().BoolVar(enabled)
}

// handlePprof serves the net/http/pprof endpoints under pprofPrefix on mux.
func handlePprof(mux *http.ServeMux) {
	mux.HandleFunc(pprofPrefix, pprof.Index)
	mux.HandleFunc(pprofPrefix+"cmdline", pprof.Cmdline)
	mux.HandleFunc(pprofPrefix+"profile", pprof.Profile)
	mux.HandleFunc(pprofPrefix+"symbol", pprof.Symbol)
	mux.HandleFunc(pprofPrefix+"trace", pprof.Trace)
}
