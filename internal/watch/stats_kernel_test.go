package watch

import (
	"context"
	"errors"
	"testing"

	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

// TestStatsSocketsReadThroughTheSocketOpenedAtWatch shows that reads go
// through the socket opened when the namespace was watched: they keep
// working after the namespace's file is gone, which a read that opens
// the namespace again could not.
func TestStatsSocketsReadThroughTheSocketOpenedAtWatch(t *testing.T) {
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
	if err := socks.Watch(ctx, target); err != nil {
		t.Fatal(err)
	}
	if err := socks.Watch(ctx, target); !errors.Is(err, ErrAlreadyWatched) {
		t.Fatalf("second Watch = %v, want ErrAlreadyWatched", err)
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

	// The namespace stays alive through the socket once its file is
	// gone; only the exporter's socket can still read it.
	ns.Delete(t)
	r, err := totals.Read(ctx, target)
	if err != nil {
		t.Fatalf("read through the socket after the namespace file went: %v", err)
	}
	if r.Global.Entries != 25 {
		t.Fatalf("%d entries after the file went, want 25", r.Global.Entries)
	}

	// Forgotten: the socket is closed, and a read opens the path again.
	socks.Forget(target)
	if _, err := socks.Stats(ctx, target); !errors.Is(err, netns.ErrNotExist) {
		t.Fatalf("read after Forget = %v, want ErrNotExist", err)
	}
	socks.Forget(target) // twice is a no-op
}
