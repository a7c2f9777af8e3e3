package collector

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ct-exporter/ct-exporter/internal/ctnl"
	"github.com/ct-exporter/ct-exporter/internal/exposition"
	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/tablescan"
	"github.com/ct-exporter/ct-exporter/internal/watch"
)

// fakeScanner returns queued outcomes, one per scan; once the queue is
// empty it repeats the last one. A scan blocks while gate is non-nil and
// open.
type fakeScanner struct {
	mu       sync.Mutex
	outcomes []fakeOutcome
	calls    int
	gate     chan struct{}
	deadline time.Duration // time to deadline seen by the last scan
	sleep    time.Duration // how long a scan takes
	active   int           // scans in progress
	overlap  bool          // two scans ran at once
	called   *sync.Cond    // broadcast at each call, on mu
}

type fakeOutcome struct {
	scan *tablescan.Scan
	err  error
}

func (f *fakeScanner) Scan(ctx context.Context, _ netns.Target) (*tablescan.Scan, error) {
	f.mu.Lock()
	f.calls++
	o := f.outcomes[0]
	if len(f.outcomes) > 1 {
		f.outcomes = f.outcomes[1:]
	}
	gate := f.gate
	if d, ok := ctx.Deadline(); ok {
		f.deadline = time.Until(d)
	}
	f.active++
	f.overlap = f.overlap || f.active > 1
	f.calledLocked().Broadcast()
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.active--
		f.mu.Unlock()
	}()
	time.Sleep(f.sleep)
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return o.scan, o.err
}

// calledLocked returns the condition broadcast at each call; the caller
// holds f.mu.
func (f *fakeScanner) calledLocked() *sync.Cond {
	if f.called == nil {
		f.called = sync.NewCond(&f.mu)
	}
	return f.called
}

// waitCalls waits until the scanner has been called n times.
func (f *fakeScanner) waitCalls(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for f.calls < n {
		f.calledLocked().Wait()
	}
}

// waitStored waits until the outcomes of n scans are stored: scan n+1 has
// started, and TableScans stores each outcome before the next scan.
func (f *fakeScanner) waitStored(n int) { f.waitCalls(n + 1) }

// newFakeTable returns a table collector over background scans by f.
func newFakeTable(f *fakeScanner, opts watch.TableScanOptions) (*TableCollector, *watch.TableScans) {
	opts.Scanner = f
	scans := watch.NewTableScans(opts)
	return NewTableCollector(scans), scans
}

func (f *fakeScanner) lastDeadline() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.deadline
}

func (f *fakeScanner) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

var (
	scanEnd   = time.Unix(1764000000, 500_000_000)
	scanStart = scanEnd.Add(-1250 * time.Millisecond)
)

func goldenScan() *tablescan.Scan {
	a := netip.MustParseAddr
	return &tablescan.Scan{
		Start: scanStart, End: scanEnd,
		Dump: ctnl.DumpInfo{Entries: 1002, Datagrams: 9},
		Result: &tablescan.Result{
			Total: 1000, Malformed: 2, Shortened: 40,
			NAT:       tablescan.NATCounts{None: 900, SNAT: 60, DNAT: 30, Both: 10},
			Unreplied: 25, Evictable: 120,
			Helpers: []tablescan.HelperCount{
				{Helper: "ftp", Entries: 3}, {Helper: "sip", Entries: 1}, {Helper: tablescan.OtherHelper, Entries: 2},
			},
			States: []tablescan.StateCount{
				{Protocol: "icmp", State: "none", Entries: 10},
				{Protocol: "tcp", State: "established", Entries: 700},
				{Protocol: "tcp", State: "time_wait", Entries: 90},
				{Protocol: "udp", State: "none", Entries: 200},
			},
			Sources: &tablescan.Top[netip.Addr]{
				Top: []tablescan.Counted[netip.Addr]{
					{Value: a("10.0.0.1"), Entries: 500},
					{Value: a("2001:db8::1"), Entries: 300},
				},
				Other: 200,
			},
			Ports: &tablescan.Top[tablescan.Port]{
				Top: []tablescan.Counted[tablescan.Port]{
					{Value: tablescan.Port{Protocol: 6, Port: 443, HasPort: true}, Entries: 600},
					{Value: tablescan.Port{Protocol: 1}, Entries: 10},
				},
				Other: 390,
			},
			Zones: &tablescan.Top[uint16]{Top: []tablescan.Counted[uint16]{{Value: 0, Entries: 990}, {Value: 5, Entries: 10}}},
			Marks: &tablescan.Top[uint32]{Top: []tablescan.Counted[uint32]{{Value: 0, Entries: 800}}, Other: 200, MaxError: 3},
		},
	}
}

const goldenTable = `# HELP conntrack_table_entries Conntrack entries by protocol and TCP state (none for other protocols), from the last table scan.
# TYPE conntrack_table_entries gauge
conntrack_table_entries{netns="self",protocol="icmp",state="none"} 10
conntrack_table_entries{netns="self",protocol="tcp",state="established"} 700
conntrack_table_entries{netns="self",protocol="tcp",state="time_wait"} 90
conntrack_table_entries{netns="self",protocol="udp",state="none"} 200
# HELP conntrack_table_evictable_entries Conntrack entries not ASSURED: the ones early_drop and the garbage collector may free when the table is full. From the last table scan.
# TYPE conntrack_table_evictable_entries gauge
conntrack_table_evictable_entries{netns="self"} 120
# HELP conntrack_table_helper_entries Conntrack entries with a conntrack helper (ALG) attached, by the helper name the kernel reports; names beyond the first 16 count as helper="other". From the last table scan.
# TYPE conntrack_table_helper_entries gauge
conntrack_table_helper_entries{helper="ftp",netns="self"} 3
conntrack_table_helper_entries{helper="other",netns="self"} 2
conntrack_table_helper_entries{helper="sip",netns="self"} 1
# HELP conntrack_table_last_scan_timestamp_seconds When the last successful table scan finished, in seconds since the Unix epoch.
# TYPE conntrack_table_last_scan_timestamp_seconds gauge
conntrack_table_last_scan_timestamp_seconds{netns="self"} 1.7640000005e+09
# HELP conntrack_table_mark_entries Conntrack entries of the top conntrack marks, and of all others (mark="other"), from the last table scan.
# TYPE conntrack_table_mark_entries gauge
conntrack_table_mark_entries{mark="0",netns="self"} 800
conntrack_table_mark_entries{mark="other",netns="self"} 200
# HELP conntrack_table_nat_entries Conntrack entries by the address translation the kernel applied (none, snat, dnat, both, from the NAT status bits); the four sum to the table. From the last table scan.
# TYPE conntrack_table_nat_entries gauge
conntrack_table_nat_entries{nat="both",netns="self"} 10
conntrack_table_nat_entries{nat="dnat",netns="self"} 30
conntrack_table_nat_entries{nat="none",netns="self"} 900
conntrack_table_nat_entries{nat="snat",netns="self"} 60
# HELP conntrack_table_scan_duration_seconds How long the last successful table scan took.
# TYPE conntrack_table_scan_duration_seconds gauge
conntrack_table_scan_duration_seconds{netns="self"} 1.25
# HELP conntrack_table_scan_interrupted 1 when the kernel flagged the dump of the last table scan as interrupted by table changes (NLM_F_DUMP_INTR), else 0.
# TYPE conntrack_table_scan_interrupted gauge
conntrack_table_scan_interrupted{netns="self"} 0
# HELP conntrack_table_scan_malformed_entries Entries of the last table scan that did not decode and were skipped.
# TYPE conntrack_table_scan_malformed_entries gauge
conntrack_table_scan_malformed_entries{netns="self"} 2
# HELP conntrack_table_shortened_timeout_entries ESTABLISHED TCP entries whose remaining timeout is at or below nf_conntrack_tcp_timeout_max_retrans/_unacknowledged while the established timeout is larger: their segments went unacknowledged and they are on the path to expire without FIN or RST. From the last table scan.
# TYPE conntrack_table_shortened_timeout_entries gauge
conntrack_table_shortened_timeout_entries{netns="self"} 40
# HELP conntrack_table_top_destination_port_entries Conntrack entries of the top original-direction destination ports (port="none" for protocols without ports), and of all others (protocol="other",port="other"), from the last table scan.
# TYPE conntrack_table_top_destination_port_entries gauge
conntrack_table_top_destination_port_entries{netns="self",port="443",protocol="tcp"} 600
conntrack_table_top_destination_port_entries{netns="self",port="none",protocol="icmp"} 10
conntrack_table_top_destination_port_entries{netns="self",port="other",protocol="other"} 390
# HELP conntrack_table_top_error_bound_entries Upper bound on how much a top-K count of the breakdown exceeds the true count; 0 while the distinct values fit in the counters and every count is exact.
# TYPE conntrack_table_top_error_bound_entries gauge
conntrack_table_top_error_bound_entries{breakdown="destination_port",netns="self"} 0
conntrack_table_top_error_bound_entries{breakdown="mark",netns="self"} 3
conntrack_table_top_error_bound_entries{breakdown="source",netns="self"} 0
conntrack_table_top_error_bound_entries{breakdown="zone",netns="self"} 0
# HELP conntrack_table_top_source_entries Conntrack entries of the top original-direction source addresses, and of all others (source="other"), from the last table scan.
# TYPE conntrack_table_top_source_entries gauge
conntrack_table_top_source_entries{netns="self",source="10.0.0.1"} 500
conntrack_table_top_source_entries{netns="self",source="2001:db8::1"} 300
conntrack_table_top_source_entries{netns="self",source="other"} 200
# HELP conntrack_table_unreplied_entries Conntrack entries that have seen no reply yet (SYN floods, scans, dead backends, UDP to nowhere), from the last table scan.
# TYPE conntrack_table_unreplied_entries gauge
conntrack_table_unreplied_entries{netns="self"} 25
# HELP conntrack_table_zone_entries Conntrack entries of the top conntrack zones (0: the default zone), and of all others (zone="other"), from the last table scan.
# TYPE conntrack_table_zone_entries gauge
conntrack_table_zone_entries{netns="self",zone="0"} 990
conntrack_table_zone_entries{netns="self",zone="5"} 10
conntrack_table_zone_entries{netns="self",zone="other"} 0
`

func TestTableCollectorGolden(t *testing.T) {
	f := &fakeScanner{outcomes: []fakeOutcome{{scan: goldenScan()}}}
	c, scans := newFakeTable(f, watch.TableScanOptions{Interval: time.Millisecond})
	target := netns.Self()
	if err := scans.Watch(context.Background(), target); err != nil {
		t.Fatal(err)
	}
	defer scans.Forget(target)
	f.waitStored(1)
	o := &oneTarget{c: c, target: target}
	if err := testutil.CollectAndCompare(o, strings.NewReader(goldenTable)); err != nil {
		t.Fatal(err)
	}
	if o.err != nil {
		t.Fatal(o.err)
	}
	if d := f.lastDeadline(); d <= 0 || d > watch.DefaultTableTimeout {
		t.Fatalf("scan deadline %v, want within the default timeout %v", d, watch.DefaultTableTimeout)
	}
}

func TestTableCollectorTopKDisabled(t *testing.T) {
	s := goldenScan()
	r := *s.Result
	r.Sources, r.Ports, r.Zones, r.Marks = nil, nil, nil, nil
	s.Result = &r
	f := &fakeScanner{outcomes: []fakeOutcome{{scan: s}}}
	c, scans := newFakeTable(f, watch.TableScanOptions{Interval: time.Millisecond})
	target := netns.Self()
	if err := scans.Watch(context.Background(), target); err != nil {
		t.Fatal(err)
	}
	defer scans.Forget(target)
	f.waitStored(1)
	o := &oneTarget{c: c, target: target}
	n, err := testutil.GatherAndCount(registry(t, o))
	if err != nil {
		t.Fatal(err)
	}
	// 4 entries series, shortened, malformed, interrupted, duration,
	// timestamp; and the breakdowns that do not depend on top-K: 4 NAT
	// kinds, unreplied, evictable, 3 helpers.
	if n != 9+4+2+3 {
		t.Fatalf("%d series with top-K disabled, want %d", n, 9+4+2+3)
	}
}

func registry(t *testing.T, c prometheus.Collector) *prometheus.Registry {
	t.Helper()
	r := prometheus.NewPedanticRegistry()
	if err := r.Register(c); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestTableCollectorBeforeFirstScanAndUnwatched(t *testing.T) {
	f := &fakeScanner{outcomes: []fakeOutcome{{scan: goldenScan()}}, gate: make(chan struct{})}
	c, scans := newFakeTable(f, watch.TableScanOptions{Interval: time.Millisecond})
	target := netns.Target{Name: "a", Path: "/run/netns/a"}
	ch := make(chan prometheus.Metric, 100)
	if err := c.Update(context.Background(), target, exposition.ChannelSink(ch)); err == nil || !strings.Contains(err.Error(), "not watched") {
		t.Fatalf("unwatched: %v", err)
	}
	if err := scans.Watch(context.Background(), target); err != nil {
		t.Fatal(err)
	}
	if err := scans.Watch(context.Background(), target); err == nil {
		t.Fatal("second Watch of the same namespace succeeded")
	}
	// The first scan is blocked until the gate opens, which never
	// happens: a scrape that waited for it would never return. It answers
	// with nothing.
	f.waitCalls(1)
	if err := c.Update(context.Background(), target, exposition.ChannelSink(ch)); err != nil {
		t.Fatalf("before the first scan: %v", err)
	}
	if len(ch) != 0 {
		t.Fatalf("scrape sent %d metrics before the first scan", len(ch))
	}
	// Forget ends the blocked scan and drops the namespace.
	scans.Forget(target)
	if err := c.Update(context.Background(), target, exposition.ChannelSink(ch)); err == nil || !strings.Contains(err.Error(), "not watched") {
		t.Fatalf("after Forget: %v", err)
	}
	scans.Forget(target) // a second Forget is harmless
}

func TestTableCollectorScrapeDoesNotWaitForScan(t *testing.T) {
	f := &fakeScanner{outcomes: []fakeOutcome{{scan: goldenScan()}}}
	c, scans := newFakeTable(f, watch.TableScanOptions{Interval: 10 * time.Millisecond})
	target := netns.Self()
	if err := scans.Watch(context.Background(), target); err != nil {
		t.Fatal(err)
	}
	defer scans.Forget(target)
	f.waitStored(1)
	// Block the following scans for good: a scrape that waited for one
	// would never return. Scrapes keep serving the last result.
	f.mu.Lock()
	f.gate = make(chan struct{})
	calls := f.calls
	f.mu.Unlock()
	f.waitCalls(calls + 1) // a scan is in progress, and blocked
	for range 5 {
		n, err := testutil.GatherAndCount(registry(t, &oneTarget{c: c, target: target}), "conntrack_table_top_source_entries")
		if err != nil || n != 3 {
			t.Fatalf("%d source series, %v", n, err)
		}
	}
}

func TestTableCollectorScansOneNamespaceAtATime(t *testing.T) {
	f := &fakeScanner{outcomes: []fakeOutcome{{scan: goldenScan()}}, sleep: 5 * time.Millisecond}
	_, scans := newFakeTable(f, watch.TableScanOptions{Interval: time.Millisecond})
	a, b := netns.Target{Name: "a", Path: "/run/netns/a"}, netns.Target{Name: "b", Path: "/run/netns/b"}
	for _, target := range []netns.Target{a, b} {
		if err := scans.Watch(context.Background(), target); err != nil {
			t.Fatal(err)
		}
		defer scans.Forget(target)
	}
	f.waitCalls(20)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.overlap {
		t.Fatal("scans of two namespaces overlapped")
	}
}

func TestTableCollectorFailedScan(t *testing.T) {
	boom := errors.New("netns gone")
	f := &fakeScanner{outcomes: []fakeOutcome{{scan: goldenScan()}, {err: boom}}}
	c, scans := newFakeTable(f, watch.TableScanOptions{Interval: 10 * time.Millisecond})
	target := netns.Self()
	if err := scans.Watch(context.Background(), target); err != nil {
		t.Fatal(err)
	}
	defer scans.Forget(target)
	f.waitStored(3)
	o := &oneTarget{c: c, target: target}
	want := `# HELP conntrack_table_last_scan_timestamp_seconds When the last successful table scan finished, in seconds since the Unix epoch.
# TYPE conntrack_table_last_scan_timestamp_seconds gauge
conntrack_table_last_scan_timestamp_seconds{netns="self"} 1.7640000005e+09
`
	if err := testutil.CollectAndCompare(o, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(o.err, boom) {
		t.Fatalf("err = %v, want %v", o.err, boom)
	}
}

// TestTableCollectorCardinality feeds 100k distinct sources through the
// real aggregator: the scrape still has K+1 source series.
func TestTableCollectorCardinality(t *testing.T) {
	const k = 10
	a := tablescan.NewAggregator(tablescan.Options{TopK: k, ByZoneMark: true, Capacity: 4096})
	a.Reset(tablescan.Timeouts{Established: 432000, MaxRetrans: 300, Unacknowledged: 300})
	for i := range 100000 {
		a.Add(&ctnl.Flow{
			Present:  ctnl.HasProtocol | ctnl.HasAddrs | ctnl.HasPorts | ctnl.HasMark | ctnl.HasZone,
			Protocol: 17, Src: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}),
			Dst: netip.MustParseAddr("192.0.2.1"), DstPort: uint16(i), Mark: uint32(i), Zone: uint16(i),
		})
	}
	s := &tablescan.Scan{Result: a.Result(), Start: scanStart, End: scanEnd}
	f := &fakeScanner{outcomes: []fakeOutcome{{scan: s}}}
	c, scans := newFakeTable(f, watch.TableScanOptions{Interval: time.Millisecond})
	target := netns.Self()
	if err := scans.Watch(context.Background(), target); err != nil {
		t.Fatal(err)
	}
	defer scans.Forget(target)
	f.waitStored(1)
	r := registry(t, &oneTarget{c: c, target: target})
	for _, name := range []string{
		"conntrack_table_top_source_entries", "conntrack_table_top_destination_port_entries",
		"conntrack_table_zone_entries", "conntrack_table_mark_entries",
	} {
		n, err := testutil.GatherAndCount(r, name)
		if err != nil || n != k+1 {
			t.Fatalf("%s: %d series, %v; want %d", name, n, err, k+1)
		}
	}
	var sum float64
	mfs, err := r.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "conntrack_table_top_source_entries" {
			for _, m := range mf.GetMetric() {
				sum += m.GetGauge().GetValue()
			}
		}
	}
	if sum != 100000 {
		t.Fatalf("source series sum to %v, want 100000", sum)
	}
}
