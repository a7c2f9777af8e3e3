package ctnl_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"

	"github.com/ct-exporter/ct-exporter/internal/ctnl"
	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

// Kernel round trips, this package against ti-mo/conntrack on the same
// namespace (sub-benchmarks impl=ctnl and impl=ti-mo; compare them with
// benchstat -col /impl). They need root, like the kernel tests.

// timoDial opens a ti-mo/conntrack connection inside the namespace.
func timoDial(b *testing.B, ns *nstest.Namespace) *conntrack.Conn {
	b.Helper()
	f, err := ns.Target().Open()
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	c, err := conntrack.Dial(&netlink.Config{NetNS: int(f.Fd())})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

// ctnlDial opens a ctnl connection inside the namespace.
func ctnlDial(tb testing.TB, ns *nstest.Namespace) *ctnl.Conn {
	tb.Helper()
	c, err := ctnl.Dial(ns.Target())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// BenchmarkCPUStatsKernel reads the per-CPU statistics of a namespace, as
// every scrape of the stats collector does.
func BenchmarkCPUStatsKernel(b *testing.B) {
	nstest.RequireRoot(b)
	ns := nstest.NewNamespace(b)
	ctx := context.Background()
	b.Run("impl=ctnl", func(b *testing.B) {
		c := ctnlDial(b, ns)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.CPUStats(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("impl=ti-mo", func(b *testing.B) {
		c := timoDial(b, ns)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Stats(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkGlobalStatsKernel reads the entry count and the limit. There is
// no ti-mo/conntrack side: its StatsGlobal waits for an NLMSG_DONE that the
// kernel never sends after the single NLM_F_MULTI reply, and does not
// return.
func BenchmarkGlobalStatsKernel(b *testing.B) {
	nstest.RequireRoot(b)
	ns := nstest.NewNamespace(b)
	ctx := context.Background()
	b.Run("impl=ctnl", func(b *testing.B) {
		c := ctnlDial(b, ns)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.GlobalStats(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkDumpKernel dumps a table of N ASSURED ESTABLISHED entries and
// decodes every entry: ctnl.Dump streaming into one reused Flow, against
// ti-mo/conntrack's Dump, which returns a slice of every flow.
func BenchmarkDumpKernel(b *testing.B) {
	nstest.RequireRoot(b, "conntrack")
	for _, n := range []int{1000, 10000, 100000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			ns := nstest.NewNamespace(b)
			created, refused, err := ns.Insert(nstest.EstablishedEntries(n, 3600))
			if err != nil || created != n {
				b.Fatalf("created %d of %d: %v %v", created, n, refused, err)
			}
			ctx := context.Background()
			b.Run("impl=ctnl", func(b *testing.B) {
				c := ctnlDial(b, ns)
				var f ctnl.Flow
				b.ReportAllocs()
				for b.Loop() {
					seen := 0
					_, err := c.Dump(ctx, func(data []byte) error {
						seen++
						return ctnl.DecodeFlow(data, &f)
					})
					if err != nil || seen != n {
						b.Fatalf("dumped %d of %d: %v", seen, n, err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/entry")
			})
			b.Run("impl=ti-mo", func(b *testing.B) {
				c := timoDial(b, ns)
				b.ReportAllocs()
				for b.Loop() {
					flows, err := c.Dump(nil)
					if err != nil || len(flows) != n {
						b.Fatalf("dumped %d of %d: %v", len(flows), n, err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/entry")
			})
		})
	}
}

// BenchmarkSnapshotKernel reads what the stats collector reads for a
// namespace on every scrape: both requests in one datagram (Snapshot)
// against one after the other (GlobalStats, then CPUStats).
func BenchmarkSnapshotKernel(b *testing.B) {
	nstest.RequireRoot(b)
	ns := nstest.NewNamespace(b)
	ctx := context.Background()
	b.Run("impl=batched", func(b *testing.B) {
		c := ctnlDial(b, ns)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Snapshot(ctx, 1); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("impl=one-by-one", func(b *testing.B) {
		c := ctnlDial(b, ns)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.GlobalStats(ctx); err != nil {
				b.Fatal(err)
			}
			if _, err := c.CPUStats(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}
