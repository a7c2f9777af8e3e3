package bench

import (
	"context"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/ct-exporter/ct-exporter/internal/lab"
)

// Fill fills one namespace's table with ASSURED ESTABLISHED entries over
// ctnetlink, up to nf_conntrack_max by default, then opens connections
// that a full table must drop, and compares the exporter's fill and
// counters with conntrack -C and conntrack -S.
type Fill struct{}

// Name implements Drill.
func (Fill) Name() string { return "fill" }

// Summary implements Drill.
func (Fill) Summary() string {
	return "fill a namespace to nf_conntrack_max (or --size entries) and probe it; exporter vs conntrack -C/-S"
}

// Defaults implements Drill: size 0 fills to the limit.
func (Fill) Defaults() Params { return Params{} }

// Smoke implements Drill.
func (Fill) Smoke() Params { return Params{} }

// Plot implements Drill.
func (Fill) Plot() PlotSpec {
	return PlotSpec{X: "size", XLabel: "entries in the table", Metrics: []string{"scrape duration", "exporter peak RSS"}}
}

// probeConnections is how many connections the fill drill opens once the
// table is filled.
const probeConnections = 5

// Run implements Drill.
func (Fill) Run(ctx context.Context, env *Env, p Params) (*Result, error) {
	limit, err := ConntrackMax()
	if err != nil {
		return nil, err
	}
	size := p.Size
	if size == 0 {
		size = limit
	}
	if size > limit {
		return nil, fmt.Errorf("size %d is above nf_conntrack_max %d; fill goes up to the limit, not beyond", size, limit)
	}
	ns, err := env.Lab.Namespace(true)
	if err != nil {
		return nil, err
	}
	exp, err := StartExporter(ctx, env.Lab, env.Exporter, []string{ns.Path}, env.ExporterArgs...)
	if err != nil {
		return nil, err
	}
	defer exp.Stop()
	before, err := exp.Usage()
	if err != nil {
		return nil, err
	}

	r := &Result{}
	env.Logf("filling %s with %d entries", ns.Name, size)
	start := time.Now()
	created, refused, err := ns.Insert(lab.EstablishedEntries(size, 3600))
	took := time.Since(start)
	if err != nil {
		return nil, err
	}
	if created != size {
		if now, err := ConntrackMax(); err == nil && now != limit {
			return nil, fmt.Errorf("nf_conntrack_max changed from %d to %d during the fill: another program on the machine is changing it", limit, now)
		}
		return nil, fmt.Errorf("created %d of %d entries: %v", created, size, refused)
	}
	r.AddFact("nf_conntrack_max", float64(limit), "entries")
	r.AddFact("entries created over ctnetlink", float64(created), "entries")
	r.AddFact("fill time", took.Seconds(), "s")
	r.AddFact("fill rate", float64(created)/took.Seconds(), "entries/s")
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	refusedConns, err := probe(ns, probeConnections)
	if err != nil {
		return nil, err
	}
	r.AddFact("connections tried after the fill", probeConnections, "connections")
	r.AddFact("connections that timed out", float64(refusedConns), "connections")

	// The table is quiet now: the entries live an hour, nothing else
	// runs in the namespace. Read both sides.
	count, err := ns.EntryCount()
	if err != nil {
		return nil, err
	}
	sums, err := ns.CounterSums()
	if err != nil {
		return nil, err
	}
	m, scrapeTimes, err := scrapeN(ctx, exp, 5)
	if err != nil {
		return nil, err
	}
	statTimes, err := timeN(5, func() error { _, err := ns.CounterSums(); return err })
	if err != nil {
		return nil, err
	}
	after, err := exp.Usage()
	if err != nil {
		return nil, err
	}
	used := after.Sub(before)

	sel := map[string]string{"netns": ns.Name}
	entries, err := m.Sum("conntrack_entries", sel)
	if err != nil {
		return nil, err
	}
	lim, err := m.Sum("conntrack_entries_limit", sel)
	if err != nil {
		return nil, err
	}
	ratio, err := m.Sum("conntrack_fill_ratio", sel)
	if err != nil {
		return nil, err
	}
	r.Rows = append(r.Rows,
		NewRow("entries", "entries", entries, AnchorCount, float64(count)),
		NewRow("limit", "entries", lim, AnchorSysctl, float64(limit)),
		NewRow("fill ratio", "ratio", ratio, AnchorCount+" / nf_conntrack_max", float64(count)/float64(limit)),
	)
	rows, err := statRows(m, ns.Name, sums, "drop", "early_drop", "insert", "insert_failed")
	if err != nil {
		return nil, err
	}
	r.Rows = append(r.Rows, rows...)
	r.Rows = append(r.Rows,
		NewRow("scrape duration", "s", median(scrapeTimes).Seconds(), AnchorStats+" wall time", median(statTimes).Seconds()),
		ExporterRow("exporter CPU during the drill", "s", used.CPU.Seconds()),
		ExporterRow("exporter peak RSS", "bytes", float64(used.PeakRSS)),
	)
	r.Notes = append(r.Notes,
		"scrape duration is the median of 5 whole /metrics requests (every collector); conntrack -S wall time is the median of 5 runs of the tool through ip netns exec.",
		"the namespace keeps the default nf_conntrack_timestamp=0, so the exporter's event subscriber is in its flow_table mode and receives a NEW event for every entry the fill creates: that is most of its CPU and memory here.")
	return r, nil
}

// statRows compares conntrack_stat_<key>_total of the namespace with the
// sum over CPUs of conntrack -S's field of the same name.
func statRows(m lab.Metrics, netnsName string, sums map[string]uint64, keys ...string) ([]Row, error) {
	var rows []Row
	for _, k := range keys {
		v, err := m.Sum("conntrack_stat_"+k+"_total", map[string]string{"netns": netnsName})
		if err != nil {
			return nil, err
		}
		rows = append(rows, NewRow(k+"_total", "events", v, AnchorStats, float64(sums[k])))
	}
	return rows, nil
}

// probe opens n TCP connections over loopback inside the namespace, each
// given 300 ms, and returns how many did not connect.
func probe(ns *lab.Namespace, n int) (failed int, err error) {
	err = ns.Target().Do(func() error {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("probe listener: %w", err)
		}
		defer l.Close()
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		for range n {
			c, err := net.DialTimeout("tcp", l.Addr().String(), 300*time.Millisecond)
			if err != nil {
				failed++
				continue
			}
			c.Close()
		}
		return nil
	})
	return failed, err
}

// scrapeN scrapes n times and returns the last scrape and every
// duration.
func scrapeN(ctx context.Context, exp *Exporter, n int) (lab.Metrics, []time.Duration, error) {
	var (
		m     lab.Metrics
		times []time.Duration
	)
	for range n {
		var (
			took time.Duration
			err  error
		)
		m, took, err = exp.Scrape(ctx)
		if err != nil {
			return nil, nil, err
		}
		times = append(times, took)
	}
	return m, times, nil
}

// timeN runs fn n times and returns how long each run took.
func timeN(n int, fn func() error) ([]time.Duration, error) {
	var out []time.Duration
	for range n {
		start := time.Now()
		if err := fn(); err != nil {
			return nil, err
		}
		out = append(out, time.Since(start))
	}
	return out, nil
}

// median returns the median duration.
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
