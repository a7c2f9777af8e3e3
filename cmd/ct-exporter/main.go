// Command ct-exporter is a Prometheus exporter for the Linux netfilter
// connection tracking table.
//
// Without a subcommand it serves metrics (serve); "ct-exporter diagnose"
// prints a one-shot report. Run with --help for every flag.
package main

import (
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/version"

	"github.com/ct-exporter/ct-exporter/internal/logging"
)

// Exit codes of the serve command.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func init() {
	if version.Version == "" {
		version.Version = "devel"
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// commonFlags are the flags every subcommand shares.
type commonFlags struct {
	netns     []string
	logLevel  string
	logFormat string
}

// run parses args and runs the chosen subcommand; it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	app := kingpin.New("ct-exporter", "Prometheus exporter for the Linux netfilter connection tracking (conntrack) table.")
	app.Version(version.Print("ct-exporter"))
	app.HelpFlag.Short('h')
	// The long template lists each subcommand's flags too, so --help shows
	// the serve flags without "help serve".
	app.UsageTemplate(kingpin.LongHelpTemplate)
	app.UsageWriter(stdout)
	app.ErrorWriter(stderr)
	exited := false
	exitCode := exitOK
	app.Terminate(func(code int) { exited, exitCode = true, code })

	var common commonFlags
	app.Flag("conntrack.netns", "Network namespace file to watch, e.g. /run/netns/NAME or /proc/PID/ns/net. Repeatable. Default: the exporter's own namespace.").
		PlaceHolder("PATH").StringsVar(&common.netns)
	app.Flag("log.level", "Only log messages with the given severity or above: "+joinOr(logging.Levels)+".").
		Default("info").EnumVar(&common.logLevel, logging.Levels...)
	app.Flag("log.format", "Output format of log messages: "+joinOr(logging.Formats)+".").
		Default("logfmt").EnumVar(&common.logFormat, logging.Formats...)

	serve := newServeCommand(app, &common)
	diagnose := newDiagnoseCommand(app, &common)

	cmd, err := app.Parse(args)
	if exited {
		// --help or --version printed their text.
		return exitCode
	}
	if err != nil {
		fmt.Fprintf(stderr, "ct-exporter: error: %v, try --help\n", err)
		if cmd == diagnose.cmd.FullCommand() || (cmd == "" && slices.Contains(args, diagnose.cmd.FullCommand())) {
			return diagnoseCouldNotRun
		}
		return exitUsage
	}
	switch cmd {
	case diagnose.cmd.FullCommand():
		return diagnose.run(stdout, stderr)
	default:
		return serve.run(stdout, stderr)
	}
}

// joinOr writes a list as "a, b or c".
func joinOr(items []string) string {
	switch len(items) {
	case 0:
		return ""
	case 1:
		return items[0]
	}
	out := items[0]
	for _, s := range items[1 : len(items)-1] {
		out += ", " + s
	}
	return out + " or " + items[len(items)-1]
}
