package collector

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

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/ct-exporter/ct-exporter/internal/discovery"
	"github.com/ct-exporter/ct-exporter/internal/netns"
)

// Forgetter is a collector that remembers something per namespace (a
// counter state, an event subscriber). Forget drops it; forgetting a
// namespace the collector does not know is a no-op. StatsCollector and
// every Watcher are Forgetters.
type Forgetter interface {
	Forget(target netns.Target)
}

// Discoverer finds namespaces to watch besides the static ones;
// *discovery.Scanner is one.
type Discoverer interface {
	Scan(ctx context.Context) (discovery.Result, error)
}

// Values of the source label of conntrack_netns_info, besides the
// discovery sources "dir" and "proc".
const (
	// SourceSelf is the exporter's own namespace.
	SourceSelf = "self"
	// SourcePath is a namespace named with --conntrack.netns.
	SourcePath = "path"
)

// ErrSameNamespace reports two static targets that are one namespace.
var ErrSameNamespace = errors.New("same network namespace")

// StaticTargets returns the namespaces watched for the whole run: the
// exporter's own when self is true, then the --conntrack.netns paths.
func StaticTargets(paths []string, self bool) ([]netns.Target, error) {
	var targets []netns.Target
	if self {
		targets = append(targets, netns.Self())
	}
	if len(paths) == 0 {
		return targets, nil
	}
	fromPaths, err := netns.TargetsFromPaths(paths)
	if err != nil {
		return nil, err
	}
	for _, t := range fromPaths {
		if self && t.Name == netns.SelfName {
			return nil, fmt.Errorf("--conntrack.netns=%s: name %q is the exporter's own namespace", t.Path, t.Name)
		}
	}
	return append(targets, fromPaths...), nil
}

// TargetSetConfig configures a TargetSet.
type TargetSetConfig struct {
	// Static are the namespaces watched for the whole run, in order:
	// netns.Self() for the exporter's own, and the --conntrack.netns
	// paths. A static namespace that vanishes stays in the set and its
	// collectors fail until it is back.
	Static []netns.Target
	// Discoverer finds more namespaces on every rescan; nil for none.
	// When Static has no netns.Self(), the exporter's own namespace is
	// left out of discovery too.
	Discoverer Discoverer
	// Max caps how many namespaces are watched. Static namespaces always
	// are; discovered ones fill what room is left, those watched already
	// first, and the rest are counted in conntrack_exporter_netns_over_limit.
	Max int
	// Interval is the time between rescans: discovery, and a check that
	// each static path still names the namespace its watchers run in.
	Interval time.Duration
	// Collectors are the collectors whose per-namespace state the set
	// manages: every Watcher is started and stopped with its namespace,
	// every Forgetter forgets a dropped one.
	Collectors map[string]Collector
	// Logger receives a line for each namespace added or dropped.
	Logger *zap.Logger
}

// TargetSet is the live set of watched namespaces. Its Targets method
// serves the Exporter's Targets on every scrape, concurrently with
// rescans. A namespace that appears is watched by every Watcher before
// scrapes see it; one that vanishes is removed from Targets, scrapes that
// may still use it are waited for (see Guard), then every Forgetter
// forgets it, so its series, sockets and goroutines go.
//
// Namespaces found under /proc are held open by a file descriptor while
// watched and reached through /proc/self/fd/N: the path keeps naming the
// same namespace after the process found in it exits or its PID is reused.
// The namespace stays alive until the rescan that no longer finds it.
type TargetSet struct {
	cfg        TargetSetConfig
	watchers   []namedWatcher
	forgetters []Forgetter

	current atomic.Pointer[[]netns.Target]
	// scrapes is read-locked by every guarded Collect; the write lock is
	// the barrier between dropping a namespace from Targets and
	// forgetting it.
	scrapes sync.RWMutex

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

	status atomic.Pointer[setStatus]

	watchedDesc, overLimitDesc, scanErrorsDesc, scanDurationDesc, infoDesc *prometheus.Desc
}

// namedWatcher is a Watcher and its collector name.
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
}

// setStatus is what Collect reports, replaced as a whole after changes.
type setStatus struct {
	info       []infoRow
	overLimit  int
	scanErrors int
	lastScan   time.Duration
	discovery  bool
}

// infoRow holds the label values of one conntrack_netns_info series.
type infoRow struct {
	netns, source, inode, pid, comm, cgroup string
}

// NewTargetSet returns a TargetSet; Start starts watching.
func NewTargetSet(cfg TargetSetConfig) (*TargetSet, error) {
	if cfg.Max < 1 {
		return nil, fmt.Errorf("--conntrack.netns-max=%d: must be at least 1", cfg.Max)
	}
	if cfg.Interval <= 0 {
		return nil, fmt.Errorf("--conntrack.netns-discover-interval=%s: must be positive", cfg.Interval)
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	cfg.Static = append([]netns.Target(nil), cfg.Static...)
	s := &TargetSet{
		cfg: cfg,
		watchedDesc: prometheus.NewDesc(prometheus.BuildFQName(MetricPrefix, "exporter", "watched_namespaces"),
			"Network namespaces watched now: static, the exporter's own, and discovered.", nil, nil),
		overLimitDesc: prometheus.NewDesc(prometheus.BuildFQName(MetricPrefix, "exporter", "netns_over_limit"),
			"Discovered network namespaces not watched at the last rescan because --conntrack.netns-max was reached.", nil, nil),
		scanErrorsDesc: prometheus.NewDesc(prometheus.BuildFQName(MetricPrefix, "exporter", "netns_discovery_errors_total"),
			"Rescans whose namespace discovery failed in part; what they could not read was kept as it was.", nil, nil),
		scanDurationDesc: prometheus.NewDesc(prometheus.BuildFQName(MetricPrefix, "exporter", "netns_discovery_duration_seconds"),
			"How long the last rescan of network namespaces took.", nil, nil),
		infoDesc: prometheus.NewDesc(prometheus.BuildFQName(MetricPrefix, "netns", "info"),
			"One series per watched network namespace (value 1): where it was found, its inode, and the lowest process ID in it with that process's command and cgroup when known.",
			[]string{NetnsLabel, "source", "inode", "pid", "comm", "cgroup"}, nil),
	}
	names := make([]string, 0, len(cfg.Collectors))
	for name := range cfg.Collectors {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		c := cfg.Collectors[name]
		if w, ok := c.(Watcher); ok {
			s.watchers = append(s.watchers, namedWatcher{name: name, w: w})
		}
		if f, ok := c.(Forgetter); ok {
			s.forgetters = append(s.forgetters, f)
		}
	}
	s.current.Store(&[]netns.Target{})
	s.status.Store(&setStatus{discovery: cfg.Discoverer != nil})
	return s, nil
}

// Targets returns the namespaces watched now. It is safe for concurrent
// use and meant as the Exporter's Targets.
func (s *TargetSet) Targets() []netns.Target { return *s.current.Load() }

// Start watches the static namespaces, runs a first discovery, and
// starts rescanning every Interval until ctx ends or Close is called. A
// static namespace that a Watcher cannot watch is an error: nothing is
// left running then.
func (s *TargetSet) Start(ctx context.Context) error {
	s.rescan.Lock()
	defer s.rescan.Unlock()
	if s.ctx != nil || s.closed {
		return errors.New("target set: started twice")
	}
	s.ctx, s.cancel = context.WithCancel(ctx)
	selfInode, err := netns.Self().Inode()
	if err != nil {
		s.cancel()
		return fmt.Errorf("own network namespace: %w", err)
	}
	s.selfInode = selfInode

	// Other static paths first: an explicit path wins over "self" for the
	// same namespace.
	var self *entry
	byInode := map[uint64]*entry{}
	for _, t := range s.cfg.Static {
		if t.IsSelf() {
			self = &entry{target: t, source: SourceSelf, static: true, inode: selfInode}
			continue
		}
		e := &entry{target: t, source: SourcePath, static: true}
		if ino, err := t.Inode(); err == nil {
			if prev, dup := byInode[ino]; dup {
				s.cancel()
				return fmt.Errorf("--conntrack.netns=%s: %w as --conntrack.netns=%s", t.Path, ErrSameNamespace, prev.target.Path)
			}
			e.inode = ino
			byInode[ino] = e
		}
		s.entries = append(s.entries, e)
	}
	if self != nil {
		if other, dup := byInode[selfInode]; dup {
			s.cfg.Logger.Info("own network namespace is watched through its path",
				zap.String(NetnsLabel, other.target.Name), zap.String("path", other.target.Path))
		} else {
			s.entries = append([]*entry{self}, s.entries...)
		}
	}
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

// hasStaticPath reports whether a static namespace is reached through a
// path, which a rescan checks.
func (s *TargetSet) hasStaticPath() bool {
	for _, e := range s.entries {
		if e.static && !e.target.IsSelf() {
			return true
		}
	}
	return false
}

// loop rescans every Interval until the set's context ends.
func (s *TargetSet) loop() {
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
func (s *TargetSet) Rescan() {
	s.rescan.Lock()
	defer s.rescan.Unlock()
	if s.closed || s.ctx == nil || s.ctx.Err() != nil {
		return
	}
	s.rescanLocked(s.ctx)
}

// rescanLocked is one rescan; the caller holds s.rescan.
func (s *TargetSet) rescanLocked(ctx context.Context) {
	start := time.Now()
	prevOver := s.status.Load().overLimit
	var res discovery.Result
	if s.cfg.Discoverer != nil {
		var err error
		res, err = s.cfg.Discoverer.Scan(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.scanErrors++
			s.cfg.Logger.Warn("network namespace discovery failed in part; keeping what it could not read", zap.Error(err))
		}
		if res.Unreadable > 0 {
			s.cfg.Logger.Debug("processes whose network namespace could not be read (needs ptrace access: root or CAP_SYS_PTRACE)",
				zap.Int("processes", res.Unreadable))
		}
	}
	found := make(map[uint64]discovery.Namespace, len(res.Namespaces))
	for _, ns := range res.Namespaces {
		found[ns.Inode] = ns
	}

	claimedInodes := map[uint64]bool{}
	claimedNames := map[string]bool{}
	hasSelf := false
	var kept, dropped []*entry
	for _, e := range s.entries {
		if e.static {
			s.refreshStatic(e)
			hasSelf = hasSelf || e.target.IsSelf()
			claimedNames[e.target.Name] = true
			if e.inode != 0 {
				claimedInodes[e.inode] = true
			}
			e.pid, e.comm, e.cgroup = 0, "", ""
			if ns, ok := found[e.inode]; ok {
				e.pid, e.comm, e.cgroup = ns.PID, ns.Comm, ns.Cgroup
			}
			kept = append(kept, e)
		}
	}
	if !hasSelf {
		// The exporter's own namespace is watched as "self" or not at all.
		claimedInodes[s.selfInode] = true
	}
	for _, e := range s.entries {
		if e.static {
			continue
		}
		ns, ok := found[e.inode]
		// A source that could not be read this time changes nothing of
		// its namespaces: they are neither gone nor renamed.
		sourceFailed := res.Failed[discovery.Source(e.source)]
		switch {
		case claimedInodes[e.inode]:
			// A static path names it now.
			dropped = append(dropped, e)
			s.cfg.Logger.Info("discovered network namespace now watched through a static path",
				zap.String(NetnsLabel, e.target.Name), zap.Uint64("inode", e.inode))
			continue
		case !ok && sourceFailed:
		case !ok:
			dropped = append(dropped, e)
			s.cfg.Logger.Info("network namespace gone, no longer watched", zap.String(NetnsLabel, e.target.Name),
				zap.String("source", e.source), zap.Uint64("inode", e.inode))
			continue
		case string(ns.Source) != e.source && sourceFailed:
			e.pid, e.comm, e.cgroup = ns.PID, ns.Comm, ns.Cgroup
		case string(ns.Source) != e.source || ns.Source == discovery.SourceDir && ns.Path != e.discoveredPath:
			// It got a name (a /proc namespace now in a directory), or its
			// file was renamed: watched again under the new name.
			dropped = append(dropped, e)
			s.cfg.Logger.Info("network namespace renamed", zap.String(NetnsLabel, e.target.Name),
				zap.String("path", ns.Path), zap.Uint64("inode", e.inode))
			continue
		default:
			e.pid, e.comm, e.cgroup = ns.PID, ns.Comm, ns.Cgroup
		}
		claimedInodes[e.inode] = true
		claimedNames[e.target.Name] = true
		kept = append(kept, e)
	}
	if len(dropped) > 0 {
		s.entries = kept
		s.publish()
		s.release(dropped)
	}

	// Watchers that failed before get another try.
	for _, e := range s.entries {
		if e.inode != 0 && len(e.watching) < len(s.watchers) {
			s.watch(e)
		}
	}

	overLimit := 0
	room := s.cfg.Max - len(s.entries)
	var added bool
	for _, ns := range res.Namespaces {
		if claimedInodes[ns.Inode] {
			continue
		}
		if room <= 0 {
			overLimit++
			continue
		}
		name := ns.Name
		if claimedNames[name] {
			name = discovery.InodeName(ns.Inode)
		}
		if claimedNames[name] {
			s.cfg.Logger.Warn("discovered network namespace skipped: its name is taken",
				zap.String(NetnsLabel, name), zap.String("path", ns.Path))
			continue
		}
		e, err := s.open(ns, name)
		if err != nil {
			// Gone since the scan; the next rescan will not find it.
			s.cfg.Logger.Debug("discovered network namespace could not be opened", zap.String("path", ns.Path), zap.Error(err))
			continue
		}
		s.watch(e)
		s.cfg.Logger.Info("watching network namespace", zap.String(NetnsLabel, e.target.Name),
			zap.String("source", e.source), zap.String("path", ns.Path), zap.Uint64("inode", e.inode),
			zap.Int("pid", e.pid), zap.String("comm", e.comm))
		claimedInodes[ns.Inode] = true
		claimedNames[name] = true
		s.entries = append(s.entries, e)
		room--
		added = true
	}
	if added {
		s.publish()
	}
	if overLimit > 0 && prevOver == 0 {
		s.cfg.Logger.Warn("more network namespaces than --conntrack.netns-max; the rest are not watched",
			zap.Int("max", s.cfg.Max), zap.Int("over_limit", overLimit))
	}
	s.lastScan = time.Since(start)
	s.publishStatus(overLimit)
}

// refreshStatic reads the inode of a static namespace again. When its path
// names another namespace than the watchers run in (deleted and created
// again), the watchers move to the new one.
func (s *TargetSet) refreshStatic(e *entry) {
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
			zap.String(NetnsLabel, e.target.Name), zap.Uint64("old_inode", e.watchedInode), zap.Uint64("inode", ino))
		for _, nw := range s.watchers {
			nw.w.Forget(e.target)
		}
		e.watching = map[string]bool{}
	}
}

// open makes the entry of a discovered namespace. A namespace found under
// /proc is opened and held; the others are reached through their path.
func (s *TargetSet) open(ns discovery.Namespace, name string) (*entry, error) {
	e := &entry{
		source: string(ns.Source), inode: ns.Inode, discoveredPath: ns.Path,
		pid: ns.PID, comm: ns.Comm, cgroup: ns.Cgroup,
	}
	if ns.Source != discovery.SourceProc {
		e.target = netns.Target{Name: name, Path: ns.Path}
		return e, nil
	}
	f, err := os.Open(ns.Path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", ns.Path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("stat %s: %w", ns.Path, err)
	}
	if st.Ino != ns.Inode {
		f.Close()
		return nil, fmt.Errorf("%s: process gone, the path names namespace %d now, not %d", ns.Path, st.Ino, ns.Inode)
	}
	e.file = f
	e.target = netns.Target{Name: name, Path: "/proc/self/fd/" + strconv.Itoa(int(f.Fd()))}
	return e, nil
}

// watch starts every Watcher that is not running yet for e; failures are
// logged and tried again on the next rescan.
func (s *TargetSet) watch(e *entry) {
	if e.watching == nil {
		e.watching = map[string]bool{}
	}
	for _, nw := range s.watchers {
		if e.watching[nw.name] {
			continue
		}
		if err := nw.w.Watch(s.ctx, e.target); err != nil {
			s.cfg.Logger.Warn("watcher could not start; retrying on the next rescan",
				zap.String("collector", nw.name), zap.String(NetnsLabel, e.target.Name), zap.Error(err))
			continue
		}
		e.watching[nw.name] = true
	}
	e.watchedInode = e.inode
}

// release forgets namespaces already removed from Targets: it waits for
// the scrapes that may still use them, then every Forgetter forgets them
// and held files are closed.
func (s *TargetSet) release(dropped []*entry) {
	s.scrapes.Lock() // the barrier: no scrape of the old Targets runs past this
	s.scrapes.Unlock()
	for _, e := range dropped {
		for _, f := range s.forgetters {
			f.Forget(e.target)
		}
		if e.file != nil {
			e.file.Close()
		}
	}
}

// stopAll releases every entry; the caller holds s.rescan.
func (s *TargetSet) stopAll() {
	dropped := s.entries
	s.entries = nil
	s.publish()
	s.release(dropped)
	s.publishStatus(0)
}

// Close stops rescanning and releases every namespace: watchers stop,
// forgetters forget, held files close. Targets is empty afterwards.
func (s *TargetSet) Close() {
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

// publish makes the entries the Targets of the next scrapes.
func (s *TargetSet) publish() {
	targets := make([]netns.Target, len(s.entries))
	for i, e := range s.entries {
		targets[i] = e.target
	}
	s.current.Store(&targets)
}

// publishStatus makes the entries and counts what Collect reports.
func (s *TargetSet) publishStatus(overLimit int) {
	st := &setStatus{
		overLimit:  overLimit,
		scanErrors: s.scanErrors,
		lastScan:   s.lastScan,
		discovery:  s.cfg.Discoverer != nil,
		info:       make([]infoRow, 0, len(s.entries)),
	}
	for _, e := range s.entries {
		row := infoRow{netns: e.target.Name, source: e.source, comm: e.comm, cgroup: e.cgroup}
		if e.inode != 0 {
			row.inode = strconv.FormatUint(e.inode, 10)
		}
		if e.pid != 0 {
			row.pid = strconv.Itoa(e.pid)
		}
		st.info = append(st.info, row)
	}
	s.status.Store(st)
}

// Guard wraps the collector that reads Targets (the Exporter) so that a
// namespace dropped from the set is forgotten only once the scrapes that
// may still be using it are done.
func (s *TargetSet) Guard(c prometheus.Collector) prometheus.Collector {
	return guarded{set: s, c: c}
}

// guarded is a collector whose Collect holds off TargetSet releases.
type guarded struct {
	set *TargetSet
	c   prometheus.Collector
}

// Describe implements prometheus.Collector.
func (g guarded) Describe(ch chan<- *prometheus.Desc) { g.c.Describe(ch) }

// Collect implements prometheus.Collector.
func (g guarded) Collect(ch chan<- prometheus.Metric) {
	g.set.scrapes.RLock()
	defer g.set.scrapes.RUnlock()
	g.c.Collect(ch)
}

// Describe implements prometheus.Collector for the set's own metrics.
func (s *TargetSet) Describe(ch chan<- *prometheus.Desc) {
	ch <- s.watchedDesc
	ch <- s.overLimitDesc
	ch <- s.scanErrorsDesc
	ch <- s.scanDurationDesc
	ch <- s.infoDesc
}

// Collect implements prometheus.Collector for the set's own metrics.
func (s *TargetSet) Collect(ch chan<- prometheus.Metric) {
	st := s.status.Load()
	ch <- prometheus.MustNewConstMetric(s.watchedDesc, prometheus.GaugeValue, float64(len(st.info)))
	if st.discovery {
		ch <- prometheus.MustNewConstMetric(s.overLimitDesc, prometheus.GaugeValue, float64(st.overLimit))
		ch <- prometheus.MustNewConstMetric(s.scanErrorsDesc, prometheus.CounterValue, float64(st.scanErrors))
		ch <- prometheus.MustNewConstMetric(s.scanDurationDesc, prometheus.GaugeValue, st.lastScan.Seconds())
	}
	for _, r := range st.info {
		ch <- prometheus.MustNewConstMetric(s.infoDesc, prometheus.GaugeValue, 1, r.netns, r.source, r.inode, r.pid, r.comm, r.cgroup)
	}
}
