package collector

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/ct-exporter/ct-exporter/events"
	"github.com/ct-exporter/ct-exporter/histogram"
	"github.com/ct-exporter/ct-exporter/internal/exposition"
	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/topk"
	"github.com/ct-exporter/ct-exporter/internal/watch"
)

// fakeEventSource is an EventSource with settable stats; it keeps the sink
// it was started with.
type fakeEventSource struct {
	mu      sync.Mutex
	stats   events.Stats
	sink    events.Sink
	stopped bool
	// syncs counts the calls of Sync; statsUnsynced the calls of Stats
	// with no Sync since the one before.
	syncs, statsUnsynced int
	synced               bool
	// ends and silent are the sliding windows Top reads; nil reads as
	// empty.
	ends, silent *topk.Window
}

// Top reads the fake's windows as events.Attribution.Top does.
func (f *fakeEventSource) Top(k int) (ends, silent topk.WindowTop) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ends != nil {
		ends = f.ends.Top(k)
	}
	if f.silent != nil {
		silent = f.silent.Top(k)
	}
	return ends, silent
}

// Sync counts its calls.
func (f *fakeEventSource) Sync(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.syncs++
	f.synced = true
	return nil
}

func (f *fakeEventSource) Stats() events.Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.synced {
		f.statsUnsynced++
	}
	f.synced = false
	return f.stats
}

func (f *fakeEventSource) Stop() {
	f.mu.Lock()
	f.stopped = true
	f.mu.Unlock()
}

// fakeEventSources starts fake sources and remembers them by namespace.
type fakeEventSources struct {
	mu      sync.Mutex
	sources map[string]*fakeEventSource
	err     error
}

func (f *fakeEventSources) start(_ context.Context, target netns.Target, sink events.Sink) (watch.EventSource, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	s := &fakeEventSource{sink: sink, stats: events.Stats{Running: true}}
	f.sources[target.Name] = s
	return s, nil
}

// newFakeEvents returns an events collector over subscribers that fakes
// starts.
func newFakeEvents(fakes *fakeEventSources) (*EventsCollector, *Subscribers) {
	subs := watch.NewSubscribers(fakes.start, NewLifetimeSink)
	return NewEventsCollector(subs, topk.DefaultK), subs
}

// eventsExposition is the expected exposition of one namespace with the
// given stats, without the histogram.
func eventsExposition(ns string, st events.Stats) string {
	mode := [2]int{}
	mode[st.Mode] = 1
	return fmt.Sprintf(`# HELP conntrack_events_total Conntrack events received from the kernel, by type (new, update, destroy).
# TYPE conntrack_events_total counter
conntrack_events_total{netns=%[1]q,type="destroy"} %[4]d
conntrack_events_total{netns=%[1]q,type="new"} %[2]d
conntrack_events_total{netns=%[1]q,type="update"} %[3]d
# HELP conntrack_exporter_event_overruns_total Receives on the event socket that failed with ENOBUFS because events had been dropped.
# TYPE conntrack_exporter_event_overruns_total counter
conntrack_exporter_event_overruns_total{netns=%[1]q} %[6]d
# HELP conntrack_exporter_event_subscriber_restarts_total Times the event socket was opened again after a failure.
# TYPE conntrack_exporter_event_subscriber_restarts_total counter
conntrack_exporter_event_subscriber_restarts_total{netns=%[1]q} %[13]d
# HELP conntrack_exporter_events_lost_total Conntrack events the kernel dropped because the exporter's socket queue was full (the socket's exact drop count).
# TYPE conntrack_exporter_events_lost_total counter
conntrack_exporter_events_lost_total{netns=%[1]q} %[5]d
# HELP conntrack_exporter_events_malformed_total Conntrack event messages skipped because they did not decode.
# TYPE conntrack_exporter_events_malformed_total counter
conntrack_exporter_events_malformed_total{netns=%[1]q} %[7]d
# HELP conntrack_exporter_events_receive_buffer_bytes Receive buffer of the event socket as the kernel reports it (twice the requested size).
# TYPE conntrack_exporter_events_receive_buffer_bytes gauge
conntrack_exporter_events_receive_buffer_bytes{netns=%[1]q} %[12]d
# HELP conntrack_exporter_flow_table_entries Flows whose start the flow_table lifetime mode remembers.
# TYPE conntrack_exporter_flow_table_entries gauge
conntrack_exporter_flow_table_entries{netns=%[1]q} %[10]d
# HELP conntrack_exporter_flow_table_evictions_total Flows evicted from the full flow table before they ended; their lifetime is lost.
# TYPE conntrack_exporter_flow_table_evictions_total counter
conntrack_exporter_flow_table_evictions_total{netns=%[1]q} %[9]d
# HELP conntrack_exporter_flows_without_timestamp_total Flows that reached ESTABLISHED (ASSURED) and ended with no usable start (no kernel timestamp, not in the flow table): their lifetime is not in conntrack_flow_lifetime_seconds.
# TYPE conntrack_exporter_flows_without_timestamp_total counter
conntrack_exporter_flows_without_timestamp_total{netns=%[1]q} %[8]d
# HELP conntrack_exporter_lifetime_mode How flow lifetimes are measured: timestamp (kernel start/stop timestamps of the DESTROY event) or flow_table (receive times of NEW and DESTROY events); 1 for the active mode.
# TYPE conntrack_exporter_lifetime_mode gauge
conntrack_exporter_lifetime_mode{mode="flow_table",netns=%[1]q} %[11]d
conntrack_exporter_lifetime_mode{mode="timestamp",netns=%[1]q} %[14]d
`, ns, st.Events[events.EventNew], st.Events[events.EventUpdate], st.Events[events.EventDestroy],
		st.Lost, st.Overruns, st.Malformed, st.WithoutTimestamp, st.Evictions, st.FlowTableEntries,
		mode[events.ModeFlowTable], st.ReceiveBuffer, st.Restarts, mode[events.ModeTimestamp])
}

// oneNamespace collects a collector's Update for one target, as the
// Exporter does.
type oneNamespace struct {
	c      Collector
	target netns.Target
	err    error
}

func (o *oneNamespace) Describe(ch chan<- *prometheus.Desc) { o.c.Describe(ch) }
func (o *oneNamespace) Collect(ch chan<- prometheus.Metric) {
	o.err = o.c.Update(context.Background(), o.target, exposition.ChannelSink(ch))
}

func TestEventsCollectorExposition(t *testing.T) {
	fakes := &fakeEventSources{sources: map[string]*fakeEventSource{}}
	c, subs := newFakeEvents(fakes)
	a, b := netns.Target{Name: "a", Path: "/run/netns/a"}, netns.Target{Name: "b", Path: "/run/netns/b"}
	for _, target := range []netns.Target{a, b} {
		if err := subs.Watch(context.Background(), target); err != nil {
			t.Fatal(err)
		}
	}
	st := events.Stats{
		Events: [events.NumEventTypes]uint64{3, 0, 200000}, Lost: 17, Overruns: 2, Malformed: 1,
		Observed: 199000, WithoutTimestamp: 983, Evictions: 4, FlowTableEntries: 12, Mode: events.ModeFlowTable,
		ReceiveBuffer: 268435456, Restarts: 1, Running: true,
	}
	fakes.sources["a"].stats = st
	sink := fakes.sources["a"].sink
	sink.Observe(events.Lifetime{Protocol: 6, TCPState: 3, Seconds: 300})
	sink.Observe(events.Lifetime{Protocol: 6, TCPState: 3, Seconds: 3})
	fakes.sources["b"].sink.Observe(events.Lifetime{Protocol: 17, Seconds: 30})

	o := &oneNamespace{c: c, target: a}
	counters := []string{
		"conntrack_events_total", "conntrack_exporter_event_overruns_total",
		"conntrack_exporter_event_subscriber_restarts_total", "conntrack_exporter_events_lost_total",
		"conntrack_exporter_events_malformed_total", "conntrack_exporter_events_receive_buffer_bytes",
		"conntrack_exporter_flow_table_entries", "conntrack_exporter_flow_table_evictions_total",
		"conntrack_exporter_flows_without_timestamp_total", "conntrack_exporter_lifetime_mode",
	}
	if err := testutil.CollectAndCompare(o, strings.NewReader(eventsExposition("a", st)), counters...); err != nil {
		t.Fatal(err)
	}
	if o.err != nil {
		t.Fatal(o.err)
	}
	// Every collection of a had a's subscriber count its queued events
	// first; b was not collected.
	if fakes.sources["a"].statsUnsynced != 0 || fakes.sources["a"].syncs == 0 || fakes.sources["b"].syncs != 0 {
		t.Fatalf("a: %d syncs, stats read %d times without a sync before; b: %d syncs",
			fakes.sources["a"].syncs, fakes.sources["a"].statsUnsynced, fakes.sources["b"].syncs)
	}
	// The histogram of a holds a's observations only.
	if n := testutil.CollectAndCount(o, histogram.Name); n != 1 {
		t.Fatalf("%d histogram series for a, want 1", n)
	}
	var hist strings.Builder
	hist.WriteString("# HELP " + histogram.Name + " " + histogram.Opts().Help + "\n# TYPE " + histogram.Name + " histogram\n")
	cum := 0
	for _, ub := range histogram.Buckets() {
		if ub >= 3 && cum == 0 {
			cum = 1
		}
		if ub >= 300 {
			cum = 2
		}
		fmt.Fprintf(&hist, "%s_bucket{end_state=\"established\",netns=\"a\",protocol=\"tcp\",le=\"%g\"} %d\n", histogram.Name, ub, cum)
	}
	fmt.Fprintf(&hist, "%s_bucket{end_state=\"established\",netns=\"a\",protocol=\"tcp\",le=\"+Inf\"} 2\n", histogram.Name)
	fmt.Fprintf(&hist, "%s_sum{end_state=\"established\",netns=\"a\",protocol=\"tcp\"} 303\n", histogram.Name)
	fmt.Fprintf(&hist, "%s_count{end_state=\"established\",netns=\"a\",protocol=\"tcp\"} 2\n", histogram.Name)
	if err := testutil.CollectAndCompare(o, strings.NewReader(hist.String()), histogram.Name); err != nil {
		t.Fatal(err)
	}
	// Registered with the other collectors' checks, the descriptors match
	// what is collected.
	if problems, err := testutil.CollectAndLint(o); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
}

func TestEventsCollectorSubscriberDown(t *testing.T) {
	fakes := &fakeEventSources{sources: map[string]*fakeEventSource{}}
	c, subs := newFakeEvents(fakes)
	target := netns.Self()
	if err := subs.Watch(context.Background(), target); err != nil {
		t.Fatal(err)
	}
	cause := errors.New("socket gone")
	fakes.sources["self"].stats = events.Stats{Running: false, Err: cause, Restarts: 3}
	ch := make(chan prometheus.Metric, 100)
	err := c.Update(context.Background(), target, exposition.ChannelSink(ch))
	if !errors.Is(err, ErrSubscriberDown) || !errors.Is(err, cause) {
		t.Fatalf("Update = %v, want ErrSubscriberDown wrapping the cause", err)
	}
	if len(ch) == 0 {
		t.Fatal("no counters sent while the subscriber is down")
	}
}

func TestEventsCollectorWatchForget(t *testing.T) {
	fakes := &fakeEventSources{sources: map[string]*fakeEventSource{}}
	c, subs := newFakeEvents(fakes)
	target := netns.Target{Name: "x", Path: "/run/netns/x"}
	if err := c.Update(context.Background(), target, exposition.ChannelSink(make(chan prometheus.Metric, 100))); !errors.Is(err, ErrNotWatched) {
		t.Fatalf("Update before Watch = %v", err)
	}
	if err := subs.Watch(context.Background(), target); err != nil {
		t.Fatal(err)
	}
	first := fakes.sources["x"]
	if err := subs.Watch(context.Background(), target); err != nil || fakes.sources["x"] != first {
		t.Fatalf("second Watch: %v, new source %v", err, fakes.sources["x"] != first)
	}
	subs.Forget(target)
	if !first.stopped {
		t.Fatal("Forget did not stop the subscriber")
	}
	if err := c.Update(context.Background(), target, exposition.ChannelSink(make(chan prometheus.Metric, 100))); !errors.Is(err, ErrNotWatched) {
		t.Fatalf("Update after Forget = %v", err)
	}
	subs.Forget(target) // twice is fine

	fakes.err = errors.New("no permission")
	if err := subs.Watch(context.Background(), target); !errors.Is(err, fakes.err) {
		t.Fatalf("Watch = %v, want the start error", err)
	}
}

// The subscribers the events collector reads are started and stopped
// with each namespace.
var _ watch.Watcher = (*Subscribers)(nil)

// TestLifetimeSinkLabels: the sink maps protocol numbers and TCP states to
// their bounded label values, and observes without allocating once a
// series exists.
func TestLifetimeSinkLabels(t *testing.T) {
	h := histogram.New("self")
	sink := LifetimeSink{Histogram: h}
	sink.Observe(events.Lifetime{Protocol: 6, TCPState: 3, Seconds: 300})
	sink.Observe(events.Lifetime{Protocol: 17, TCPState: 3, Seconds: 2}) // a state on UDP is ignored
	sink.Observe(events.Lifetime{Protocol: 99, Seconds: 1})
	sink.Observe(events.Lifetime{Protocol: 6, TCPState: 200, Seconds: 1}) // unknown state
	text := gatherText(t, h)
	for _, want := range []string{
		`conntrack_flow_lifetime_seconds_count{end_state="established",netns="self",protocol="tcp"} 1`,
		`conntrack_flow_lifetime_seconds_count{end_state="none",netns="self",protocol="udp"} 1`,
		`conntrack_flow_lifetime_seconds_count{end_state="none",netns="self",protocol="other"} 1`,
		`conntrack_flow_lifetime_seconds_count{end_state="none",netns="self",protocol="tcp"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("missing %s", want)
		}
	}
	allocs := testing.AllocsPerRun(100, func() {
		sink.Observe(events.Lifetime{Protocol: 6, TCPState: 3, Seconds: 301})
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per observation", allocs)
	}
}

// gatherText returns the text exposition of c, gathered by a pedantic registry.
func gatherText(t *testing.T, c prometheus.Collector) string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}
