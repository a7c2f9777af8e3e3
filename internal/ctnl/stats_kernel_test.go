package ctnl_test

import (
	"context"
	"testing"
	"time"

	"github.com/ct-exporter/ct-exporter/internal/ctnl"
	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

// TestSnapshotKernel reads a namespace's statistics with the two requests
// in one datagram and checks them against the requests made one by one,
// many times on one socket.
func TestSnapshotKernel(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	c := ctnlDial(t, nstest.NewNamespaceWithEntries(t, 25))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cpus, err := c.CPUStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	global, err := c.GlobalStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if global.Entries != 25 || global.MaxEntries == 0 || len(cpus) == 0 {
		t.Fatalf("one by one: global %+v, %d CPUs", global, len(cpus))
	}
	for i := range 200 {
		snap, err := c.Snapshot(ctx, 42)
		if err != nil {
			t.Fatalf("snapshot %d: %v", i, err)
		}
		if snap.Inode != 42 || snap.Global != global || len(snap.CPUs) != len(cpus) {
			t.Fatalf("snapshot %d: inode %d, global %+v, %d CPUs; want 42, %+v, %d", i, snap.Inode, snap.Global, len(snap.CPUs), global, len(cpus))
		}
		var inserts uint32
		for j, s := range snap.CPUs {
			if s.CPU != cpus[j].CPU {
				t.Fatalf("snapshot %d: CPU %d at %d, want %d", i, s.CPU, j, cpus[j].CPU)
			}
			inserts += s.Counters[ctnl.Insert]
		}
		if inserts < 25 {
			t.Fatalf("snapshot %d: %d inserts counted for 25 entries created", i, inserts)
		}
	}
	// The other requests still work on the socket afterwards.
	if g, err := c.GlobalStats(ctx); err != nil || g != global {
		t.Fatalf("global stats after snapshots: %+v, %v", g, err)
	}
}
