// Package watch keeps the set of watched network namespaces and what runs
// in each of them, without any Prometheus: the static namespaces (the
// exporter's own and named paths), the ones discovery finds, renamed or
// vanished ones, and per namespace the counter totals (StatsTotals), the
// event subscriber (Subscribers) and the background table scan
// (TableScans). Collectors read from these: the Set's Targets and Status,
// and each per-namespace worker's last reading.
package watch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/ct-exporter/ct-exporter/internal/discovery"
	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/podid"
)

// Forgetter remembers something per namespace (a counter state). Forget
// drops it; forgetting a namespace it does not know is a no-op.
type Forgetter interface {
	Forget(target netns.Target)
}

// Watcher keeps background work per namespace (an event subscriber, a
// table scan). Watch starts it when a namespace starts being watched and
// returns once it is set up; ctx ends it as well as Forget does. Forget
// stops it, waits for it to end and drops what it kept.
type Watcher interface {
	Forgetter
	Watch(ctx context.Context, target netns.Target) error
}

// Discoverer finds namespaces to watch besides the static ones;
// *discovery.Scanner is one.
type Discoverer interface {
	Scan(ctx context.Context) (discovery.Result, error)
}

// Errors of New for a Config it cannot use; the error wraps one and
// carries the value.
var (
	ErrMaxTooSmall     = errors.New("must be at least 1")
	ErrIntervalInvalid = errors.New("must be positive")
)

// ErrStarted reports a second Start, or a Start after Close.
var ErrStarted = errors.New("namespace set started twice")

// Config configures a Set.
type Config struct {
	// Static are the namespaces watched for the whole run, in order:
	// netns.Self() for the exporter's own, and named paths. A static
	// namespace that vanishes stays in the set and its readers fail until
	// it is back. See StaticTargets.
	Static []netns.Target
	// Discoverer finds more namespaces on every rescan; nil for none.
	// When Static has no netns.Self(), the exporter's own namespace is
	// left out of discovery too.
	Discoverer Discoverer
	// Max caps how many namespaces are watched. Static namespaces always
	// are; discovered ones fill what room is left, those watched already
	// first, and the rest are counted in Status.OverLimit.
	Max int
	// Interval is the time between rescans: discovery, and a check that
	// each static path still names the namespace its watchers run in.
	Interval time.Duration
	// Watchers are started with each namespace and forgotten when it
	// goes, in the order of their names: the names of the collectors
	// that read them, used in logs and errors.
	Watchers map[string]Watcher
	// Forgetters forget each namespace that goes, after the Watchers.
	Forgetters []Forgetter
	// Logger receives a line for each namespace added or dropped.
	Logger *zap.Logger
}

// Status is what the Set reports about itself; replaced as a whole after
// each change, never changed once returned.
type Status struct {
	// Namespaces are the namespaces watched now, in the order of Targets.
	Namespaces []NamespaceInfo
	// Discovery reports whether a Discoverer is configured; the counts
	// below are meaningful only then.
	Discovery bool
	// OverLimit counts the discovered namespaces the last rescan left
	// out because Max was reached.
	OverLimit int
	// ScanErrors counts the rescans whose discovery failed in part.
	ScanErrors int
	// LastScan is how long the last rescan took.
	LastScan time.Duration
}

// NamespaceInfo describes one watched namespace.
type NamespaceInfo struct {
	// Name is the target's name (the netns label value).
	Name string
	// Source is where it was found: SourceSelf, SourcePath, or a
	// discovery source ("dir", "proc").
	Source string
	// Inode is the namespace's inode, 0 while a static path cannot be
	// opened.
	Inode uint64
	// PID is the lowest process ID in the namespace, with its command
	// and cgroup, when discovery found one; 0 otherwise.
	PID          int
	Comm, Cgroup string
	// Pod is the Kubernetes pod and container of PID, from its cgroup;
	// zero when PID is 0 or not in a pod.
	Pod podid.Identity
}

// Set is the live set of watched namespaces. Targets serves readers on
// every scrape, concurrently with rescans. A namespace that appears is
// watched by every Watcher before Targets lists it; one that vanishes is
// removed from Targets, readers that may still use it are waited for (see
// Hold), then every Watcher and Forgetter forgets it, so its state,
// sockets and goroutines go.
//
// Namespaces found under /proc are held open by a file descriptor while
// watched and reached through /proc/self/fd/N: the path keeps naming the
// same namespace after the process found in it exits or its PID is reused.
// The namespace stays alive until the rescan that no longer finds it.
type Set struct {
	cfg      Config
	watchers []namedWatcher

	current atomic.Pointer[[]netns.Target]
	// readers is read-locked by every Hold; the write lock is the barrier
	// between dropping a namespace from Targets and forgetting it.
	readers sync.RWMutex

	// rescan serialises Start, Rescan and Close, which own the fields
	// below it.
	rescan     sync.Mutex
	ctx        context.Context
	cancel     context.CancelFunc
	loopDone   chan struct{}
	closed     bool
	selfInode  uint64
	entries    []*entry
	scanErrors int
	lastScan   time.Duration

	status atomic.Pointer[Status]
}

// namedWatcher is a Watcher and its name.
type namedWatcher struct {
	name string
	w    Watcher
}

// entry is one watched namespace.
type entry struct {
	target netns.Target
	source string
	static bool
	// inode is the namespace's inode at the last rescan, 0 when a static
	// path could not be opened.
	inode uint64
	// watchedInode is the inode the watchers were started in.
	watchedInode uint64
	// discoveredPath is the path discovery found the namespace at.
	discoveredPath string
	// file holds a namespace found under /proc open.
	file *os.File
	// watching holds the names of the watchers whose Watch succeeded.
	watching map[string]bool

	pid          int
	comm, cgroup string
	pod          podid.Identity
}

// New returns a Set; Start starts watching.
func New(cfg Config) (*Set, error) {
	if cfg.Max < 1 {
		return nil, fmt.Errorf("namespace limit %d: %w", cfg.Max, ErrMaxTooSmall)
	}
	if cfg.Interval <= 0 {
		return nil, fmt.Errorf("rescan interval %s: %w", cfg.Interval, ErrIntervalInvalid)
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	cfg.Static = append([]netns.Target(nil), cfg.Static...)
	cfg.Forgetters = append([]Forgetter(nil), cfg.Forgetters...)
	s := &Set{cfg: cfg}
	names := make([]string, 0, len(cfg.Watchers))
	for name := range cfg.Watchers {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		s.watchers = append(s.watchers, namedWatcher{name: name, w: cfg.Watchers[name]})
	}
	s.current.Store(&[]netns.Target{})
	s.status.Store(&Status{Discovery: cfg.Discoverer != nil})
	return s, nil
}

// Targets returns the namespaces watched now. It is safe for concurrent
// use.
func (s *Set) Targets() []netns.Target { return *s.current.Load() }

// Status returns what the Set reports about itself. It is safe for
// concurrent use.
func (s *Set) Status() *Status { return s.status.Load() }

// Hold holds off forgetting the namespaces that Targets returns now until
// release is called: a reader holds the set while it uses the targets
// (one scrape). Holds may overlap; release must be called once.
func (s *Set) Hold() (release func()) {
	s.readers.RLock()
	return s.readers.RUnlock
}

// Start watches the static namespaces, runs a first discovery, and
// starts rescanning every Interval until ctx ends or Close is called. A
// static namespace that a Watcher cannot watch is an error: nothing is
// left running then.
func (s *Set) Start(ctx context.Context) error {
	s.rescan.Lock()
	defer s.rescan.Unlock()
	if s.ctx != nil || s.closed {
		return ErrStarted
	}
	s.ctx, s.cancel = context.WithCancel(ctx)
	selfInode, err := netns.Self().Inode()
	if err != nil {
		s.cancel()
		return fmt.Errorf("own network namespace: %w", err)
	}
	s.selfInode = selfInode
	entries, err := s.staticEntries()
	if err != nil {
		s.cancel()
		return err
	}
	s.entries = entries
	for _, e := range s.entries {
		e.watching = map[string]bool{}
		e.watchedInode = e.inode
		for _, nw := range s.watchers {
			if err := nw.w.Watch(s.ctx, e.target); err != nil {
				s.stopAll()
				s.cancel()
				return fmt.Errorf("%s collector: netns %s: %w", nw.name, e.target, err)
			}
			e.watching[nw.name] = true
		}
	}
	s.publish()
	s.publishStatus(0)
	if s.cfg.Discoverer != nil {
		s.rescanLocked(s.ctx)
	}
	if s.cfg.Discoverer != nil || s.hasStaticPath() {
		s.loopDone = make(chan struct{})
		go s.loop()
	}
	return nil
}

// staticEntries returns the entries of the static namespaces. Paths come
// first: an explicit path wins over "self" for the same namespace. Two
// paths naming one namespace are a *SameNamespaceError.
func (s *Set) staticEntries() ([]*entry, error) {
	var (
		entries []*entry
		self    *entry
	)
	byInode := map[uint64]*entry{}
	for _, t := range s.cfg.Static {
		if t.IsSelf() {
			self = &entry{target: t, source: SourceSelf, static: true, inode: s.selfInode}
			continue
		}
		e := &entry{target: t, source: SourcePath, static: true}
		if ino, err := t.Inode(); err == nil {
			if prev, dup := byInode[ino]; dup {
				return nil, &SameNamespaceError{Path: t.Path, Earlier: prev.target.Path}
			}
			e.inode = ino
			byInode[ino] = e
		}
		entries = append(entries, e)
	}
	if self == nil {
		return entries, nil
	}
	if other, dup := byInode[s.selfInode]; dup {
		s.cfg.Logger.Info("own network namespace is watched through its path",
			zap.String("netns", other.target.Name), zap.String("path", other.target.Path))
		return entries, nil
	}
	return append([]*entry{self}, entries...), nil
}

// hasStaticPath reports whether a static namespace is reached through a
// path, which a rescan checks.
func (s *Set) hasStaticPath() bool {
	for _, e := range s.entries {
		if e.static && !e.target.IsSelf() {
			return true
		}
	}
	return false
}

// loop rescans every Interval until the set's context ends.
func (s *Set) loop() {
	defer close(s.loopDone)
	tick := time.NewTicker(s.cfg.Interval)
	defer tick.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-tick.C:
			s.Rescan()
		}
	}
}

// Rescan discovers namespaces and updates the set now, as the periodic
// rescan does.
func (s *Set) Rescan() {
	s.rescan.Lock()
	defer s.rescan.Unlock()
	if s.closed || s.ctx == nil || s.ctx.Err() != nil {
		return
	}
	s.rescanLocked(s.ctx)
}

// Close stops rescanning and releases every namespace: watchers stop,
// forgetters forget, held files close. Targets is empty afterwards.
func (s *Set) Close() {
	s.rescan.Lock()
	if s.closed {
		s.rescan.Unlock()
		return
	}
	s.closed = true
	if s.cancel != nil {
		s.cancel()
	}
	done := s.loopDone
	s.rescan.Unlock()
	if done != nil {
		<-done
	}
	s.rescan.Lock()
	defer s.rescan.Unlock()
	s.stopAll()
}

// watch starts every Watcher that is not running yet for e; failures are
// logged and tried again on the next rescan.
func (s *Set) watch(e *entry) {
	if e.watching == nil {
		e.watching = map[string]bool{}
	}
	for _, nw := range s.watchers {
		if e.watching[nw.name] {
			continue
		}
		if err := nw.w.Watch(s.ctx, e.target); err != nil {
			s.cfg.Logger.Warn("watcher could not start; retrying on the next rescan",
				zap.String("collector", nw.name), zap.String("netns", e.target.Name), zap.Error(err))
			continue
		}
		e.watching[nw.name] = true
	}
	e.watchedInode = e.inode
}

// release forgets namespaces already removed from Targets: it waits for
// the readers that may still use them, then every Watcher and Forgetter
// forgets them and held files are closed.
func (s *Set) release(dropped []*entry) {
	s.readers.Lock() // the barrier: no reader of the old Targets runs past this
	s.readers.Unlock()
	for _, e := range dropped {
		s.forget(e.target)
		if e.file != nil {
			e.file.Close()
		}
	}
}

// forget makes every Watcher and Forgetter forget target.
func (s *Set) forget(target netns.Target) {
	for _, nw := range s.watchers {
		nw.w.Forget(target)
	}
	for _, f := range s.cfg.Forgetters {
		f.Forget(target)
	}
}

// stopAll releases every entry; the caller holds s.rescan.
func (s *Set) stopAll() {
	dropped := s.entries
	s.entries = nil
	s.publish()
	s.release(dropped)
	s.publishStatus(0)
}

// publish makes the entries the Targets of the next readers.
func (s *Set) publish() {
	targets := make([]netns.Target, len(s.entries))
	for i, e := range s.entries {
		targets[i] = e.target
	}
	s.current.Store(&targets)
}

// publishStatus makes the entries and counts what Status returns.
func (s *Set) publishStatus(overLimit int) {
	st := &Status{
		OverLimit:  overLimit,
		ScanErrors: s.scanErrors,
		LastScan:   s.lastScan,
		Discovery:  s.cfg.Discoverer != nil,
		Namespaces: make([]NamespaceInfo, 0, len(s.entries)),
	}
	for _, e := range s.entries {
		st.Namespaces = append(st.Namespaces, NamespaceInfo{
			Name: e.target.Name, Source: e.source, Inode: e.inode,
			PID: e.pid, Comm: e.comm, Cgroup: e.cgroup, Pod: e.pod,
		})
	}
	s.status.Store(st)
}

// openProc holds the namespace file of a namespace found under /proc
// open, and checks that it is still the namespace discovery saw.
func openProc(ns discovery.Namespace) (*os.File, netns.Target, error) {
	f, err := os.Open(ns.Path)
	if err != nil {
		return nil, netns.Target{}, fmt.Errorf("open %s: %w", ns.Path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, netns.Target{}, fmt.Errorf("stat %s: %w", ns.Path, err)
	}
	if st.Ino != ns.Inode {
		f.Close()
		return nil, netns.Target{}, fmt.Errorf("%s: process gone, the path names namespace %d now, not %d", ns.Path, st.Ino, ns.Inode)
	}
	return f, netns.Target{Path: "/proc/self/fd/" + strconv.Itoa(int(f.Fd()))}, nil
}
