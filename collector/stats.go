package collector

import (
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ct-exporter/ct-exporter/internal/ctnl"
	"github.com/ct-exporter/ct-exporter/internal/exposition"
	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/watch"
)

// StatsReader reads a namespace's statistics with counter totals that
// never go backwards; *watch.StatsTotals is one.
type StatsReader interface {
	// Prepare is called once per scrape, before the scrape's reads.
	Prepare() error
	Read(ctx context.Context, target netns.Target) (watch.StatsReading, error)
}

// counterHelp explains each per-CPU counter in the metric's HELP text.
var counterHelp = [ctnl.NumCounters]string{
	ctnl.Found:         "Lookups that found an existing entry.",
	ctnl.Invalid:       "Packets conntrack could not track (malformed, out of window, or no protocol handler).",
	ctnl.Insert:        "Entries inserted into the table.",
	ctnl.InsertFailed:  "Entries that could not be inserted at confirm time (unresolvable clash, chain too long, dying entry); the DNS/SNAT race shows up here.",
	ctnl.Drop:          "Packets dropped because no entry could be allocated: the table was full and early_drop freed nothing.",
	ctnl.EarlyDrop:     "Entries that are not ASSURED evicted by early_drop to make room in a full table.",
	ctnl.Error:         "Packets the protocol handler rejected (ICMP errors that match no entry included).",
	ctnl.SearchRestart: "Lookups restarted because an entry moved between hash chains under RCU.",
	ctnl.ClashResolve:  "Insert clashes resolved without dropping the packet.",
	ctnl.ChainTooLong:  "Inserts refused because a hash chain was longer than the kernel's random 50-79 limit.",
}

// StatsCollector exports the table fill and the per-CPU counters of each
// namespace, summed over CPUs. The kernel's counters are 32-bit and per
// CPU; the reader (watch.StatsTotals) sums the per-CPU deltas in 64 bits
// so an exported counter never goes backwards while the exporter runs.
type StatsCollector struct {
	source StatsReader

	entries, limit, ratio *exposition.Desc
	counters              [ctnl.NumCounters]*exposition.Desc
}

// NewStatsCollector returns a StatsCollector reading from source.
func NewStatsCollector(source StatsReader) *StatsCollector {
	c := &StatsCollector{
		source: source,
		entries: exposition.NewDesc(prometheus.BuildFQName(MetricPrefix, "", "entries"),
			"Entries in the namespace's conntrack table.", prometheus.GaugeValue, NetnsLabel),
		limit: exposition.NewDesc(prometheus.BuildFQName(MetricPrefix, "", "entries_limit"),
			"Maximum entries per namespace (nf_conntrack_max, one global value checked against each namespace's count).", prometheus.GaugeValue, NetnsLabel),
		ratio: exposition.NewDesc(prometheus.BuildFQName(MetricPrefix, "", "fill_ratio"),
			"conntrack_entries / conntrack_entries_limit; at 1 new connections are dropped.", prometheus.GaugeValue, NetnsLabel),
	}
	for i := ctnl.Counter(0); i < ctnl.NumCounters; i++ {
		c.counters[i] = exposition.NewDesc(
			prometheus.BuildFQName(MetricPrefix, "stat", i.String()+"_total"),
			counterHelp[i]+" Summed over CPUs.", prometheus.CounterValue, NetnsLabel)
	}
	return c
}

// Describe implements Collector.
func (c *StatsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.entries.Desc()
	ch <- c.limit.Desc()
	ch <- c.ratio.Desc()
	for _, d := range c.counters {
		ch <- d.Desc()
	}
}

// Prepare implements Preparer: the reader learns which namespace paths
// changed since the last scrape.
func (c *StatsCollector) Prepare() error { return c.source.Prepare() }

// Update implements Collector.
func (c *StatsCollector) Update(ctx context.Context, target netns.Target, sink *exposition.Sink) error {
	snap, err := c.source.Read(ctx, target)
	if err != nil {
		return fmt.Errorf("stats: %w", err)
	}

	sink.Add(c.entries, float64(snap.Global.Entries), target.Name)
	sink.Add(c.limit, float64(snap.Global.MaxEntries), target.Name)
	if snap.Global.MaxEntries > 0 {
		sink.Add(c.ratio, float64(snap.Global.Entries)/float64(snap.Global.MaxEntries), target.Name)
	}
	for i, total := range snap.Totals {
		sink.Add(c.counters[i], float64(total), target.Name)
	}
	return nil
}
