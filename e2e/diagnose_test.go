package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ct-exporter/ct-exporter/diagnose"
	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

// runDiagnose runs `ct-exporter diagnose` with args and returns its exit
// code and output.
func runDiagnose(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, append([]string{"diagnose"}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatalf("ct-exporter diagnose: %v\n%s", err, errOut.String())
	}
	return code, out.String(), errOut.String()
}

// diagnoseJSON runs diagnose with --output=json and decodes the report.
func diagnoseJSON(t *testing.T, args ...string) (int, *diagnose.Report) {
	t.Helper()
	code, stdout, stderr := runDiagnose(t, append(args, "--output=json")...)
	var r diagnose.Report
	dec := json.NewDecoder(strings.NewReader(stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("diagnose --output=json (exit %d): %v\nstdout:\n%s\nstderr:\n%s", code, err, stdout, stderr)
	}
	return code, &r
}

// findingCodes lists the codes of a namespace's findings.
func findingCodes(ns diagnose.NamespaceReport) []string {
	var out []string
	for _, f := range ns.Findings {
		out = append(out, f.Code)
	}
	return out
}

func TestDiagnoseHealthyNamespace(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	p := nstest.NewPair(t)
	p.Connect(t, 3)

	code, stdout, stderr := runDiagnose(t, "--conntrack.netns="+p.A.Path, "--duration=2s")
	t.Logf("diagnose output:\n%s", stdout)
	if code != 0 || stderr != "" {
		t.Errorf("exit code %d, stderr %q; want 0 and nothing", code, stderr)
	}
	if !strings.Contains(stdout, "\nRecommendations\n  none\n") {
		t.Error("a healthy namespace got recommendations")
	}
	if !strings.Contains(stdout, "verdict: OK\n") {
		t.Error("no OK verdict")
	}

	code, r := diagnoseJSON(t, "--conntrack.netns="+p.A.Path, "--duration=1s")
	if code != 0 || r.Verdict != diagnose.VerdictOK || len(r.Namespaces) != 1 {
		t.Fatalf("json: exit code %d, verdict %s, %d namespaces", code, r.Verdict, len(r.Namespaces))
	}
	ns := r.Namespaces[0]
	if len(ns.Recommendations) != 0 {
		t.Errorf("recommendations %+v", ns.Recommendations)
	}
	if ns.Name != p.A.Name || ns.Fill.Entries != 3 || ns.Fill.Limit == 0 {
		t.Errorf("namespace %s, fill %+v; want %s with 3 entries", ns.Name, ns.Fill, p.A.Name)
	}
	if !ns.Table.Available || ns.Table.Entries != 3 || ns.Table.EstablishedTCP != 3 {
		t.Errorf("table %+v, want 3 established entries", ns.Table)
	}
	if len(ns.Table.Sources) == 0 || ns.Table.Sources[0].Address != p.AAddr {
		t.Errorf("top sources %+v, want %s first", ns.Table.Sources, p.AAddr)
	}
	if !ns.Lifetimes.Available {
		t.Errorf("lifetimes not available: %s", ns.Lifetimes.Reason)
	}
}

// globalMax reads nf_conntrack_max of the initial namespace.
func globalMax(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_max")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// dominantFill returns n ASSURED ESTABLISHED entries: dominant of them
// from 10.20.30.40 to many ports of 198.18.0.0/16, the rest from
// 198.19.0.0/16 (256 entries per source) to 198.18.255.254:443.
func dominantFill(n, dominant int) []nstest.Entry {
	out := make([]nstest.Entry, 0, n)
	src := netip.MustParseAddr("10.20.30.40")
	for i := range dominant {
		dst := netip.AddrFrom4([4]byte{198, 18, byte(i >> 16 & 0xff), byte(i >> 8 & 0xff)})
		out = append(out, nstest.Entry{
			Proto: unix.IPPROTO_TCP, Src: src, Dst: dst,
			SPort: uint16(1024 + i&0xff), DPort: 8080,
			Timeout: 3600, TCPState: nstest.TCPEstablished, Assured: true,
		})
	}
	return append(out, nstest.EstablishedEntries(n-dominant, 3600)...)
}

func TestDiagnoseNearlyFull(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	limit := globalMax(t)
	if limit > 1<<20 {
		t.Skipf("nf_conntrack_max is %d: filling a namespace to 90 %% takes too long", limit)
	}
	ns := nstest.NewNamespace(t)
	total := limit*915/1000 + 1
	dominant := total * 3 / 4
	start := time.Now()
	created, err := ns.CreateEntries(t, dominantFill(total, dominant))
	if created != total {
		t.Fatalf("created %d of %d entries: %v", created, total, err)
	}
	t.Logf("created %d entries (%d from 10.20.30.40) in %s", created, dominant, time.Since(start).Round(time.Millisecond))

	code, stdout, stderr := runDiagnose(t, "--conntrack.netns="+ns.Path, "--duration=2s")
	t.Logf("diagnose output:\n%s", stdout)
	if code != 2 {
		t.Errorf("exit code %d, want 2 (critical); stderr %q", code, stderr)
	}
	for _, want := range []string{
		"Fill" + strings.Repeat(" ", 67) + "CRITICAL",
		"  top sources    10.20.30.40",
		"[dominant_source] Look at the client 10.20.30.40",
		"[raise_limit] Raise nf_conntrack_max to " + commas(2*limit),
		"verdict: CRITICAL\n",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q", want)
		}
	}

	code, r := diagnoseJSON(t, "--conntrack.netns="+ns.Path, "--duration=1s")
	if code != 2 || r.Verdict != diagnose.VerdictCritical {
		t.Fatalf("json: exit code %d, verdict %s", code, r.Verdict)
	}
	n := r.Namespaces[0]
	if n.Fill.Verdict != diagnose.VerdictCritical || n.Fill.Entries != uint64(total) || n.Fill.Limit != uint64(limit) {
		t.Errorf("fill %+v, want %d of %d, critical", n.Fill, total, limit)
	}
	if n.Table.Entries != uint64(total) || len(n.Table.Sources) == 0 ||
		n.Table.Sources[0].Address != "10.20.30.40" || n.Table.Sources[0].Entries != uint64(dominant) {
		t.Errorf("table: %d entries, sources %+v", n.Table.Entries, n.Table.Sources)
	}
	if codes := findingCodes(n); !contains(codes, "fill_high") || !contains(codes, "source_dominates") {
		t.Errorf("findings %v", codes)
	}
}

// commas writes n with thousands separators.
func commas(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestDiagnoseIdleFlowsDieAtShortTimeout(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	p := nstest.NewPair(t)
	// Per-namespace sysctls of A only: a 3 s established timeout, and
	// timestamps and events on every flow created from now on.
	p.A.Sysctl(t, "net.netfilter.nf_conntrack_tcp_timeout_established", "3")
	p.A.Sysctl(t, "net.netfilter.nf_conntrack_timestamp", "1")
	p.A.Sysctl(t, "net.netfilter.nf_conntrack_events", "1")
	const flows = 12
	p.Connect(t, flows) // open and idle: their entries in A expire after 3 s

	code, stdout, stderr := runDiagnose(t, "--conntrack.netns="+p.A.Path, "--duration=6s")
	t.Logf("diagnose output:\n%s", stdout)
	if code != 1 {
		t.Errorf("exit code %d, want 1 (warning); stderr %q", code, stderr)
	}
	for _, want := range []string{
		"  cluster        " + strconv.Itoa(flows) + " (100.0 %) at 1..5 s: the established timeout (3 s)",
		"[established_timeout] Raise nf_conntrack_tcp_timeout_established (now 3 s)",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

func TestDiagnoseCouldNotRun(t *testing.T) {
	nstest.RequireRoot(t, "setpriv")
	for _, tc := range []struct {
		name   string
		cmd    []string
		stderr string
	}{
		{"without CAP_NET_ADMIN",
			[]string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", binary, "diagnose", "--duration=1s"},
			"ct-exporter diagnose: reading conntrack over netlink needs CAP_NET_ADMIN (operation not permitted); run as root or grant it, " +
				"e.g. AmbientCapabilities=CAP_NET_ADMIN in the systemd unit or --cap-add NET_ADMIN for a container\n"},
		{"missing namespace",
			[]string{binary, "diagnose", "--conntrack.netns=/run/netns/ct-exporter-does-not-exist"},
			"ct-exporter diagnose: --conntrack.netns=/run/netns/ct-exporter-does-not-exist: no such network namespace; create it (ip netns add NAME) or fix the path\n"},
		{"bad output",
			[]string{binary, "diagnose", "--output=yaml"},
			"ct-exporter: error: enum value must be one of text,json, got 'yaml', try --help\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(tc.cmd[0], tc.cmd[1:]...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 3 {
				t.Errorf("err %v, want exit code 3", err)
			}
			if stderr.String() != tc.stderr {
				t.Errorf("stderr %q, want %q", stderr.String(), tc.stderr)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout %q, want nothing", stdout.String())
			}
		})
	}
}

// netfilterListeners counts the ctnetlink sockets of ns that joined a
// multicast group (the Groups column of /proc/net/netlink for protocol
// NETLINK_NETFILTER): diagnose's event subscriber is one.
func netfilterListeners(t *testing.T, ns *nstest.Namespace) int {
	t.Helper()
	// thread-self: /proc/net shows the namespace of the main thread.
	b, err := ns.ReadFile("/proc/thread-self/net/netlink")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		// sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
		if len(f) >= 4 && f[1] == "12" && strings.Trim(f[3], "0") != "" {
			n++
		}
	}
	return n
}

// TestDiagnoseAttribution builds one server namespace with ftp helper
// entries (an nftables ct helper on port 21 and real connections),
// half-open entries (created over ctnetlink, never answered) and silent
// ends (idle connections that expire ESTABLISHED under a 3 s established
// timeout and are reaped by diagnose's table dump during the sample): the
// report names each with its exact count.
func TestDiagnoseAttribution(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	p := nstest.NewPair(t)
	srv := p.B
	srv.Sysctl(t, "net.netfilter.nf_conntrack_timestamp", "1")
	srv.Sysctl(t, "net.netfilter.nf_conntrack_events", "1")
	srv.Nft(t, `table inet ftplab {
	ct helper ftp-standard { type "ftp" protocol tcp; }
	chain pre { type filter hook prerouting priority filter; policy accept;
		tcp dport 21 ct helper set "ftp-standard"
	}
}`)
	// Neither side sends keepalives: a probe would refresh an entry with
	// the short established timeout set below.
	hold := func(l net.Listener, accepted chan<- struct{}) {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.(*net.TCPConn).SetKeepAlive(false)
			t.Cleanup(func() { c.Close() })
			accepted <- struct{}{}
		}
	}
	dial := func(addr string) {
		err := p.A.Target().Do(func() error {
			c, err := (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: -1}).Dial("tcp", addr)
			if err == nil {
				t.Cleanup(func() { c.Close() })
			}
			return err
		})
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
	}
	const ftpConns, halfOpen, idleConns = 10, 25, 8
	ftpAccepted := make(chan struct{}, ftpConns)
	go hold(srv.Listen(t, net.JoinHostPort(p.BAddr, "21")), ftpAccepted)
	for range ftpConns {
		dial(net.JoinHostPort(p.BAddr, "21"))
	}
	// Accepted: the server saw each handshake's last ACK, so no packet of
	// these connections follows the timeout change below.
	for range ftpConns {
		<-ftpAccepted
	}
	var entries []nstest.Entry
	for i := range halfOpen {
		entries = append(entries, nstest.Entry{
			Proto: unix.IPPROTO_UDP, Src: netip.MustParseAddr("203.0.113.7"), Dst: netip.MustParseAddr(p.BAddr),
			SPort: uint16(20000 + i), DPort: 53, Timeout: 600,
		})
	}
	if created, err := srv.CreateEntries(t, entries); created != halfOpen {
		t.Fatalf("created %d of %d half-open entries: %v", created, halfOpen, err)
	}
	// From now on new established entries expire after 3 s idle; the ftp
	// entries keep the timeout their last packet set.
	srv.Sysctl(t, "net.netfilter.nf_conntrack_tcp_timeout_established", "3")
	idle := srv.Listen(t, net.JoinHostPort(p.BAddr, "0"))
	go hold(idle, make(chan struct{}, idleConns))
	_, idlePort, _ := net.SplitHostPort(idle.Addr().String())

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "diagnose", "--conntrack.netns="+srv.Path, "--duration=10s", "--middlebox-idle-timeout=350s")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The idle connections open once diagnose listens to the events, so
	// no reaping before it can miss their ends.
	started := time.Now()
	for netfilterListeners(t, srv) == 0 {
		if ctx.Err() != nil {
			t.Fatal("diagnose never subscribed to the events")
		}
		time.Sleep(20 * time.Millisecond)
	}
	subscribed := time.Since(started)
	for range idleConns {
		dial(idle.Addr().String())
	}
	t.Logf("diagnose subscribed after %v; idle connections open after %v", subscribed, time.Since(started))
	err := cmd.Wait()
	var exit *exec.ExitError
	code := 0
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	stdout := out.String()
	t.Logf("diagnose output:\n%s", stdout)
	if code != 1 || errOut.Len() != 0 {
		t.Errorf("exit code %d, stderr %q; want 1 (warning) and nothing", code, errOut.String())
	}
	total := ftpConns + halfOpen
	row := func(label, name string, entries int, share float64) string {
		return fmt.Sprintf("  %-14s %-16s %9d %5.1f %%\n", label, name, entries, share*100)
	}
	silentTo := net.JoinHostPort(p.BAddr, idlePort)
	for _, want := range []string{
		fmt.Sprintf("Table (dump of %d entries", total),
		row("helper entries", "ftp", ftpConns, float64(ftpConns)/float64(total)),
		fmt.Sprintf("  unreplied      %d (%.1f %%) have seen no reply; %d (%.1f %%) not assured,", halfOpen,
			100*float64(halfOpen)/float64(total), halfOpen, 100*float64(halfOpen)/float64(total)),
		fmt.Sprintf("  ended          %d flows, %d of them silently (established, no FIN or RST)", idleConns, idleConns),
		row("top enders", p.AAddr, idleConns, 1),
		row("silent ends to", silentTo, idleConns, 1),
		fmt.Sprintf("have a conntrack helper attached: ftp %d", ftpConns),
		fmt.Sprintf("(%d) have seen no reply", halfOpen),
		fmt.Sprintf("%d flows to %s ended silently", idleConns, silentTo),
		"net.ipv4.tcp_keepalive_time is 7200 s, at or above the middlebox",
		"[helper_assignment]", "[unreplied_flows]", "[keepalive_below_idle_timeout]",
		"$ modprobe -r nf_conntrack_ftp",
		"  all deaths     1..5 s",
		"verdict: WARNING\n",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if strings.Contains(stdout, "\u2588") {
		t.Error("block characters in output that is not a terminal")
	}

	// The table parts stay: a JSON run counts them again.
	code, r := diagnoseJSON(t, "--conntrack.netns="+srv.Path, "--duration=1s")
	tb := r.Namespaces[0].Table
	if code != 1 || tb.Entries != uint64(total) || tb.Unreplied != halfOpen || tb.Evictable != halfOpen ||
		len(tb.Helpers) != 1 || tb.Helpers[0].Helper != "ftp" || tb.Helpers[0].Entries != ftpConns {
		t.Errorf("json: exit %d, table %+v", code, tb)
	}
	if k := r.Namespaces[0].Settings.Keepalive; k == nil || k.TimeSeconds != 7200 || k.IntervalSeconds != 75 || k.Probes != 9 {
		t.Errorf("keepalive %+v", k)
	}
}
