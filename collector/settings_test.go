package collector

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/sysctl"
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
	c := &oneTarget{c: NewSettingsCollector(sysctl.Reader{Dir: dir}), target: netns.Self()}
	want := `# HELP conntrack_buckets Size of the conntrack hash table (nf_conntrack_buckets, global).
# TYPE conntrack_buckets gauge
conntrack_buckets{netns="self"} 65536
# HELP conntrack_events_mode nf_conntrack_events: 0 off, 1 on, 2 on only for flows created while a listener exists.
# TYPE conntrack_events_mode gauge
conntrack_events_mode{netns="self"} 2
# HELP conntrack_tcp_be_liberal nf_conntrack_tcp_be_liberal: 1 when out-of-window TCP packets are not marked INVALID.
# TYPE conntrack_tcp_be_liberal gauge
conntrack_tcp_be_liberal{netns="self"} 0
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
			c := &oneTarget{c: NewSettingsCollector(sysctl.Reader{Dir: writeSysctls(t, values)}), target: netns.Self()}
			if n := testutil.CollectAndCount(c); n != 0 {
				t.Errorf("%d metrics from a failed read", n)
			}
			if c.err == nil || !strings.HasPrefix(c.err.Error(), "settings: netns self: ") {
				t.Errorf("error = %v", c.err)
			}
		})
	}
}
