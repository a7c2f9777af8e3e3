package collector

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/ct-exporter/ct-exporter/events"
	"github.com/ct-exporter/ct-exporter/histogram"
	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/nstest"
	"github.com/ct-exporter/ct-exporter/internal/topk"
	"github.com/ct-exporter/ct-exporter/internal/watch"
)

// TestEventsCollectorKernel watches a real namespace through the Exporter:
// an idle connection that expires ESTABLISHED shows up in the lifetime
// histogram and as the one silent end of its destination, and the
// collector succeeds.
func TestEventsCollectorKernel(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	t.Parallel()
	p := nstest.NewPair(t)
	p.A.Sysctl(t, "net.netfilter.nf_conntrack_timestamp", "1")
	p.A.Sysctl(t, "net.netfilter.nf_conntrack_tcp_timeout_established", "2")
	subs := watch.NewSubscribers(watch.SubscriberStarter(events.Config{}), NewLifetimeSink)
	c := NewEventsCollector(subs, topk.DefaultK)
	target := p.A.Target()
	if err := subs.Watch(context.Background(), target); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { subs.Forget(target) })
	clients, servers := p.Connect(t, 1)
	for _, conn := range append(clients, servers...) {
		conn.(*net.TCPConn).SetKeepAlive(false)
	}
	exp := NewExporter(map[string]Collector{EventsName: c}, func() []netns.Target { return []netns.Target{target} }, 5*time.Second, zap.NewNop())
	deadline := time.Now().Add(60 * time.Second)
	for testutil.CollectAndCount(exp, histogram.Name) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no lifetime observed")
		}
		time.Sleep(100 * time.Millisecond)
	}
	want := `# HELP conntrack_exporter_collector_success Whether the collector succeeded for the network namespace on this scrape (1) or not (0).
# TYPE conntrack_exporter_collector_success gauge
conntrack_exporter_collector_success{collector="events",netns="` + target.Name + `"} 1
# HELP conntrack_exporter_events_lost_total Conntrack events the kernel dropped because the exporter's socket queue was full (the socket's exact drop count).
# TYPE conntrack_exporter_events_lost_total counter
conntrack_exporter_events_lost_total{netns="` + target.Name + `"} 0
# HELP conntrack_exporter_lifetime_mode How flow lifetimes are measured: timestamp (kernel start/stop timestamps of the DESTROY event) or flow_table (receive times of NEW and DESTROY events); 1 for the active mode.
# TYPE conntrack_exporter_lifetime_mode gauge
conntrack_exporter_lifetime_mode{mode="flow_table",netns="` + target.Name + `"} 0
conntrack_exporter_lifetime_mode{mode="timestamp",netns="` + target.Name + `"} 1
`
	if err := testutil.CollectAndCompare(exp, strings.NewReader(want),
		"conntrack_exporter_collector_success", "conntrack_exporter_events_lost_total", "conntrack_exporter_lifetime_mode"); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(exp)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != histogram.Name {
			continue
		}
		m := mf.GetMetric()[0]
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["protocol"] != "tcp" || labels["end_state"] != "established" || labels["netns"] != target.Name ||
			m.GetHistogram().GetSampleCount() != 1 || m.GetHistogram().GetSampleSum() < 1.99 || m.GetHistogram().GetSampleSum() > 3 {
			t.Fatalf("histogram %v", m)
		}
	}
	server := servers[0].LocalAddr().(*net.TCPAddr)
	client := clients[0].LocalAddr().(*net.TCPAddr)
	wantTop := `# HELP conntrack_flow_silent_ends_top_destination Flows that reached ESTABLISHED and ended still ESTABLISHED (no FIN or RST seen) within the sliding window, by original-direction destination address and port: the top K, and all others (destination="other",port="other"). The series sum to conntrack_flow_top_window_ends{breakdown="silent_destination"}.
# TYPE conntrack_flow_silent_ends_top_destination gauge
conntrack_flow_silent_ends_top_destination{destination="` + server.IP.String() + `",netns="` + target.Name + `",port="` + strconv.Itoa(server.Port) + `"} 1
conntrack_flow_silent_ends_top_destination{destination="other",netns="` + target.Name + `",port="other"} 0
# HELP conntrack_flow_ends_top_source Flows that ended within the sliding window, by original-direction source address: the top K sources, and all others (source="other"). The series sum to conntrack_flow_top_window_ends{breakdown="source"}.
# TYPE conntrack_flow_ends_top_source gauge
conntrack_flow_ends_top_source{netns="` + target.Name + `",source="` + client.IP.String() + `"} 1
conntrack_flow_ends_top_source{netns="` + target.Name + `",source="other"} 0
`
	if err := testutil.CollectAndCompare(exp, strings.NewReader(wantTop),
		"conntrack_flow_silent_ends_top_destination", "conntrack_flow_ends_top_source"); err != nil {
		t.Fatal(err)
	}
}
