// Package nstest builds throwaway network namespaces for tests that run
// against the real kernel: namespaces with conntrack switched on, veth
// pairs between them, TCP connections across them, and tables filled over
// ctnetlink.
//
// Every namespace a test creates is deleted by t.Cleanup, whether the test
// passes or fails. Nothing here changes a global sysctl.
package nstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ct-exporter/ct-exporter/internal/netns"
)

// InCI reports whether the tests run in continuous integration, where
// kernel tests must run rather than skip.
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

// Namespace is a named network namespace created for one test.
type Namespace struct {
	// Name is the name under /run/netns.
	Name string
	// Path is the namespace file, /run/netns/Name.
	Path string

	deleted bool
}

// Target returns the exporter's view of the namespace.
func (n *Namespace) Target() netns.Target {
	return netns.Target{Name: n.Name, Path: n.Path}
}

// NewNamespace creates an empty network namespace with loopback up and
// conntrack switched on (an nftables rule that matches on ct state), and
// deletes it when the test ends.
func NewNamespace(t testing.TB) *Namespace {
	t.Helper()
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("random name: %v", err)
	}
	n := &Namespace{Name: "ctx-" + hex.EncodeToString(b[:])}
	n.Path = "/run/netns/" + n.Name
	Run(t, "ip", "netns", "add", n.Name)
	t.Cleanup(func() {
		if n.deleted {
			return
		}
		if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", n.Name, err, out)
		}
	})
	n.Exec(t, "ip", "link", "set", "lo", "up")
	n.EnableConntrack(t)
	return n
}

// Delete removes the namespace before the test ends, as an operator or a
// container runtime would.
func (n *Namespace) Delete(t testing.TB) {
	t.Helper()
	Run(t, "ip", "netns", "del", n.Name)
	n.deleted = true
}

// EnableConntrack loads an nftables ruleset whose ct state match makes the
// kernel track connections in the namespace.
func (n *Namespace) EnableConntrack(t testing.TB) {
	t.Helper()
	n.Nft(t, `table inet ctx {
	chain input { type filter hook input priority 0; policy accept; ct state established,related,new accept; }
	chain output { type filter hook output priority 0; policy accept; ct state established,related,new accept; }
	chain forward { type filter hook forward priority 0; policy accept; ct state established,related,new accept; }
}`)
}

// Nft loads an nftables ruleset in the namespace.
func (n *Namespace) Nft(t testing.TB, ruleset string) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", n.Name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft in %s: %v: %s\n%s", n.Name, err, out, ruleset)
	}
}

// Exec runs a command inside the namespace and returns its output; it
// fails the test if the command fails.
func (n *Namespace) Exec(t testing.TB, name string, args ...string) string {
	t.Helper()
	return Run(t, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Sysctl sets a per-namespace sysctl such as
// net.netfilter.nf_conntrack_tcp_timeout_established inside the namespace.
func (n *Namespace) Sysctl(t testing.TB, key, value string) {
	t.Helper()
	n.Exec(t, "sysctl", "-q", "-w", key+"="+value)
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
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
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
	var r [3]byte
	if _, err := rand.Read(r[:]); err != nil {
		t.Fatalf("random name: %v", err)
	}
	va, vb := "va"+hex.EncodeToString(r[:]), "vb"+hex.EncodeToString(r[:])
	Run(t, "ip", "link", "add", va, "netns", a.Name, "type", "veth", "peer", "name", vb, "netns", b.Name)
	a.Exec(t, "ip", "addr", "add", aCIDR, "dev", va)
	b.Exec(t, "ip", "addr", "add", bCIDR, "dev", vb)
	a.Exec(t, "ip", "link", "set", va, "up")
	b.Exec(t, "ip", "link", "set", vb, "up")
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
