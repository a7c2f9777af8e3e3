package main

import (
	"fmt"
	"io"

	"github.com/alecthomas/kingpin/v2"
)

// Exit codes of the diagnose command, for scripts.
const (
	diagnoseHealthy     = 0
	diagnoseWarning     = 1
	diagnoseCritical    = 2
	diagnoseCouldNotRun = 3
)

// diagnoseCommand holds the flags of the diagnose subcommand.
type diagnoseCommand struct {
	cmd    *kingpin.CmdClause
	common *commonFlags
}

func newDiagnoseCommand(app *kingpin.Application, common *commonFlags) *diagnoseCommand {
	d := &diagnoseCommand{common: common}
	d.cmd = app.Command("diagnose", "Sample the conntrack state of each namespace and print a report with a verdict.")
	return d
}

func (d *diagnoseCommand) run(_, stderr io.Writer) int {
	fmt.Fprintln(stderr, "ct-exporter: diagnose: not available in this build")
	return diagnoseCouldNotRun
}
