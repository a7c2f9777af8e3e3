package watch

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"testing"

	"github.com/ct-exporter/ct-exporter/internal/ctnl"
	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/nstest"
	"github.com/ct-exporter/ct-exporter/internal/pathwatch"
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
	ns := nstest.NewNamespaceWithEntries(t, 25)
	target := ns.Target()
	ino, err := target.Inode()
	if err != nil {
		t.Fatal(err)
	}
	socks := NewStatsSockets(nil)
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

// TestStatsSocketsWatchedPath reads a namespace whose path is watched
// with inotify: reads do not look at the path until Prepare learns that
// an event named it; then a vanished namespace fails, and one created
// again under the same path is read through a new socket.
func TestStatsSocketsWatchedPath(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	ns := nstest.NewNamespaceWithEntries(t, 7)
	target := ns.Target()
	paths := pathwatch.New()
	if err := paths.Err(); err != nil {
		t.Fatal(err)
	}
	defer paths.Close()
	socks := NewStatsSockets(paths)
	ctx := context.Background()
	if err := socks.Watch(ctx, target); err != nil {
		t.Fatal(err)
	}
	defer socks.Forget(target)
	if !socks.socks[target].path.Watched() {
		t.Fatalf("path %s is not watched", target.Path)
	}
	read := func() (ctnl.Snapshot, error) {
		t.Helper()
		if err := socks.Prepare(); err != nil {
			t.Fatal(err)
		}
		return socks.Stats(ctx, target)
	}
	first, err := read()
	if err != nil || first.Global.Entries != 7 {
		t.Fatalf("first read: %+v, %v; want 7 entries", first.Global, err)
	}

	// The namespace vanishes. Until Prepare, the socket (which keeps the
	// namespace alive) still answers: the read did not stat the path.
	ns.Delete(t)
	if _, err := socks.Stats(ctx, target); err != nil {
		t.Fatalf("read before Prepare: %v; want the socket's answer", err)
	}
	if _, err := read(); !errors.Is(err, netns.ErrNotExist) {
		t.Fatalf("read after Prepare = %v, want ErrNotExist", err)
	}
	if _, err := read(); !errors.Is(err, netns.ErrNotExist) {
		t.Fatalf("second read of the vanished namespace = %v, want ErrNotExist", err)
	}

	// Created again under the same path: a new namespace, an empty table.
	nstest.Run(t, "ip", "netns", "add", target.Name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", target.Name).Run() })
	again, err := read()
	if err != nil {
		t.Fatalf("read of the namespace created again: %v", err)
	}
	if again.Inode == first.Inode || again.Global.Entries != 0 {
		t.Errorf("read after re-creation: inode %d (was %d), %d entries; want a new inode and 0 entries",
			again.Inode, first.Inode, again.Global.Entries)
	}
}
