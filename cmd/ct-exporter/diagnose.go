package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"golang.org/x/sys/unix"

	"github.com/ct-exporter/ct-exporter/diagnose"
	"github.com/ct-exporter/ct-exporter/events"
	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/preflight"
)

// Exit codes of the diagnose command, for scripts.
const (
	diagnoseHealthy     = 0
	diagnoseWarning     = 1
	diagnoseCritical    = 2
	diagnoseCouldNotRun = 3
)

// Output formats of the diagnose command.
const (
	outputText = "text"
	outputJSON = "json"
)

// diagnoseCommand holds the flags of the diagnose subcommand.
type diagnoseCommand struct {
	cmd      *kingpin.CmdClause
	common   *commonFlags
	duration time.Duration
	output   string
	topK     int
	// middleboxIdle is --middlebox-idle-timeout; 0 is off.
	middleboxIdle time.Duration

	// sampler replaces the kernel sampler in tests.
	sampler diagnose.Sampler
	// skipPreflight skips the kernel checks in tests.
	skipPreflight bool
}

func newDiagnoseCommand(app *kingpin.Application, common *commonFlags) *diagnoseCommand {
	d := &diagnoseCommand{common: common}
	d.cmd = app.Command("diagnose", "Sample the conntrack state of each namespace and print a report with a verdict. "+
		"Exit code: 0 healthy, 1 warning, 2 critical, 3 could not run.")
	d.cmd.Flag("duration", "How long to sample counters and flow deaths.").
		Default("30s").DurationVar(&d.duration)
	d.cmd.Flag("output", "Report format: "+outputText+" or "+outputJSON+".").
		Default(outputText).EnumVar(&d.output, outputText, outputJSON)
	d.cmd.Flag("top-k", "Number of top sources and destination ports shown.").
		Default(fmt.Sprint(diagnose.DefaultTopK)).IntVar(&d.topK)
	d.cmd.Flag("middlebox-idle-timeout", "Idle timeout of a NAT gateway or load balancer on the path "+
		"(e.g. 350s AWS NAT gateway, 240s Azure load balancer, 20m GCP Cloud NAT): "+
		"flag a net.ipv4.tcp_keepalive_time at or above it. 0 turns the check off.").
		Default("0s").DurationVar(&d.middleboxIdle)
	return d
}

// couldNotRun writes the one-line reason and returns diagnoseCouldNotRun.
func couldNotRun(stderr io.Writer, format string, args ...any) int {
	msg := strings.ReplaceAll(fmt.Sprintf(format, args...), "\n", " ")
	fmt.Fprintf(stderr, "ct-exporter diagnose: %s\n", msg)
	return diagnoseCouldNotRun
}

// run samples, prints the report and returns the exit code.
func (d *diagnoseCommand) run(stdout, stderr io.Writer) int {
	if d.duration <= 0 {
		return couldNotRun(stderr, "--duration=%s: must be positive", d.duration)
	}
	if d.topK < 1 {
		return couldNotRun(stderr, "--top-k=%d: must be at least 1", d.topK)
	}
	if d.middleboxIdle < 0 {
		return couldNotRun(stderr, "--middlebox-idle-timeout=%s: must not be negative (0 turns the check off)", d.middleboxIdle)
	}
	targets, err := netns.TargetsFromPaths(d.common.netns)
	if err != nil {
		return couldNotRun(stderr, "%v", flagError(err))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if !d.skipPreflight {
		checkCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = preflight.Check(checkCtx, targets)
		cancel()
		if err != nil {
			return couldNotRun(stderr, "%v", flagError(err))
		}
	}
	sampler := d.sampler
	if sampler == nil {
		sampler = kernelSampler(d.topK, d.duration)
	}
	// The sample takes its duration plus a table dump: bound the whole run.
	runCtx, cancel := context.WithTimeout(ctx, d.duration+2*time.Minute)
	defer cancel()
	report, err := diagnose.Run(runCtx, sampler, targets, d.duration,
		diagnose.Options{TopK: d.topK, MiddleboxIdleTimeout: d.middleboxIdle})
	if err != nil {
		if ctx.Err() != nil {
			return couldNotRun(stderr, "interrupted before the sample ended")
		}
		return couldNotRun(stderr, "sample did not end in time: %v", err)
	}

	switch d.output {
	case outputJSON:
		err = diagnose.WriteJSON(stdout, report)
	default:
		err = diagnose.WriteText(stdout, report, diagnose.TextOptions{Color: colorTerminal(stdout), Unicode: blockTerminal(stdout)})
	}
	if err != nil {
		return couldNotRun(stderr, "%v", err)
	}
	if failed := report.Failed(); len(failed) > 0 {
		ns := failed[0]
		msg := fmt.Sprintf("netns %s: %s", ns.Name, ns.Error)
		if len(failed) > 1 {
			msg += fmt.Sprintf(" (and %d more namespaces)", len(failed)-1)
		}
		return couldNotRun(stderr, "%s", msg)
	}
	return exitCodeOf(report.Verdict)
}

// exitCodeOf maps a verdict to the exit code of the diagnose command.
func exitCodeOf(v diagnose.Verdict) int {
	switch v {
	case diagnose.VerdictOK:
		return diagnoseHealthy
	case diagnose.VerdictWarning:
		return diagnoseWarning
	case diagnose.VerdictCritical:
		return diagnoseCritical
	}
	return diagnoseCouldNotRun
}

// colorTerminal reports whether w is a terminal that should get colours:
// a TTY, NO_COLOR unset and TERM not dumb.
func colorTerminal(w io.Writer) bool {
	if _, set := os.LookupEnv("NO_COLOR"); set {
		return false
	}
	return blockTerminal(w)
}

// blockTerminal reports whether w is a terminal that can draw the block
// characters of the report's charts: a TTY with TERM not dumb. Anything
// else (a pipe, a file) gets plain ASCII.
func blockTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || os.Getenv("TERM") == "dumb" {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// kernelSampler returns the sampler of the running kernel with every
// source this build has, for samples of duration d.
func kernelSampler(topK int, d time.Duration) diagnose.Sampler {
	return diagnose.KernelSampler{
		Table: diagnose.NewTableScan(topK),
		Lifetimes: diagnose.EventSource{
			Config: events.Config{TopWindow: diagnose.AttributionWindow(d)},
			TopK:   topK,
		},
	}
}
