package collector

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ct-exporter/ct-exporter/events"
	"github.com/ct-exporter/ct-exporter/histogram"
	"github.com/ct-exporter/ct-exporter/internal/exposition"
	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/watch"
)

// EventsName is the name of the events collector.
const EventsName = "events"

// ErrNotWatched reports a scrape of a namespace that is not watched.
var ErrNotWatched = errors.New("namespace is not watched")

// ErrSubscriberDown reports that a namespace's event subscriber has no
// open socket: it failed and is waiting to restart.
var ErrSubscriberDown = errors.New("event subscriber is not running")

// LifetimeSink hands the lifetimes of an events.Subscriber to a lifetime
// histogram, mapping the protocol number and TCP state to their bounded
// label values.
type LifetimeSink struct {
	Histogram *histogram.Lifetimes
}

// NewLifetimeSink returns a LifetimeSink over a new, empty histogram of
// target; it is the sink factory of watch.NewSubscribers.
func NewLifetimeSink(target netns.Target) LifetimeSink {
	return LifetimeSink{Histogram: histogram.New(target.Name)}
}

// Observe implements events.Sink.
func (s LifetimeSink) Observe(l events.Lifetime) {
	p := histogram.ProtocolFromNumber(l.Protocol)
	end := histogram.EndNone
	if p == histogram.ProtocolTCP {
		end = histogram.EndStateFromTCP(l.TCPState)
	}
	s.Histogram.Observe(p, end, l.Seconds)
}

// Subscribers are the event subscribers of the watched namespaces, each
// feeding a lifetime histogram.
type Subscribers = watch.Subscribers[LifetimeSink]

// EventsCollector exports flow lifetimes and who ends flows: for every
// watched namespace, the lifetime histogram its event subscriber (run by
// Subscribers) feeds, the top K of the subscriber's sliding window of
// DESTROY events, and the subscriber's own counters.
//
// Metrics (every one labelled netns):
//   - conntrack_flow_lifetime_seconds{protocol,end_state}: histogram.
//   - conntrack_flow_ends_top_source{source}: flows that ended in the
//     window, for the top K original-direction sources and one
//     source="other" with the rest; they sum to the window's flow ends.
//   - conntrack_flow_silent_ends_top_destination{destination,port}: flows
//     that reached ESTABLISHED and ended still ESTABLISHED in the window,
//     for the top K original-direction destinations (address and port)
//     and one destination="other",port="other" with the rest.
//   - conntrack_flow_top_window_ends{breakdown}: every flow end
//     (breakdown="source") and every silent end
//     (breakdown="silent_destination") counted in the window: what each
//     top-K family sums to.
//   - conntrack_flow_top_error_bound_ends{breakdown}: how far any top-K
//     count may be from the true count in the window, either way (0 while
//     exact).
//
// The top-K series and the error bound are left out when K is 0; the
// window totals stay. The values are gauges: counts in a sliding window go
// down as old events leave it.
//   - conntrack_events_total{type}: events received (new, update, destroy).
//   - conntrack_exporter_events_lost_total: events the kernel dropped because
//     the socket's queue was full (exact: the socket's drop count).
//   - conntrack_exporter_event_overruns_total: receives that failed with
//     ENOBUFS.
//   - conntrack_exporter_events_malformed_total: messages skipped because
//     they did not decode.
//   - conntrack_exporter_flows_without_timestamp_total: ASSURED flows that
//     ended with no usable start, so no lifetime was observed.
//   - conntrack_exporter_lifetime_mode{mode}: 1 for the active mode
//     (timestamp or flow_table), 0 for the other.
//   - conntrack_exporter_flow_table_entries,
//     conntrack_exporter_flow_table_evictions_total: the flow_table mode's
//     bounded table.
//   - conntrack_exporter_events_receive_buffer_bytes: the socket's receive
//     buffer as the kernel reports it.
//   - conntrack_exporter_event_subscriber_restarts_total.
//
// While a subscriber is down (between a failure and the restart), Update
// still sends the counters and returns ErrSubscriberDown.
type EventsCollector struct {
	subs *Subscribers
	topK int

	events, lost, overruns, malformed, noTimestamp *exposition.Desc
	mode, tableEntries, evictions, rcvbuf          *exposition.Desc
	restarts                                       *exposition.Desc
	topSources, topSilent, windowEnds, errorBound  *exposition.Desc
	lifetimeDescs                                  []*prometheus.Desc
	// eventTypes are the event types in the order of their label values,
	// in which a namespace's series go out: the scrape then merges the
	// namespaces' lines instead of sorting them.
	eventTypes []events.EventType
}

// Breakdown label values of the window totals and error bounds.
const (
	breakdownSource            = "source"
	breakdownSilentDestination = "silent_destination"
)

// NewEventsCollector returns the events collector over subs; topK is the
// number of sources and destinations named in the top-K families (0
// leaves them out).
func NewEventsCollector(subs *Subscribers, topK int) *EventsCollector {
	desc := func(subsystem, name, help string, t prometheus.ValueType, labels ...string) *exposition.Desc {
		return exposition.NewDesc(prometheus.BuildFQName(MetricPrefix, subsystem, name), help, t, append(labels, NetnsLabel)...)
	}
	const counter, gauge = prometheus.CounterValue, prometheus.GaugeValue
	c := &EventsCollector{
		subs: subs,
		topK: topK,
		topSources: desc("flow", "ends_top_source",
			"Flows that ended within the sliding window, by original-direction source address: the top K sources, and all others (source=\"other\"). The series sum to conntrack_flow_top_window_ends{breakdown=\"source\"}.",
			gauge, "source"),
		topSilent: desc("flow", "silent_ends_top_destination",
			"Flows that reached ESTABLISHED and ended still ESTABLISHED (no FIN or RST seen) within the sliding window, by original-direction destination address and port: the top K, and all others (destination=\"other\",port=\"other\"). The series sum to conntrack_flow_top_window_ends{breakdown=\"silent_destination\"}.",
			gauge, "destination", "port"),
		windowEnds: desc("flow", "top_window_ends",
			"Flow ends (breakdown=\"source\") and silent ends (breakdown=\"silent_destination\") counted within the sliding window of the top-K families (exact).",
			gauge, "breakdown"),
		errorBound: desc("flow", "top_error_bound_ends",
			"How far any top-K count of the breakdown may be from the true count in the sliding window, either way (the count is within ± this bound); 0 while every time step saw no more distinct keys than its counters and every count is exact.",
			gauge, "breakdown"),
		events: desc("", "events_total",
			"Conntrack events received from the kernel, by type (new, update, destroy).",
			counter, "type"),
		lost: desc("exporter", "events_lost_total",
			"Conntrack events the kernel dropped because the exporter's socket queue was full (the socket's exact drop count).",
			counter),
		overruns: desc("exporter", "event_overruns_total",
			"Receives on the event socket that failed with ENOBUFS because events had been dropped.",
			counter),
		malformed: desc("exporter", "events_malformed_total",
			"Conntrack event messages skipped because they did not decode.",
			counter),
		noTimestamp: desc("exporter", "flows_without_timestamp_total",
			"Flows that reached ESTABLISHED (ASSURED) and ended with no usable start (no kernel timestamp, not in the flow table): their lifetime is not in conntrack_flow_lifetime_seconds.",
			counter),
		mode: desc("exporter", "lifetime_mode",
			"How flow lifetimes are measured: timestamp (kernel start/stop timestamps of the DESTROY event) or flow_table (receive times of NEW and DESTROY events); 1 for the active mode.",
			gauge, "mode"),
		tableEntries: desc("exporter", "flow_table_entries",
			"Flows whose start the flow_table lifetime mode remembers.",
			gauge),
		evictions: desc("exporter", "flow_table_evictions_total",
			"Flows evicted from the full flow table before they ended; their lifetime is lost.",
			counter),
		rcvbuf: desc("exporter", "events_receive_buffer_bytes",
			"Receive buffer of the event socket as the kernel reports it (twice the requested size).",
			gauge),
		restarts: desc("exporter", "event_subscriber_restarts_total",
			"Times the event socket was opened again after a failure.",
			counter),
	}
	for t := events.EventType(0); t < events.NumEventTypes; t++ {
		c.eventTypes = append(c.eventTypes, t)
	}
	slices.SortFunc(c.eventTypes, func(a, b events.EventType) int { return strings.Compare(a.String(), b.String()) })
	ch := make(chan *prometheus.Desc, 4)
	histogram.New("").Describe(ch)
	close(ch)
	for d := range ch {
		c.lifetimeDescs = append(c.lifetimeDescs, d)
	}
	return c
}

// Describe implements Collector.
func (c *EventsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*exposition.Desc{
		c.events, c.lost, c.overruns, c.malformed, c.noTimestamp,
		c.mode, c.tableEntries, c.evictions, c.rcvbuf, c.restarts,
		c.topSources, c.topSilent, c.windowEnds, c.errorBound,
	} {
		ch <- d.Desc()
	}
	for _, d := range c.lifetimeDescs {
		ch <- d
	}
}

// Update implements Collector.
func (c *EventsCollector) Update(ctx context.Context, target netns.Target, sink *exposition.Sink) error {
	sub, ok := c.subs.Get(target)
	if !ok {
		return fmt.Errorf("events: netns %s: %w", target, ErrNotWatched)
	}
	// The events the subscriber let queue are counted first. If that
	// takes longer than the scrape's deadline, the counts of the events
	// read so far are served: they are short, never wrong.
	syncErr := sub.Source.Sync(ctx)
	st := sub.Source.Stats()
	name := target.Name
	for _, t := range c.eventTypes {
		sink.Add(c.events, float64(st.Events[t]), t.String(), name)
	}
	sink.Add(c.lost, float64(st.Lost), name)
	sink.Add(c.overruns, float64(st.Overruns), name)
	sink.Add(c.malformed, float64(st.Malformed), name)
	sink.Add(c.noTimestamp, float64(st.WithoutTimestamp), name)
	for m := events.Mode(0); m < events.NumModes; m++ {
		v := 0.0
		if m == st.Mode {
			v = 1
		}
		sink.Add(c.mode, v, m.String(), name)
	}
	sink.Add(c.tableEntries, float64(st.FlowTableEntries), name)
	sink.Add(c.evictions, float64(st.Evictions), name)
	sink.Add(c.rcvbuf, float64(st.ReceiveBuffer), name)
	sink.Add(c.restarts, float64(st.Restarts), name)
	sub.Sink.Histogram.Each(sink.Metric)
	c.sendTop(sub.Source, sink, name)
	if syncErr != nil {
		return fmt.Errorf("events: %w", syncErr)
	}
	if !st.Running {
		if st.Err != nil {
			return fmt.Errorf("events: netns %s: %w: %w", target, ErrSubscriberDown, st.Err)
		}
		return fmt.Errorf("events: netns %s: %w", target, ErrSubscriberDown)
	}
	return nil
}

// sendTop sends the top-K families of one namespace's sliding window.
func (c *EventsCollector) sendTop(src watch.EventSource, sink *exposition.Sink, name string) {
	ends, silent := src.Top(c.topK)
	sink.Add(c.windowEnds, float64(ends.Total), breakdownSource, name)
	sink.Add(c.windowEnds, float64(silent.Total), breakdownSilentDestination, name)
	if c.topK <= 0 {
		return
	}
	for _, it := range ends.Items {
		sink.Add(c.topSources, float64(it.Count), it.Key.Addr().String(), name)
	}
	sink.Add(c.topSources, float64(ends.Other), otherLabel, name)
	for _, it := range silent.Items {
		sink.Add(c.topSilent, float64(it.Count), it.Key.Addr().String(), strconv.Itoa(int(it.Key.Port())), name)
	}
	sink.Add(c.topSilent, float64(silent.Other), otherLabel, otherLabel, name)
	sink.Add(c.errorBound, float64(ends.MaxError), breakdownSource, name)
	sink.Add(c.errorBound, float64(silent.MaxError), breakdownSilentDestination, name)
}
