package e2e

import (
	"net/netip"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

// TestDaemonTableBreakdown runs the daemon on a namespace holding 1200
// entries from 300 sources and checks the table breakdown it serves: the
// entries add up to conntrack -C, each top-K breakdown has K+1 series that
// add up to the same total, and the largest source and port come first.
func TestDaemonTableBreakdown(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	ns := nstest.NewNamespace(t)
	var entries []nstest.Entry
	dst := netip.MustParseAddr("198.51.100.1")
	add := func(n int, src netip.Addr, proto uint8, dport uint16, state uint8, timeout uint32) {
		for range n {
			entries = append(entries, nstest.Entry{
				Proto: proto, Src: src, Dst: dst, SPort: uint16(10000 + len(entries)), DPort: dport,
				Timeout: timeout, TCPState: state,
			})
		}
	}
	add(600, netip.MustParseAddr("10.9.0.1"), unix.IPPROTO_TCP, 443, nstest.TCPEstablished, 600)
	add(100, netip.MustParseAddr("10.9.0.2"), unix.IPPROTO_TCP, 443, nstest.TCPEstablished, 100) // shortened
	for i := range 250 {
		add(2, netip.AddrFrom4([4]byte{10, 8, byte(i >> 8), byte(i)}), unix.IPPROTO_UDP, uint16(1000+i), nstest.TCPNone, 600)
	}
	if created, err := ns.CreateEntries(t, entries); err != nil || created != len(entries) {
		t.Fatalf("created %d of %d: %v", created, len(entries), err)
	}
	total := float64(ns.CountEntries(t))
	if total != 1200 {
		t.Fatalf("conntrack -C = %v, want 1200", total)
	}

	d := startDaemon(t, "--conntrack.netns="+ns.Path, "--table.top-k=3")
	labels := map[string]string{"netns": ns.Name}
	var text string
	waitUntil := time.Now().Add(15 * time.Second)
	for {
		text = d.Scrape(t)
		if _, ok := Value(Families(t, text), "conntrack_table_last_scan_timestamp_seconds", labels); ok {
			break
		}
		if time.Now().After(waitUntil) {
			t.Fatalf("no table scan within 15s:\n%s", d.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	mfs := Families(t, text)
	if v, _ := Value(mfs, "conntrack_exporter_collector_success", map[string]string{"netns": ns.Name, "collector": "table"}); v != 1 {
		t.Errorf("table collector_success = %v", v)
	}
	sum := func(name string) (float64, int) {
		var s float64
		var n int
		for _, m := range mfs[name].GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "netns" && l.GetValue() == ns.Name {
					s += m.GetGauge().GetValue()
					n++
				}
			}
		}
		return s, n
	}
	if s, _ := sum("conntrack_table_entries"); s != total {
		t.Errorf("conntrack_table_entries sum to %v, conntrack -C %v", s, total)
	}
	for _, name := range []string{"conntrack_table_top_source_entries", "conntrack_table_top_destination_port_entries"} {
		if s, n := sum(name); s != total || n != 4 {
			t.Errorf("%s: %d series summing to %v, want 4 summing to %v", name, n, s, total)
		}
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"conntrack_table_entries", map[string]string{"protocol": "tcp", "state": "established"}, 700},
		{"conntrack_table_entries", map[string]string{"protocol": "udp", "state": "none"}, 500},
		{"conntrack_table_top_source_entries", map[string]string{"source": "10.9.0.1"}, 600},
		{"conntrack_table_top_source_entries", map[string]string{"source": "10.9.0.2"}, 100},
		{"conntrack_table_top_source_entries", map[string]string{"source": "other"}, 498},
		{"conntrack_table_top_destination_port_entries", map[string]string{"protocol": "tcp", "port": "443"}, 700},
		{"conntrack_table_top_destination_port_entries", map[string]string{"protocol": "other", "port": "other"}, 496},
		{"conntrack_table_shortened_timeout_entries", nil, 100},
		{"conntrack_table_scan_malformed_entries", nil, 0},
	} {
		l := map[string]string{"netns": ns.Name}
		for k, v := range c.labels {
			l[k] = v
		}
		if v, ok := Value(mfs, c.name, l); !ok || v != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, v, ok, c.want)
		}
	}
	if v, ok := Value(mfs, "conntrack_table_scan_duration_seconds", labels); !ok || v <= 0 || v > 10 {
		t.Errorf("scan duration %v (present %v)", v, ok)
	}
	ts, _ := Value(mfs, "conntrack_table_last_scan_timestamp_seconds", labels)
	if age := float64(time.Now().Unix()) - ts; age < -1 || age > 60 {
		t.Errorf("last scan %s s ago", strconv.FormatFloat(age, 'f', 1, 64))
	}
}
