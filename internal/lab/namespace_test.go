package lab_test

import (
	"os"
	"strings"
	"testing"

	"github.com/ct-exporter/ct-exporter/internal/lab"
	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

func TestLabNamespaceEntriesAndRemoval(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
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
	entries := lab.EstablishedEntries(3000, 600)
	created, refused, err := n.Insert(entries)
	if err != nil || refused != nil || created != len(entries) {
		t.Fatalf("Insert: created %d of %d, refused %v, err %v", created, len(entries), refused, err)
	}
	if c, err := n.EntryCount(); err != nil || c != len(entries) {
		t.Fatalf("EntryCount = %d, %v; want %d", c, err, len(entries))
	}
	list, err := n.Output("conntrack", "-L", "-s", "198.19.0.0")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(list, "ESTABLISHED") || !strings.Contains(list, "[ASSURED]") {
		t.Fatalf("entry not created ASSURED ESTABLISHED: %s", list)
	}
	// Existing entries are refused, not an error of the socket.
	created, refused, err = n.Insert(entries[:5])
	if err != nil || created != 0 || refused == nil || !strings.Contains(refused.Error(), "file exists") {
		t.Fatalf("duplicate Insert: created %d, refused %v, err %v", created, refused, err)
	}
	deleted, refused, err := n.RemoveEntries(entries[:1000])
	if err != nil || refused != nil || deleted != 1000 {
		t.Fatalf("RemoveEntries: deleted %d, refused %v, err %v", deleted, refused, err)
	}
	sums, err := n.CounterSums()
	if err != nil {
		t.Fatal(err)
	}
	if sums["insert"] != 3000 {
		t.Errorf("conntrack -S insert = %d, want 3000", sums["insert"])
	}
	if err := n.Flush(); err != nil {
		t.Fatal(err)
	}
	if c, err := n.EntryCount(); err != nil || c != 0 {
		t.Fatalf("after Flush: EntryCount = %d, %v", c, err)
	}
	if err := n.SetSysctl("net.netfilter.nf_conntrack_tcp_timeout_established", "77"); err != nil {
		t.Fatal(err)
	}
	if v, err := n.ReadSysctl("net.netfilter.nf_conntrack_tcp_timeout_established"); err != nil || v != "77" {
		t.Fatalf("ReadSysctl = %q, %v", v, err)
	}
	if err := n.SetSysctl("net.netfilter.nf_conntrack_max", "1"); err == nil {
		t.Fatal("SetSysctl of a global key succeeded")
	}
	if err := n.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(n.Path); !os.IsNotExist(err) {
		t.Fatalf("%s still exists after Remove: %v", n.Path, err)
	}
	if err := n.Remove(); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
}

func TestLabLinkPair(t *testing.T) {
	nstest.RequireRoot(t, "ping")
	a, err := lab.CreateNamespace("ctx-", false)
	if a != nil {
		t.Cleanup(func() { a.Remove() })
	}
	if err != nil {
		t.Fatal(err)
	}
	b, err := lab.CreateNamespace("ctx-", false)
	if b != nil {
		t.Cleanup(func() { b.Remove() })
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.LinkPair(a, "198.18.0.1/24", b, "198.18.0.2/24"); err != nil {
		t.Fatal(err)
	}
	if out, err := a.Output("ping", "-c", "1", "-W", "2", "198.18.0.2"); err != nil {
		t.Fatalf("ping across the pair: %v: %s", err, out)
	}
}

func TestGlobalSysctl(t *testing.T) {
	for key, want := range map[string]bool{
		"net.netfilter.nf_conntrack_max":                     true,
		"net/netfilter/nf_conntrack_buckets":                 true,
		"net.nf_conntrack_max":                               true,
		"net.netfilter.nf_conntrack_tcp_timeout_established": false,
		"net.ipv4.ip_forward":                                false,
	} {
		if got := lab.GlobalSysctl(key); got != want {
			t.Errorf("GlobalSysctl(%q) = %v, want %v", key, got, want)
		}
	}
}
