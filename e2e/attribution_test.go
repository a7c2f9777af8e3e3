package e2e

import (
	"bufio"
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

// ended is one DESTROY event as conntrack -E prints it.
type ended struct {
	proto, state, src, dst, dport string
	assured                       bool
}

// silent reports a flow that reached ESTABLISHED and ended still
// ESTABLISHED.
func (e ended) silent() bool { return e.proto == "tcp" && e.state == "ESTABLISHED" && e.assured }

// parseEnded parses a line of conntrack -E -e DESTROY; ok is false for
// other lines.
func parseEnded(line string) (e ended, ok bool) {
	f := strings.Fields(line)
	if len(f) < 3 || f[0] != "[DESTROY]" {
		return e, false
	}
	e.proto = f[1]
	inOrig := true
	for _, w := range f[2:] {
		switch {
		case w == "[ASSURED]":
			e.assured = true
		case w == "[UNREPLIED]":
		case strings.HasPrefix(w, "src="):
			if e.src != "" {
				inOrig = false
			} else {
				e.src = strings.TrimPrefix(w, "src=")
			}
		case inOrig && strings.HasPrefix(w, "dst=") && e.dst == "":
			e.dst = strings.TrimPrefix(w, "dst=")
		case inOrig && strings.HasPrefix(w, "dport=") && e.dport == "":
			e.dport = strings.TrimPrefix(w, "dport=")
		case e.src == "" && e.state == "" && strings.ToUpper(w) == w && w[0] >= 'A' && w[0] <= 'Z':
			e.state = w
		}
	}
	return e, e.src != ""
}

// destroyWatch is conntrack -E -e DESTROY running in a namespace: an
// independent record of the flows that ended there.
type destroyWatch struct {
	mu    sync.Mutex
	ended []ended
}

// probeSource is the source address of the entries that show that
// conntrack -E listens; they are left out of the record.
const probeSource = "192.0.2.99"

// watchDestroys starts conntrack -E -e DESTROY in ns and returns once it
// has received a DESTROY event, so that it sees every flow created after.
func watchDestroys(t *testing.T, ns *nstest.Namespace) *destroyWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := ns.Command(ctx, "stdbuf", "-oL", "conntrack", "-E", "-e", "DESTROY")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := &destroyWatch{}
	probed := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		once := sync.Once{}
		for sc.Scan() {
			e, ok := parseEnded(sc.Text())
			if !ok {
				continue
			}
			if e.src == probeSource {
				once.Do(func() { close(probed) })
				continue
			}
			w.mu.Lock()
			w.ended = append(w.ended, e)
			w.mu.Unlock()
		}
		io.Copy(io.Discard, out)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		cmd.Wait()
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		ns.Conntrack(t, "-I", "-p", "udp", "-s", probeSource, "-d", "192.0.2.98", "--sport", "1", "--dport", "1", "-t", "60")
		ns.Conntrack(t, "-D", "-s", probeSource)
		select {
		case <-probed:
			return w
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("conntrack -E showed no DESTROY event within 15s")
		}
	}
}

// snapshot returns the flows that ended so far.
func (w *destroyWatch) snapshot() []ended {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]ended(nil), w.ended...)
}

// waitEnded makes the kernel reap expired entries with table dumps until
// conntrack -E has seen n flows end, and returns them.
func (w *destroyWatch) waitEnded(t *testing.T, ns *nstest.Namespace, n int) []ended {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := w.snapshot()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("conntrack -E saw %d of %d flows end within 60s", len(got), n)
		}
		ns.Conntrack(t, "-L")
		time.Sleep(500 * time.Millisecond)
	}
}

// shortClosingTimeouts makes entries of closed TCP connections expire
// after 1 s in ns.
func shortClosingTimeouts(t *testing.T, ns *nstest.Namespace) {
	t.Helper()
	for _, k := range []string{"time_wait", "close_wait", "fin_wait", "last_ack", "close"} {
		ns.Sysctl(t, "net.netfilter.nf_conntrack_tcp_timeout_"+k, "1")
	}
}

// series returns the series of family name in netns ns as label maps
// (netns left out) with their values.
func series(mfs map[string]*dto.MetricFamily, name, ns string) map[string]float64 {
	out := map[string]float64{}
	for _, m := range mfs[name].GetMetric() {
		var key []string
		mine := false
		for _, l := range m.GetLabel() {
			if l.GetName() == "netns" {
				mine = l.GetValue() == ns
				continue
			}
			key = append(key, l.GetName()+"="+l.GetValue())
		}
		if mine {
			out[strings.Join(key, ",")] = m.GetGauge().GetValue()
		}
	}
	return out
}

// scrapeUntil scrapes d until the gauge name{labels} equals want, and
// returns that scrape.
func scrapeUntil(t *testing.T, d *Daemon, name string, labels map[string]string, want float64) map[string]*dto.MetricFamily {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		mfs := Families(t, d.Scrape(t))
		v, ok := Value(mfs, name, labels)
		if ok && v == want {
			return mfs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v = %v (present %v) after 30s, want %v", name, labels, v, ok, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestDaemonFlowEndsTopSource: three client addresses, one opening ten
// times the connections of the others, churn through orderly connections;
// the daemon names it as the top source of flow ends with the count
// conntrack -E saw end for it, and the named and other series add up to
// the window total, which equals every flow conntrack -E saw end.
func TestDaemonFlowEndsTopSource(t *testing.T) {
	nstest.RequireRoot(t, "conntrack", "stdbuf")
	ns := nstest.NewNamespace(t)
	shortClosingTimeouts(t, ns)
	w := watchDestroys(t, ns)
	d := startDaemon(t, "--conntrack.netns="+ns.Path, "--events.top-window=10m", "--events.top-k=2")

	l := ns.Listen(t, "127.0.0.1:0")
	go nstest.CloseAfterPeer(l)
	opened := map[string]int{"127.0.0.2": 30, "127.0.0.3": 3, "127.0.0.4": 3}
	want := 0
	for from, n := range opened {
		want += n
		for range n {
			c := ns.DialFrom(t, from, l.Addr().String())
			c.Close()
		}
	}
	seen := map[string]int{}
	for _, e := range w.waitEnded(t, ns, want) {
		seen[e.src]++
	}
	total := len(w.snapshot())

	labels := map[string]string{"netns": ns.Name, "breakdown": "source"}
	mfs := scrapeUntil(t, d, "conntrack_flow_top_window_ends", labels, float64(total))
	top := series(mfs, "conntrack_flow_ends_top_source", ns.Name)
	t.Logf("opened %v; conntrack -E saw %v ended (%d in all); daemon: %v, window total %d", opened, seen, total, top, total)
	if total != want || seen["127.0.0.2"] != opened["127.0.0.2"] {
		t.Errorf("conntrack -E saw %d flows end (%v), want %d (%v)", total, seen, want, opened)
	}
	if top["source=127.0.0.2"] != float64(seen["127.0.0.2"]) {
		t.Errorf("top source 127.0.0.2 = %v, conntrack -E saw %d end", top["source=127.0.0.2"], seen["127.0.0.2"])
	}
	var sum float64
	for k, v := range top {
		sum += v
		if k != "source=127.0.0.2" && v >= top["source=127.0.0.2"] {
			t.Errorf("%s = %v is not below the top source's %v", k, v, top["source=127.0.0.2"])
		}
	}
	if len(top) != 3 || top["source=other"] != 3 || sum != float64(total) {
		t.Errorf("%d source series %v summing to %v, want 2 named and other=3 summing to %d", len(top), top, sum, total)
	}
	if v, ok := Value(mfs, "conntrack_flow_top_error_bound_ends", labels); !ok || v != 0 {
		t.Errorf("source error bound %v (present %v), want 0", v, ok)
	}
}

// TestDaemonSilentEndsTopDestination: idle connections to one server port
// expire ESTABLISHED under a short established timeout, connections to
// another port close in order; only the first destination appears among
// the silent ends, with the count conntrack -E saw die ESTABLISHED.
func TestDaemonSilentEndsTopDestination(t *testing.T) {
	nstest.RequireRoot(t, "conntrack", "stdbuf")
	ns := nstest.NewNamespace(t)
	ns.Sysctl(t, "net.netfilter.nf_conntrack_tcp_timeout_established", "2")
	shortClosingTimeouts(t, ns)
	w := watchDestroys(t, ns)
	d := startDaemon(t, "--conntrack.netns="+ns.Path)

	idle := ns.Listen(t, "127.0.0.1:0")
	orderly := ns.Listen(t, "127.0.0.1:0")
	go nstest.HoldIdle(t, idle)
	go nstest.CloseAfterPeer(orderly)
	const idleConns, orderlyConns = 4, 5
	for range idleConns {
		ns.DialFrom(t, "127.0.0.2", idle.Addr().String())
	}
	for range orderlyConns {
		ns.DialFrom(t, "127.0.0.3", orderly.Addr().String()).Close()
	}
	silentSeen := map[string]int{}
	for _, e := range w.waitEnded(t, ns, idleConns+orderlyConns) {
		if e.silent() {
			silentSeen["destination="+e.dst+",port="+e.dport]++
		}
	}
	silentTotal := 0
	for _, n := range silentSeen {
		silentTotal += n
	}

	mfs := scrapeUntil(t, d, "conntrack_flow_top_window_ends",
		map[string]string{"netns": ns.Name, "breakdown": "silent_destination"}, float64(silentTotal))
	top := series(mfs, "conntrack_flow_silent_ends_top_destination", ns.Name)
	_, idlePort, _ := net.SplitHostPort(idle.Addr().String())
	_, orderlyPort, _ := net.SplitHostPort(orderly.Addr().String())
	idleKey := "destination=127.0.0.1,port=" + idlePort
	t.Logf("idle port %s, orderly port %s; conntrack -E saw silent ends %v; daemon: %v", idlePort, orderlyPort, silentSeen, top)
	if len(silentSeen) != 1 || silentSeen[idleKey] != idleConns {
		t.Errorf("conntrack -E saw silent ends %v, want %s=%d only", silentSeen, idleKey, idleConns)
	}
	wantTop := map[string]float64{idleKey: float64(silentSeen[idleKey]), "destination=other,port=other": 0}
	if len(top) != len(wantTop) || top[idleKey] != wantTop[idleKey] || top["destination=other,port=other"] != 0 {
		t.Errorf("silent-end series %v, want %v", top, wantTop)
	}
}

// TestDaemonTableAttribution: the NAT, unreplied, evictable and helper
// families of two namespaces, one with SYNs nobody answers, one with a
// destination NAT and the ftp helper, hold the counts conntrack -L shows.
func TestDaemonTableAttribution(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	p := nstest.NewPair(t)
	// B: port 8080 is redirected to 80 (destination NAT), port 21 gets the
	// ftp helper, port 9 drops SYNs: A's entries to it see no reply.
	p.B.Nft(t, `table ip attrlab {
	ct helper ftp-standard { type "ftp" protocol tcp; }
	chain helpers { type filter hook prerouting priority filter; policy accept;
		tcp dport 21 ct helper set "ftp-standard"
	}
	chain nat { type nat hook prerouting priority dstnat; policy accept;
		tcp dport 8080 redirect to :80
	}
	chain in { type filter hook input priority -10; policy accept; tcp dport 9 drop; }
}`)
	for _, port := range []string{"21", "80"} {
		l := p.B.Listen(t, net.JoinHostPort(p.BAddr, port))
		go nstest.HoldIdle(t, l)
	}
	const ftp, dnat, syns = 3, 2, 4
	for range ftp {
		p.A.DialFrom(t, p.AAddr, net.JoinHostPort(p.BAddr, "21"))
	}
	for range dnat {
		p.A.DialFrom(t, p.AAddr, net.JoinHostPort(p.BAddr, "8080"))
	}
	for i := range syns {
		if c, err := p.A.Dial(t, net.JoinHostPort(p.BAddr, "9"), 300*time.Millisecond); err == nil {
			c.Close()
			t.Fatalf("SYN %d to a dropped port was answered", i)
		}
	}
	listed := func(ns *nstest.Namespace, word string) int {
		out, err := ns.Command(context.Background(), "conntrack", "-L").Output()
		if err != nil {
			t.Fatalf("conntrack -L: %v", err)
		}
		n := 0
		for line := range strings.Lines(string(out)) {
			if strings.Contains(line, word) {
				n++
			}
		}
		return n
	}

	d := startDaemon(t, "--conntrack.netns="+p.A.Path, "--conntrack.netns="+p.B.Path)
	var mfs map[string]*dto.MetricFamily
	deadline := time.Now().Add(15 * time.Second)
	for {
		mfs = Families(t, d.Scrape(t))
		_, okA := Value(mfs, "conntrack_table_last_scan_timestamp_seconds", map[string]string{"netns": p.A.Name})
		_, okB := Value(mfs, "conntrack_table_last_scan_timestamp_seconds", map[string]string{"netns": p.B.Name})
		if okA && okB {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no table scan of both namespaces within 15s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	aUnreplied, aNotAssured := listed(p.A, "[UNREPLIED]"), p.A.CountEntries(t)-listed(p.A, "[ASSURED]")
	bFTP := listed(p.B, "helper=ftp")
	t.Logf("A: conntrack -L %d entries, %d [UNREPLIED], %d not [ASSURED]; B: %d entries, %d helper=ftp", p.A.CountEntries(t), aUnreplied, aNotAssured, p.B.CountEntries(t), bFTP)
	for _, c := range []struct {
		ns     *nstest.Namespace
		family string
		want   map[string]float64
	}{
		{p.A, "conntrack_table_nat_entries", map[string]float64{"nat=none": ftp + dnat + syns, "nat=snat": 0, "nat=dnat": 0, "nat=both": 0}},
		{p.A, "conntrack_table_unreplied_entries", map[string]float64{"": float64(aUnreplied)}},
		{p.A, "conntrack_table_evictable_entries", map[string]float64{"": float64(aNotAssured)}},
		{p.A, "conntrack_table_helper_entries", map[string]float64{}},
		{p.B, "conntrack_table_nat_entries", map[string]float64{"nat=none": ftp, "nat=snat": 0, "nat=dnat": dnat, "nat=both": 0}},
		{p.B, "conntrack_table_unreplied_entries", map[string]float64{"": 0}},
		{p.B, "conntrack_table_evictable_entries", map[string]float64{"": 0}},
		{p.B, "conntrack_table_helper_entries", map[string]float64{"helper=ftp": float64(bFTP)}},
	} {
		got := series(mfs, c.family, c.ns.Name)
		t.Logf("%s %s: %v", c.ns.Name, c.family, got)
		if len(got) != len(c.want) {
			t.Errorf("%s %s: %v, want %v", c.ns.Name, c.family, got, c.want)
			continue
		}
		for k, v := range c.want {
			if got[k] != v {
				t.Errorf("%s %s: %v, want %v", c.ns.Name, c.family, got, c.want)
				break
			}
		}
	}
	if aUnreplied != syns || bFTP != ftp {
		t.Errorf("conntrack -L: A %d unreplied, want %d; B %d ftp, want %d", aUnreplied, syns, bFTP, ftp)
	}
}
