package watch

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/ct-exporter/ct-exporter/internal/discovery"
	"github.com/ct-exporter/ct-exporter/internal/podid"
)

// claims are the inodes and names taken by the namespaces kept so far in
// a rescan; a discovered namespace may take neither.
type claims struct {
	inodes map[uint64]bool
	names  map[string]bool
}

// claim takes the inode (unless 0) and the name of e.
func (c claims) claim(e *entry) {
	if e.inode != 0 {
		c.inodes[e.inode] = true
	}
	c.names[e.target.Name] = true
}

// verdict is what a rescan does with a discovered namespace watched
// already.
type verdict int

const (
	// keep it, with the process information of this scan.
	keep verdict = iota
	// keepAsIs: its source could not be read this time, so nothing is
	// known about it.
	keepAsIs
	// dropClaimed: a static path names it now.
	dropClaimed
	// dropGone: its source was read and it is not there.
	dropGone
	// dropRenamed: it got a name (a /proc namespace now in a directory)
	// or its file was renamed; the rescan watches it again under the new
	// name.
	dropRenamed
)

// judge returns the verdict on e, given what discovery found at its inode
// (ok false: nothing) and whether e's source failed to read.
func judge(e *entry, ns discovery.Namespace, ok, sourceFailed, claimed bool) verdict {
	moved := ok && string(ns.Source) != e.source
	renamed := ok && ns.Source == discovery.SourceDir && ns.Path != e.discoveredPath
	switch {
	case claimed:
		return dropClaimed
	case !ok && sourceFailed:
		return keepAsIs
	case !ok:
		return dropGone
	case moved && sourceFailed:
		return keep
	case moved || renamed:
		return dropRenamed
	}
	return keep
}

// rescanLocked is one rescan; the caller holds s.rescan.
func (s *Set) rescanLocked(ctx context.Context) {
	start := time.Now()
	prevOver := s.status.Load().OverLimit
	res, ok := s.discover(ctx)
	if !ok {
		return
	}
	found := make(map[uint64]discovery.Namespace, len(res.Namespaces))
	for _, ns := range res.Namespaces {
		found[ns.Inode] = ns
	}
	c := claims{inodes: map[uint64]bool{}, names: map[string]bool{}}
	kept := s.keepStatic(found, c)
	kept, dropped := s.judgeDiscovered(found, res.Failed, c, kept)
	if len(dropped) > 0 {
		s.entries = kept
		s.publish()
		s.release(dropped)
	}
	s.retryWatchers()
	overLimit := s.addDiscovered(res.Namespaces, c)
	if overLimit > 0 && prevOver == 0 {
		s.cfg.Logger.Warn("more network namespaces than --conntrack.netns-max; the rest are not watched",
			zap.Int("max", s.cfg.Max), zap.Int("over_limit", overLimit))
	}
	s.lastScan = time.Since(start)
	s.publishStatus(overLimit)
}

// discover runs the Discoverer, if any. A partial failure is counted and
// logged, and what was found is used; ok is false when ctx ended.
func (s *Set) discover(ctx context.Context) (res discovery.Result, ok bool) {
	if s.cfg.Discoverer == nil {
		return res, true
	}
	res, err := s.cfg.Discoverer.Scan(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return res, false
		}
		s.scanErrors++
		s.cfg.Logger.Warn("network namespace discovery failed in part; keeping what it could not read", zap.Error(err))
	}
	if res.Unreadable > 0 {
		s.cfg.Logger.Debug("processes whose network namespace could not be read (needs ptrace access: root or CAP_SYS_PTRACE)",
			zap.Int("processes", res.Unreadable))
	}
	return res, true
}

// keepStatic refreshes the static entries, which are always kept, and
// claims their inodes and names. The exporter's own namespace is watched
// as "self" or not at all, so it is claimed either way.
func (s *Set) keepStatic(found map[uint64]discovery.Namespace, c claims) []*entry {
	var kept []*entry
	hasSelf := false
	for _, e := range s.entries {
		if !e.static {
			continue
		}
		s.refreshStatic(e)
		hasSelf = hasSelf || e.target.IsSelf()
		c.claim(e)
		e.pid, e.comm, e.cgroup, e.pod = 0, "", "", podid.Identity{}
		if ns, ok := found[e.inode]; ok {
			e.pid, e.comm, e.cgroup, e.pod = ns.PID, ns.Comm, ns.Cgroup, ns.Pod
		}
		kept = append(kept, e)
	}
	if !hasSelf {
		c.inodes[s.selfInode] = true
	}
	return kept
}

// judgeDiscovered decides for each discovered entry whether it stays,
// appends those that do to kept and claims them, and returns the rest as
// dropped. A source that could not be read changes nothing of its
// namespaces: they are neither gone nor renamed.
func (s *Set) judgeDiscovered(found map[uint64]discovery.Namespace, failed map[discovery.Source]bool,
	c claims, kept []*entry) (_, dropped []*entry) {
	for _, e := range s.entries {
		if e.static {
			continue
		}
		ns, ok := found[e.inode]
		switch judge(e, ns, ok, failed[discovery.Source(e.source)], c.inodes[e.inode]) {
		case dropClaimed:
			s.cfg.Logger.Info("discovered network namespace now watched through a static path",
				zap.String("netns", e.target.Name), zap.Uint64("inode", e.inode))
			dropped = append(dropped, e)
			continue
		case dropGone:
			s.cfg.Logger.Info("network namespace gone, no longer watched", zap.String("netns", e.target.Name),
				zap.String("source", e.source), zap.Uint64("inode", e.inode))
			dropped = append(dropped, e)
			continue
		case dropRenamed:
			s.cfg.Logger.Info("network namespace renamed", zap.String("netns", e.target.Name),
				zap.String("path", ns.Path), zap.Uint64("inode", e.inode))
			dropped = append(dropped, e)
			continue
		case keep:
			e.pid, e.comm, e.cgroup, e.pod = ns.PID, ns.Comm, ns.Cgroup, ns.Pod
		case keepAsIs:
		}
		c.claim(e)
		kept = append(kept, e)
	}
	return kept, dropped
}

// retryWatchers gives the watchers that failed before another try.
func (s *Set) retryWatchers() {
	for _, e := range s.entries {
		if e.inode != 0 && len(e.watching) < len(s.watchers) {
			s.watch(e)
		}
	}
}

// addDiscovered watches the namespaces found that are not claimed yet, as
// long as there is room, and returns how many did not fit.
func (s *Set) addDiscovered(namespaces []discovery.Namespace, c claims) (overLimit int) {
	room := s.cfg.Max - len(s.entries)
	added := false
	for _, ns := range namespaces {
		if c.inodes[ns.Inode] {
			continue
		}
		if room <= 0 {
			overLimit++
			continue
		}
		name := ns.Name
		if c.names[name] {
			name = discovery.InodeName(ns.Inode)
		}
		if c.names[name] {
			s.cfg.Logger.Warn("discovered network namespace skipped: its name is taken",
				zap.String("netns", name), zap.String("path", ns.Path))
			continue
		}
		e, err := s.open(ns, name)
		if err != nil {
			// Gone since the scan; the next rescan will not find it.
			s.cfg.Logger.Debug("discovered network namespace could not be opened", zap.String("path", ns.Path), zap.Error(err))
			continue
		}
		s.watch(e)
		s.cfg.Logger.Info("watching network namespace", zap.String("netns", e.target.Name),
			zap.String("source", e.source), zap.String("path", ns.Path), zap.Uint64("inode", e.inode),
			zap.Int("pid", e.pid), zap.String("comm", e.comm))
		c.claim(e)
		s.entries = append(s.entries, e)
		room--
		added = true
	}
	if added {
		s.publish()
	}
	return overLimit
}

// refreshStatic reads the inode of a static namespace again. When its path
// names another namespace than the watchers run in (deleted and created
// again), the watchers move to the new one.
func (s *Set) refreshStatic(e *entry) {
	if e.target.IsSelf() {
		return
	}
	ino, err := e.target.Inode()
	if err != nil {
		e.inode = 0
		return
	}
	e.inode = ino
	if e.watchedInode != 0 && ino != e.watchedInode {
		s.cfg.Logger.Info("network namespace replaced under its path; watching the new one",
			zap.String("netns", e.target.Name), zap.Uint64("old_inode", e.watchedInode), zap.Uint64("inode", ino))
		for _, nw := range s.watchers {
			nw.w.Forget(e.target)
		}
		e.watching = map[string]bool{}
	}
}

// open makes the entry of a discovered namespace. A namespace found under
// /proc is opened and held; the others are reached through their path.
func (s *Set) open(ns discovery.Namespace, name string) (*entry, error) {
	e := &entry{
		source: string(ns.Source), inode: ns.Inode, discoveredPath: ns.Path,
		pid: ns.PID, comm: ns.Comm, cgroup: ns.Cgroup, pod: ns.Pod,
	}
	if ns.Source != discovery.SourceProc {
		e.target.Name, e.target.Path = name, ns.Path
		return e, nil
	}
	f, target, err := openProc(ns)
	if err != nil {
		return nil, err
	}
	e.file = f
	e.target = target
	e.target.Name = name
	return e, nil
}
