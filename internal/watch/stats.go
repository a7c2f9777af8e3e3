package watch

import (
	"context"
	"fmt"
	"sync"

	"github.com/ct-exporter/ct-exporter/internal/ctnl"
	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/pathwatch"
)

// StatsSource reads a namespace's conntrack statistics.
type StatsSource interface {
	// Prepare is called once per scrape, before the scrape's reads.
	Prepare() error
	Stats(ctx context.Context, target netns.Target) (ctnl.Snapshot, error)
}

// StatsSockets is the StatsSource and Watcher that keeps one ctnetlink
// socket open per watched namespace, opened inside the namespace when it
// is watched, and reads the statistics through it: a scrape neither
// enters the namespace nor opens a socket; it only checks that the
// target's path still names the socket's namespace (a vanished namespace
// fails, a replaced one gets a new socket). With a pathwatch.Watcher,
// that check is a stat(2) only for the paths an inotify event named since
// the last read (Prepare learns which); without one, or for a path the
// Watcher cannot watch, every read stats the path. A socket whose read
// fails (a timeout may leave a late reply in it) is closed, and the next
// read opens a new one. A namespace that is not watched is read with a
// socket of its own (ctnl.ReadSnapshot).
type StatsSockets struct {
	paths *pathwatch.Watcher // nil: every read stats the path

	mu    sync.Mutex
	socks map[netns.Target]*statsSocket
}

// statsSocket is the socket of one namespace.
type statsSocket struct {
	mu     sync.Mutex
	conn   *ctnl.Conn // nil until opened, or after a failure
	inode  uint64     // of the namespace conn lives in
	closed bool       // forgotten
	// path flags changes of the target's path; nil for the exporter's
	// own namespace, which never changes, and without a Watcher.
	path *pathwatch.Mark
}

// NewStatsSockets returns StatsSockets watching no namespace, that learn
// of changed namespace paths from paths (nil: by a stat(2) per read).
func NewStatsSockets(paths *pathwatch.Watcher) *StatsSockets {
	return &StatsSockets{paths: paths, socks: map[netns.Target]*statsSocket{}}
}

// Prepare implements StatsSource: it reads which watched paths changed
// since the last scrape.
func (s *StatsSockets) Prepare() error {
	if s.paths == nil {
		return nil
	}
	if err := s.paths.Refresh(); err != nil {
		return fmt.Errorf("stats: namespace paths: %w", err)
	}
	return nil
}

// Watch implements Watcher: it opens the socket of target. A socket that
// cannot be opened now is not an error: each read tries again and reports
// why it failed.
func (s *StatsSockets) Watch(_ context.Context, target netns.Target) error {
	s.mu.Lock()
	if _, ok := s.socks[target]; ok {
		s.mu.Unlock()
		return fmt.Errorf("stats: netns %s: %w", target, ErrAlreadyWatched)
	}
	sock := &statsSocket{}
	if s.paths != nil && !target.IsSelf() {
		sock.path = s.paths.Watch(target.Path)
	}
	s.socks[target] = sock
	s.mu.Unlock()
	sock.mu.Lock()
	defer sock.mu.Unlock()
	_ = sock.open(target) // the first read reports it
	return nil
}

// Forget implements Watcher: it closes the socket of target.
func (s *StatsSockets) Forget(target netns.Target) {
	s.mu.Lock()
	sock, ok := s.socks[target]
	delete(s.socks, target)
	s.mu.Unlock()
	if !ok {
		return
	}
	sock.mu.Lock()
	defer sock.mu.Unlock()
	sock.closed = true
	sock.close()
	if sock.path != nil {
		s.paths.Unwatch(sock.path)
	}
}

// Stats implements StatsSource through the namespace's socket.
func (s *StatsSockets) Stats(ctx context.Context, target netns.Target) (ctnl.Snapshot, error) {
	s.mu.Lock()
	sock, ok := s.socks[target]
	s.mu.Unlock()
	if !ok {
		return ctnl.ReadSnapshot(ctx, target)
	}
	sock.mu.Lock()
	defer sock.mu.Unlock()
	if sock.closed {
		return ctnl.ReadSnapshot(ctx, target)
	}
	// The path must still name the namespace the socket lives in: a
	// namespace that vanished fails its reads, and one replaced under the
	// same path gets a new socket (and its counters start again).
	if sock.mayHaveChanged(target) {
		ino, err := target.PathInode()
		if err != nil {
			sock.close()
			return ctnl.Snapshot{}, err
		}
		if sock.conn != nil && sock.inode != ino {
			sock.close()
		}
	}
	if sock.conn == nil {
		if err := sock.open(target); err != nil {
			return ctnl.Snapshot{}, err
		}
	}
	snap, err := sock.conn.Snapshot(ctx, sock.inode)
	if err != nil {
		sock.close()
		return ctnl.Snapshot{}, err
	}
	return snap, nil
}

// mayHaveChanged reports whether the path of target may name another
// namespace than the socket's, or none: always, unless the path is
// watched and no event named it since the last look. The exporter's own
// namespace never changes. The caller holds sock.mu.
func (sock *statsSocket) mayHaveChanged(target netns.Target) bool {
	if target.IsSelf() {
		return false
	}
	return sock.path == nil || sock.path.Changed()
}

// open opens the socket inside the namespace of target and records the
// namespace's inode. The caller holds sock.mu.
func (sock *statsSocket) open(target netns.Target) error {
	ino, err := target.Inode()
	if err != nil {
		return err
	}
	c, err := ctnl.Dial(target)
	if err != nil {
		return err
	}
	sock.conn, sock.inode = c, ino
	return nil
}

// close closes the socket, if open. The caller holds sock.mu.
func (sock *statsSocket) close() {
	if sock.conn != nil {
		_ = sock.conn.Close() // nothing to do about a failed close
		sock.conn = nil
	}
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

// Prepare is called once per scrape, before its reads: it prepares the
// source.
func (t *StatsTotals) Prepare() error { return t.source.Prepare() }

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
