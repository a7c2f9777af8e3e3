package collector

import (
	"context"
	"fmt"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ct-exporter/ct-exporter/internal/exposition"
	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/tablescan"
	"github.com/ct-exporter/ct-exporter/internal/watch"
)

// TableName is the name of the table collector.
const TableName = "table"

// otherLabel is the label value of the remainder of a top-K breakdown.
const otherLabel = "other"

// TableStates serves the outcome of the last table scan of each
// namespace; *watch.TableScans is one.
type TableStates interface {
	// Last returns nil before the first scan finished, and watched false
	// for a namespace that is not scanned.
	Last(target netns.Target) (state *watch.TableState, watched bool)
}

// TableCollector exports the table breakdown: for every watched namespace
// the result of the last background scan (watch.TableScans scans each
// table at startup and then every interval). A scrape never waits for a
// scan. When scans fall behind, conntrack_table_last_scan_timestamp_seconds
// shows it.
//
// Metrics (every one labelled netns):
//   - conntrack_table_entries{protocol,state}
//   - conntrack_table_top_source_entries{source}: the top K original-direction
//     source addresses and one source="other" with the rest.
//   - conntrack_table_top_destination_port_entries{protocol,port}: the top K
//     original-direction destination ports of all protocols ranked together
//     (port="none" for protocols without ports, such as ICMP) and one
//     protocol="other",port="other" with the rest of every protocol.
//   - conntrack_table_zone_entries{zone}, conntrack_table_mark_entries{mark}:
//     the same top K plus "other", only when enabled.
//   - conntrack_table_top_error_bound_entries{breakdown}: how much a top-K
//     value may exceed the true count (0 while exact).
//   - conntrack_table_shortened_timeout_entries
//   - conntrack_table_nat_entries{nat}: entries by the address translation
//     the kernel applied (none, snat, dnat, both); the four sum to the
//     table.
//   - conntrack_table_unreplied_entries: entries that have seen no reply.
//   - conntrack_table_evictable_entries: entries not ASSURED, which
//     early_drop and the GC may free when the table is full.
//   - conntrack_table_helper_entries{helper}: entries with a conntrack
//     helper (ALG) attached, by the kernel's helper name; at most
//     tablescan.MaxHelpers names plus helper="other".
//   - conntrack_table_scan_malformed_entries, conntrack_table_scan_interrupted
//   - conntrack_table_scan_duration_seconds,
//     conntrack_table_last_scan_timestamp_seconds
//
// Each top-K breakdown adds up to the sum of conntrack_table_entries.
// Until the first scan of a namespace finishes, Update sends nothing and
// succeeds. When the last scan failed, it sends only the timestamp of the
// last successful scan and returns the error; the breakdown of an older
// scan is never served as current.
type TableCollector struct {
	states TableStates

	entries, sources, ports, zones, marks, errorBound *exposition.Desc
	shortened, malformed, interrupted                 *exposition.Desc
	nat, unreplied, evictable, helpers                *exposition.Desc
	duration, timestamp                               *exposition.Desc
}

// NewTableCollector returns the table collector over states.
func NewTableCollector(states TableStates) *TableCollector {
	// Every table metric is a gauge: a count or a time of the last scan.
	desc := func(name, help string, labels ...string) *exposition.Desc {
		return exposition.NewDesc(prometheus.BuildFQName(MetricPrefix, "table", name), help, prometheus.GaugeValue, append(labels, NetnsLabel)...)
	}
	return &TableCollector{
		states: states,
		entries: desc("entries",
			"Conntrack entries by protocol and TCP state (none for other protocols), from the last table scan.",
			"protocol", "state"),
		sources: desc("top_source_entries",
			"Conntrack entries of the top original-direction source addresses, and of all others (source=\"other\"), from the last table scan.",
			"source"),
		ports: desc("top_destination_port_entries",
			"Conntrack entries of the top original-direction destination ports (port=\"none\" for protocols without ports), and of all others (protocol=\"other\",port=\"other\"), from the last table scan.",
			"protocol", "port"),
		zones: desc("zone_entries",
			"Conntrack entries of the top conntrack zones (0: the default zone), and of all others (zone=\"other\"), from the last table scan.",
			"zone"),
		marks: desc("mark_entries",
			"Conntrack entries of the top conntrack marks, and of all others (mark=\"other\"), from the last table scan.",
			"mark"),
		errorBound: desc("top_error_bound_entries",
			"Upper bound on how much a top-K count of the breakdown exceeds the true count; 0 while the distinct values fit in the counters and every count is exact.",
			"breakdown"),
		shortened: desc("shortened_timeout_entries",
			"ESTABLISHED TCP entries whose remaining timeout is at or below nf_conntrack_tcp_timeout_max_retrans/_unacknowledged while the established timeout is larger: their segments went unacknowledged and they are on the path to expire without FIN or RST. From the last table scan."),
		nat: desc("nat_entries",
			"Conntrack entries by the address translation the kernel applied (none, snat, dnat, both, from the NAT status bits); the four sum to the table. From the last table scan.",
			"nat"),
		unreplied: desc("unreplied_entries",
			"Conntrack entries that have seen no reply yet (SYN floods, scans, dead backends, UDP to nowhere), from the last table scan."),
		evictable: desc("evictable_entries",
			"Conntrack entries not ASSURED: the ones early_drop and the garbage collector may free when the table is full. From the last table scan."),
		helpers: desc("helper_entries",
			"Conntrack entries with a conntrack helper (ALG) attached, by the helper name the kernel reports; names beyond the first 16 count as helper=\"other\". From the last table scan.",
			"helper"),
		malformed: desc("scan_malformed_entries",
			"Entries of the last table scan that did not decode and were skipped."),
		interrupted: desc("scan_interrupted",
			"1 when the kernel flagged the dump of the last table scan as interrupted by table changes (NLM_F_DUMP_INTR), else 0."),
		duration: desc("scan_duration_seconds",
			"How long the last successful table scan took."),
		timestamp: desc("last_scan_timestamp_seconds",
			"When the last successful table scan finished, in seconds since the Unix epoch."),
	}
}

// Describe implements Collector.
func (c *TableCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*exposition.Desc{
		c.entries, c.sources, c.ports, c.zones, c.marks, c.errorBound,
		c.shortened, c.malformed, c.interrupted, c.duration, c.timestamp,
		c.nat, c.unreplied, c.evictable, c.helpers,
	} {
		ch <- d.Desc()
	}
}

// Update implements Collector: it sends the metrics of the last scan of
// target without waiting for a scan in progress.
func (c *TableCollector) Update(_ context.Context, target netns.Target, sink *exposition.Sink) error {
	st, watched := c.states.Last(target)
	if !watched {
		return fmt.Errorf("table: netns %s: %w", target, ErrNotWatched)
	}
	if st == nil {
		// The first scan has not finished: nothing to serve, and nothing
		// failed. With many namespaces the first round takes a while.
		return nil
	}
	if st.Err != nil {
		if st.Last != nil {
			sink.Add(c.timestamp, float64(st.Last.End.UnixNano())/1e9, target.Name)
		}
		return fmt.Errorf("table: last scan failed: %w", st.Err)
	}
	c.send(st.Last, target, sink)
	return nil
}

// send sends the metrics of one successful scan.
func (c *TableCollector) send(s *tablescan.Scan, target netns.Target, sink *exposition.Sink) {
	ns := target.Name
	for _, e := range s.States {
		sink.Add(c.entries, float64(e.Entries), e.Protocol, e.State, ns)
	}
	if s.Sources != nil && s.Ports != nil {
		for _, v := range s.Sources.Top {
			sink.Add(c.sources, float64(v.Entries), v.Value.String(), ns)
		}
		sink.Add(c.sources, float64(s.Sources.Other), otherLabel, ns)
		for _, v := range s.Ports.Top {
			sink.Add(c.ports, float64(v.Entries), v.Value.ProtocolLabel(), v.Value.PortLabel(), ns)
		}
		sink.Add(c.ports, float64(s.Ports.Other), otherLabel, otherLabel, ns)
		sink.Add(c.errorBound, float64(s.Sources.MaxError), "source", ns)
		sink.Add(c.errorBound, float64(s.Ports.MaxError), "destination_port", ns)
	}
	if s.Zones != nil && s.Marks != nil {
		for _, v := range s.Zones.Top {
			sink.Add(c.zones, float64(v.Entries), strconv.FormatUint(uint64(v.Value), 10), ns)
		}
		sink.Add(c.zones, float64(s.Zones.Other), otherLabel, ns)
		for _, v := range s.Marks.Top {
			sink.Add(c.marks, float64(v.Entries), strconv.FormatUint(uint64(v.Value), 10), ns)
		}
		sink.Add(c.marks, float64(s.Marks.Other), otherLabel, ns)
		sink.Add(c.errorBound, float64(s.Zones.MaxError), "zone", ns)
		sink.Add(c.errorBound, float64(s.Marks.MaxError), "mark", ns)
	}
	sink.Add(c.shortened, float64(s.Shortened), ns)
	for _, n := range s.NAT.Kinds() {
		sink.Add(c.nat, float64(n.Entries), n.NAT, ns)
	}
	sink.Add(c.unreplied, float64(s.Unreplied), ns)
	sink.Add(c.evictable, float64(s.Evictable), ns)
	for _, h := range s.Helpers {
		sink.Add(c.helpers, float64(h.Entries), h.Helper, ns)
	}
	sink.Add(c.malformed, float64(s.Malformed), ns)
	interrupted := 0.0
	if s.Dump.Interrupted {
		interrupted = 1
	}
	sink.Add(c.interrupted, interrupted, ns)
	sink.Add(c.duration, s.Duration().Seconds(), ns)
	sink.Add(c.timestamp, float64(s.End.UnixNano())/1e9, ns)
}
