package collector

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ct-exporter/ct-exporter/internal/exposition"
	"github.com/ct-exporter/ct-exporter/internal/podid"
	"github.com/ct-exporter/ct-exporter/internal/watch"
)

func TestNetnsCollector(t *testing.T) {
	st := &watch.Status{
		Discovery: true, OverLimit: 2, ScanErrors: 1, LastScan: 1500 * time.Millisecond,
		Namespaces: []watch.NamespaceInfo{
			{Name: "self", Source: "self", Inode: 4026531840, PID: 1, Comm: "init", Cgroup: "/"},
			{Name: "a", Source: "dir", Inode: 4026532000},
			{Name: "gone", Source: "path"},
			{Name: "ino-4026532288", Source: "proc", Inode: 4026532288, PID: 81234, Comm: "pause",
				Cgroup: "/kubepods/besteffort/pod6f1c3a2e-9b0d-4c57-8e21-0d4f5a6b7c8d/" + strings.Repeat("4b", 32),
				Pod:    podid.Identity{PodUID: "6f1c3a2e-9b0d-4c57-8e21-0d4f5a6b7c8d", ContainerID: strings.Repeat("4b", 32)}},
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
conntrack_exporter_watched_namespaces 4
# HELP conntrack_netns_info One series per watched network namespace (value 1): where it was found, its inode, and the lowest process ID in it with that process's command and cgroup when known, and the Kubernetes pod UID and container ID that cgroup names (empty outside pods).
# TYPE conntrack_netns_info gauge
conntrack_netns_info{cgroup="",comm="",container_id="",inode="",netns="gone",pid="",pod_uid="",source="path"} 1
conntrack_netns_info{cgroup="",comm="",container_id="",inode="4026532000",netns="a",pid="",pod_uid="",source="dir"} 1
conntrack_netns_info{cgroup="/",comm="init",container_id="",inode="4026531840",netns="self",pid="1",pod_uid="",source="self"} 1
conntrack_netns_info{cgroup="/kubepods/besteffort/pod6f1c3a2e-9b0d-4c57-8e21-0d4f5a6b7c8d/` + strings.Repeat("4b", 32) + `",comm="pause",container_id="` + strings.Repeat("4b", 32) + `",inode="4026532288",netns="ino-4026532288",pid="81234",pod_uid="6f1c3a2e-9b0d-4c57-8e21-0d4f5a6b7c8d",source="proc"} 1
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

// holdRecorder is an exposition.Collector that records how many holds
// were outstanding while it collected.
type holdRecorder struct {
	h          *countingHolder
	heldInside []int
}

func (r *holdRecorder) Describe(chan<- *prometheus.Desc) {}
func (r *holdRecorder) Collect(chan<- prometheus.Metric) {
	r.heldInside = append(r.heldInside, r.h.held-r.h.released)
}
func (r *holdRecorder) CollectTo(func() *exposition.Sink) {
	r.heldInside = append(r.heldInside, r.h.held-r.h.released)
}

func TestGuardHoldsDuringCollect(t *testing.T) {
	h := &countingHolder{}
	inner := &holdRecorder{h: h}
	g := Guard(inner, h)
	g.Collect(make(chan prometheus.Metric))
	g.CollectTo(func() *exposition.Sink { return nil })
	if len(inner.heldInside) != 2 || inner.heldInside[0] != 1 || inner.heldInside[1] != 1 || h.held != 2 || h.released != 2 {
		t.Fatalf("held %v inside Collect and CollectTo; %d holds, %d releases", inner.heldInside, h.held, h.released)
	}
}
