// Command ct-drill runs the drills of package bench: it builds throwaway
// network namespaces, loads their conntrack tables, runs ct-exporter
// against them and measures it side by side with the standard tools
// (conntrack -E, conntrack -L, conntrack -C/-S, ti-mo/conntrack).
//
//	ct-drill [--exporter=PATH] [--json=FILE] [--plot=FILE.svg] DRILL [--size=N,...] [--rate=R,...] [--duration=D]
//	ct-drill list
//	ct-drill plot --json=FILE[,FILE...] --plot=FILE.svg
//
// Comma-separated --size and --rate values run the drill once per value
// (and per combination), each run with fresh namespaces and a fresh
// exporter, so that one command produces a growth table and its plot.
// It needs root. It touches only the namespaces it creates (ctdrill-*),
// removes them when it ends, also on Ctrl-C or an error, and changes no
// global setting except nf_conntrack_max, raised for a scan larger than
// the limit and restored afterwards.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/ct-exporter/ct-exporter/bench"
	"github.com/ct-exporter/ct-exporter/internal/lab"
)

// Exit codes.
const (
	exitOK          = 0
	exitFailure     = 1
	exitUsage       = 2
	exitInterrupted = 130
)

func main() {
	if bench.IsChild() {
		os.Exit(bench.RunChild())
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// drillFlags are the parameters of one drill subcommand, as given.
type drillFlags struct {
	drill    bench.Drill
	size     string
	rate     string
	duration time.Duration
	timeout  time.Duration
}

// options are the global flags.
type options struct {
	exporter     string
	exporterArgs []string
	jsonOut      string
	plotOut      string
	markdownOut  string
	quiet        bool
	cpuProfile   string
	scrapeEvery  time.Duration
	plotInputs   string
}

func run(args []string, stdout, stderr io.Writer) int {
	app := kingpin.New("ct-drill", "Run ct-exporter drills against throwaway network namespaces, side by side with the standard conntrack tools.")
	app.HelpFlag.Short('h')
	app.UsageTemplate(kingpin.LongHelpTemplate)
	app.UsageWriter(stdout)
	app.ErrorWriter(stderr)
	exited, exitCode := false, exitOK
	app.Terminate(func(code int) { exited, exitCode = true, code })

	var o options
	app.Flag("exporter", "ct-exporter binary to run; default: build ./cmd/ct-exporter of the current module into a temporary directory.").
		PlaceHolder("PATH").StringVar(&o.exporter)
	app.Flag("exporter.arg", "Extra flag for every ct-exporter the drills start; repeatable.").
		PlaceHolder("FLAG").StringsVar(&o.exporterArgs)
	app.Flag("json", "Write the results, with the machine and the command line, as JSON to FILE.").
		PlaceHolder("FILE").StringVar(&o.jsonOut)
	app.Flag("plot", "Draw the results as an SVG plot to FILE.").PlaceHolder("FILE.svg").StringVar(&o.plotOut)
	app.Flag("markdown", "Write the results as Markdown tables to FILE.").PlaceHolder("FILE").StringVar(&o.markdownOut)
	app.Flag("cpu-profile", "Take a CPU profile of the exporter during the load of drills that support it (churn) and write it to PREFIX-rate=R.pprof; read it with go tool pprof -top. The exporter runs with --web.enable-pprof.").
		PlaceHolder("PREFIX").StringVar(&o.cpuProfile)
	app.Flag("scrape-interval", "How often churn scrapes the exporter during its load; 0 means no scrape during the load (the exporter is still scraped before and after it).").
		Default("1s").DurationVar(&o.scrapeEvery)
	app.Flag("quiet", "Print no progress lines.").Short('q').BoolVar(&o.quiet)

	list := app.Command("list", "List the drills.")
	plot := app.Command("plot", "Redraw the plot (and the tables) from JSON results.")
	plot.Flag("from", "JSON results to read, comma-separated.").Required().PlaceHolder("FILE,...").StringVar(&o.plotInputs)

	drills := map[string]*drillFlags{}
	for _, d := range bench.Drills() {
		f := &drillFlags{drill: d}
		def := d.Defaults()
		cmd := app.Command(d.Name(), d.Summary())
		cmd.Flag("size", "Entries or connections; comma-separated for several runs.").Default(intOrEmpty(def.Size)).StringVar(&f.size)
		cmd.Flag("rate", "Target rate per second; comma-separated for several runs.").Default(floatOrEmpty(def.Rate)).StringVar(&f.rate)
		cmd.Flag("duration", "How long to generate load.").Default(durationOrZero(time.Duration(def.Duration))).DurationVar(&f.duration)
		cmd.Flag("timeout", "Established timeout (idle-expiry).").Default(durationOrZero(time.Duration(def.Timeout))).DurationVar(&f.timeout)
		drills[cmd.FullCommand()] = f
	}

	cmd, err := app.Parse(args)
	if exited {
		return exitCode
	}
	if err != nil {
		fmt.Fprintf(stderr, "ct-drill: error: %v, try --help\n", err)
		return exitUsage
	}
	switch cmd {
	case list.FullCommand():
		for _, d := range bench.Drills() {
			fmt.Fprintf(stdout, "%-12s %s (defaults: %s)\n", d.Name(), d.Summary(), d.Defaults())
		}
		return exitOK
	case plot.FullCommand():
		return replot(o, stdout, stderr)
	}
	f := drills[cmd]
	runs, err := f.params()
	if err != nil {
		fmt.Fprintf(stderr, "ct-drill: error: %v\n", err)
		return exitUsage
	}
	return runDrills(o, f.drill, runs, args, stdout, stderr)
}

// scrapeInterval maps --scrape-interval to Env.ScrapeInterval, where 0
// is the default and a negative value turns scrapes off.
func scrapeInterval(flag time.Duration) time.Duration {
	if flag <= 0 {
		return -1
	}
	return flag
}

func intOrEmpty(v int) string {
	if v == 0 {
		return ""
	}
	return strconv.Itoa(v)
}

func floatOrEmpty(v float64) string {
	if v == 0 {
		return ""
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

func durationOrZero(d time.Duration) string { return d.String() }

// params expands comma-separated sizes and rates into one Params per
// combination.
func (f *drillFlags) params() ([]bench.Params, error) {
	sizes := []int{0}
	if f.size != "" {
		sizes = nil
		for _, s := range strings.Split(f.size, ",") {
			v, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || v < 0 {
				return nil, fmt.Errorf("--size=%s: want non-negative integers", f.size)
			}
			sizes = append(sizes, v)
		}
	}
	rates := []float64{0}
	if f.rate != "" {
		rates = nil
		for _, s := range strings.Split(f.rate, ",") {
			v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
			if err != nil || v < 0 {
				return nil, fmt.Errorf("--rate=%s: want non-negative numbers", f.rate)
			}
			rates = append(rates, v)
		}
	}
	var out []bench.Params
	for _, s := range sizes {
		for _, r := range rates {
			out = append(out, bench.Params{Size: s, Rate: r, Duration: bench.Duration(f.duration), Timeout: bench.Duration(f.timeout)})
		}
	}
	return out, nil
}

// preflight checks what every drill needs.
func preflight() error {
	if os.Geteuid() != 0 {
		return errors.New("ct-drill needs root: it creates network namespaces and talks ctnetlink (run it with sudo)")
	}
	var missing []string
	for _, tool := range []string{"ip", "nft", "conntrack", "sysctl", bench.GNUTime} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("ct-drill needs %s (Debian: apt-get install iproute2 nftables conntrack procps time)", strings.Join(missing, ", "))
	}
	return nil
}

func runDrills(o options, d bench.Drill, runs []bench.Params, args []string, stdout, stderr io.Writer) int {
	if err := preflight(); err != nil {
		fmt.Fprintf(stderr, "ct-drill: %v\n", err)
		return exitFailure
	}
	progress := stderr
	if o.quiet {
		progress = io.Discard
	}
	owned := bench.NewLab(progress)
	defer func() {
		if err := owned.Close(); err != nil {
			fmt.Fprintf(stderr, "ct-drill: clean-up: %v\n", err)
		}
	}()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		select {
		case <-finished:
			return
		case s := <-sigs:
			fmt.Fprintf(stderr, "ct-drill: %s: stopping the drill and cleaning up\n", s)
			cancel()
		}
		// A drill stuck in a system call must not keep the namespaces:
		// clean up here after a grace period or a second signal.
		select {
		case <-finished:
			return
		case <-sigs:
		case <-time.After(20 * time.Second):
		}
		fmt.Fprintln(stderr, "ct-drill: forced clean-up")
		if err := owned.Close(); err != nil {
			fmt.Fprintf(stderr, "ct-drill: clean-up: %v\n", err)
		}
		os.Exit(exitInterrupted)
	}()

	binary := o.exporter
	if binary == "" {
		dir, err := os.MkdirTemp("", "ct-drill")
		if err != nil {
			fmt.Fprintf(stderr, "ct-drill: %v\n", err)
			return exitFailure
		}
		defer os.RemoveAll(dir)
		fmt.Fprintln(progress, "building ct-exporter")
		if binary, err = lab.BuildExporter(ctx, dir); err != nil {
			if errors.Is(err, lab.ErrNoModule) {
				fmt.Fprintf(stderr, "ct-drill: %v; run it from the ct-exporter checkout or pass --exporter=PATH\n", err)
			} else {
				fmt.Fprintf(stderr, "ct-drill: %v\n", err)
			}
			return exitFailure
		}
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "ct-drill: %v\n", err)
		return exitFailure
	}
	env := &bench.Env{Lab: owned, Exporter: binary, ExporterArgs: o.exporterArgs, CPUProfile: o.cpuProfile, ScrapeInterval: scrapeInterval(o.scrapeEvery), Self: self, Log: progress}
	report := &bench.Report{Machine: bench.ThisMachine(), Command: "ct-drill " + strings.Join(args, " ")}
	code := exitOK
	for _, p := range runs {
		r, err := bench.Run(ctx, env, d, p)
		if err != nil {
			if ctx.Err() != nil {
				code = exitInterrupted
			} else {
				code = exitFailure
			}
			fmt.Fprintf(stderr, "ct-drill: %v\n", err)
			break
		}
		report.Results = append(report.Results, r)
	}
	if len(report.Results) == 0 {
		return code
	}
	if err := output(o, report, stdout); err != nil {
		fmt.Fprintf(stderr, "ct-drill: %v\n", err)
		return exitFailure
	}
	return code
}

// output prints the tables and writes the files asked for.
func output(o options, report *bench.Report, stdout io.Writer) error {
	if err := bench.WriteTable(stdout, report.Machine, report.Results); err != nil {
		return err
	}
	if o.jsonOut != "" {
		if err := report.WriteJSON(o.jsonOut); err != nil {
			return err
		}
	}
	if o.markdownOut != "" {
		f, err := os.Create(o.markdownOut)
		if err != nil {
			return fmt.Errorf("markdown: %w", err)
		}
		if err := bench.WriteMarkdown(f, report); err != nil {
			f.Close()
			return fmt.Errorf("markdown: %w", err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("markdown: %w", err)
		}
	}
	if o.plotOut != "" {
		f, err := os.Create(o.plotOut)
		if err != nil {
			return fmt.Errorf("plot: %w", err)
		}
		title := "ct-exporter drills: " + report.Machine.String()
		if err := bench.WriteSVG(f, title, report.Results); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("plot: %w", err)
		}
	}
	return nil
}

// replot reads JSON reports and writes their tables and plot again.
func replot(o options, stdout, stderr io.Writer) int {
	var merged *bench.Report
	for _, path := range strings.Split(o.plotInputs, ",") {
		r, err := bench.ReadReport(strings.TrimSpace(path))
		if err != nil {
			fmt.Fprintf(stderr, "ct-drill: %v\n", err)
			return exitFailure
		}
		if merged == nil {
			merged = r
		} else {
			merged.Results = append(merged.Results, r.Results...)
		}
	}
	if err := output(o, merged, stdout); err != nil {
		fmt.Fprintf(stderr, "ct-drill: %v\n", err)
		return exitFailure
	}
	return exitOK
}
