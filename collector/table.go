package collector

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/tablescan"
)

// TableName is the name of the table collector.
const TableName = "table"

// Defaults of TableOptions.
const (
	DefaultTableInterval = 60 * time.Second
	DefaultTableTimeout  = 50 * time.Second
)

// otherLabel is the label value of the remainder of a top-K breakdown.
const otherLabel = "other"

// TableScanner scans the conntrack table of one namespace.
type TableScanner interface {
	Scan(ctx context.Context, target netns.Target) (*tablescan.Scan, error)
}

// TableOptions configure the table collector.
type TableOptions struct {
	// Interval is the time between the starts of two scans of a
	// namespace; the first scan starts when the namespace is watched.
	// 0 means DefaultTableInterval.
	Interval time.Duration
	// Timeout bounds one scan, not counting the wait for the scan of
	// another namespace to finish; 0 means DefaultTableTimeout.
	Timeout time.Duration
	// Scanner scans the tables. nil means a tablescan.Scanner built from
	// Scan, which runs one scan at a time across namespaces.
	Scanner TableScanner
	// Scan configures the default Scanner: top K (0 disables every top-K
	// series), per-zone and per-mark counts.
	Scan tablescan.Options
}

// TableCollector is the Watcher of the table breakdown: for every watched
// namespace it scans the conntrack table in the background, at startup and
// then every interval, and a scrape serves the result of the last scan. A
// scrape never waits for a scan. Scans of different namespaces run one at a
// time, because each dump walks the kernel's global hash table, and after
// each scan the next one waits as long as that scan took, so scanning keeps
// at most half of one CPU busy. When the scans of all namespaces take
// longer than that allows within the interval, each namespace is scanned
// less often (conntrack_table_last_scan_timestamp_seconds shows it).
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
	interval, timeout time.Duration
	scanner           TableScanner
	logger            *zap.Logger

	entries, sources, ports, zones, marks, errorBound *prometheus.Desc
	shortened, malformed, interrupted                 *prometheus.Desc
	duration, timestamp                               *prometheus.Desc

	// sem lets one scan run at a time across namespaces: every dump walks
	// the kernel's global hash table, whichever namespace it is for.
	sem chan struct{}

	mu      sync.Mutex
	watches map[netns.Target]*tableWatch
}

// tableWatch is the background scanning of one namespace.
type tableWatch struct {
	cancel context.CancelFunc
	done   chan struct{}
	state  atomic.Pointer[tableState]
}

// tableState is what the last scan of a namespace left; never changed
// once stored.
type tableState struct {
	last *tablescan.Scan // last successful scan, nil before the first
	err  error           // error of the last scan, nil if it succeeded
}

// NewTableCollector returns the table collector.
func NewTableCollector(opts TableOptions, logger *zap.Logger) *TableCollector {
	if opts.Interval <= 0 {
		opts.Interval = DefaultTableInterval
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTableTimeout
	}
	if opts.Scanner == nil {
		opts.Scanner = tablescan.NewScanner(opts.Scan)
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(MetricPrefix, "table", name), help, append(labels, NetnsLabel), nil)
	}
	return &TableCollector{
		interval: opts.Interval,
		timeout:  opts.Timeout,
		scanner:  opts.Scanner,
		logger:   logger,
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
		malformed: desc("scan_malformed_entries",
			"Entries of the last table scan that did not decode and were skipped."),
		interrupted: desc("scan_interrupted",
			"1 when the kernel flagged the dump of the last table scan as interrupted by table changes (NLM_F_DUMP_INTR), else 0."),
		duration: desc("scan_duration_seconds",
			"How long the last successful table scan took."),
		timestamp: desc("last_scan_timestamp_seconds",
			"When the last successful table scan finished, in seconds since the Unix epoch."),
		sem:     make(chan struct{}, 1),
		watches: map[netns.Target]*tableWatch{},
	}
}

// Describe implements Collector.
func (c *TableCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.entries, c.sources, c.ports, c.zones, c.marks, c.errorBound,
		c.shortened, c.malformed, c.interrupted, c.duration, c.timestamp,
	} {
		ch <- d
	}
}

// Watch implements Watcher: it starts scanning the namespace of target in
// the background, first right away, then every interval, until ctx ends
// or Forget is called.
func (c *TableCollector) Watch(ctx context.Context, target netns.Target) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.watches[target]; ok {
		return fmt.Errorf("table: netns %s is already watched", target)
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &tableWatch{cancel: cancel, done: make(chan struct{})}
	c.watches[target] = w
	go c.loop(ctx, target, w)
	return nil
}

// Forget implements Watcher: it stops the scans of target, waits for a
// scan in progress to end, and drops the namespace's series.
func (c *TableCollector) Forget(target netns.Target) {
	c.mu.Lock()
	w, ok := c.watches[target]
	delete(c.watches, target)
	c.mu.Unlock()
	if !ok {
		return
	}
	w.cancel()
	<-w.done
}

// loop scans target until ctx ends.
func (c *TableCollector) loop(ctx context.Context, target netns.Target, w *tableWatch) {
	defer close(w.done)
	ticker := time.NewTicker(c.interval)
	defer ticker.Stop()
	for {
		c.scanOnce(ctx, target, w)
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// scanOnce waits for any scan of another namespace to finish, runs one
// scan within the timeout, and stores its outcome.
func (c *TableCollector) scanOnce(ctx context.Context, target netns.Target, w *tableWatch) {
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-c.sem }()
	start := time.Now()
	sctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	s, err := c.scanner.Scan(sctx, target)
	if ctx.Err() != nil {
		return // the namespace is no longer watched
	}
	// The next scan of any namespace waits as long as this one took, so
	// scans keep at most half of one CPU busy however many namespaces
	// there are.
	defer func() {
		pause := time.NewTimer(time.Since(start))
		defer pause.Stop()
		select {
		case <-pause.C:
		case <-ctx.Done():
		}
	}()
	prev := w.state.Load()
	next := &tableState{last: s}
	if err != nil {
		next = &tableState{err: err}
		if prev != nil {
			next.last = prev.last
		}
		c.logger.Warn("table scan failed", zap.String(NetnsLabel, target.Name), zap.Error(err))
	} else {
		c.logger.Debug("table scan finished", zap.String(NetnsLabel, target.Name),
			zap.Uint64("entries", s.Total), zap.Uint64("malformed", s.Malformed),
			zap.Duration("duration", s.Duration()))
	}
	w.state.Store(next)
}

// Update implements Collector: it sends the metrics of the last scan of
// target without waiting for a scan in progress.
func (c *TableCollector) Update(_ context.Context, target netns.Target, ch chan<- prometheus.Metric) error {
	c.mu.Lock()
	w := c.watches[target]
	c.mu.Unlock()
	if w == nil {
		return fmt.Errorf("table: netns %s is not watched", target)
	}
	st := w.state.Load()
	if st == nil {
		// The first scan has not finished: nothing to serve, and nothing
		// failed. With many namespaces the first round takes a while.
		return nil
	}
	if st.err != nil {
		if st.last != nil {
			ch <- c.gauge(c.timestamp, float64(st.last.End.UnixNano())/1e9, target)
		}
		return fmt.Errorf("table: last scan failed: %w", st.err)
	}
	c.send(st.last, target, ch)
	return nil
}

// gauge builds one gauge of target.
func (c *TableCollector) gauge(d *prometheus.Desc, v float64, target netns.Target, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append(labels, target.Name)...)
}

// send sends the metrics of one successful scan.
func (c *TableCollector) send(s *tablescan.Scan, target netns.Target, ch chan<- prometheus.Metric) {
	for _, e := range s.States {
		ch <- c.gauge(c.entries, float64(e.Entries), target, e.Protocol, e.State)
	}
	if s.Sources != nil && s.Ports != nil {
		for _, v := range s.Sources.Top {
			ch <- c.gauge(c.sources, float64(v.Entries), target, v.Value.String())
		}
		ch <- c.gauge(c.sources, float64(s.Sources.Other), target, otherLabel)
		for _, v := range s.Ports.Top {
			ch <- c.gauge(c.ports, float64(v.Entries), target, v.Value.ProtocolLabel(), v.Value.PortLabel())
		}
		ch <- c.gauge(c.ports, float64(s.Ports.Other), target, otherLabel, otherLabel)
		ch <- c.gauge(c.errorBound, float64(s.Sources.MaxError), target, "source")
		ch <- c.gauge(c.errorBound, float64(s.Ports.MaxError), target, "destination_port")
	}
	if s.Zones != nil && s.Marks != nil {
		for _, v := range s.Zones.Top {
			ch <- c.gauge(c.zones, float64(v.Entries), target, strconv.FormatUint(uint64(v.Value), 10))
		}
		ch <- c.gauge(c.zones, float64(s.Zones.Other), target, otherLabel)
		for _, v := range s.Marks.Top {
			ch <- c.gauge(c.marks, float64(v.Entries), target, strconv.FormatUint(uint64(v.Value), 10))
		}
		ch <- c.gauge(c.marks, float64(s.Marks.Other), target, otherLabel)
		ch <- c.gauge(c.errorBound, float64(s.Zones.MaxError), target, "zone")
		ch <- c.gauge(c.errorBound, float64(s.Marks.MaxError), target, "mark")
	}
	ch <- c.gauge(c.shortened, float64(s.Shortened), target)
	ch <- c.gauge(c.malformed, float64(s.Malformed), target)
	interrupted := 0.0
	if s.Dump.Interrupted {
		interrupted = 1
	}
	ch <- c.gauge(c.interrupted, interrupted, target)
	ch <- c.gauge(c.duration, s.Duration().Seconds(), target)
	ch <- c.gauge(c.timestamp, float64(s.End.UnixNano())/1e9, target)
}
