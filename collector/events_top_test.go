package collector

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/topk"
	"github.com/ct-exporter/ct-exporter/internal/watch"
)

// fakeClock is a settable clock for sliding windows.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// topFixture is an events collector with top-K k over one fake namespace
// whose windows (5 steps of 1 minute) run on clock.
func topFixture(t *testing.T, k int) (*EventsCollector, *fakeEventSource, *fakeClock, netns.Target) {
	t.Helper()
	clock := &fakeClock{t: time.Unix(1764000000, 0)}
	opts := topk.WindowOptions{Window: 5 * time.Minute, Step: time.Minute, Capacity: 64, Now: clock.now}
	ends, err := topk.NewWindow(opts)
	if err != nil {
		t.Fatal(err)
	}
	silent, err := topk.NewWindow(opts)
	if err != nil {
		t.Fatal(err)
	}
	fakes := &fakeEventSources{sources: map[string]*fakeEventSource{}}
	subs := watch.NewSubscribers(fakes.start, NewLifetimeSink)
	c := NewEventsCollector(subs, k)
	target := netns.Self()
	if err := subs.Watch(context.Background(), target); err != nil {
		t.Fatal(err)
	}
	src := fakes.sources[target.Name]
	src.ends, src.silent = ends, silent
	return c, src, clock, target
}

// add counts key n times in w.
func add(w *topk.Window, key topk.Key, n int) {
	for range n {
		w.Add(key)
	}
}

var topFamilies = []string{
	"conntrack_flow_ends_top_source", "conntrack_flow_silent_ends_top_destination",
	"conntrack_flow_top_window_ends", "conntrack_flow_top_error_bound_ends",
}

const topHelp = `# HELP conntrack_flow_ends_top_source Flows that ended within the sliding window, by original-direction source address: the top K sources, and all others (source="other"). The series sum to conntrack_flow_top_window_ends{breakdown="source"}.
# TYPE conntrack_flow_ends_top_source gauge
`

// TestEventsCollectorTopK: the top K sources and silent-end destinations
// by name, the rest in "other", each family summing to its window total;
// events older than the window leave it.
func TestEventsCollectorTopK(t *testing.T) {
	c, src, clock, target := topFixture(t, 2)
	a := netip.MustParseAddr
	add(src.ends, topk.AddrKey(a("10.0.0.1")), 30)
	add(src.ends, topk.AddrKey(a("2001:db8::2")), 5)
	add(src.ends, topk.AddrKey(a("10.0.0.3")), 3)
	add(src.ends, topk.AddrKey(a("10.0.0.4")), 1)
	add(src.silent, topk.AddrPortKey(a("192.0.2.10"), 5432), 7)
	clock.t = clock.t.Add(2 * time.Minute)
	add(src.ends, topk.AddrKey(a("10.0.0.3")), 1)
	add(src.silent, topk.AddrPortKey(a("2001:db8::80"), 443), 2)

	o := &oneNamespace{c: c, target: target}
	want := topHelp + `conntrack_flow_ends_top_source{netns="self",source="10.0.0.1"} 30
conntrack_flow_ends_top_source{netns="self",source="2001:db8::2"} 5
conntrack_flow_ends_top_source{netns="self",source="other"} 5
# HELP conntrack_flow_silent_ends_top_destination Flows that reached ESTABLISHED and ended still ESTABLISHED (no FIN or RST seen) within the sliding window, by original-direction destination address and port: the top K, and all others (destination="other",port="other"). The series sum to conntrack_flow_top_window_ends{breakdown="silent_destination"}.
# TYPE conntrack_flow_silent_ends_top_destination gauge
conntrack_flow_silent_ends_top_destination{destination="192.0.2.10",netns="self",port="5432"} 7
conntrack_flow_silent_ends_top_destination{destination="2001:db8::80",netns="self",port="443"} 2
conntrack_flow_silent_ends_top_destination{destination="other",netns="self",port="other"} 0
# HELP conntrack_flow_top_error_bound_ends How far any top-K count of the breakdown may be from the true count in the sliding window, either way (the count is within ± this bound); 0 while every time step saw no more distinct keys than its counters and every count is exact.
# TYPE conntrack_flow_top_error_bound_ends gauge
conntrack_flow_top_error_bound_ends{breakdown="silent_destination",netns="self"} 0
conntrack_flow_top_error_bound_ends{breakdown="source",netns="self"} 0
# HELP conntrack_flow_top_window_ends Flow ends (breakdown="source") and silent ends (breakdown="silent_destination") counted within the sliding window of the top-K families (exact).
# TYPE conntrack_flow_top_window_ends gauge
conntrack_flow_top_window_ends{breakdown="silent_destination",netns="self"} 9
conntrack_flow_top_window_ends{breakdown="source",netns="self"} 40
`
	if err := testutil.CollectAndCompare(o, strings.NewReader(want), topFamilies...); err != nil {
		t.Fatal(err)
	}
	if o.err != nil {
		t.Fatal(o.err)
	}
	if problems, err := testutil.CollectAndLint(o); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}

	// Four minutes on, the first minute has left the 5-minute window.
	clock.t = clock.t.Add(4 * time.Minute)
	want = topHelp + `conntrack_flow_ends_top_source{netns="self",source="10.0.0.3"} 1
conntrack_flow_ends_top_source{netns="self",source="other"} 0
`
	if err := testutil.CollectAndCompare(o, strings.NewReader(want), "conntrack_flow_ends_top_source"); err != nil {
		t.Fatal(err)
	}
}

// TestEventsCollectorTopKZero: K=0 leaves out the top series and the
// bound; the window totals stay.
func TestEventsCollectorTopKZero(t *testing.T) {
	c, src, _, target := topFixture(t, 0)
	add(src.ends, topk.AddrKey(netip.MustParseAddr("10.0.0.1")), 4)
	o := &oneNamespace{c: c, target: target}
	want := `# HELP conntrack_flow_top_window_ends Flow ends (breakdown="source") and silent ends (breakdown="silent_destination") counted within the sliding window of the top-K families (exact).
# TYPE conntrack_flow_top_window_ends gauge
conntrack_flow_top_window_ends{breakdown="silent_destination",netns="self"} 0
conntrack_flow_top_window_ends{breakdown="source",netns="self"} 4
`
	if err := testutil.CollectAndCompare(o, strings.NewReader(want), topFamilies...); err != nil {
		t.Fatal(err)
	}
}

// TestEventsCollectorTopKCardinality: 100k distinct sources, more than
// the counters hold, still give K+1 source series that sum to the window
// total, with a non-zero error bound.
func TestEventsCollectorTopKCardinality(t *testing.T) {
	const k = 10
	c, src, _, target := topFixture(t, k)
	for i := range 100000 {
		src.ends.Add(topk.AddrKey(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})))
	}
	r := registry(t, &oneNamespace{c: c, target: target})
	if n, err := testutil.GatherAndCount(r, "conntrack_flow_ends_top_source"); err != nil || n != k+1 {
		t.Fatalf("%d source series, %v; want %d", n, err, k+1)
	}
	mfs, err := r.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum, total, bound float64
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			v := m.GetGauge().GetValue()
			switch mf.GetName() {
			case "conntrack_flow_ends_top_source":
				sum += v
			case "conntrack_flow_top_window_ends":
				if m.GetLabel()[0].GetValue() == "source" {
					total = v
				}
			case "conntrack_flow_top_error_bound_ends":
				if m.GetLabel()[0].GetValue() == "source" {
					bound = v
				}
			}
		}
	}
	if sum != 100000 || total != 100000 {
		t.Fatalf("source series sum to %v, window total %v; want 100000", sum, total)
	}
	if bound == 0 {
		t.Fatal("error bound 0 with more distinct sources than counters")
	}
}
