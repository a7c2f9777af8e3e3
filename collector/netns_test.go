package collector

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ct-exporter/ct-exporter/internal/watch"
)

func TestNetnsCollector(t *testing.T) {
	st := &watch.Status{
		Discovery: true, OverLimit: 2, ScanErrors: 1, LastScan: 1500 * time.Millisecond,
		Namespaces: []watch.NamespaceInfo{
			{Name: "self", Source: "self", Inode: 4026531840, PID: 1, Comm: "init", Cgroup: "/"},
			{Name: "a", Source: "dir", Inode: 4026532000},
			{Name: "gone", Source: "path"},
		},
	}
	c := NewNetnsCollector(func() *watch.Status { return st })
	want := `# HELP conntrack_exporter_netns_discovery_duration_seconds How long the last rescan of network namespaces took.
# TYPE conntrack_exporter_netns_discovery_duration_seconds gauge
conntrack_exporter_netns_discovery_duration_seconds 1.5
# HELP conntrack_exporter_netns_discovery_errors_total Rescans whose namespace discovery failed in part; what they could not read was kept as it was.
# TYPE conntrack_exporter_netns_discovery_errors_total counter
conntrack_exporter_netns_discovery_errors_total 1
# HELP conntrack_exporter_netns_over_limit Discovered network namespaces not watched at the last rescan because --conntrack.netns-max was reached.
# TYPE conntrack_exporter_netns_over_limit gauge
conntrack_exporter_netns_over_limit 2
# HELP conntrack_exporter_watched_namespaces Network namespaces watched now: static, the exporter's own, and discovered.
# TYPE conntrack_exporter_watched_namespaces gauge
conntrack_exporter_watched_namespaces 3
# HELP conntrack_netns_info One series per watched network namespace (value 1): where it was found, its inode, and the lowest process ID in it with that process's command and cgroup when known.
# TYPE conntrack_netns_info gauge
conntrack_netns_info{cgroup="",comm="",inode="",netns="gone",pid="",source="path"} 1
conntrack_netns_info{cgroup="",comm="",inode="4026532000",netns="a",pid="",source="dir"} 1
conntrack_netns_info{cgroup="/",comm="init",inode="4026531840",netns="self",pid="1",source="self"} 1
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	// Without discovery only the count and the info series are sent.
	st = &watch.Status{Namespaces: st.Namespaces[:1]}
	if n := testutil.CollectAndCount(c); n != 2 {
		t.Fatalf("%d series without discovery, want 2", n)
	}
}

// countingHolder counts holds and releases.
type countingHolder struct{ held, released int }

func (h *countingHolder) Hold() func() {
	h.held++
	return func() { h.released++ }
}

func TestGuardHoldsDuringCollect(t *testing.T) {
	h := &countingHolder{}
	var heldInside int
	inner := prometheus.CollectorFunc(func(chan<- prometheus.Metric) {
		heldInside = h.held - h.released
	})
	Guard(inner, h).Collect(make(chan prometheus.Metric))
	if heldInside != 1 || h.held != 1 || h.released != 1 {
		t.Fatalf("held %d inside Collect; %d holds, %d releases", heldInside, h.held, h.released)
	}
}
