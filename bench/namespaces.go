package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/ct-exporter/ct-exporter/internal/lab"
)

// Namespaces measures ct-exporter watching --size discovered network
// namespaces (one in ten with a few loopback TCP connections) against the
// same exporter watching only its own: scrape latency, CPU per scrape,
// memory, goroutines, open files, and CPU when idle for --duration.
type Namespaces struct{}

// Name implements Drill.
func (Namespaces) Name() string { return "namespaces" }

// Summary implements Drill.
func (Namespaces) Summary() string {
	return "watch --size discovered namespaces: scrape latency, CPU and memory vs the exporter watching its own only; idle CPU over --duration"
}

// Defaults implements Drill.
func (Namespaces) Defaults() Params { return Params{Size: 200, Duration: Duration(time.Minute)} }

// Smoke implements Drill.
func (Namespaces) Smoke() Params { return Params{Size: 10, Duration: Duration(2 * time.Second)} }

// Plot implements Drill.
func (Namespaces) Plot() PlotSpec {
	return PlotSpec{X: "size", XLabel: "watched namespaces", Metrics: []string{"scrape p99", "CPU per scrape", "RSS"}}
}

// AnchorOwnOnly is the namespaces drill's anchor: the same exporter
// watching only its own namespace.
const AnchorOwnOnly = "ct-exporter, own namespace only"

// namespaceScrapes is how many scrapes, one after the other, each
// exporter of the namespaces drill serves after its warm-up.
const namespaceScrapes = 200

// namespacesWithTraffic is how many namespaces in ten get loopback
// connections, and how many each.
const (
	namespacesWithTraffic = 1
	connectionsPerTraffic = 5
)

// namespaceFigures are what one exporter of the drill measured.
type namespaceFigures struct {
	p50, p90, p99, max    float64 // seconds
	cpuPerScrape, idleCPU float64 // seconds, share of a core
	series                int
	watched               float64
	goroutines, fds       float64
	rss, peakRSS, threads float64
}

// Run implements Drill.
func (Namespaces) Run(ctx context.Context, env *Env, p Params) (*Result, error) {
	if p.Size <= 0 {
		return nil, errors.New("namespaces needs a positive --size")
	}
	idle := time.Duration(p.Duration)
	args := func(dir string) []string {
		return append([]string{"--conntrack.netns-discover=" + dir, "--conntrack.netns-max=" + strconv.Itoa(p.Size+1)}, env.ExporterArgs...)
	}
	empty, err := env.Lab.NetnsDir()
	if err != nil {
		return nil, err
	}
	base, err := StartExporter(ctx, env.Lab, env.Exporter, nil, args(empty)...)
	if err != nil {
		return nil, err
	}
	own, err := measureNamespaces(ctx, base, idle)
	base.Stop()
	if err != nil {
		return nil, err
	}

	dir, err := env.Lab.NetnsDir()
	if err != nil {
		return nil, err
	}
	env.Logf("namespaces: creating %d namespaces", p.Size)
	start := time.Now()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range p.Size {
		ns, err := env.Lab.Namespace(true)
		if err != nil {
			return nil, err
		}
		if i%10 < namespacesWithTraffic {
			c, err := openConnections(ns, ns, "127.0.0.1", connectionsPerTraffic)
			conns = append(conns, c...)
			if err != nil {
				return nil, err
			}
		}
		if err := env.Lab.Expose(dir, ns); err != nil {
			return nil, err
		}
	}
	r := &Result{}
	r.AddFact("namespaces created", float64(p.Size), "namespaces")
	r.AddFact("creation time", time.Since(start).Seconds(), "s")
	exp, err := StartExporter(ctx, env.Lab, env.Exporter, nil, args(dir)...)
	if err != nil {
		return nil, err
	}
	defer exp.Stop()
	if err := waitWatched(ctx, exp, float64(p.Size+1), time.Minute); err != nil {
		return nil, err
	}
	many, err := measureNamespaces(ctx, exp, idle)
	if err != nil {
		return nil, err
	}
	if many.watched != float64(p.Size+1) {
		return nil, fmt.Errorf("the exporter watched %v namespaces, want %d", many.watched, p.Size+1)
	}
	r.Rows = append(r.Rows,
		NewRow("watched namespaces", "namespaces", many.watched, AnchorOwnOnly, own.watched),
		NewRow("scrape p50", "s", many.p50, AnchorOwnOnly, own.p50),
		NewRow("scrape p90", "s", many.p90, AnchorOwnOnly, own.p90),
		NewRow("scrape p99", "s", many.p99, AnchorOwnOnly, own.p99),
		NewRow("scrape max", "s", many.max, AnchorOwnOnly, own.max),
		NewRow("CPU per scrape", "s", many.cpuPerScrape, AnchorOwnOnly, own.cpuPerScrape),
		NewRow("CPU per scrape per watched namespace", "s", many.cpuPerScrape/many.watched, AnchorOwnOnly, own.cpuPerScrape/own.watched),
		NewRow("series per scrape", "series", float64(many.series), AnchorOwnOnly, float64(own.series)),
		NewRow("RSS", "bytes", many.rss, AnchorOwnOnly, own.rss),
		ExporterRow("RSS growth per watched namespace", "bytes", (many.rss-own.rss)/float64(p.Size)),
		NewRow("peak RSS", "bytes", many.peakRSS, AnchorOwnOnly, own.peakRSS),
		NewRow("goroutines", "goroutines", many.goroutines, AnchorOwnOnly, own.goroutines),
		NewRow("open fds", "fds", many.fds, AnchorOwnOnly, own.fds),
		NewRow("threads", "threads", many.threads, AnchorOwnOnly, own.threads),
		NewRow("idle CPU, share of a core", "%", 100*many.idleCPU, AnchorOwnOnly, 100*own.idleCPU),
		NewRow("idle CPU per watched namespace, share of a core", "%", 100*many.idleCPU/many.watched, AnchorOwnOnly, 100*own.idleCPU/own.watched),
	)
	r.Notes = append(r.Notes,
		fmt.Sprintf("Each exporter: --conntrack.netns-discover on a directory of bind-mounted namespace files, default collectors; 5 warm-up scrapes, then %d scrapes one after the other, timed from request to the body read; CPU per scrape from /proc/PID/stat over them; goroutines and open fds the lowest of 5 scrapes (they count the scrape being served); RSS, peak RSS and threads from /proc/PID/status; idle CPU over --duration without scrapes.", namespaceScrapes),
		fmt.Sprintf("%d in 10 namespaces hold %d loopback TCP connections each; every namespace tracks connections (an nftables ct state rule).", namespacesWithTraffic, connectionsPerTraffic),
	)
	return r, nil
}

// waitWatched scrapes until conntrack_exporter_watched_namespaces is
// want, or timeout passed.
func waitWatched(ctx context.Context, exp *Exporter, want float64, timeout time.Duration) error {
	end := time.Now().Add(timeout)
	for {
		m, _, err := exp.Scrape(ctx)
		if err != nil {
			return err
		}
		got, err := m.Sum("conntrack_exporter_watched_namespaces", nil)
		if err == nil && got == want {
			return nil
		}
		if time.Now().After(end) {
			return fmt.Errorf("the exporter watches %v namespaces after %s, want %v (%v)", got, timeout, want, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// measureNamespaces scrapes exp namespaceScrapes times one after the
// other, reads its resources, then leaves it without scrapes for idle
// and reads the CPU it used meanwhile.
func measureNamespaces(ctx context.Context, exp *Exporter, idle time.Duration) (namespaceFigures, error) {
	var f namespaceFigures
	for range 5 { // warm-up: first sockets, first table scans
		if _, _, err := exp.Scrape(ctx); err != nil {
			return f, err
		}
	}
	u0, err := exp.Usage()
	if err != nil {
		return f, err
	}
	lat := make([]float64, 0, namespaceScrapes)
	var last lab.Metrics
	for range namespaceScrapes {
		m, took, err := exp.Scrape(ctx)
		if err != nil {
			return f, err
		}
		lat, last = append(lat, took.Seconds()), m
	}
	u1, err := exp.Usage()
	if err != nil {
		return f, err
	}
	slices.Sort(lat)
	f.p50, f.p90, f.p99, f.max = quantile(lat, 0.5), quantile(lat, 0.9), quantile(lat, 0.99), lat[len(lat)-1]
	f.cpuPerScrape = (u1.CPU - u0.CPU).Seconds() / namespaceScrapes
	f.rss, f.peakRSS, f.threads = float64(u1.RSS), float64(u1.PeakRSS), float64(u1.Threads)
	for _, mf := range last {
		f.series += len(mf.GetMetric())
	}
	if f.watched, err = last.Sum("conntrack_exporter_watched_namespaces", nil); err != nil {
		return f, err
	}
	f.goroutines, f.fds = math.Inf(1), math.Inf(1)
	for range 5 {
		m, _, err := exp.Scrape(ctx)
		if err != nil {
			return f, err
		}
		g, err := m.Sum("go_goroutines", nil)
		if err != nil {
			return f, err
		}
		fds, err := m.Sum("process_open_fds", nil)
		if err != nil {
			return f, err
		}
		f.goroutines, f.fds = min(f.goroutines, g), min(f.fds, fds)
	}
	// Background cost without scrapes: rescans, table scans, idle event
	// sockets, read from /proc, as a scrape would cost CPU itself.
	select {
	case <-ctx.Done():
		return f, ctx.Err()
	case <-time.After(time.Second): // the last scrape's garbage collection
	}
	before, err := exp.Usage()
	if err != nil {
		return f, err
	}
	select {
	case <-ctx.Done():
		return f, ctx.Err()
	case <-time.After(idle):
	}
	after, err := exp.Usage()
	if err != nil {
		return f, err
	}
	f.idleCPU = (after.CPU - before.CPU).Seconds() / idle.Seconds()
	return f, nil
}
