package collector

import (
	"context"
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ct-exporter/ct-exporter/internal/ctnl"
	"github.com/ct-exporter/ct-exporter/internal/netns"
)

// StatsSnapshot is one reading of a namespace's conntrack statistics.
type StatsSnapshot struct {
	// Inode identifies the namespace; counters restart when it changes.
	Inode uint64
	// Global holds the entry count and the table limit.
	Global ctnl.GlobalStats
	// CPUs holds the raw 32-bit per-CPU counters.
	CPUs []ctnl.CPUStats
}

// StatsSource reads a namespace's conntrack statistics.
type StatsSource interface {
	Stats(ctx context.Context, target netns.Target) (StatsSnapshot, error)
}

// NetlinkStats reads statistics over ctnetlink inside the namespace.
type NetlinkStats struct{}

// Stats implements StatsSource: it opens a ctnetlink socket in the
// namespace, asks for the global and per-CPU statistics, and closes it.
func (NetlinkStats) Stats(ctx context.Context, target netns.Target) (StatsSnapshot, error) {
	ino, err := target.Inode()
	if err != nil {
		return StatsSnapshot{}, err
	}
	c, err := ctnl.Dial(target)
	if err != nil {
		return StatsSnapshot{}, err
	}
	defer c.Close()
	g, err := c.GlobalStats(ctx)
	if err != nil {
		return StatsSnapshot{}, err
	}
	cpus, err := c.CPUStats(ctx)
	if err != nil {
		return StatsSnapshot{}, err
	}
	return StatsSnapshot{Inode: ino, Global: g, CPUs: cpus}, nil
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
// namespace. The kernel's counters are 32-bit and per CPU; the collector
// sums the per-CPU deltas in 64 bits so an exported counter never goes
// backwards while the exporter runs, even when a CPU's counter wraps.
type StatsCollector struct {
	source StatsSource

	entries, limit, ratio *prometheus.Desc
	counters              [ctnl.NumCounters]*prometheus.Desc

	mu    sync.Mutex
	state map[string]*counterState // by target name
}

// counterState is what the collector remembers of one namespace.
type counterState struct {
	mu    sync.Mutex
	inode uint64
	last  map[uint16][ctnl.NumCounters]uint32 // raw value per CPU
	total [ctnl.NumCounters]uint64
}

// NewStatsCollector returns a StatsCollector reading from source.
func NewStatsCollector(source StatsSource) *StatsCollector {
	labels := []string{NetnsLabel}
	c := &StatsCollector{
		source: source,
		entries: prometheus.NewDesc(prometheus.BuildFQName(MetricPrefix, "", "entries"),
			"Entries in the namespace's conntrack table.", labels, nil),
		limit: prometheus.NewDesc(prometheus.BuildFQName(MetricPrefix, "", "entries_limit"),
			"Maximum entries per namespace (nf_conntrack_max, one global value checked against each namespace's count).", labels, nil),
		ratio: prometheus.NewDesc(prometheus.BuildFQName(MetricPrefix, "", "fill_ratio"),
			"conntrack_entries / conntrack_entries_limit; at 1 new connections are dropped.", labels, nil),
		state: map[string]*counterState{},
	}
	for i := ctnl.Counter(0); i < ctnl.NumCounters; i++ {
		c.counters[i] = prometheus.NewDesc(
			prometheus.BuildFQName(MetricPrefix, "stat", i.String()+"_total"),
			counterHelp[i]+" Summed over CPUs.", labels, nil)
	}
	return c
}

// Describe implements Collector.
func (c *StatsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.entries
	ch <- c.limit
	ch <- c.ratio
	for _, d := range c.counters {
		ch <- d
	}
}

// Update implements Collector.
func (c *StatsCollector) Update(ctx context.Context, target netns.Target, ch chan<- prometheus.Metric) error {
	// Reading and folding happen under the namespace's lock: two scrapes
	// folding their readings out of order would look like a wrap.
	st := c.stateOf(target.Name)
	st.mu.Lock()
	snap, err := c.source.Stats(ctx, target)
	if err != nil {
		st.mu.Unlock()
		return fmt.Errorf("stats: %w", err)
	}
	totals := st.accumulate(snap)
	st.mu.Unlock()

	ch <- prometheus.MustNewConstMetric(c.entries, prometheus.GaugeValue, float64(snap.Global.Entries), target.Name)
	ch <- prometheus.MustNewConstMetric(c.limit, prometheus.GaugeValue, float64(snap.Global.MaxEntries), target.Name)
	if snap.Global.MaxEntries > 0 {
		ch <- prometheus.MustNewConstMetric(c.ratio, prometheus.GaugeValue,
			float64(snap.Global.Entries)/float64(snap.Global.MaxEntries), target.Name)
	}
	for i, total := range totals {
		ch <- prometheus.MustNewConstMetric(c.counters[i], prometheus.CounterValue, float64(total), target.Name)
	}
	return nil
}

// Forget drops what the collector remembers of a namespace.
func (c *StatsCollector) Forget(target netns.Target) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.state, target.Name)
}

// stateOf returns the remembered state of a namespace, creating it.
func (c *StatsCollector) stateOf(name string) *counterState {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, ok := c.state[name]
	if !ok {
		st = &counterState{}
		c.state[name] = st
	}
	return st
}

// accumulate folds a snapshot into the 64-bit totals of the namespace and
// returns them. The first reading of a CPU adds its raw value; later
// readings add the difference modulo 2^32, so a wrapped counter still
// moves forward. A new namespace inode (the namespace was replaced) starts
// the totals again. The caller holds st.mu.
func (st *counterState) accumulate(snap StatsSnapshot) [ctnl.NumCounters]uint64 {
	if st.last == nil || st.inode != snap.Inode {
		st.inode = snap.Inode
		st.last = map[uint16][ctnl.NumCounters]uint32{}
		st.total = [ctnl.NumCounters]uint64{}
	}
	for _, cpu := range snap.CPUs {
		prev, seen := st.last[cpu.CPU]
		for i, v := range cpu.Counters {
			if seen {
				st.total[i] += uint64(v - prev[i]) // modulo 2^32: a wrap adds the distance
			} else {
				st.total[i] += uint64(v)
			}
		}
		st.last[cpu.CPU] = cpu.Counters
	}
	return st.total
}
