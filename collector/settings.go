package collector

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ct-exporter/ct-exporter/internal/exposition"
	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/sysctl"
)

// SysctlReader reads the sysctls of a namespace; sysctl.Reader is one.
type SysctlReader interface {
	// Read reads conntrack sysctls (under /proc/sys/net/netfilter).
	Read(ctx context.Context, target netns.Target, names ...string) (sysctl.Values, error)
	// ReadIPv4 reads IPv4 sysctls (under /proc/sys/net/ipv4).
	ReadIPv4(ctx context.Context, target netns.Target, names ...string) (sysctl.Values, error)
}

// udpTimeouts are the UDP timeout sysctls and their state label, in label
// order (see NewSettingsCollector).
var udpTimeouts = []struct{ sysctl, state string }{
	{"nf_conntrack_udp_timeout_stream", "replied"},
	{"nf_conntrack_udp_timeout", "unreplied"},
}

// scalarSetting is a sysctl exported as one gauge.
type scalarSetting struct {
	sysctl, metric, help string
}

var scalarSettings = []scalarSetting{
	{"nf_conntrack_buckets", "buckets", "Size of the conntrack hash table (nf_conntrack_buckets, global)."},
	{"nf_conntrack_events", "events_mode", "nf_conntrack_events: 0 off, 1 on, 2 on only for flows created while a listener exists."},
	{"nf_conntrack_timestamp", "timestamp_enabled", "nf_conntrack_timestamp: 1 when new flows carry start/stop timestamps."},
	{"nf_conntrack_acct", "acct_enabled", "nf_conntrack_acct: 1 when new flows count packets and bytes."},
	{"nf_conntrack_checksum", "checksum_enabled", "nf_conntrack_checksum: 1 when conntrack verifies checksums."},
	{"nf_conntrack_tcp_be_liberal", "tcp_be_liberal", "nf_conntrack_tcp_be_liberal: 1 when out-of-window TCP packets are not marked INVALID."},
	{"nf_conntrack_tcp_loose", "tcp_loose", "nf_conntrack_tcp_loose: 1 when flows are picked up mid-stream."},
	{"nf_conntrack_tcp_ignore_invalid_rst", "tcp_ignore_invalid_rst", "nf_conntrack_tcp_ignore_invalid_rst: 1 when out-of-window RSTs are ignored."},
	{"nf_conntrack_tcp_max_retrans", "tcp_max_retrans", "nf_conntrack_tcp_max_retrans: retransmissions after which an ESTABLISHED flow's timeout drops to tcp_timeout_max_retrans."},
	{"nf_conntrack_icmp_timeout", "icmp_timeout_seconds", "nf_conntrack_icmp_timeout."},
	{"nf_conntrack_icmpv6_timeout", "icmpv6_timeout_seconds", "nf_conntrack_icmpv6_timeout."},
	{"nf_conntrack_generic_timeout", "generic_timeout_seconds", "nf_conntrack_generic_timeout, for protocols without a tracker of their own."},
}

// keepaliveSettings are the TCP keepalive sysctls of the namespace, each
// exported as one gauge: compared with the idle timeout of a NAT gateway
// or load balancer on the path, they say whether idle connections are
// kept alive through it.
var keepaliveSettings = []scalarSetting{
	{sysctl.KeepaliveTime, "tcp_keepalive_time_seconds", "net.ipv4.tcp_keepalive_time: idle time before the first TCP keepalive probe, for sockets that enable keepalive without their own value. Above a middlebox idle timeout, idle connections are dropped silently."},
	{sysctl.KeepaliveInterval, "tcp_keepalive_interval_seconds", "net.ipv4.tcp_keepalive_intvl: time between TCP keepalive probes."},
	{sysctl.KeepaliveProbes, "tcp_keepalive_probes", "net.ipv4.tcp_keepalive_probes: unanswered keepalive probes before the connection is dropped."},
}

// SettingsAger is a SysctlReader that serves readings taken earlier, in
// the background; *watch.Settings is one. With it, the SettingsCollector
// also exports how old the reading it served is.
type SettingsAger interface {
	// Age returns the age of the reading served for target; ok is false
	// when there is none.
	Age(target netns.Target) (age time.Duration, ok bool)
}

// SettingsCollector exports the conntrack sysctls that explain the
// table's behaviour: timeouts, hash size, events, timestamps, accounting
// and TCP tracking leniency, and the namespace's TCP keepalive settings.
type SettingsCollector struct {
	source    SysctlReader
	tcpStates []string
	// tcpSysctls[i] is the timeout sysctl of tcpStates[i].
	tcpSysctls []string
	// conntrackNames and keepaliveNames are the sysctls read.
	conntrackNames, keepaliveNames []string
	tcp                            *exposition.Desc
	udp                            *exposition.Desc
	scalars                        []*exposition.Desc
	keepalive                      []*exposition.Desc
	ager                           SettingsAger
	age                            *exposition.Desc
}

// NewSettingsCollector returns a SettingsCollector reading from source.
// When source is a SettingsAger, the collector also exports
// conntrack_exporter_settings_age_seconds.
func NewSettingsCollector(source SysctlReader) *SettingsCollector {
	c := &SettingsCollector{
		source:         source,
		tcpStates:      sysctl.TCPTimeoutStates(),
		conntrackNames: sysctl.Conntrack(),
		keepaliveNames: sysctl.Keepalive(),
		tcp: exposition.NewDesc(prometheus.BuildFQName(MetricPrefix, "tcp", "timeout_seconds"),
			"Timeout of a TCP entry in each state (nf_conntrack_tcp_timeout_*). ESTABLISHED entries drop to max_retrans or unacknowledged after retransmissions or unacknowledged data.",
			prometheus.GaugeValue, NetnsLabel, "state"),
		udp: exposition.NewDesc(prometheus.BuildFQName(MetricPrefix, "udp", "timeout_seconds"),
			"Timeout of a UDP entry: unreplied (nf_conntrack_udp_timeout) or replied (nf_conntrack_udp_timeout_stream).",
			prometheus.GaugeValue, NetnsLabel, "state"),
	}
	// The series of a namespace go out in label order: the scrape then
	// merges the namespaces' lines instead of sorting them.
	slices.Sort(c.tcpStates)
	for _, state := range c.tcpStates {
		c.tcpSysctls = append(c.tcpSysctls, sysctl.TCPTimeoutPrefix+state)
	}
	for _, s := range scalarSettings {
		c.scalars = append(c.scalars, exposition.NewDesc(prometheus.BuildFQName(MetricPrefix, "", s.metric), s.help, prometheus.GaugeValue, NetnsLabel))
	}
	for _, s := range keepaliveSettings {
		c.keepalive = append(c.keepalive, exposition.NewDesc(prometheus.BuildFQName(MetricPrefix, "", s.metric), s.help, prometheus.GaugeValue, NetnsLabel))
	}
	if ager, ok := source.(SettingsAger); ok {
		c.ager = ager
		c.age = exposition.NewDesc(prometheus.BuildFQName(MetricPrefix, "exporter", "settings_age_seconds"),
			"Age of the sysctl reading the settings metrics of the namespace come from: the exporter reads them in the background, not on each scrape.",
			prometheus.GaugeValue, NetnsLabel)
	}
	return c
}

// Describe implements Collector.
func (c *SettingsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.tcp.Desc()
	ch <- c.udp.Desc()
	for _, d := range c.scalars {
		ch <- d.Desc()
	}
	for _, d := range c.keepalive {
		ch <- d.Desc()
	}
	if c.age != nil {
		ch <- c.age.Desc()
	}
}

// Update implements Collector.
func (c *SettingsCollector) Update(ctx context.Context, target netns.Target, sink *exposition.Sink) error {
	set, err := c.source.Read(ctx, target, c.conntrackNames...)
	if err != nil {
		return fmt.Errorf("settings: %w", err)
	}
	keepalive, err := c.source.ReadIPv4(ctx, target, c.keepaliveNames...)
	if err != nil {
		return fmt.Errorf("settings: keepalive: %w", err)
	}
	for i, state := range c.tcpStates {
		if v, ok := set[c.tcpSysctls[i]]; ok {
			sink.Add(c.tcp, float64(v), target.Name, state)
		}
	}
	for _, t := range udpTimeouts {
		if v, ok := set[t.sysctl]; ok {
			sink.Add(c.udp, float64(v), target.Name, t.state)
		}
	}
	for i, s := range scalarSettings {
		if v, ok := set[s.sysctl]; ok {
			sink.Add(c.scalars[i], float64(v), target.Name)
		}
	}
	for i, s := range keepaliveSettings {
		if v, ok := keepalive[s.sysctl]; ok {
			sink.Add(c.keepalive[i], float64(v), target.Name)
		}
	}
	if c.ager != nil {
		if age, ok := c.ager.Age(target); ok {
			sink.Add(c.age, age.Seconds(), target.Name)
		}
	}
	return nil
}
