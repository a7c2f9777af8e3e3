package events

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

// startSubscriber starts a Subscriber in ns that records into a sink, and
// stops it when the test ends.
func startSubscriber(t *testing.T, ns *nstest.Namespace, cfg Config) (*Subscriber, *recordSink) {
	t.Helper()
	sink := &recordSink{}
	s := New(ns.Target(), cfg, sink)
	if err := s.Start(context.Background()); err != nil {
		t.Fatalf("start subscriber in %s: %v", ns.Name, err)
	}
	t.Cleanup(s.Stop)
	return s, sink
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// noKeepAlive switches TCP keepalive off, so idle connections stay silent.
func noKeepAlive(t *testing.T, conns ...net.Conn) {
	t.Helper()
	for _, c := range conns {
		if err := c.(*net.TCPConn).SetKeepAlive(false); err != nil {
			t.Fatal(err)
		}
	}
}

// TestIdleFlowsExpireEstablished: N idle TCP connections in a namespace
// whose established timeout is 3 s die in ESTABLISHED, and their lifetimes
// from the kernel timestamps are 3 s, however late the garbage collector
// reaps them: nf_ct_delete backdates the stop timestamp to the real expiry.
func TestIdleFlowsExpireEstablished(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	t.Parallel()
	const n = 20
	p := nstest.NewPair(t)
	p.A.Sysctl(t, "net.netfilter.nf_conntrack_timestamp", "1")
	p.A.Sysctl(t, "net.netfilter.nf_conntrack_tcp_timeout_established", "3")
	s, sink := startSubscriber(t, p.A, Config{})
	if st := s.Stats(); st.Mode != ModeTimestamp || !st.Running || st.ReceiveBuffer < DefaultBufferSize {
		t.Fatalf("stats after start: %+v", st)
	}
	start := time.Now()
	clients, servers := p.Connect(t, n)
	connect := time.Since(start)
	noKeepAlive(t, append(clients, servers...)...)

	// The kernel's garbage collector reaps expired entries of an idle
	// table up to 60 s late; a dump of the table reaps those it meets at
	// once. Two seconds after the expiry, one dump makes the DESTROY
	// events come now, still late enough to show the backdating; the
	// collector catches whatever the dump left.
	time.Sleep(time.Until(start.Add(5 * time.Second)))
	p.A.Conntrack(t, "-L")
	waitFor(t, 70*time.Second, "n observations", func() bool { return len(sink.all()) >= n })
	arrival := time.Since(start)
	var lo, hi float64 = 1e9, 0
	for _, o := range sink.all() {
		if o.Protocol != protoTCP || o.TCPState != stateEstablished {
			t.Errorf("observation %+v, want tcp/established", o)
		}
		lo, hi = min(lo, o.Seconds), max(hi, o.Seconds)
	}
	// A lifetime runs from the first SYN to the expiry, 3 s after the
	// handshake's last ACK. The stop timestamp is backdated in jiffies
	// (4 ms at HZ=250), so a lifetime may fall a jiffy short of 3 s. The
	// handshakes took at most as long as all the connects together: that
	// is under 0.1 s on an idle machine, but a SYN retransmitted on a
	// loaded one adds its 1 s timeout.
	if limit := 3.01 + connect.Seconds(); lo < 2.99 || hi > limit {
		t.Errorf("lifetimes %.3f..%.3f s, want 2.99..%.3f s (connects took %v)", lo, hi, limit, connect)
	}
	st := s.Stats()
	if len(sink.all()) != n || st.Events[EventDestroy] != n || st.Lost != 0 || st.WithoutTimestamp != 0 || st.Malformed != 0 {
		t.Errorf("%d observations, stats %+v", len(sink.all()), st)
	}
	t.Logf("%d idle flows: lifetimes %.3f..%.3f s (connects took %v); last DESTROY received %.1f s after the first connect (the dump at 5 s reaps them)",
		n, lo, hi, connect.Round(time.Millisecond), arrival.Seconds())
}

// TestOrderlyCloseEndsTimeWait: connections closed by both sides end in
// TIME_WAIT (or CLOSE).
func TestOrderlyCloseEndsTimeWait(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	t.Parallel()
	const n = 5
	p := nstest.NewPair(t)
	p.A.Sysctl(t, "net.netfilter.nf_conntrack_timestamp", "1")
	p.A.Sysctl(t, "net.netfilter.nf_conntrack_tcp_timeout_time_wait", "1")
	s, sink := startSubscriber(t, p.A, Config{})
	clients, servers := p.Connect(t, n)
	noKeepAlive(t, append(clients, servers...)...)
	for i := range clients {
		clients[i].Close()
		servers[i].Close()
	}
	waitFor(t, 60*time.Second, "n observations", func() bool { return len(sink.all()) >= n })
	for _, o := range sink.all() {
		if o.Protocol != protoTCP || (o.TCPState != stateTimeWait && o.TCPState != stateClose) || o.Seconds > 3 {
			t.Errorf("observation %+v, want tcp/time_wait or close within 3 s", o)
		}
	}
	if st := s.Stats(); st.Lost != 0 || st.Malformed != 0 || len(sink.all()) != n {
		t.Errorf("%d observations, stats %+v", len(sink.all()), st)
	}
}

// TestFlowTableModeWithoutTimestamps: with nf_conntrack_timestamp=0 the
// Subscriber also listens to NEW events and measures lifetimes from its
// flow table.
func TestFlowTableModeWithoutTimestamps(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	t.Parallel()
	const n = 5
	p := nstest.NewPair(t)
	p.A.Sysctl(t, "net.netfilter.nf_conntrack_timestamp", "0")
	p.A.Sysctl(t, "net.netfilter.nf_conntrack_tcp_timeout_established", "2")
	s, sink := startSubscriber(t, p.A, Config{FlowTableSize: 1000})
	if st := s.Stats(); st.Mode != ModeFlowTable {
		t.Fatalf("mode %v, want flow_table", st.Mode)
	}
	connected := time.Now()
	clients, servers := p.Connect(t, n)
	noKeepAlive(t, append(clients, servers...)...)
	waitFor(t, 5*time.Second, "NEW events", func() bool { return s.Stats().FlowTableEntries == n })
	// Without the backdated stop timestamp the lifetime is the time from
	// receiving NEW to receiving DESTROY: it includes the garbage
	// collector's delay in reaping the entry (a table dump reaps expired
	// entries at once) and the reader's delays. It cannot be shorter than
	// the 2 s timeout less the delay in receiving NEW (0.5 s allowed), nor
	// longer than the time since the connections were opened.
	time.Sleep(2100 * time.Millisecond)
	p.A.Conntrack(t, "-L")
	waitFor(t, 30*time.Second, "n observations", func() bool { return len(sink.all()) >= n })
	upper := time.Since(connected).Seconds()
	for _, o := range sink.all() {
		if o.TCPState != stateEstablished || o.Seconds < 1.5 || o.Seconds > upper {
			t.Errorf("observation %+v, want established, 1.5..%.2f s", o, upper)
		}
	}
	st := s.Stats()
	if st.Events[EventNew] != n || st.FlowTableEntries != 0 || st.WithoutTimestamp != 0 || st.Evictions != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestEnableTimestampsSetsSysctl: EnableTimestamps sets
// nf_conntrack_timestamp in the watched namespace, and only there.
func TestEnableTimestampsSetsSysctl(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	t.Parallel()
	p := nstest.NewPair(t)
	p.A.Sysctl(t, "net.netfilter.nf_conntrack_timestamp", "0")
	p.B.Sysctl(t, "net.netfilter.nf_conntrack_timestamp", "0")
	s, _ := startSubscriber(t, p.A, Config{EnableTimestamps: true})
	if st := s.Stats(); st.Mode != ModeTimestamp {
		t.Fatalf("mode %v", st.Mode)
	}
	if v := strings.TrimSpace(p.A.Exec(t, "sysctl", "-n", "net.netfilter.nf_conntrack_timestamp")); v != "1" {
		t.Fatalf("A: timestamp = %s", v)
	}
	if v := strings.TrimSpace(p.B.Exec(t, "sysctl", "-n", "net.netfilter.nf_conntrack_timestamp")); v != "0" {
		t.Fatalf("B: timestamp = %s", v)
	}
}

// TestModeFollowsSysctl: the Subscriber notices nf_conntrack_timestamp
// changing and switches modes.
func TestModeFollowsSysctl(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	t.Parallel()
	ns := nstest.NewNamespace(t)
	ns.Sysctl(t, "net.netfilter.nf_conntrack_timestamp", "1")
	s, _ := startSubscriber(t, ns, Config{ModeCheckInterval: 50 * time.Millisecond})
	ns.Sysctl(t, "net.netfilter.nf_conntrack_timestamp", "0")
	waitFor(t, 5*time.Second, "flow_table mode", func() bool { return s.Stats().Mode == ModeFlowTable })
	ns.Sysctl(t, "net.netfilter.nf_conntrack_timestamp", "1")
	waitFor(t, 5*time.Second, "timestamp mode", func() bool { return s.Stats().Mode == ModeTimestamp })
}

// TestStartFailsForMissingNamespace: a namespace that does not exist is
// an error of Start.
func TestStartFailsForMissingNamespace(t *testing.T) {
	nstest.RequireRoot(t)
	ns := nstest.NewNamespace(t)
	target := ns.Target()
	target.Path += "-missing"
	s := New(target, Config{}, nopSink{})
	if err := s.Start(context.Background()); err == nil {
		s.Stop()
		t.Fatal("Start succeeded in a missing namespace")
	}
}

// TestNamespaceDeletedReleasesSocket: when the watched namespace is
// deleted, the Subscriber closes its socket (which would keep the
// namespace alive), reports itself down, and subscribes again once a
// namespace of that name exists again.
func TestNamespaceDeletedReleasesSocket(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	t.Parallel()
	ns := nstest.NewNamespace(t)
	s, _ := startSubscriber(t, ns, Config{ModeCheckInterval: 50 * time.Millisecond, RetryMin: 50 * time.Millisecond, RetryMax: 100 * time.Millisecond})
	nstest.Run(t, "ip", "netns", "del", ns.Name)
	waitFor(t, 5*time.Second, "the subscriber to notice", func() bool {
		st := s.Stats()
		// The first error says why the socket closed, the next ones why it
		// cannot be opened again.
		return !st.Running && (errors.Is(st.Err, ErrNamespaceChanged) || errors.Is(st.Err, netns.ErrNotExist))
	})
	nstest.Run(t, "ip", "netns", "add", ns.Name)
	waitFor(t, 5*time.Second, "the subscriber to come back", func() bool {
		st := s.Stats()
		return st.Running && st.Restarts == 1
	})
}
