package collector

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ct-exporter/ct-exporter/internal/ctnl"
	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/nstest"
	"github.com/ct-exporter/ct-exporter/internal/watch"
)

// gather collects c for target and returns the value of each metric,
// keyed by name for the metrics with only the netns label.
func gather(t *testing.T, c Collector, target netns.Target) map[string]float64 {
	t.Helper()
	o := &oneTarget{c: c, target: target}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(o)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if o.err != nil {
		t.Fatal(o.err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != 1 || m.GetLabel()[0].GetValue() != target.Name {
				continue
			}
			out[mf.GetName()] = metricValue(m)
		}
	}
	return out
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	}
	return 0
}

func TestKernelStatsMatchConntrackTool(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	t.Parallel()
	p := nstest.NewPair(t)
	p.Connect(t, 5)
	if created, err := p.B.CreateEntries(t, nstest.EstablishedEntries(100, 600)); err != nil || created != 100 {
		t.Fatalf("created %d of 100: %v", created, err)
	}
	c := NewStatsCollector(watch.NewStatsTotals(watch.NewStatsSockets(nil)))
	got := gather(t, c, p.B.Target())
	want := p.B.CountEntries(t)
	t.Logf("conntrack_entries=%v conntrack -C=%d", got["conntrack_entries"], want)
	if got["conntrack_entries"] != float64(want) || want != 105 {
		t.Fatalf("conntrack_entries = %v, conntrack -C = %d, want both 105", got["conntrack_entries"], want)
	}
	sums := p.B.ConntrackStats(t)
	for i := ctnl.Counter(0); i < ctnl.NumCounters; i++ {
		name := "conntrack_stat_" + i.String() + "_total"
		sum, printed := sums[i.String()]
		exported, ok := got[name]
		switch {
		case !printed:
			t.Errorf("conntrack -S printed no %s counter", i)
		case !ok:
			t.Errorf("%s not exported", name)
		case exported != sum:
			t.Errorf("%s = %v, conntrack -S sums %v", name, exported, sum)
		}
	}
	if got["conntrack_stat_insert_total"] < 5 {
		t.Errorf("conntrack_stat_insert_total = %v after 5 connections", got["conntrack_stat_insert_total"])
	}
}

func TestKernelFullTableDropsNewConnections(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	p := nstest.NewPair(t)
	l := p.B.Listen(t, p.BAddr+":8080")
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	// A connection before the fill works.
	if _, err := p.A.Dial(t, l.Addr().String(), 5*time.Second); err != nil {
		t.Fatalf("connection before the fill: %v", err)
	}
	c := NewStatsCollector(watch.NewStatsTotals(watch.NewStatsSockets(nil)))
	before := gather(t, c, p.B.Target())
	limit := int(before["conntrack_entries_limit"])
	free := limit - int(before["conntrack_entries"])
	start := time.Now()
	created, err := p.B.CreateEntries(t, nstest.EstablishedEntries(free, 600))
	t.Logf("created %d ASSURED entries in %v (limit %d)", created, time.Since(start).Round(time.Millisecond), limit)
	if created != free {
		t.Fatalf("created %d of %d free slots: %v", created, free, err)
	}
	_, err = p.A.Dial(t, l.Addr().String(), 2*time.Second)
	if err == nil {
		t.Fatal("a new connection succeeded in a full table")
	}
	after := gather(t, c, p.B.Target())
	t.Logf("entries %v/%v fill_ratio %v drop_total %v -> %v early_drop_total %v (dial: %v)",
		after["conntrack_entries"], after["conntrack_entries_limit"], after["conntrack_fill_ratio"],
		before["conntrack_stat_drop_total"], after["conntrack_stat_drop_total"], after["conntrack_stat_early_drop_total"], err)
	if after["conntrack_fill_ratio"] != 1 {
		t.Errorf("conntrack_fill_ratio = %v, want 1", after["conntrack_fill_ratio"])
	}
	if after["conntrack_stat_drop_total"] <= before["conntrack_stat_drop_total"] {
		t.Errorf("conntrack_stat_drop_total did not rise: %v -> %v", before["conntrack_stat_drop_total"], after["conntrack_stat_drop_total"])
	}
	if drop, ok := p.B.ConntrackStats(t)["drop"]; !ok || drop != after["conntrack_stat_drop_total"] {
		t.Errorf("conntrack_stat_drop_total = %v, conntrack -S drop sums %v (printed: %v)", after["conntrack_stat_drop_total"], drop, ok)
	}
	if n := p.B.CountEntries(t); n != limit {
		t.Errorf("conntrack -C = %d, want the limit %d", n, limit)
	}
}
