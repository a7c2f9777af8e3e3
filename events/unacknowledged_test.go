package events

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

// TestUnacknowledgedDataKillsEstablishedFlow is the 300 s mechanism, time
// scaled: hosts A - R - B, R forwarding and tracking. R's established
// timeout is an hour, its unacknowledged and max_retrans timeouts are 3 s
// (both are 300 s by default; which one applies depends on how often A
// has retransmitted). After the connection is up, B silently drops A's
// segments; A keeps sending, so R sees data that is never acknowledged,
// cuts the entry's timeout to 3 s from each segment, and the entry expires
// in ESTABLISHED, without FIN or RST, once A's retransmission backoff
// leaves a gap longer than 3 s. R's histogram shows it.
func TestUnacknowledgedDataKillsEstablishedFlow(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	t.Parallel()
	const cut = 3 // seconds
	a, r, b := nstest.NewNamespace(t), nstest.NewNamespace(t), nstest.NewNamespace(t)
	nstest.Link(t, a, "198.18.1.1/24", r, "198.18.1.2/24")
	nstest.Link(t, r, "198.18.2.2/24", b, "198.18.2.1/24")
	a.Exec(t, "ip", "route", "add", "default", "via", "198.18.1.2")
	b.Exec(t, "ip", "route", "add", "default", "via", "198.18.2.2")
	r.Sysctl(t, "net.ipv4.ip_forward", "1")
	r.Sysctl(t, "net.netfilter.nf_conntrack_timestamp", "1")
	r.Sysctl(t, "net.netfilter.nf_conntrack_tcp_timeout_established", "3600")
	r.Sysctl(t, "net.netfilter.nf_conntrack_tcp_timeout_unacknowledged", fmt.Sprint(cut))
	r.Sysctl(t, "net.netfilter.nf_conntrack_tcp_timeout_max_retrans", fmt.Sprint(cut))
	s, sink := startSubscriber(t, r, Config{})

	l := b.Listen(t, "198.18.2.1:8443")
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	c, err := a.Dial(t, "198.18.2.1:8443", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	srv := <-accepted
	if srv == nil {
		t.Fatal("accept failed")
	}
	defer srv.Close()
	noKeepAlive(t, c, srv)
	// The connection works, through R.
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Read(make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	if out := r.Conntrack(t, "-L", "-p", "tcp", "--dport", "8443"); !strings.Contains(out, "ESTABLISHED") || !strings.Contains(out, "ASSURED") {
		t.Fatalf("R's entry is not ASSURED ESTABLISHED: %s", out)
	}

	// B silently drops everything from A from now on.
	b.Nft(t, `table inet blackhole {
	chain input { type filter hook input priority -10; policy accept; ip saddr 198.18.1.1 tcp dport 8443 drop; }
}`)
	dropped := time.Now()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := c.Write([]byte("data")); err != nil {
					return
				}
			}
		}
	}()

	waitFor(t, 60*time.Second, "R's entry to die", func() bool { return len(sink.all()) > 0 })
	died := time.Since(dropped)
	obs := sink.all()
	if len(obs) != 1 {
		t.Fatalf("observations %+v, want one", obs)
	}
	o := obs[0]
	if o.Protocol != protoTCP || o.TCPState != stateEstablished {
		t.Fatalf("observation %+v, want tcp/established", o)
	}
	// The entry lived at least the cut after the blackhole started, and
	// far less than the established timeout.
	if o.Seconds < cut || o.Seconds > 60 {
		t.Fatalf("lifetime %.3f s, want %d..60 s", o.Seconds, cut)
	}
	if st := s.Stats(); st.Lost != 0 || st.Malformed != 0 {
		t.Errorf("stats %+v", st)
	}
	t.Logf("R's entry died ESTABLISHED: lifetime %.3f s; DESTROY received %.1f s after B started dropping (unacknowledged timeout %d s, established timeout 3600 s)",
		o.Seconds, died.Seconds(), cut)
}
