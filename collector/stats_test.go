package collector

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/ct-exporter/ct-exporter/internal/ctnl"
	"github.com/ct-exporter/ct-exporter/internal/exposition"
	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/watch"
)

// fakeStats returns queued snapshots, one per call, then the last again,
// and counts the calls of Prepare and Stats.
type fakeStats struct {
	mu               sync.Mutex
	snaps            []ctnl.Snapshot
	err              error
	prepares, stats  int
	readsBeforeFirst int // Stats calls before the first Prepare
}

func (f *fakeStats) Prepare() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.prepares == 0 {
		f.readsBeforeFirst = f.stats
	}
	f.prepares++
	return nil
}

func (f *fakeStats) Stats(context.Context, netns.Target) (ctnl.Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stats++
	if f.err != nil {
		return ctnl.Snapshot{}, f.err
	}
	s := f.snaps[0]
	if len(f.snaps) > 1 {
		f.snaps = f.snaps[1:]
	}
	return s, nil
}

// cpu builds a CPUStats with the given counters set.
func cpu(id uint16, set map[ctnl.Counter]uint32) ctnl.CPUStats {
	c := ctnl.CPUStats{CPU: id}
	for k, v := range set {
		c.Counters[k] = v
	}
	return c
}

// updateOnce runs the collector as a plain prometheus.Collector for one
// target.
type oneTarget struct {
	c      Collector
	target netns.Target
	err    error
}

func (o *oneTarget) Describe(ch chan<- *prometheus.Desc) { o.c.Describe(ch) }
func (o *oneTarget) Collect(ch chan<- prometheus.Metric) {
	o.err = o.c.Update(context.Background(), o.target, exposition.ChannelSink(ch))
}

func TestStatsCollectorGolden(t *testing.T) {
	src := &fakeStats{snaps: []ctnl.Snapshot{{
		Inode:  1,
		Global: ctnl.GlobalStats{Entries: 235929, MaxEntries: 262144},
		CPUs: []ctnl.CPUStats{
			cpu(0, map[ctnl.Counter]uint32{ctnl.Found: 10, ctnl.Insert: 100, ctnl.Drop: 3, ctnl.ClashResolve: 2, ctnl.ChainTooLong: 1}),
			cpu(1, map[ctnl.Counter]uint32{ctnl.Found: 5, ctnl.Insert: 50, ctnl.InsertFailed: 7, ctnl.EarlyDrop: 4, ctnl.SearchRestart: 9, ctnl.Invalid: 6, ctnl.Error: 8}),
		},
	}}}
	c := &oneTarget{c: NewStatsCollector(watch.NewStatsTotals(src)), target: netns.Self()}
	golden, err := os.Open("testdata/stats.prom")
	if err != nil {
		t.Fatal(err)
	}
	defer golden.Close()
	if err := testutil.CollectAndCompare(c, golden); err != nil {
		t.Fatal(err)
	}
	if c.err != nil {
		t.Fatal(c.err)
	}
}

func TestStatsCollectorCounterWrap(t *testing.T) {
	const near = math.MaxUint32 - 5
	snap := func(ino uint64, drop0, drop1 uint32) ctnl.Snapshot {
		return ctnl.Snapshot{Inode: ino, Global: ctnl.GlobalStats{Entries: 1, MaxEntries: 10}, CPUs: []ctnl.CPUStats{
			cpu(0, map[ctnl.Counter]uint32{ctnl.Drop: drop0}),
			cpu(1, map[ctnl.Counter]uint32{ctnl.Drop: drop1}),
		}}
	}
	src := &fakeStats{snaps: []ctnl.Snapshot{
		snap(1, near, 10), // first reading: raw sum
		snap(1, 4, 11),    // CPU 0 wrapped: +10, CPU 1: +1
		snap(1, 4, 11),    // no change
		snap(1, 20, near), // CPU 0 +16, CPU 1 +near-11
		snap(1, 20, 3),    // CPU 1 wrapped: +9
		snap(2, 1, 1),     // new namespace inode: totals restart
	}}
	sc := NewStatsCollector(watch.NewStatsTotals(src))
	want := []float64{
		near + 10,
		near + 10 + 11,
		near + 10 + 11,
		near + 10 + 11 + 16 + (near - 11),
		near + 10 + 11 + 16 + (near - 11) + 9,
		2,
	}
	for i, w := range want {
		got := dropTotal(t, sc)
		if got != w {
			t.Fatalf("reading %d: conntrack_stat_drop_total = %v, want %v", i, got, w)
		}
		if i > 0 && i < 5 && got < want[i-1] {
			t.Fatalf("reading %d: counter went backwards", i)
		}
	}
}

// dropTotal runs one Update and returns conntrack_stat_drop_total.
func dropTotal(t *testing.T, sc *StatsCollector) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 64)
	if err := sc.Update(context.Background(), netns.Self(), exposition.ChannelSink(ch)); err != nil {
		t.Fatal(err)
	}
	close(ch)
	for m := range ch {
		if strings.Contains(m.Desc().String(), `"conntrack_stat_drop_total"`) {
			return testutil.ToFloat64(constCollector{m})
		}
	}
	t.Fatal("no conntrack_stat_drop_total")
	return 0
}

// constCollector collects one metric.
type constCollector struct{ m prometheus.Metric }

func (c constCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.m.Desc() }
func (c constCollector) Collect(ch chan<- prometheus.Metric) { ch <- c.m }

// failing is a Collector that always fails.
type failing struct{ desc *prometheus.Desc }

func (f failing) Describe(ch chan<- *prometheus.Desc) { ch <- f.desc }
func (f failing) Update(context.Context, netns.Target, *exposition.Sink) error {
	return errors.New("namespace vanished")
}

func TestExporterFailingCollectorKeepsScrape(t *testing.T) {
	src := &fakeStats{snaps: []ctnl.Snapshot{{Inode: 1, Global: ctnl.GlobalStats{Entries: 5, MaxEntries: 10}}}}
	e := NewExporter(map[string]Collector{
		"stats":  NewStatsCollector(watch.NewStatsTotals(src)),
		"broken": failing{desc: prometheus.NewDesc("conntrack_broken", "x", nil, nil)},
	}, func() []netns.Target { return []netns.Target{netns.Self(), {Name: "b", Path: "/run/netns/b"}} }, 0, zap.NewNop())
	want := `# HELP conntrack_entries Entries in the namespace's conntrack table.
# TYPE conntrack_entries gauge
conntrack_entries{netns="b"} 5
conntrack_entries{netns="self"} 5
# HELP conntrack_exporter_collector_success Whether the collector succeeded for the network namespace on this scrape (1) or not (0).
# TYPE conntrack_exporter_collector_success gauge
conntrack_exporter_collector_success{collector="broken",netns="b"} 0
conntrack_exporter_collector_success{collector="broken",netns="self"} 0
conntrack_exporter_collector_success{collector="stats",netns="b"} 1
conntrack_exporter_collector_success{collector="stats",netns="self"} 1
`
	if err := testutil.CollectAndCompare(e, strings.NewReader(want), "conntrack_entries", "conntrack_exporter_collector_success"); err != nil {
		t.Fatal(err)
	}
	// The stats source is prepared once per scrape, before its reads.
	src.mu.Lock()
	prepares, reads, early := src.prepares, src.stats, src.readsBeforeFirst
	src.mu.Unlock()
	if prepares != 1 || reads != 2 || early != 0 {
		t.Errorf("one scrape of 2 namespaces: %d prepares, %d reads, %d reads before the first prepare; want 1, 2, 0",
			prepares, reads, early)
	}
	// The stats source failing turns success to 0 and drops its metrics.
	src.err = errors.New("netns gone")
	want = `# HELP conntrack_exporter_collector_success Whether the collector succeeded for the network namespace on this scrape (1) or not (0).
# TYPE conntrack_exporter_collector_success gauge
conntrack_exporter_collector_success{collector="broken",netns="b"} 0
conntrack_exporter_collector_success{collector="broken",netns="self"} 0
conntrack_exporter_collector_success{collector="stats",netns="b"} 0
conntrack_exporter_collector_success{collector="stats",netns="self"} 0
`
	if err := testutil.CollectAndCompare(e, strings.NewReader(want), "conntrack_entries", "conntrack_exporter_collector_success"); err != nil {
		t.Fatal(err)
	}
}

// deadlineRecorder records the deadline of each Update and fails it.
type deadlineRecorder struct {
	mu        sync.Mutex
	deadlines map[time.Time]int
	running   int
	most      int
}

func (d *deadlineRecorder) Describe(chan<- *prometheus.Desc) {}

func (d *deadlineRecorder) Update(ctx context.Context, _ netns.Target, _ *exposition.Sink) error {
	dl, ok := ctx.Deadline()
	d.mu.Lock()
	if ok {
		d.deadlines[dl]++
	}
	d.running++
	d.most = max(d.most, d.running)
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.running--
		d.mu.Unlock()
	}()
	return errors.New("recorded")
}

// TestExporterBoundedWorkersOneDeadline runs many namespaces: every pair
// of collector and namespace is run once, on no more goroutines than the
// bound, and all of them share the deadline of the scrape.
func TestExporterBoundedWorkersOneDeadline(t *testing.T) {
	rec := &deadlineRecorder{deadlines: map[time.Time]int{}}
	var targets []netns.Target
	for i := range 100 {
		targets = append(targets, netns.Target{Name: fmt.Sprintf("ns%d", i), Path: fmt.Sprintf("/run/netns/ns%d", i)})
	}
	e := NewExporter(map[string]Collector{"a": rec, "b": rec}, func() []netns.Target { return targets }, time.Minute, zap.NewNop())
	if n := testutil.CollectAndCount(e, "conntrack_exporter_collector_success"); n != 200 {
		t.Fatalf("%d success series, want 200", n)
	}
	if len(rec.deadlines) != 1 {
		t.Fatalf("%d different deadlines in one scrape, want 1", len(rec.deadlines))
	}
	for _, n := range rec.deadlines {
		if n != 200 {
			t.Fatalf("%d updates had the deadline, want 200", n)
		}
	}
	if rec.most > collectWorkers() {
		t.Fatalf("%d updates at once, want at most %d", rec.most, collectWorkers())
	}
}
