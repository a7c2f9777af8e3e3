package collector

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/ct-exporter/ct-exporter/internal/exposition"
	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/nstest"
	"github.com/ct-exporter/ct-exporter/internal/tablescan"
	"github.com/ct-exporter/ct-exporter/internal/watch"
)

// TestKernelTableCollector scans a real namespace in the background and
// serves the breakdown through the Exporter, with the table collector's
// success reported per namespace.
func TestKernelTableCollector(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	ns := nstest.NewNamespace(t)
	entries := nstest.EstablishedEntries(300, 200) // timeout 200 <= 300: shortened
	if created, err := ns.CreateEntries(t, entries); err != nil || created != len(entries) {
		t.Fatalf("created %d: %v", created, err)
	}
	target := ns.Target()
	scans := watch.NewTableScans(watch.TableScanOptions{Interval: time.Hour, Scan: tablescan.Options{TopK: 2}})
	c := NewTableCollector(scans)
	if err := scans.Watch(context.Background(), target); err != nil {
		t.Fatal(err)
	}
	defer scans.Forget(target)
	deadline := time.Now().Add(10 * time.Second)
	for {
		ch := make(chan prometheus.Metric, 1000)
		if err := c.Update(context.Background(), target, exposition.ChannelSink(ch)); err != nil {
			t.Fatal(err)
		}
		if len(ch) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no table scan within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	want := fmt.Sprintf(`# HELP conntrack_table_entries Conntrack entries by protocol and TCP state (none for other protocols), from the last table scan.
# TYPE conntrack_table_entries gauge
conntrack_table_entries{netns=%[1]q,protocol="tcp",state="established"} 300
# HELP conntrack_table_shortened_timeout_entries ESTABLISHED TCP entries whose remaining timeout is at or below nf_conntrack_tcp_timeout_max_retrans/_unacknowledged while the established timeout is larger: their segments went unacknowledged and they are on the path to expire without FIN or RST. From the last table scan.
# TYPE conntrack_table_shortened_timeout_entries gauge
conntrack_table_shortened_timeout_entries{netns=%[1]q} 300
`, target.Name)
	o := &oneTarget{c: c, target: target}
	if err := testutil.CollectAndCompare(o, strings.NewReader(want),
		"conntrack_table_entries", "conntrack_table_shortened_timeout_entries"); err != nil {
		t.Fatal(err)
	}
	n, err := testutil.GatherAndCount(registry(t, o), "conntrack_table_top_source_entries")
	if err != nil || n != 3 {
		t.Fatalf("%d source series, %v", n, err)
	}
	// Through the Exporter, the collector reports success for the namespace.
	e := NewExporter(map[string]Collector{TableName: c}, func() []netns.Target { return []netns.Target{target} }, time.Second, zap.NewNop())
	wantSuccess := fmt.Sprintf(`# HELP conntrack_exporter_collector_success Whether the collector succeeded for the network namespace on this scrape (1) or not (0).
# TYPE conntrack_exporter_collector_success gauge
conntrack_exporter_collector_success{collector="table",netns=%q} 1
`, target.Name)
	if err := testutil.CollectAndCompare(e, strings.NewReader(wantSuccess), "conntrack_exporter_collector_success"); err != nil {
		t.Fatal(err)
	}
}
