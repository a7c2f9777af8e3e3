package bench

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/ct-exporter/ct-exporter/internal/lab"
	"github.com/ct-exporter/ct-exporter/internal/tablescan"
)

// Scan fills a namespace with --size ASSURED ESTABLISHED entries and
// compares the exporter's background table scan with conntrack -L and
// with ti-mo/conntrack's Dump, run one after the other on the same table.
type Scan struct{}

// Name implements Drill.
func (Scan) Name() string { return "scan" }

// Summary implements Drill.
func (Scan) Summary() string {
	return "scan a --size entry table: exporter table scan vs conntrack -L, ti-mo/conntrack Dump and the floor (one raw dump, counted)"
}

// Defaults implements Drill.
func (Scan) Defaults() Params { return Params{Size: 100000} }

// Smoke implements Drill.
func (Scan) Smoke() Params { return Params{Size: 2000} }

// Plot implements Drill.
func (Scan) Plot() PlotSpec {
	return PlotSpec{X: "size", XLabel: "entries in the table", Metrics: []string{"scan wall time", "CPU per scan", "peak RSS"}}
}

// scanRounds is how many times each side reads the table; the rows give
// the median.
const scanRounds = 5

// scanInterval returns the exporter's --table.interval for a table of n
// entries: long enough that one scan ends well before the next begins.
func scanInterval(n int) time.Duration {
	return time.Second + time.Duration(n)*4*time.Microsecond
}

// Run implements Drill.
func (Scan) Run(ctx context.Context, env *Env, p Params) (*Result, error) {
	if p.Size <= 0 {
		return nil, fmt.Errorf("scan needs a positive --size")
	}
	// The scan is the one drill that may need a larger table than the
	// machine allows; ASSURED entries are never evicted, so the limit
	// only needs a margin for the namespace's own traffic.
	limit, err := env.Lab.EnsureConntrackMax(p.Size + 1024)
	if err != nil {
		return nil, err
	}
	ns, err := env.Lab.Namespace(true)
	if err != nil {
		return nil, err
	}
	r := &Result{}
	r.AddFact("nf_conntrack_max during the drill", float64(limit), "entries")
	env.Logf("scan: filling %s with %d entries", ns.Name, p.Size)
	start := time.Now()
	created, refused, err := ns.Insert(lab.EstablishedEntries(p.Size, 3600))
	if err != nil {
		return nil, err
	}
	if created != p.Size {
		return nil, fmt.Errorf("created %d of %d entries: %v", created, p.Size, refused)
	}
	r.AddFact("fill time", time.Since(start).Seconds(), "s")
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	es, err := exporterScans(ctx, env, ns, p.Size)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	var lists []ToolRun
	for range scanRounds {
		run, err := RunConntrackList(ctx, env.Lab, ns)
		if err != nil {
			return nil, err
		}
		lists = append(lists, run)
	}
	timo, timoRep, err := medianChildRun(ctx, env, ns, childTiMoDump)
	if err != nil {
		return nil, err
	}
	floor, floorRep, err := medianChildRun(ctx, env, ns, childFloor)
	if err != nil {
		return nil, err
	}
	alone, aloneRep, err := medianChildRun(ctx, env, ns, childTableScan)
	if err != nil {
		return nil, err
	}
	lat, err := scrapesDuringScans(ctx, env, ns)
	if err != nil {
		return nil, err
	}

	list := medianRun(lists)
	r.Rows = append(r.Rows,
		NewRow("entries seen", "entries", es.entries, AnchorList, float64(list.Count)),
		NewRow("entries seen", "entries", es.entries, AnchorTiMo, float64(timoRep.Entries)),
		NewRow("entries seen", "entries", es.entries, AnchorFloor, float64(floorRep.Entries)),
		NewRow("scan wall time", "s", es.duration, AnchorList, list.Wall.Seconds()),
		NewRow("scan wall time", "s", es.duration, AnchorTiMo, timoRep.Seconds),
		NewRow("scan wall time", "s", es.duration, AnchorFloor, floorRep.Seconds),
		NewRow("scan wall time, alone in a process", "s", aloneRep.Seconds, AnchorFloor, floorRep.Seconds),
		NewRow("CPU per scan", "s", es.cpu, AnchorList, list.Usage.CPU.Seconds()),
		NewRow("CPU per scan", "s", es.cpu, AnchorTiMo, timo.Usage.CPU.Seconds()),
		NewRow("CPU per scan, alone in a process", "s", alone.Usage.CPU.Seconds(), AnchorFloor, floor.Usage.CPU.Seconds()),
		NewRow("peak RSS", "bytes", float64(es.peakRSS), AnchorList, float64(list.Usage.PeakRSS)),
		NewRow("peak RSS", "bytes", float64(es.peakRSS), AnchorTiMo, float64(timo.Usage.PeakRSS)),
		NewRow("peak RSS, alone in a process", "bytes", float64(alone.Usage.PeakRSS), AnchorFloor, float64(floor.Usage.PeakRSS)),
		NewRow("bytes allocated per scan", "bytes", es.alloc, AnchorTiMo, float64(timoRep.AllocBytes)),
		ExporterRow("peak RSS with the table scan off", "bytes", float64(es.baselineRSS)),
		NewRow("entries seen, alone in a process", "entries", float64(aloneRep.Entries), AnchorFloor, float64(floorRep.Entries)),
		ExporterRow("scrapes started during a scan", "scrapes", float64(len(lat.during))),
	)
	// A small table's scans take milliseconds: no scrape may start in one.
	if len(lat.during) > 0 {
		r.Rows = append(r.Rows,
			ExporterRow("scrape p50 during a scan", "s", quantile(lat.during, 0.5)),
			ExporterRow("scrape p99 during a scan", "s", quantile(lat.during, 0.99)))
	}
	if len(lat.between) > 0 {
		r.Rows = append(r.Rows, ExporterRow("scrape p99 between scans", "s", quantile(lat.between, 0.99)))
	}
	r.Notes = append(r.Notes,
		fmt.Sprintf("ct-exporter: median of %d background scans (--table.interval=%s); CPU and allocations per scan are the process's deltas between two scans divided by their number, and include the scrapes that observed them.", scanRounds-1, scanInterval(p.Size)),
		fmt.Sprintf("conntrack -L > /dev/null through ip netns exec; ti-mo/conntrack Dump, the floor (one raw ctnetlink dump read into a reused 1 MiB buffer, entries counted, not decoded) and the exporter's table scan alone (package tablescan, top K %d) each in a child process: median wall time of %d runs, with that run's CPU (user+sys) and peak RSS (conntrack -L's from GNU time, the child's its own VmHWM); a child's wall time is the read itself.", tablescan.DefaultTopK, scanRounds),
		fmt.Sprintf("Scrapes: a ct-exporter with --table.interval=1s scraped every 10 ms until %d scans ended after the first; a scrape is during a scan when it started inside [end - duration, end] of a scan's conntrack_table_last_scan_timestamp_seconds and conntrack_table_scan_duration_seconds.", latencyScans),
	)
	return r, nil
}

// exporterScan is what the exporter's background scans of one table
// cost.
type exporterScan struct {
	entries, duration, cpu, alloc float64
	peakRSS, baselineRSS          uint64
}

// exporterScans runs ct-exporter with the table scan on and measures
// scanRounds scans: the first at startup, then one per interval. A second
// exporter with the scan off gives the baseline RSS.
func exporterScans(ctx context.Context, env *Env, ns *lab.Namespace, size int) (exporterScan, error) {
	var es exporterScan
	base, err := StartExporter(ctx, env.Lab, env.Exporter, []string{ns.Path}, append([]string{"--table.interval=0"}, env.ExporterArgs...)...)
	if err != nil {
		return es, err
	}
	for range 3 {
		if _, _, err := base.Scrape(ctx); err != nil {
			base.Stop()
			return es, err
		}
	}
	bu, err := base.Usage()
	base.Stop()
	if err != nil {
		return es, err
	}
	es.baselineRSS = bu.PeakRSS

	interval := scanInterval(size)
	exp, err := StartExporter(ctx, env.Lab, env.Exporter, []string{ns.Path},
		append([]string{"--table.interval=" + interval.String(), "--table.timeout=" + interval.String()}, env.ExporterArgs...)...)
	if err != nil {
		return es, err
	}
	defer exp.Stop()
	sel := map[string]string{"netns": ns.Name}
	var (
		durations  []float64
		usages     []lab.Usage
		allocs     []float64
		lastStamp  float64
		lastResult lab.Metrics
	)
	deadline := time.Now().Add(time.Duration(scanRounds+1)*interval + time.Minute)
	for len(durations) < scanRounds {
		if time.Now().After(deadline) {
			return es, fmt.Errorf("ct-exporter finished %d of %d table scans in time:\n%s", len(durations), scanRounds, exp.Logs())
		}
		m, _, err := exp.Scrape(ctx)
		if err != nil {
			return es, err
		}
		stamp, err := m.Sum("conntrack_table_last_scan_timestamp_seconds", sel)
		if err != nil || stamp == lastStamp {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		u, err := exp.Usage()
		if err != nil {
			return es, err
		}
		d, err := m.Sum("conntrack_table_scan_duration_seconds", sel)
		if err != nil {
			return es, err
		}
		alloc, err := m.Sum("go_memstats_alloc_bytes_total", nil)
		if err != nil {
			alloc = math.NaN()
		}
		durations, usages, allocs = append(durations, d), append(usages, u), append(allocs, alloc)
		lastStamp, lastResult = stamp, m
		// Sleep until shortly before the next scan ends.
		next := time.Unix(0, int64(stamp*1e9)).Add(interval - time.Duration(d*float64(time.Second)))
		if wait := time.Until(next); wait > 0 {
			select {
			case <-ctx.Done():
				return es, ctx.Err()
			case <-time.After(wait):
			}
		}
	}
	total, err := lastResult.Sum("conntrack_table_entries", sel)
	if err != nil {
		return es, err
	}
	n := float64(scanRounds - 1)
	es.entries = total
	es.duration = medianFloat(durations[1:])
	es.cpu = (usages[scanRounds-1].CPU - usages[0].CPU).Seconds() / n
	es.alloc = (allocs[scanRounds-1] - allocs[0]) / n
	es.peakRSS = usages[scanRounds-1].PeakRSS
	return es, nil
}

// medianChildRun runs a child anchor scanRounds times and returns the run
// with the median wall time and its report.
func medianChildRun(ctx context.Context, env *Env, ns *lab.Namespace, child string) (ToolRun, ChildReport, error) {
	var (
		runs    []ToolRun
		reports []ChildReport
	)
	for range scanRounds {
		rep, run, err := RunChildAnchor(ctx, env, ns, child)
		if err != nil {
			return ToolRun{}, ChildReport{}, err
		}
		runs, reports = append(runs, run), append(reports, rep)
	}
	med := medianRun(runs)
	return med, reports[slices.IndexFunc(runs, func(t ToolRun) bool { return t.Wall == med.Wall })], nil
}

// latencyScans is how many scans the scrape-latency phase waits for
// after the first.
const latencyScans = 4

// scrapeLatencies are the durations of scrapes that started during a
// table scan and between scans, in seconds.
type scrapeLatencies struct {
	during, between []float64
}

// scrapesDuringScans runs ct-exporter with a table scan every second (it
// pauses as long as a scan took after each) and scrapes it every 10 ms
// until latencyScans scans have ended after the first, then sorts the
// scrapes into those that started during a scan and the others.
func scrapesDuringScans(ctx context.Context, env *Env, ns *lab.Namespace) (scrapeLatencies, error) {
	var lat scrapeLatencies
	exp, err := StartExporter(ctx, env.Lab, env.Exporter, []string{ns.Path},
		append([]string{"--table.interval=1s"}, env.ExporterArgs...)...)
	if err != nil {
		return lat, err
	}
	defer exp.Stop()
	type window struct{ from, to time.Time }
	type scrape struct {
		start time.Time
		took  time.Duration
	}
	sel := map[string]string{"netns": ns.Name}
	scans := map[float64]window{}
	var scrapes []scrape
	deadline := time.Now().Add(10 * time.Minute)
	for len(scans) < latencyScans+1 {
		if time.Now().After(deadline) {
			return lat, fmt.Errorf("ct-exporter finished %d of %d table scans in time:\n%s", len(scans), latencyScans+1, exp.Logs())
		}
		start := time.Now()
		m, took, err := exp.Scrape(ctx)
		if err != nil {
			return lat, err
		}
		end, endErr := m.Sum("conntrack_table_last_scan_timestamp_seconds", sel)
		d, durErr := m.Sum("conntrack_table_scan_duration_seconds", sel)
		if endErr == nil && durErr == nil && end > 0 {
			to := time.Unix(0, int64(end*1e9))
			scans[end] = window{from: to.Add(-time.Duration(d * float64(time.Second))), to: to}
			// Scrapes before the first scan ended are the warm-up.
			if len(scans) > 1 {
				scrapes = append(scrapes, scrape{start: start, took: took})
			}
		}
		select {
		case <-ctx.Done():
			return lat, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	for _, s := range scrapes {
		in := false
		for _, w := range scans {
			if !s.start.Before(w.from) && s.start.Before(w.to) {
				in = true
				break
			}
		}
		if in {
			lat.during = append(lat.during, s.took.Seconds())
		} else {
			lat.between = append(lat.between, s.took.Seconds())
		}
	}
	return lat, nil
}

// quantile returns quantile q (0..1) of xs, which is not empty, by the
// nearest rank below.
func quantile(xs []float64, q float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1))]
}

// medianRun returns the run with the median wall time.
func medianRun(runs []ToolRun) ToolRun {
	s := slices.Clone(runs)
	slices.SortFunc(s, func(a, b ToolRun) int { return int(a.Wall - b.Wall) })
	return s[len(s)/2]
}

// medianFloat returns the median of xs.
func medianFloat(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}
