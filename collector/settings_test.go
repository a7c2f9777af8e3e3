package collector

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/nstest"
	"github.com/ct-exporter/ct-exporter/internal/sysctl"
	"github.com/ct-exporter/ct-exporter/internal/watch"
)

func writeSysctls(t *testing.T, values map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, v := range values {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestSettingsCollector(t *testing.T) {
	dir := writeSysctls(t, map[string]string{
		"nf_conntrack_tcp_timeout_established":    "432000",
		"nf_conntrack_tcp_timeout_max_retrans":    "300",
		"nf_conntrack_tcp_timeout_unacknowledged": "300",
		"nf_conntrack_udp_timeout_stream":         "120",
		"nf_conntrack_timestamp":                  "1",
		"nf_conntrack_events":                     "2",
		"nf_conntrack_tcp_be_liberal":             "0",
		"nf_conntrack_buckets":                    "65536",
		"nf_conntrack_count":                      "12", // not a setting: ignored
	})
	ipv4 := writeSysctls(t, map[string]string{
		"tcp_keepalive_time":   "7200",
		"tcp_keepalive_intvl":  "75",
		"tcp_keepalive_probes": "9",
		"tcp_fin_timeout":      "60", // not a keepalive setting: ignored
	})
	c := &oneTarget{c: NewSettingsCollector(sysctl.Reader{Dir: dir, IPv4Dir: ipv4}), target: netns.Self()}
	want := `# HELP conntrack_buckets Size of the conntrack hash table (nf_conntrack_buckets, global).
# TYPE conntrack_buckets gauge
conntrack_buckets{netns="self"} 65536
# HELP conntrack_events_mode nf_conntrack_events: 0 off, 1 on, 2 on only for flows created while a listener exists.
# TYPE conntrack_events_mode gauge
conntrack_events_mode{netns="self"} 2
# HELP conntrack_tcp_be_liberal nf_conntrack_tcp_be_liberal: 1 when out-of-window TCP packets are not marked INVALID.
# TYPE conntrack_tcp_be_liberal gauge
conntrack_tcp_be_liberal{netns="self"} 0
# HELP conntrack_tcp_keepalive_interval_seconds net.ipv4.tcp_keepalive_intvl: time between TCP keepalive probes.
# TYPE conntrack_tcp_keepalive_interval_seconds gauge
conntrack_tcp_keepalive_interval_seconds{netns="self"} 75
# HELP conntrack_tcp_keepalive_probes net.ipv4.tcp_keepalive_probes: unanswered keepalive probes before the connection is dropped.
# TYPE conntrack_tcp_keepalive_probes gauge
conntrack_tcp_keepalive_probes{netns="self"} 9
# HELP conntrack_tcp_keepalive_time_seconds net.ipv4.tcp_keepalive_time: idle time before the first TCP keepalive probe, for sockets that enable keepalive without their own value. Above a middlebox idle timeout, idle connections are dropped silently.
# TYPE conntrack_tcp_keepalive_time_seconds gauge
conntrack_tcp_keepalive_time_seconds{netns="self"} 7200
# HELP conntrack_tcp_timeout_seconds Timeout of a TCP entry in each state (nf_conntrack_tcp_timeout_*). ESTABLISHED entries drop to max_retrans or unacknowledged after retransmissions or unacknowledged data.
# TYPE conntrack_tcp_timeout_seconds gauge
conntrack_tcp_timeout_seconds{netns="self",state="established"} 432000
conntrack_tcp_timeout_seconds{netns="self",state="max_retrans"} 300
conntrack_tcp_timeout_seconds{netns="self",state="unacknowledged"} 300
# HELP conntrack_timestamp_enabled nf_conntrack_timestamp: 1 when new flows carry start/stop timestamps.
# TYPE conntrack_timestamp_enabled gauge
conntrack_timestamp_enabled{netns="self"} 1
# HELP conntrack_udp_timeout_seconds Timeout of a UDP entry: unreplied (nf_conntrack_udp_timeout) or replied (nf_conntrack_udp_timeout_stream).
# TYPE conntrack_udp_timeout_seconds gauge
conntrack_udp_timeout_seconds{netns="self",state="replied"} 120
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	if c.err != nil {
		t.Fatal(c.err)
	}
}

func TestSettingsCollectorErrors(t *testing.T) {
	for name, values := range map[string]map[string]string{
		"no sysctls":  {},
		"not integer": {"nf_conntrack_tcp_timeout_established": "forever"},
	} {
		t.Run(name, func(t *testing.T) {
			c := &oneTarget{c: NewSettingsCollector(sysctl.Reader{Dir: writeSysctls(t, values), IPv4Dir: writeSysctls(t, nil)}), target: netns.Self()}
			if n := testutil.CollectAndCount(c); n != 0 {
				t.Errorf("%d metrics from a failed read", n)
			}
			if c.err == nil || !strings.HasPrefix(c.err.Error(), "settings: netns self: ") {
				t.Errorf("error = %v", c.err)
			}
		})
	}
}

// TestSettingsCollectorKeepaliveOfTheNamespace reads the keepalive
// settings of a fresh namespace after changing one there: the gauges show
// the namespace's values, not the host's.
func TestSettingsCollectorKeepaliveOfTheNamespace(t *testing.T) {
	nstest.RequireRoot(t)
	ns := nstest.NewNamespace(t)
	ns.Sysctl(t, "net.ipv4.tcp_keepalive_time", "240")
	ns.Sysctl(t, "net.ipv4.tcp_keepalive_probes", "4")
	c := &oneTarget{c: NewSettingsCollector(sysctl.Reader{}), target: ns.Target()}
	want := `# HELP conntrack_tcp_keepalive_interval_seconds net.ipv4.tcp_keepalive_intvl: time between TCP keepalive probes.
# TYPE conntrack_tcp_keepalive_interval_seconds gauge
conntrack_tcp_keepalive_interval_seconds{netns="` + ns.Name + `"} 75
# HELP conntrack_tcp_keepalive_probes net.ipv4.tcp_keepalive_probes: unanswered keepalive probes before the connection is dropped.
# TYPE conntrack_tcp_keepalive_probes gauge
conntrack_tcp_keepalive_probes{netns="` + ns.Name + `"} 4
# HELP conntrack_tcp_keepalive_time_seconds net.ipv4.tcp_keepalive_time: idle time before the first TCP keepalive probe, for sockets that enable keepalive without their own value. Above a middlebox idle timeout, idle connections are dropped silently.
# TYPE conntrack_tcp_keepalive_time_seconds gauge
conntrack_tcp_keepalive_time_seconds{netns="` + ns.Name + `"} 240
`
	err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"conntrack_tcp_keepalive_time_seconds", "conntrack_tcp_keepalive_interval_seconds", "conntrack_tcp_keepalive_probes")
	if err != nil {
		t.Fatal(err)
	}
	if c.err != nil {
		t.Fatal(c.err)
	}
}

// TestSettingsCollectorServesTheBackgroundReading serves settings read
// when the namespace was watched: a change of the sysctl afterwards shows
// only at the next reading, and the age of the reading is exported.
func TestSettingsCollectorServesTheBackgroundReading(t *testing.T) {
	dir := writeSysctls(t, map[string]string{"nf_conntrack_events": "1"})
	ipv4 := writeSysctls(t, map[string]string{"tcp_keepalive_time": "7200"})
	settings := watch.NewSettings(watch.SettingsOptions{
		Source:   sysctl.Reader{Dir: dir, IPv4Dir: ipv4},
		Interval: time.Hour,
	})
	target := netns.Self()
	c := &oneTarget{c: NewSettingsCollector(settings), target: target}
	// Not watched: no reading to serve.
	if n := testutil.CollectAndCount(c); n != 0 || !errors.Is(c.err, watch.ErrNotWatched) {
		t.Fatalf("%d metrics, error %v; want none and ErrNotWatched", n, c.err)
	}
	if err := settings.Watch(context.Background(), target); err != nil {
		t.Fatal(err)
	}
	defer settings.Forget(target)
	if err := os.WriteFile(filepath.Join(dir, "nf_conntrack_events"), []byte("2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	want := `# HELP conntrack_events_mode nf_conntrack_events: 0 off, 1 on, 2 on only for flows created while a listener exists.
# TYPE conntrack_events_mode gauge
conntrack_events_mode{netns="self"} 1
# HELP conntrack_tcp_keepalive_time_seconds net.ipv4.tcp_keepalive_time: idle time before the first TCP keepalive probe, for sockets that enable keepalive without their own value. Above a middlebox idle timeout, idle connections are dropped silently.
# TYPE conntrack_tcp_keepalive_time_seconds gauge
conntrack_tcp_keepalive_time_seconds{netns="self"} 7200
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "conntrack_events_mode", "conntrack_tcp_keepalive_time_seconds"); err != nil {
		t.Fatal(err)
	}
	if c.err != nil {
		t.Fatal(c.err)
	}
	vals := gather(t, c.c, target)
	age, ok := vals["conntrack_exporter_settings_age_seconds"]
	if !ok || age < 0 || age > 3600 {
		t.Fatalf("settings age %v (exported: %v), want the age of the reading", age, ok)
	}
}
