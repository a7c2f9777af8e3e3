package tablescan_test

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ct-exporter/ct-exporter/internal/nstest"
	"github.com/ct-exporter/ct-exporter/internal/tablescan"
)

// scan scans the table of ns with top-K off.
func scan(t *testing.T, ns *nstest.Namespace) *tablescan.Scan {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sc, err := tablescan.NewScanner(tablescan.Options{}).Scan(ctx, ns.Target())
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

// listed is one entry of conntrack -L: its original and reply tuples and
// its flags, as the tool prints them.
type listed struct {
	orig, reply map[string]string // src, dst, sport, dport
	unreplied   bool
	assured     bool
	helper      string
}

// conntrackList runs conntrack -L in ns and parses every entry.
func conntrackList(t *testing.T, ns *nstest.Namespace) []listed {
	t.Helper()
	// stdout only: conntrack's summary line on stderr may land mid-line.
	out, err := ns.Command(context.Background(), "conntrack", "-L").Output()
	if err != nil {
		t.Fatalf("conntrack -L: %v", err)
	}
	var entries []listed
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		e := listed{orig: map[string]string{}, reply: map[string]string{}}
		for _, w := range f {
			switch w {
			case "[UNREPLIED]":
				e.unreplied = true
			case "[ASSURED]":
				e.assured = true
			}
			k, v, ok := strings.Cut(w, "=")
			if !ok {
				continue
			}
			switch k {
			case "src", "dst", "sport", "dport":
				// The first of each is the original tuple, the second the
				// reply tuple.
				if _, seen := e.orig[k]; seen {
					e.reply[k] = v
				} else {
					e.orig[k] = v
				}
			case "helper":
				e.helper = v
			}
		}
		entries = append(entries, e)
	}
	return entries
}

// natKind says which translation conntrack -L's tuples show: source NAT
// when the reply does not go back to the original source, destination
// NAT when it does not come from the original destination.
func natKind(e listed) string {
	snat := e.reply["dst"] != e.orig["src"] || e.reply["dport"] != e.orig["sport"]
	dnat := e.reply["src"] != e.orig["dst"] || e.reply["sport"] != e.orig["dport"]
	switch {
	case snat && dnat:
		return "both"
	case snat:
		return "snat"
	case dnat:
		return "dnat"
	}
	return "none"
}

// dialN opens n TCP connections from ns to addr and keeps them open.
func dialN(t *testing.T, ns *nstest.Namespace, addr string, n int) {
	t.Helper()
	for i := range n {
		if _, err := ns.Dial(t, addr, 5*time.Second); err != nil {
			t.Fatalf("connection %d of %d to %s: %v", i+1, n, addr, err)
		}
	}
}

// serve accepts and holds every connection to a listener in ns on addr.
func serve(t *testing.T, ns *nstest.Namespace, addr string) net.Listener {
	t.Helper()
	l := ns.Listen(t, addr)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	return l
}

// TestScanKernelNATKinds routes a client through a router that masquerades
// one path, destination-NATs another, does both on a third and nothing on
// a fourth: the router's NAT breakdown equals what its conntrack -L tuples
// show.
func TestScanKernelNATKinds(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	client, router, server := nstest.NewNamespace(t), nstest.NewNamespace(t), nstest.NewNamespace(t)
	nstest.Link(t, client, "10.77.1.2/24", router, "10.77.1.1/24")
	nstest.Link(t, router, "10.77.2.1/24", server, "10.77.2.2/24")
	router.Sysctl(t, "net.ipv4.ip_forward", "1")
	client.Exec(t, "ip", "route", "add", "default", "via", "10.77.1.1")
	server.Exec(t, "ip", "route", "add", "default", "via", "10.77.2.1")
	// 81: masquerade only; router:8080 -> server:80: DNAT only;
	// router:8082 -> server:82: DNAT and masquerade; 83: routed as is.
	router.Nft(t, `table ip natlab {
	chain pre { type nat hook prerouting priority dstnat; policy accept;
		ip daddr 10.77.1.1 tcp dport 8080 dnat to 10.77.2.2:80
		ip daddr 10.77.1.1 tcp dport 8082 dnat to 10.77.2.2:82
	}
	chain post { type nat hook postrouting priority srcnat; policy accept;
		ip daddr 10.77.2.2 tcp dport { 81, 82 } masquerade
	}
}`)
	for _, port := range []string{"80", "81", "82", "83"} {
		serve(t, server, "10.77.2.2:"+port)
	}
	want := map[string]int{"snat": 3, "dnat": 4, "both": 2, "none": 5}
	dialN(t, client, "10.77.2.2:81", want["snat"])
	dialN(t, client, "10.77.1.1:8080", want["dnat"])
	dialN(t, client, "10.77.1.1:8082", want["both"])
	dialN(t, client, "10.77.2.2:83", want["none"])

	sc := scan(t, router)
	listedKinds := map[string]int{}
	for _, e := range conntrackList(t, router) {
		listedKinds[natKind(e)]++
	}
	got := map[string]int{}
	var sum uint64
	for _, k := range sc.NAT.Kinds() {
		got[k.NAT] = int(k.Entries)
		sum += k.Entries
	}
	t.Logf("router: scan %v, conntrack -L %v, total %d", got, listedKinds, sc.Total)
	for kind, n := range want {
		if got[kind] != n || listedKinds[kind] != n {
			t.Errorf("nat=%s: scan %d, conntrack -L %d, connections %d", kind, got[kind], listedKinds[kind], n)
		}
	}
	if sum != sc.Total || sc.Total != 14 || sc.Malformed != 0 {
		t.Errorf("NAT kinds add up to %d; total %d, malformed %d", sum, sc.Total, sc.Malformed)
	}
	if sc.Unreplied != 0 || sc.Evictable != 0 || len(sc.Helpers) != 0 {
		t.Errorf("established connections: unreplied %d, evictable %d, helpers %v", sc.Unreplied, sc.Evictable, sc.Helpers)
	}
}

// TestScanKernelUnrepliedAndEvictable sends SYNs that get no answer and
// creates entries without reply over ctnetlink, beside established
// connections and ASSURED entries: unreplied and evictable count exactly
// the former, as conntrack -L's [UNREPLIED] and missing [ASSURED] show.
func TestScanKernelUnrepliedAndEvictable(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	p := nstest.NewPair(t)
	// B drops what arrives on port 9: A's SYNs there get no reply.
	p.B.Nft(t, `table inet blackhole {
	chain in { type filter hook input priority -10; policy accept; tcp dport 9 drop; }
}`)
	const syns, established = 6, 4
	for i := range syns {
		if c, err := p.A.Dial(t, net.JoinHostPort(p.BAddr, "9"), 300*time.Millisecond); err == nil {
			c.Close()
			t.Fatalf("SYN %d to a dropped port was answered", i)
		}
	}
	p.Connect(t, established)
	src, dst := p.AAddr, "203.0.113.9"
	var entries []nstest.Entry
	for i := range 5 { // created without a reply, not assured
		entries = append(entries, nstest.Entry{
			Proto: unix.IPPROTO_UDP, Src: mustAddr(src), Dst: mustAddr(dst),
			SPort: uint16(20000 + i), DPort: 53, Timeout: 600,
		})
	}
	for i := range 7 { // ASSURED, as if replied
		entries = append(entries, nstest.Entry{
			Proto: unix.IPPROTO_TCP, Src: mustAddr(src), Dst: mustAddr(dst),
			SPort: uint16(30000 + i), DPort: 443, Timeout: 600, TCPState: nstest.TCPEstablished, Assured: true,
		})
	}
	if created, err := p.A.CreateEntries(t, entries); err != nil || created != len(entries) {
		t.Fatalf("created %d of %d: %v", created, len(entries), err)
	}

	sc := scan(t, p.A)
	var listedUnreplied, listedNotAssured int
	list := conntrackList(t, p.A)
	for _, e := range list {
		if e.unreplied {
			listedUnreplied++
		}
		if !e.assured {
			listedNotAssured++
		}
	}
	t.Logf("scan: %d entries, %d unreplied, %d evictable; conntrack -L: %d entries, %d [UNREPLIED], %d without [ASSURED]",
		sc.Total, sc.Unreplied, sc.Evictable, len(list), listedUnreplied, listedNotAssured)
	const want = syns + 5
	if sc.Total != syns+established+12 || uint64(len(list)) != sc.Total {
		t.Errorf("entries: scan %d, conntrack -L %d, want %d", sc.Total, len(list), syns+established+12)
	}
	if sc.Unreplied != want || listedUnreplied != want {
		t.Errorf("unreplied: scan %d, conntrack -L %d, want %d", sc.Unreplied, listedUnreplied, want)
	}
	if sc.Evictable != want || listedNotAssured != want {
		t.Errorf("evictable: scan %d, conntrack -L %d, want %d", sc.Evictable, listedNotAssured, want)
	}
}

// TestScanKernelFTPHelper assigns the kernel's ftp helper to TCP port 21
// with an nftables ct helper object and opens real connections to a
// listener on 21: the scan counts them under helper ftp, as conntrack -L's
// helper= shows, and nothing else.
func TestScanKernelFTPHelper(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	p := nstest.NewPair(t)
	p.B.Nft(t, `table inet ftplab {
	ct helper ftp-standard { type "ftp" protocol tcp; }
	chain pre { type filter hook prerouting priority filter; policy accept;
		tcp dport 21 ct helper set "ftp-standard"
	}
}`)
	serve(t, p.B, net.JoinHostPort(p.BAddr, "21"))
	const ftp, plain = 3, 2
	dialN(t, p.A, net.JoinHostPort(p.BAddr, "21"), ftp)
	l := serve(t, p.B, net.JoinHostPort(p.BAddr, "0"))
	dialN(t, p.A, l.Addr().String(), plain)

	sc := scan(t, p.B)
	listedHelpers := map[string]int{}
	for _, e := range conntrackList(t, p.B) {
		if e.helper != "" {
			listedHelpers[e.helper]++
		}
	}
	t.Logf("scan: %d entries, helpers %+v; conntrack -L helpers %v", sc.Total, sc.Helpers, listedHelpers)
	want := []tablescan.HelperCount{{Helper: "ftp", Entries: ftp}}
	if len(sc.Helpers) != 1 || sc.Helpers[0] != want[0] || listedHelpers["ftp"] != ftp || len(listedHelpers) != 1 {
		t.Fatalf("helpers: scan %+v, conntrack -L %v, want ftp=%d", sc.Helpers, listedHelpers, ftp)
	}
	if sc.Total != ftp+plain {
		t.Fatalf("entries %d, want %d", sc.Total, ftp+plain)
	}
	// The connections from A carry no helper on A's side.
	if sa := scan(t, p.A); len(sa.Helpers) != 0 || sa.Total != ftp+plain {
		t.Fatalf("client side: %d entries, helpers %+v", sa.Total, sa.Helpers)
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
