package ctnl_test

import (
	"context"
	"errors"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ct-exporter/ct-exporter/internal/ctnl"
	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

func TestDumpKernel(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	ns := nstest.NewNamespace(t)
	entries := nstest.EstablishedEntries(3000, 600)
	// IPv6 entries come in the same AF_UNSPEC dump.
	for i := range 50 {
		entries = append(entries, nstest.Entry{
			Proto: unix.IPPROTO_UDP,
			Src:   netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)}),
			Dst:   netip.MustParseAddr("2001:db8::ffff"),
			SPort: 5000, DPort: 53, Timeout: 600,
		})
	}
	if created, err := ns.CreateEntries(t, entries); err != nil || created != len(entries) {
		t.Fatalf("created %d of %d: %v", created, len(entries), err)
	}
	c, err := ctnl.Dial(ns.Target())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var v4, v6 int
	info, err := c.Dump(ctx, func(data []byte) error {
		switch data[0] {
		case unix.AF_INET:
			v4++
		case unix.AF_INET6:
			v6++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if v4 != 3000 || v6 != 50 || info.Entries != 3050 || info.Interrupted {
		t.Fatalf("dumped %d IPv4 and %d IPv6 entries, info %+v; want 3000 and 50", v4, v6, info)
	}
	if info.Datagrams < 2 {
		t.Fatalf("3050 entries in %d datagrams", info.Datagrams)
	}
	// The same socket serves a second dump.
	info2, err := c.Dump(ctx, func([]byte) error { return nil })
	if err != nil || info2.Entries != 3050 {
		t.Fatalf("second dump: %+v, %v", info2, err)
	}
}

func TestDumpKernelCancel(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	c := ctnlDial(t, nstest.NewNamespaceWithEntries(t, 500))
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	_, err := c.Dump(ctx, func([]byte) error {
		n++
		if n == 10 {
			cancel()
			// Give the cancellation time to reach the socket before the
			// next read.
			time.Sleep(10 * time.Millisecond)
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v after %d entries, want context.Canceled", err, n)
	}
}

// TestDumpKernelStopsReading stops a dump from its callback: Dump returns
// the callback's error, its reading goroutine is gone when it returns,
// and a new socket dumps the whole table.
func TestDumpKernelStopsReading(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	ns := nstest.NewNamespaceWithEntries(t, 3000)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	before := runtime.NumGoroutine()
	errStop := errors.New("enough")
	for range 20 {
		c, err := ctnl.Dial(ns.Target())
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		_, err = c.Dump(ctx, func([]byte) error {
			if n++; n == 10 {
				return errStop
			}
			return nil
		})
		c.Close()
		if !errors.Is(err, errStop) || n != 10 {
			t.Fatalf("err = %v after %d entries, want %v after 10", err, n, errStop)
		}
	}
	// A goroutine that closed its done channel may still be counted for
	// an instant.
	for deadline := time.Now().Add(time.Second); runtime.NumGoroutine() > before && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if after := runtime.NumGoroutine(); after > before {
		t.Fatalf("%d goroutines before 20 stopped dumps, %d after", before, after)
	}
	c := ctnlDial(t, ns)
	if info, err := c.Dump(ctx, func([]byte) error { return nil }); err != nil || info.Entries != 3000 {
		t.Fatalf("dump after the stopped ones: %+v, %v", info, err)
	}
}

// TestDumpWithReusesMemory dumps a table again and again into one
// DumpMemory: every dump sees the whole table, and the 256 KiB of receive
// memory is not allocated again per dump.
func TestDumpWithReusesMemory(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	c := ctnlDial(t, nstest.NewNamespaceWithEntries(t, 3000))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mem := ctnl.NewDumpMemory()
	dump := func() {
		t.Helper()
		if info, err := c.DumpWith(ctx, mem, func([]byte) error { return nil }); err != nil || info.Entries != 3000 {
			t.Fatalf("dump: %+v, %v", info, err)
		}
	}
	dump()
	const dumps = 10
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range dumps {
		dump()
	}
	runtime.ReadMemStats(&after)
	if perDump := (after.TotalAlloc - before.TotalAlloc) / dumps; perDump > 32<<10 {
		t.Fatalf("%d bytes allocated per dump into reused memory, want under 32 KiB", perDump)
	}
}
