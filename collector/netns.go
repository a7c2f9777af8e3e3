package collector

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ct-exporter/ct-exporter/internal/exposition"
	"github.com/ct-exporter/ct-exporter/internal/watch"
)

// NetnsStatus returns the status of the set of watched namespaces;
// (*watch.Set).Status is one.
type NetnsStatus func() *watch.Status

// NetnsCollector exports the set of watched network namespaces itself:
// conntrack_exporter_watched_namespaces, one conntrack_netns_info series
// per namespace and, with discovery, conntrack_exporter_netns_over_limit,
// conntrack_exporter_netns_discovery_errors_total and
// conntrack_exporter_netns_discovery_duration_seconds. It is a
// prometheus.Collector of its own, not run per namespace.
type NetnsCollector struct {
	status NetnsStatus

	watchedDesc, overLimitDesc, scanErrorsDesc, scanDurationDesc, infoDesc *exposition.Desc
}

// NewNetnsCollector returns a NetnsCollector reading status.
func NewNetnsCollector(status NetnsStatus) *NetnsCollector {
	return &NetnsCollector{
		status: status,
		watchedDesc: exposition.NewDesc(prometheus.BuildFQName(MetricPrefix, "exporter", "watched_namespaces"),
			"Network namespaces watched now: static, the exporter's own, and discovered.", prometheus.GaugeValue),
		overLimitDesc: exposition.NewDesc(prometheus.BuildFQName(MetricPrefix, "exporter", "netns_over_limit"),
			"Discovered network namespaces not watched at the last rescan because --conntrack.netns-max was reached.", prometheus.GaugeValue),
		scanErrorsDesc: exposition.NewDesc(prometheus.BuildFQName(MetricPrefix, "exporter", "netns_discovery_errors_total"),
			"Rescans whose namespace discovery failed in part; what they could not read was kept as it was.", prometheus.CounterValue),
		scanDurationDesc: exposition.NewDesc(prometheus.BuildFQName(MetricPrefix, "exporter", "netns_discovery_duration_seconds"),
			"How long the last rescan of network namespaces took.", prometheus.GaugeValue),
		infoDesc: exposition.NewDesc(prometheus.BuildFQName(MetricPrefix, "netns", "info"),
			"One series per watched network namespace (value 1): where it was found, its inode, and the lowest process ID in it with that process's command and cgroup when known, and the Kubernetes pod UID and container ID that cgroup names (empty outside pods).",
			prometheus.GaugeValue, NetnsLabel, "source", "inode", "pid", "comm", "cgroup", "pod_uid", "container_id"),
	}
}

// Describe implements prometheus.Collector.
func (c *NetnsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*exposition.Desc{c.watchedDesc, c.overLimitDesc, c.scanErrorsDesc, c.scanDurationDesc, c.infoDesc} {
		ch <- d.Desc()
	}
}

// Collect implements prometheus.Collector.
func (c *NetnsCollector) Collect(ch chan<- prometheus.Metric) { c.collect(exposition.ChannelSink(ch)) }

// CollectTo implements exposition.Collector.
func (c *NetnsCollector) CollectTo(newSink func() *exposition.Sink) { c.collect(newSink()) }

// collect sends the metrics to sink.
func (c *NetnsCollector) collect(sink *exposition.Sink) {
	st := c.status()
	sink.Add(c.watchedDesc, float64(len(st.Namespaces)))
	if st.Discovery {
		sink.Add(c.overLimitDesc, float64(st.OverLimit))
		sink.Add(c.scanErrorsDesc, float64(st.ScanErrors))
		sink.Add(c.scanDurationDesc, st.LastScan.Seconds())
	}
	for _, ns := range st.Namespaces {
		var inode, pid string
		if ns.Inode != 0 {
			inode = strconv.FormatUint(ns.Inode, 10)
		}
		if ns.PID != 0 {
			pid = strconv.Itoa(ns.PID)
		}
		sink.Add(c.infoDesc, 1, ns.Name, ns.Source, inode, pid, ns.Comm, ns.Cgroup, ns.Pod.PodUID, ns.Pod.ContainerID)
	}
}

// Holder holds off forgetting namespaces while a scrape reads them;
// *watch.Set is one.
type Holder interface {
	Hold() (release func())
}

// Guard wraps the collector that reads the watched namespaces (the
// Exporter) so that each Collect and CollectTo holds h: a namespace
// dropped from the set is forgotten only once the scrapes that may still
// be using it are done.
func Guard(c exposition.Collector, h Holder) exposition.Collector {
	return guarded{c: c, h: h}
}

// guarded is a collector whose Collect and CollectTo hold off forgetting.
type guarded struct {
	c exposition.Collector
	h Holder
}

// Describe implements prometheus.Collector.
func (g guarded) Describe(ch chan<- *prometheus.Desc) { g.c.Describe(ch) }

// Collect implements prometheus.Collector.
func (g guarded) Collect(ch chan<- prometheus.Metric) {
	release := g.h.Hold()
	defer release()
	g.c.Collect(ch)
}

// CollectTo implements exposition.Collector.
func (g guarded) CollectTo(newSink func() *exposition.Sink) {
	release := g.h.Hold()
	defer release()
	g.c.CollectTo(newSink)
}
