package watch

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

// openFiles returns how many files the process has open.
func openFiles(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestStatsSocketsOneSocketPerNamespace reads a namespace's statistics
// through the socket opened when it was watched: Watch opens one socket,
// reads open none, Forget closes it; a namespace that vanishes fails its
// reads, as it did with a socket per read.
func TestStatsSocketsOneSocketPerNamespace(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	ns := nstest.NewNamespace(t)
	if created, err := ns.CreateEntries(t, nstest.EstablishedEntries(25, 600)); err != nil || created != 25 {
		t.Fatalf("created %d of 25: %v", created, err)
	}
	target := ns.Target()
	ino, err := target.Inode()
	if err != nil {
		t.Fatal(err)
	}
	socks := NewStatsSockets()
	ctx := context.Background()
	before := openFiles(t)
	if err := socks.Watch(ctx, target); err != nil {
		t.Fatal(err)
	}
	if err := socks.Watch(ctx, target); !errors.Is(err, ErrAlreadyWatched) {
		t.Fatalf("second Watch = %v, want ErrAlreadyWatched", err)
	}
	if got := openFiles(t); got != before+1 {
		t.Fatalf("%d open files after Watch, %d before: want one socket more", got, before)
	}
	totals := NewStatsTotals(socks)
	for range 3 {
		r, err := totals.Read(ctx, target)
		if err != nil {
			t.Fatal(err)
		}
		if r.Global.Entries != 25 || r.Inode != ino || len(r.CPUs) == 0 {
			t.Fatalf("reading %+v, want 25 entries, inode %d and per-CPU counters", r.Snapshot, ino)
		}
	}
	if got := openFiles(t); got != before+1 {
		t.Fatalf("%d open files after the reads, %d before Watch: want the one socket", got, before)
	}

	// The namespace vanishes: its reads fail, and its socket is closed.
	ns.Delete(t)
	if _, err := totals.Read(ctx, target); !errors.Is(err, netns.ErrNotExist) {
		t.Fatalf("read of a vanished namespace = %v, want ErrNotExist", err)
	}
	if got := openFiles(t); got != before {
		t.Fatalf("%d open files after the namespace vanished, %d before Watch", got, before)
	}
	socks.Forget(target)
	socks.Forget(target) // twice is a no-op
	if _, err := socks.Stats(ctx, target); !errors.Is(err, netns.ErrNotExist) {
		t.Fatalf("read after Forget = %v, want ErrNotExist", err)
	}
}
