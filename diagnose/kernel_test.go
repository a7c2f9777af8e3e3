package diagnose

import (
	"context"
	"testing"
	"time"

	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

// TestKernelSamplerTwoNamespaces samples two namespaces at once against
// the real kernel: both ends of six TCP connections, where A expires
// its idle entries after 2 s.
func TestKernelSamplerTwoNamespaces(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	p := nstest.NewPair(t)
	p.A.Sysctl(t, "net.netfilter.nf_conntrack_tcp_timeout_established", "2")
	p.A.Sysctl(t, "net.netfilter.nf_conntrack_timestamp", "1")
	p.A.Sysctl(t, "net.netfilter.nf_conntrack_events", "1")
	p.Connect(t, 6)

	s := KernelSampler{Table: NewTableScan(DefaultTopK), Lifetimes: EventSource{}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := Run(ctx, s, []netns.Target{p.A.Target(), p.B.Target()}, 3*time.Second, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if failed := r.Failed(); len(failed) != 0 {
		t.Fatalf("namespaces not sampled: %+v", failed)
	}
	a, b := r.Namespaces[0], r.Namespaces[1]

	if a.Name != p.A.Name || b.Name != p.B.Name {
		t.Errorf("namespaces %s, %s; want %s, %s", a.Name, b.Name, p.A.Name, p.B.Name)
	}
	if a.SampleSeconds < 3 {
		t.Errorf("sampled %v s, want at least 3", a.SampleSeconds)
	}
	// A: every entry expired in established during the sample.
	if a.Fill.Entries != 0 || a.Lifetimes.EstablishedDeaths != 6 {
		t.Errorf("A: %d entries, %d established deaths; want 0 and 6 (%+v)", a.Fill.Entries, a.Lifetimes.EstablishedDeaths, a.Lifetimes)
	}
	if c := a.Lifetimes.Cluster; c == nil || c.Near != "established" {
		t.Errorf("A: cluster %+v, want one at the established timeout", c)
	}
	if a.Verdict != VerdictWarning {
		t.Errorf("A: verdict %s, want warning", a.Verdict)
	}
	// B: the six entries are still there, established, from A's address.
	if b.Fill.Entries != 6 || !b.Table.Available || b.Table.EstablishedTCP != 6 {
		t.Errorf("B: fill %+v, table %+v", b.Fill, b.Table)
	}
	if len(b.Table.Sources) != 1 || b.Table.Sources[0].Address != p.AAddr {
		t.Errorf("B: sources %+v, want only %s", b.Table.Sources, p.AAddr)
	}
	if !b.Lifetimes.Available || b.Lifetimes.Deaths != 0 {
		t.Errorf("B: lifetimes %+v, want available and no deaths", b.Lifetimes)
	}
	if b.Verdict != VerdictOK || len(b.Recommendations) != 0 {
		t.Errorf("B: verdict %s, recommendations %+v", b.Verdict, b.Recommendations)
	}
	if b.Settings.Sysctls[sysEstablished] != 432000 || a.Settings.Sysctls[sysEstablished] != 2 {
		t.Errorf("established timeouts A %d, B %d", a.Settings.Sysctls[sysEstablished], b.Settings.Sysctls[sysEstablished])
	}
}
