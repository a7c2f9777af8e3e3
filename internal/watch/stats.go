package watch

import (
	"context"
	"sync"

	"github.com/ct-exporter/ct-exporter/internal/ctnl"
	"github.com/ct-exporter/ct-exporter/internal/netns"
)

// StatsSource reads a namespace's conntrack statistics.
type StatsSource interface {
	Stats(ctx context.Context, target netns.Target) (ctnl.Snapshot, error)
}

// KernelStats reads statistics over ctnetlink inside the namespace.
type KernelStats struct{}

// Stats implements StatsSource with ctnl.ReadSnapshot.
func (KernelStats) Stats(ctx context.Context, target netns.Target) (ctnl.Snapshot, error) {
	return ctnl.ReadSnapshot(ctx, target)
}

// StatsReading is one reading of a namespace's statistics with the
// counters summed over CPUs since the namespace was first read.
type StatsReading struct {
	ctnl.Snapshot
	// Totals are the per-CPU counters summed in 64 bits.
	Totals [ctnl.NumCounters]uint64
}

// StatsTotals reads the statistics of each namespace and keeps 64-bit
// totals of the kernel's 32-bit per-CPU counters, so a total never goes
// backwards while the exporter runs, even when a CPU's counter wraps. It
// is a Forgetter: a namespace's totals go with it.
type StatsTotals struct {
	source StatsSource

	mu    sync.Mutex
	state map[string]*counterState // by target name
}

// counterState is what StatsTotals remembers of one namespace.
type counterState struct {
	mu    sync.Mutex
	inode uint64
	last  map[uint16][ctnl.NumCounters]uint32 // raw value per CPU
	total [ctnl.NumCounters]uint64
}

// NewStatsTotals returns StatsTotals reading from source.
func NewStatsTotals(source StatsSource) *StatsTotals {
	return &StatsTotals{source: source, state: map[string]*counterState{}}
}

// Read reads the statistics of target and folds them into its totals.
func (t *StatsTotals) Read(ctx context.Context, target netns.Target) (StatsReading, error) {
	// Reading and folding happen under the namespace's lock: two readers
	// folding their readings out of order would look like a wrap.
	st := t.stateOf(target.Name)
	st.mu.Lock()
	defer st.mu.Unlock()
	snap, err := t.source.Stats(ctx, target)
	if err != nil {
		return StatsReading{}, err
	}
	return StatsReading{Snapshot: snap, Totals: st.accumulate(snap)}, nil
}

// Forget implements Forgetter: it drops the totals of a namespace.
func (t *StatsTotals) Forget(target netns.Target) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.state, target.Name)
}

// stateOf returns the remembered state of a namespace, creating it.
func (t *StatsTotals) stateOf(name string) *counterState {
	t.mu.Lock()
	defer t.mu.Unlock()
	st, ok := t.state[name]
	if !ok {
		st = &counterState{}
		t.state[name] = st
	}
	return st
}

// accumulate folds a snapshot into the 64-bit totals of the namespace and
// returns them. The first reading of a CPU adds its raw value; later
// readings add the difference modulo 2^32, so a wrapped counter still
// moves forward. A new namespace inode (the namespace was replaced) starts
// the totals again. The caller holds st.mu.
func (st *counterState) accumulate(snap ctnl.Snapshot) [ctnl.NumCounters]uint64 {
	if st.last == nil || st.inode != snap.Inode {
		st.inode = snap.Inode
		st.last = map[uint16][ctnl.NumCounters]uint32{}
		st.total = [ctnl.NumCounters]uint64{}
	}
	for _, cpu := range snap.CPUs {
		prev, seen := st.last[cpu.CPU]
		for i, v := range cpu.Counters {
			if seen {
				st.total[i] += uint64(v - prev[i]) // modulo 2^32: a wrap adds the distance
			} else {
				st.total[i] += uint64(v)
			}
		}
		st.last[cpu.CPU] = cpu.Counters
	}
	return st.total
}
