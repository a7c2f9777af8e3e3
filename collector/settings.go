package collector

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ct-exporter/ct-exporter/internal/netns"
)

// SysctlDir is where the kernel shows the conntrack sysctls of the
// reading thread's network namespace.
const SysctlDir = "/proc/sys/net/netfilter"

// Settings maps sysctl file names under SysctlDir (for example
// "nf_conntrack_tcp_timeout_established") to their values. A sysctl the
// kernel does not have is absent.
type Settings map[string]int64

// SettingsSource reads a namespace's conntrack sysctls.
type SettingsSource interface {
	Settings(ctx context.Context, target netns.Target) (Settings, error)
}

// ProcSettings reads the sysctls from /proc/sys inside the namespace.
type ProcSettings struct {
	// Dir overrides SysctlDir, for tests.
	Dir string
}

// Settings implements SettingsSource. For a namespace other than the
// exporter's own the files are read from a thread that entered it.
func (p ProcSettings) Settings(_ context.Context, target netns.Target) (Settings, error) {
	dir := p.Dir
	if dir == "" {
		dir = SysctlDir
	}
	out := Settings{}
	err := target.Do(func() error {
		for _, name := range sysctlNames() {
			b, err := os.ReadFile(filepath.Join(dir, name))
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				return fmt.Errorf("netns %s: read %s: %w", target, name, err)
			}
			v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
			if err != nil {
				return fmt.Errorf("netns %s: parse %s: %w", target, name, err)
			}
			out[name] = v
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("netns %s: no conntrack sysctls under %s", target, dir)
	}
	return out, nil
}

// tcpTimeoutStates are the TCP states with a timeout sysctl, as the label
// values of conntrack_tcp_timeout_seconds.
var tcpTimeoutStates = []string{
	"syn_sent", "syn_recv", "established", "fin_wait", "close_wait",
	"last_ack", "time_wait", "close", "max_retrans", "unacknowledged",
}

// udpTimeouts maps the UDP timeout sysctls to their state label.
var udpTimeouts = map[string]string{
	"nf_conntrack_udp_timeout":        "unreplied",
	"nf_conntrack_udp_timeout_stream": "replied",
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

// sysctlNames lists every sysctl file the settings collector reads.
func sysctlNames() []string {
	names := make([]string, 0, len(tcpTimeoutStates)+len(udpTimeouts)+len(scalarSettings))
	for _, s := range tcpTimeoutStates {
		names = append(names, "nf_conntrack_tcp_timeout_"+s)
	}
	for name := range udpTimeouts {
		names = append(names, name)
	}
	for _, s := range scalarSettings {
		names = append(names, s.sysctl)
	}
	return names
}

// SettingsCollector exports the conntrack sysctls that explain the
// table's behaviour: timeouts, hash size, events, timestamps, accounting
// and TCP tracking leniency.
type SettingsCollector struct {
	source  SettingsSource
	tcp     *prometheus.Desc
	udp     *prometheus.Desc
	scalars []*prometheus.Desc
}

// NewSettingsCollector returns a SettingsCollector reading from source.
func NewSettingsCollector(source SettingsSource) *SettingsCollector {
	c := &SettingsCollector{
		source: source,
		tcp: prometheus.NewDesc(prometheus.BuildFQName(MetricPrefix, "tcp", "timeout_seconds"),
			"Timeout of a TCP entry in each state (nf_conntrack_tcp_timeout_*). ESTABLISHED entries drop to max_retrans or unacknowledged after retransmissions or unacknowledged data.",
			[]string{NetnsLabel, "state"}, nil),
		udp: prometheus.NewDesc(prometheus.BuildFQName(MetricPrefix, "udp", "timeout_seconds"),
			"Timeout of a UDP entry: unreplied (nf_conntrack_udp_timeout) or replied (nf_conntrack_udp_timeout_stream).",
			[]string{NetnsLabel, "state"}, nil),
	}
	for _, s := range scalarSettings {
		c.scalars = append(c.scalars, prometheus.NewDesc(prometheus.BuildFQName(MetricPrefix, "", s.metric), s.help, []string{NetnsLabel}, nil))
	}
	return c
}

// Describe implements Collector.
func (c *SettingsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.tcp
	ch <- c.udp
	for _, d := range c.scalars {
		ch <- d
	}
}

// Update implements Collector.
func (c *SettingsCollector) Update(ctx context.Context, target netns.Target, ch chan<- prometheus.Metric) error {
	set, err := c.source.Settings(ctx, target)
	if err != nil {
		return fmt.Errorf("settings: %w", err)
	}
	for _, state := range tcpTimeoutStates {
		if v, ok := set["nf_conntrack_tcp_timeout_"+state]; ok {
			ch <- prometheus.MustNewConstMetric(c.tcp, prometheus.GaugeValue, float64(v), target.Name, state)
		}
	}
	for name, state := range udpTimeouts {
		if v, ok := set[name]; ok {
			ch <- prometheus.MustNewConstMetric(c.udp, prometheus.GaugeValue, float64(v), target.Name, state)
		}
	}
	for i, s := range scalarSettings {
		if v, ok := set[s.sysctl]; ok {
			ch <- prometheus.MustNewConstMetric(c.scalars[i], prometheus.GaugeValue, float64(v), target.Name)
		}
	}
	return nil
}
