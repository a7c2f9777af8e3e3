package watch

import (
	"context"
	"errors"
	"math"
	"testing"

	"github.com/ct-exporter/ct-exporter/internal/ctnl"
	"github.com/ct-exporter/ct-exporter/internal/netns"
)

// queuedStats returns queued snapshots, one per call.
type queuedStats struct {
	snaps []ctnl.Snapshot
	err   error
}

func (q *queuedStats) Prepare() error { return nil }

func (q *queuedStats) Stats(context.Context, netns.Target) (ctnl.Snapshot, error) {
	if q.err != nil {
		return ctnl.Snapshot{}, q.err
	}
	s := q.snaps[0]
	q.snaps = q.snaps[1:]
	return s, nil
}

func dropSnapshot(ino uint64, drop uint32) ctnl.Snapshot {
	var c ctnl.CPUStats
	c.Counters[ctnl.Drop] = drop
	return ctnl.Snapshot{Inode: ino, CPUs: []ctnl.CPUStats{c}}
}

func TestStatsTotalsWrapAndForget(t *testing.T) {
	const near = math.MaxUint32 - 1
	src := &queuedStats{snaps: []ctnl.Snapshot{
		dropSnapshot(1, near), dropSnapshot(1, 3), // wraps: +5
		dropSnapshot(1, 7), // forgotten before: starts again from the raw value
	}}
	totals := NewStatsTotals(src)
	target := netns.Self()
	for _, want := range []uint64{near, near + 5} {
		r, err := totals.Read(context.Background(), target)
		if err != nil || r.Totals[ctnl.Drop] != want {
			t.Fatalf("drop total %d, %v; want %d", r.Totals[ctnl.Drop], err, want)
		}
	}
	totals.Forget(target)
	if r, err := totals.Read(context.Background(), target); err != nil || r.Totals[ctnl.Drop] != 7 {
		t.Fatalf("after Forget: drop total %d, %v; want 7", r.Totals[ctnl.Drop], err)
	}
	src.err = errors.New("gone")
	if _, err := totals.Read(context.Background(), target); !errors.Is(err, src.err) {
		t.Fatalf("Read = %v, want the source's error", err)
	}
}
