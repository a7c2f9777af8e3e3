// Package collector holds the Prometheus collectors of the exporter and
// nothing else: each turns what the kernel or package watch holds about
// one or more network namespaces into metrics, built at scrape time.
//
// Each concern (kernel statistics, sysctl settings, lifetime events, table
// breakdown) is one Collector. The Exporter runs every Collector for every
// watched namespace on each scrape, concurrently on a bounded number of
// goroutines, and reports
// conntrack_exporter_collector_success and
// conntrack_exporter_collector_duration_seconds for each pair. A failing
// Collector costs its own metrics, never the scrape. A Collector that is
// also a Preparer is prepared once per scrape, before its Updates.
// NetnsCollector reports the set of watched namespaces itself, and Guard
// keeps the set from forgetting a namespace while a scrape still reads
// it.
package collector

import (
	"context"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ct-exporter/ct-exporter/internal/exposition"
	"github.com/ct-exporter/ct-exporter/internal/netns"
)

// MetricPrefix is the first word of every conntrack metric name (the
// Prometheus "namespace" of BuildFQName; not a network namespace).
const MetricPrefix = "conntrack"

// NetnsLabel is the label that names the watched network namespace. It is
// on every conntrack metric, whether one namespace is watched or many.
const NetnsLabel = "netns"

// Collector gathers one concern's metrics for one network namespace.
type Collector interface {
	// Describe sends the descriptors of every metric Update may send.
	Describe(ch chan<- *prometheus.Desc)
	// Update sends the metrics of target to s. It returns an error when
	// it could not collect; metrics sent before the error are kept.
	Update(ctx context.Context, target netns.Target, s *exposition.Sink) error
}

// Preparer is a Collector with work to do once per scrape before its
// first Update; the Exporter calls Prepare at the start of each scrape. A
// failed Prepare is logged, and the Updates run all the same.
type Preparer interface {
	Prepare() error
}

// Targets lists the namespaces to collect from. It is called on every
// scrape so that the set can change while the exporter runs.
type Targets func() []netns.Target

// Exporter is the prometheus.Collector that runs every Collector for every
// target.
type Exporter struct {
	collectors map[string]Collector
	targets    Targets
	timeout    time.Duration
	logger     *zap.Logger

	successDesc  *exposition.Desc
	durationDesc *exposition.Desc
}

// NewExporter returns an Exporter over the named collectors. timeout
// bounds each Collector's Update; zero means no bound.
func NewExporter(collectors map[string]Collector, targets Targets, timeout time.Duration, logger *zap.Logger) *Exporter {
	return &Exporter{
		collectors: collectors,
		targets:    targets,
		timeout:    timeout,
		logger:     logger,
		successDesc: exposition.NewDesc(
			prometheus.BuildFQName(MetricPrefix, "exporter", "collector_success"),
			"Whether the collector succeeded for the network namespace on this scrape (1) or not (0).",
			prometheus.GaugeValue, "collector", NetnsLabel),
		durationDesc: exposition.NewDesc(
			prometheus.BuildFQName(MetricPrefix, "exporter", "collector_duration_seconds"),
			"How long the collector took for the network namespace on this scrape.",
			prometheus.GaugeValue, "collector", NetnsLabel),
	}
}

// Describe implements prometheus.Collector.
func (e *Exporter) Describe(ch chan<- *prometheus.Desc) {
	ch <- e.successDesc.Desc()
	ch <- e.durationDesc.Desc()
	for _, c := range e.collectors {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (e *Exporter) Collect(ch chan<- prometheus.Metric) {
	e.CollectTo(func() *exposition.Sink { return exposition.ChannelSink(ch) })
}

// CollectTo implements exposition.Collector. The pairs of collector and
// target run on a bounded number of goroutines, whatever the number of
// namespaces, each sending to a Sink of its own; every pair's time limit
// counts from the start of the scrape, so a scrape never waits longer
// than the timeout.
func (e *Exporter) CollectTo(newSink func() *exposition.Sink) {
	names := make([]string, 0, len(e.collectors))
	for name := range e.collectors {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if p, ok := e.collectors[name].(Preparer); ok {
			if err := p.Prepare(); err != nil {
				e.logger.Warn("collector could not prepare the scrape", zap.String("collector", name), zap.Error(err))
			}
		}
	}
	// One context for the scrape: every pair's time limit counts from
	// its start.
	ctx := context.Background()
	if e.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, e.timeout)
		defer cancel()
	}
	// The targets in name order: each worker then writes the lines of a
	// family in order, which the scrape merges instead of sorting.
	targets := e.targets()
	byName := func(a, b netns.Target) int { return strings.Compare(a.Name, b.Name) }
	if !slices.IsSortedFunc(targets, byName) {
		targets = slices.SortedFunc(slices.Values(targets), byName)
	}
	// The workers take the pairs of target and collector in turn, by
	// number: pair i is collector i%len(names) of target i/len(names).
	pairs := int64(len(targets) * len(names))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(pairs, int64(collectWorkers())) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sink := newSink()
			for i := next.Add(1) - 1; i < pairs; i = next.Add(1) - 1 {
				e.run(ctx, names[i%int64(len(names))], targets[i/int64(len(names))], sink)
			}
		}()
	}
	wg.Wait()
}

// collectWorkers is how many goroutines run the pairs of one scrape:
// enough to overlap the waits on the kernel, few enough not to pay a
// goroutine per pair.
func collectWorkers() int { return max(4, 2*runtime.GOMAXPROCS(0)) }

// run updates one collector for one target within ctx and reports how it
// went.
func (e *Exporter) run(ctx context.Context, name string, target netns.Target, sink *exposition.Sink) {
	start := time.Now()
	err := e.collectors[name].Update(ctx, target, sink)
	duration := time.Since(start).Seconds()
	success := 1.0
	if err != nil {
		success = 0
		e.logger.Warn("collector failed",
			zap.String("collector", name), zap.String(NetnsLabel, target.Name),
			zap.Float64("duration_seconds", duration), zap.Error(err))
	} else if ce := e.logger.Check(zap.DebugLevel, "collector succeeded"); ce != nil {
		// Checked first: the fields of a line that is not logged would
		// still be allocated, on every pair of every scrape.
		ce.Write(zap.String("collector", name), zap.String(NetnsLabel, target.Name),
			zap.Float64("duration_seconds", duration))
	}
	sink.Add(e.successDesc, success, name, target.Name)
	sink.Add(e.durationDesc, duration, name, target.Name)
}
