package watch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ct-exporter/ct-exporter/internal/discovery"
	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/podid"
)

// fakeDiscoverer returns the Result set last.
type fakeDiscoverer struct {
	mu  sync.Mutex
	res discovery.Result
	err error
}

func (f *fakeDiscoverer) set(res discovery.Result, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.res, f.err = res, err
}

func (f *fakeDiscoverer) Scan(context.Context) (discovery.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	res := f.res
	res.Namespaces = slices.Clone(res.Namespaces)
	return res, f.err
}

// fakeWatcher records Watch and Forget calls and can refuse to watch.
type fakeWatcher struct {
	mu       sync.Mutex
	watching map[string]netns.Target
	log      []string
	refuse   map[string]bool // by target name
}

func newFakeWatcher() *fakeWatcher {
	return &fakeWatcher{watching: map[string]netns.Target{}, refuse: map[string]bool{}}
}

func (w *fakeWatcher) Watch(_ context.Context, t netns.Target) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.refuse[t.Name] {
		w.log = append(w.log, "refuse "+t.Name)
		return errors.New("refused")
	}
	if _, ok := w.watching[t.Name]; ok {
		return fmt.Errorf("%s watched twice", t.Name)
	}
	w.watching[t.Name] = t
	w.log = append(w.log, "watch "+t.Name)
	return nil
}

func (w *fakeWatcher) Forget(t netns.Target) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.watching, t.Name)
	w.log = append(w.log, "forget "+t.Name)
}

func (w *fakeWatcher) setRefuse(name string, refuse bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.refuse[name] = refuse
}

// takeLog returns the calls since the last takeLog.
func (w *fakeWatcher) takeLog() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	l := w.log
	w.log = nil
	return l
}

func (w *fakeWatcher) names() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for n := range w.watching {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// forgetOnly hides Watch so the watcher is only a Forgetter.
type forgetOnly struct{ f *fakeWatcher }

func (o forgetOnly) Forget(t netns.Target) { o.f.Forget(t) }

// nsFile makes a file to stand for a namespace found under /proc: the
// set opens it and checks its inode.
func nsFile(t *testing.T, name string) (string, uint64) {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return p, st.Ino
}

func selfInode(t *testing.T) uint64 {
	t.Helper()
	ino, err := netns.Self().Inode()
	if err != nil {
		t.Fatal(err)
	}
	return ino
}

func targetNames(ts []netns.Target) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.Name
	}
	return out
}

// harness is a Set over one fake watcher, one fake forgetter and a
// fake discoverer.
type harness struct {
	set    *Set
	w      *fakeWatcher
	forget *fakeWatcher
	disc   *fakeDiscoverer
}

func newHarness(t *testing.T, static []netns.Target, max int, res discovery.Result) *harness {
	t.Helper()
	h := &harness{w: newFakeWatcher(), forget: newFakeWatcher(), disc: &fakeDiscoverer{res: res}}
	set, err := New(Config{
		Static:     static,
		Discoverer: h.disc,
		Max:        max,
		Interval:   time.Hour, // rescans are driven by the test
		Watchers:   map[string]Watcher{"watcher": h.w},
		Forgetters: []Forgetter{forgetOnly{h.forget}},
	})
	if err != nil {
		t.Fatal(err)
	}
	h.set = set
	if err := set.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(set.Close)
	return h
}

func (h *harness) check(t *testing.T, want ...string) {
	t.Helper()
	got := targetNames(h.set.Targets())
	if !slices.Equal(got, want) {
		t.Errorf("Targets = %v, want %v", got, want)
	}
	sorted := slices.Clone(want)
	sort.Strings(sorted)
	if w := h.w.names(); !slices.Equal(w, sorted) {
		t.Errorf("watcher watches %v, want %v", w, sorted)
	}
}

func TestStaticTargets(t *testing.T) {
	for _, tc := range []struct {
		name  string
		paths []string
		self  bool
		want  []netns.Target
		err   string
	}{
		{name: "self only", self: true, want: []netns.Target{netns.Self()}},
		{name: "nothing", want: nil},
		{name: "paths without self", paths: []string{"/run/netns/a", "/proc/12/ns/net"},
			want: []netns.Target{{Name: "a", Path: "/run/netns/a"}, {Name: "pid-12", Path: "/proc/12/ns/net"}}},
		{name: "self and a path", paths: []string{"/run/netns/a"}, self: true,
			want: []netns.Target{netns.Self(), {Name: "a", Path: "/run/netns/a"}}},
		{name: "a path named self", paths: []string{"/run/netns/self"}, self: true,
			err: `/run/netns/self: name "self" is the exporter's own namespace`},
		{name: "duplicate", paths: []string{"/run/netns/a", "/var/run/netns/a"}, err: "same namespace name"},
	} {
		got, err := StaticTargets(tc.paths, tc.self)
		var selfName *SelfNameError
		if tc.name == "a path named self" && (!errors.As(err, &selfName) || !errors.Is(err, ErrSelfName) || selfName.Path != "/run/netns/self") {
			t.Errorf("%s: err = %v, want a *SelfNameError", tc.name, err)
		}
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err = %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%s: StaticTargets = %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	if _, err := New(Config{Max: 0, Interval: time.Second}); !errors.Is(err, ErrMaxTooSmall) ||
		err.Error() != "namespace limit 0: must be at least 1" {
		t.Errorf("Max 0: %v", err)
	}
	if _, err := New(Config{Max: 1}); !errors.Is(err, ErrIntervalInvalid) ||
		err.Error() != "rescan interval 0s: must be positive" {
		t.Errorf("Interval 0: %v", err)
	}
}

func TestSetAddsAndDropsDiscoveredNamespaces(t *testing.T) {
	pathA, inoA := nsFile(t, "a")
	pathP, inoP := nsFile(t, "p")
	podP := podid.Identity{PodUID: "11111111-2222-4333-8444-555555555555", ContainerID: strings.Repeat("ab", 32)}
	podSelf := podid.Identity{PodUID: "66666666-7777-4888-9999-000000000000", ContainerID: strings.Repeat("cd", 32)}
	res := discovery.Result{Namespaces: []discovery.Namespace{
		{Inode: inoA, Name: "a", Path: pathA, Source: discovery.SourceDir},
		{Inode: inoP, Name: discovery.InodeName(inoP), Path: pathP, Source: discovery.SourceProc, PID: 42, Comm: "pause", Cgroup: "/kubepods/pod1",
			Pod: podP},
		{Inode: selfInode(t), Name: "ino-self", Path: "/proc/1/ns/net", Source: discovery.SourceProc, PID: 1, Comm: "init", Cgroup: "/",
			Pod: podSelf},
	}}
	h := newHarness(t, []netns.Target{netns.Self()}, 10, res)
	nameP := discovery.InodeName(inoP)
	// The exporter's own namespace is "self", not found again.
	h.check(t, "self", "a", nameP)
	if log := h.w.takeLog(); !slices.Equal(log, []string{"watch self", "watch a", "watch " + nameP}) {
		t.Errorf("watcher calls %v", log)
	}

	// The /proc namespace is held open and reached through the held file.
	var pTarget netns.Target
	for _, tg := range h.set.Targets() {
		if tg.Name == nameP {
			pTarget = tg
		}
	}
	if !strings.HasPrefix(pTarget.Path, "/proc/self/fd/") {
		t.Fatalf("/proc namespace target %+v, want a /proc/self/fd path", pTarget)
	}
	var st unix.Stat_t
	if err := unix.Stat(pTarget.Path, &st); err != nil || st.Ino != inoP {
		t.Errorf("held path %s: inode %d, %v; want %d", pTarget.Path, st.Ino, err, inoP)
	}

	status := h.set.Status()
	wantInfo := []NamespaceInfo{
		{Name: "self", Source: "self", Inode: selfInode(t), PID: 1, Comm: "init", Cgroup: "/", Pod: podSelf},
		{Name: "a", Source: "dir", Inode: inoA},
		{Name: nameP, Source: "proc", Inode: inoP, PID: 42, Comm: "pause", Cgroup: "/kubepods/pod1", Pod: podP},
	}
	if !slices.Equal(status.Namespaces, wantInfo) || status.OverLimit != 0 || !status.Discovery {
		t.Errorf("Status = %+v, want namespaces %+v and none over the limit", status, wantInfo)
	}

	// A rescan that finds the same keeps everything as it is.
	h.set.Rescan()
	h.check(t, "self", "a", nameP)
	if log := h.w.takeLog(); len(log) != 0 {
		t.Errorf("unchanged rescan called the watcher: %v", log)
	}

	// The pod's first process exits: the next lowest PID, in another
	// container of the pod, names the namespace's pod and container now;
	// the exporter's own namespace has no process found any more.
	podP2 := podid.Identity{PodUID: podP.PodUID, ContainerID: strings.Repeat("ef", 32)}
	moved := res
	moved.Namespaces = []discovery.Namespace{res.Namespaces[0], res.Namespaces[1]}
	moved.Namespaces[1].PID, moved.Namespaces[1].Comm, moved.Namespaces[1].Pod = 43, "app", podP2
	h.disc.set(moved, nil)
	h.set.Rescan()
	h.check(t, "self", "a", nameP)
	wantInfo[0] = NamespaceInfo{Name: "self", Source: "self", Inode: selfInode(t)}
	wantInfo[2].PID, wantInfo[2].Comm, wantInfo[2].Pod = 43, "app", podP2
	if got := h.set.Status().Namespaces; !slices.Equal(got, wantInfo) {
		t.Errorf("Status after the process change = %+v, want %+v", got, wantInfo)
	}
	if log := h.w.takeLog(); len(log) != 0 {
		t.Errorf("a changed process called the watcher: %v", log)
	}

	// Both vanish: forgotten by the watcher and the forgetter, file closed.
	h.disc.set(discovery.Result{}, nil)
	h.set.Rescan()
	h.check(t, "self")
	if log := h.w.takeLog(); !slices.Equal(log, []string{"forget a", "forget " + nameP}) {
		t.Errorf("watcher calls %v", log)
	}
	if log := h.forget.takeLog(); !slices.Equal(log, []string{"forget a", "forget " + nameP}) {
		t.Errorf("forgetter calls %v", log)
	}
	if err := unix.Stat(pTarget.Path, &st); err == nil && st.Ino == inoP {
		t.Errorf("%s still open after the namespace was dropped", pTarget.Path)
	}

	h.set.Close()
	if got := h.set.Targets(); len(got) != 0 {
		t.Errorf("Targets after Close = %v", got)
	}
	if log := h.w.takeLog(); !slices.Equal(log, []string{"forget self"}) {
		t.Errorf("watcher calls at Close %v", log)
	}
	h.set.Close() // twice is fine
	h.set.Rescan()
}

func TestSetCap(t *testing.T) {
	var nss []discovery.Namespace
	for i := range 5 {
		p, ino := nsFile(t, fmt.Sprint(i))
		nss = append(nss, discovery.Namespace{Inode: ino, Name: fmt.Sprintf("n%d", i), Path: p, Source: discovery.SourceDir})
	}
	h := newHarness(t, []netns.Target{netns.Self()}, 3, discovery.Result{Namespaces: nss})
	h.check(t, "self", "n0", "n1")
	overLimit := func() int { return h.set.Status().OverLimit }
	if v := overLimit(); v != 3 {
		t.Errorf("over limit %v, want 3", v)
	}

	// The namespaces watched already keep their place ahead of new ones
	// listed first.
	h.disc.set(discovery.Result{Namespaces: []discovery.Namespace{nss[4], nss[3], nss[1]}}, nil)
	h.set.Rescan()
	h.check(t, "self", "n1", "n4")
	if v := overLimit(); v != 1 {
		t.Errorf("over limit %v, want 1", v)
	}
	h.disc.set(discovery.Result{Namespaces: nss[:2]}, nil)
	h.set.Rescan()
	h.check(t, "self", "n1", "n0")
	if v := overLimit(); v != 0 {
		t.Errorf("over limit %v, want 0", v)
	}
}

func TestSetKeepsWhatAFailedSourceCouldNotSee(t *testing.T) {
	pathA, inoA := nsFile(t, "a")
	pathP, inoP := nsFile(t, "p")
	a := discovery.Namespace{Inode: inoA, Name: "a", Path: pathA, Source: discovery.SourceDir}
	p := discovery.Namespace{Inode: inoP, Name: discovery.InodeName(inoP), Path: pathP, Source: discovery.SourceProc}
	h := newHarness(t, nil, 10, discovery.Result{Namespaces: []discovery.Namespace{a, p}})
	h.check(t, "a", p.Name)

	// /proc could not be read: its namespace stays; the directory's is gone.
	h.disc.set(discovery.Result{Failed: map[discovery.Source]bool{discovery.SourceProc: true}}, errors.New("scan /proc: EMFILE"))
	h.set.Rescan()
	h.check(t, p.Name)
	if errs := h.set.Status().ScanErrors; errs != 1 {
		t.Errorf("discovery errors %v, want 1", errs)
	}
}

func TestSetKeepsTheNameWhileItsDirectoryCannotBeRead(t *testing.T) {
	pathA, inoA := nsFile(t, "a")
	a := discovery.Namespace{Inode: inoA, Name: "a", Path: pathA, Source: discovery.SourceDir}
	h := newHarness(t, nil, 10, discovery.Result{Namespaces: []discovery.Namespace{a}})
	h.check(t, "a")
	h.w.takeLog()
	// The directory failed; /proc still sees the namespace by its inode.
	h.disc.set(discovery.Result{
		Namespaces: []discovery.Namespace{{Inode: inoA, Name: discovery.InodeName(inoA), Path: pathA, Source: discovery.SourceProc, PID: 9}},
		Failed:     map[discovery.Source]bool{discovery.SourceDir: true},
	}, errors.New("scan /run/netns: EMFILE"))
	h.set.Rescan()
	h.check(t, "a")
	if log := h.w.takeLog(); len(log) != 0 {
		t.Errorf("watcher calls %v", log)
	}
}

func TestSetWithoutSelfSkipsOwnNamespace(t *testing.T) {
	pathA, inoA := nsFile(t, "a")
	res := discovery.Result{Namespaces: []discovery.Namespace{
		{Inode: selfInode(t), Name: "host", Path: "/run/netns/host", Source: discovery.SourceDir},
		{Inode: inoA, Name: "a", Path: pathA, Source: discovery.SourceDir},
	}}
	h := newHarness(t, nil, 10, res)
	h.check(t, "a")
}

func TestSetRenamesAProcNamespaceThatGetsAName(t *testing.T) {
	pathP, inoP := nsFile(t, "p")
	p := discovery.Namespace{Inode: inoP, Name: discovery.InodeName(inoP), Path: pathP, Source: discovery.SourceProc}
	h := newHarness(t, nil, 10, discovery.Result{Namespaces: []discovery.Namespace{p}})
	h.check(t, p.Name)
	h.w.takeLog()

	named := discovery.Namespace{Inode: inoP, Name: "blue", Path: pathP, Source: discovery.SourceDir, PID: 7}
	h.disc.set(discovery.Result{Namespaces: []discovery.Namespace{named}}, nil)
	h.set.Rescan()
	h.check(t, "blue")
	if log := h.w.takeLog(); !slices.Equal(log, []string{"forget " + p.Name, "watch blue"}) {
		t.Errorf("watcher calls %v", log)
	}
}

func TestSetNameCollision(t *testing.T) {
	pathA, inoA := nsFile(t, "a")
	// A directory namespace called "self" cannot take the exporter's name.
	h := newHarness(t, []netns.Target{netns.Self()}, 10, discovery.Result{Namespaces: []discovery.Namespace{
		{Inode: inoA, Name: "self", Path: pathA, Source: discovery.SourceDir},
	}})
	h.check(t, "self", discovery.InodeName(inoA))
}

func TestSetRetriesAWatcherThatFailed(t *testing.T) {
	pathA, inoA := nsFile(t, "a")
	res := discovery.Result{Namespaces: []discovery.Namespace{{Inode: inoA, Name: "a", Path: pathA, Source: discovery.SourceDir}}}
	w := newFakeWatcher()
	w.setRefuse("a", true)
	set, err := New(Config{
		Discoverer: &fakeDiscoverer{res: res}, Max: 10, Interval: time.Hour,
		Watchers: map[string]Watcher{"w": w},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := set.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	// Scrapes see it (its other collectors work); the watcher is retried.
	if got := targetNames(set.Targets()); !slices.Equal(got, []string{"a"}) {
		t.Errorf("Targets = %v", got)
	}
	w.setRefuse("a", false)
	set.Rescan()
	if log := w.takeLog(); !slices.Equal(log, []string{"refuse a", "watch a"}) {
		t.Errorf("watcher calls %v", log)
	}
	set.Rescan()
	if log := w.takeLog(); len(log) != 0 {
		t.Errorf("watched namespace watched again: %v", log)
	}
}

func TestSetStaticWatchFailureStopsStart(t *testing.T) {
	w := newFakeWatcher()
	w.setRefuse("self", true)
	set, err := New(Config{
		Static: []netns.Target{netns.Self()}, Max: 10, Interval: time.Hour,
		Watchers: map[string]Watcher{"events": w},
	})
	if err != nil {
		t.Fatal(err)
	}
	err = set.Start(context.Background())
	if err == nil || err.Error() != "events collector: netns self: refused" {
		t.Errorf("Start = %v", err)
	}
	if got := set.Targets(); len(got) != 0 {
		t.Errorf("Targets after a failed Start = %v", got)
	}
	set.Close()
}

// blockingReader holds the set like a scrape, until released.
type blockingReader struct {
	started chan struct{}
	release chan struct{}
}

func (b *blockingReader) read(s *Set) {
	defer s.Hold()()
	close(b.started)
	<-b.release
}

func TestSetForgetsOnlyAfterRunningScrapes(t *testing.T) {
	pathA, inoA := nsFile(t, "a")
	h := newHarness(t, nil, 10, discovery.Result{Namespaces: []discovery.Namespace{{Inode: inoA, Name: "a", Path: pathA, Source: discovery.SourceDir}}})
	h.w.takeLog()
	b := &blockingReader{started: make(chan struct{}), release: make(chan struct{})}
	scrapeDone := make(chan struct{})
	go func() {
		defer close(scrapeDone)
		b.read(h.set)
	}()
	<-b.started

	h.disc.set(discovery.Result{}, nil)
	rescanDone := make(chan struct{})
	go func() { defer close(rescanDone); h.set.Rescan() }()
	// The namespace leaves Targets at once; Forget waits for the scrape.
	deadline := time.Now().Add(5 * time.Second)
	for len(h.set.Targets()) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("namespace still in Targets")
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case <-rescanDone:
		t.Fatal("rescan finished while a scrape was running")
	case <-time.After(50 * time.Millisecond):
	}
	if log := h.w.takeLog(); len(log) != 0 {
		t.Errorf("forgotten during a scrape: %v", log)
	}
	close(b.release)
	<-scrapeDone
	<-rescanDone
	if log := h.w.takeLog(); !slices.Equal(log, []string{"forget a"}) {
		t.Errorf("watcher calls %v", log)
	}
}

func TestSetConcurrentScrapesAndRescans(t *testing.T) {
	var nss []discovery.Namespace
	for i := range 8 {
		p, ino := nsFile(t, fmt.Sprint(i))
		src := discovery.SourceDir
		if i%2 == 1 {
			src = discovery.SourceProc
		}
		nss = append(nss, discovery.Namespace{Inode: ino, Name: fmt.Sprintf("n%d", i), Path: p, Source: src})
	}
	h := newHarness(t, []netns.Target{netns.Self()}, 6, discovery.Result{Namespaces: nss})
	h.set.Close() // stopped by the test instead of the harness
	set, err := New(Config{
		Static: []netns.Target{netns.Self()}, Discoverer: h.disc, Max: 6, Interval: time.Millisecond,
		Watchers: map[string]Watcher{"w": newFakeWatcher()},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := set.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	scrape := func() {
		defer set.Hold()()
		for _, tg := range set.Targets() {
			if tg.Name == "" {
				t.Error("empty target")
			}
		}
		if st := set.Status(); len(st.Namespaces) > 6 {
			t.Errorf("%d namespaces watched, at most 6", len(st.Namespaces))
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				scrape()
			}
		}()
	}
	for i := range 50 {
		h.disc.set(discovery.Result{Namespaces: nss[i%4 : i%4+4]}, nil)
		set.Rescan()
	}
	close(stop)
	wg.Wait()
	set.Close()
	if got := set.Targets(); len(got) != 0 {
		t.Errorf("Targets after Close = %v", got)
	}
}
