// Package nstest wraps package lab for tests that run against the real
// kernel: throwaway network namespaces with conntrack switched on, veth
// pairs between them, TCP connections across them, and tables filled over
// ctnetlink, each step failing the test instead of returning an error.
//
// Every namespace a test creates is deleted by t.Cleanup, whether the test
// passes or fails. Nothing here changes a global sysctl.
package nstest

import (
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ct-exporter/ct-exporter/internal/lab"
)

// Entry describes one conntrack entry to create over ctnetlink.
type Entry = lab.Entry

// TCP states as ctnetlink numbers them (enum tcp_conntrack).
const (
	TCPNone        = lab.TCPNone
	TCPSynSent     = lab.TCPSynSent
	TCPSynRecv     = lab.TCPSynRecv
	TCPEstablished = lab.TCPEstablished
	TCPFinWait     = lab.TCPFinWait
	TCPCloseWait   = lab.TCPCloseWait
	TCPLastAck     = lab.TCPLastAck
	TCPTimeWait    = lab.TCPTimeWait
	TCPClose       = lab.TCPClose
)

// EstablishedEntries returns count distinct ASSURED ESTABLISHED TCP
// entries (see lab.EstablishedEntries).
func EstablishedEntries(count int, timeout uint32) []Entry {
	return lab.EstablishedEntries(count, timeout)
}

// InCI reports whether the tests run in continuous integration, where
// kernel tests must run rather than skip: CI is set to anything but "",
// "0" or "false" (CI=true, CI=1).
func InCI() bool {
	v := strings.ToLower(os.Getenv("CI"))
	return v != "" && v != "0" && v != "false"
}

// RequireRoot stops a kernel test that cannot run: outside CI it skips
// with a message when the process is not root or a tool is missing; in CI
// it fails, because there the kernel tests must run.
func RequireRoot(t testing.TB, tools ...string) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, tool := range append([]string{"ip", "nft"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "kernel test needs " + strings.Join(missing, ", ")
	if InCI() {
		t.Fatal(msg + " (CI is set, so this test must run)")
	}
	t.Skip(msg)
}

// Namespace is a named network namespace created for one test; the
// error-returning steps of lab.Namespace (Insert, Output, Flush, ...) are
// promoted from it.
type Namespace struct {
	*lab.Namespace
}

// NewNamespace creates an empty network namespace with loopback up and
// conntrack switched on (lab.TrackingRuleset), and deletes it when the
// test ends.
func NewNamespace(t testing.TB) *Namespace {
	t.Helper()
	n, err := lab.CreateNamespace("ctx-", true)
	if n != nil {
		t.Cleanup(func() {
			if err := n.Remove(); err != nil {
				t.Error(err)
			}
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	return &Namespace{Namespace: n}
}

// NewNamespaceWithEntries creates a namespace as NewNamespace does,
// holding n ASSURED ESTABLISHED TCP entries with a 600 s timeout.
func NewNamespaceWithEntries(tb testing.TB, n int) *Namespace {
	tb.Helper()
	ns := NewNamespace(tb)
	if created, err := ns.CreateEntries(tb, EstablishedEntries(n, 600)); err != nil || created != n {
		tb.Fatalf("created %d of %d entries: %v", created, n, err)
	}
	return ns
}

// Delete removes the namespace before the test ends, as an operator or a
// container runtime would.
func (n *Namespace) Delete(t testing.TB) {
	t.Helper()
	if err := n.Remove(); err != nil {
		t.Fatal(err)
	}
}

// Nft loads an nftables ruleset in the namespace.
func (n *Namespace) Nft(t testing.TB, ruleset string) {
	t.Helper()
	if err := n.LoadRuleset(ruleset); err != nil {
		t.Fatalf("%v\n%s", err, ruleset)
	}
}

// Exec runs a command inside the namespace and returns its output; it
// fails the test if the command fails.
func (n *Namespace) Exec(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := n.Output(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Sysctl sets a per-namespace sysctl such as
// net.netfilter.nf_conntrack_tcp_timeout_established inside the namespace;
// a key global to the machine fails the test.
func (n *Namespace) Sysctl(t testing.TB, key, value string) {
	t.Helper()
	if err := n.SetSysctl(key, value); err != nil {
		t.Fatal(err)
	}
}

// Conntrack runs the conntrack command inside the namespace.
func (n *Namespace) Conntrack(t testing.TB, args ...string) string {
	t.Helper()
	return n.Exec(t, "conntrack", args...)
}

// Run runs a command and returns its combined output, failing the test on
// error.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := lab.CombinedOutput(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Listen opens a TCP listener inside the namespace.
func (n *Namespace) Listen(t testing.TB, addr string) net.Listener {
	t.Helper()
	var l net.Listener
	err := n.Target().Do(func() error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen %s in %s: %v", addr, n.Name, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// Dial opens a TCP connection from inside the namespace.
func (n *Namespace) Dial(t testing.TB, addr string, timeout time.Duration) (net.Conn, error) {
	t.Helper()
	var c net.Conn
	err := n.Target().Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr, timeout)
		return err
	})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return c, nil
}

// Pair is two namespaces joined by a veth pair: A (198.18.0.1/24) and B
// (198.18.0.2/24), both tracking connections.
type Pair struct {
	A, B         *Namespace
	AAddr, BAddr string
}

// NewPair creates two namespaces joined by a veth pair.
func NewPair(t testing.TB) *Pair {
	t.Helper()
	p := &Pair{A: NewNamespace(t), B: NewNamespace(t), AAddr: "198.18.0.1", BAddr: "198.18.0.2"}
	Link(t, p.A, p.AAddr+"/24", p.B, p.BAddr+"/24")
	return p
}

// Link joins two namespaces with a veth pair and gives each end an
// address.
func Link(t testing.TB, a *Namespace, aCIDR string, b *Namespace, bCIDR string) {
	t.Helper()
	if err := lab.LinkPair(a.Namespace, aCIDR, b.Namespace, bCIDR); err != nil {
		t.Fatal(err)
	}
}

// Connect opens n TCP connections from A to a listener in B and returns
// both ends of each. The server side accepts in the background.
func (p *Pair) Connect(t testing.TB, n int) (clients, servers []net.Conn) {
	t.Helper()
	l := p.B.Listen(t, net.JoinHostPort(p.BAddr, "0"))
	accepted := make(chan net.Conn, n)
	go func() {
		for i := 0; i < n; i++ {
			c, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
		close(accepted)
	}()
	for i := 0; i < n; i++ {
		c, err := p.A.Dial(t, l.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatalf("connection %d of %d: %v", i+1, n, err)
		}
		clients = append(clients, c)
	}
	for c := range accepted {
		t.Cleanup(func() { c.Close() })
		servers = append(servers, c)
	}
	if len(servers) != n {
		t.Fatalf("accepted %d of %d connections", len(servers), n)
	}
	return clients, servers
}

// CountEntries returns conntrack -C in the namespace.
func (n *Namespace) CountEntries(t testing.TB) int {
	t.Helper()
	c, err := n.EntryCount()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// ConntrackStats sums conntrack -S over CPUs in the namespace, by the
// tool's field names (insert, drop, early_drop, ...).
func (n *Namespace) ConntrackStats(t testing.TB) map[string]float64 {
	t.Helper()
	sums, err := n.CounterSums()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]float64, len(sums))
	for k, v := range sums {
		out[k] = float64(v)
	}
	return out
}

// CreateEntries creates the entries in the namespace's table over
// ctnetlink (lab.Namespace.Insert) and returns how many the kernel
// accepted and the first error it returned for the others (nil when all
// were accepted). A failure of the socket fails the test.
func (n *Namespace) CreateEntries(t testing.TB, entries []Entry) (created int, firstErr error) {
	t.Helper()
	created, refused, err := n.Insert(entries)
	if err != nil {
		t.Fatal(err)
	}
	return created, refused
}
