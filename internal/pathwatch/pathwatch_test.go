package pathwatch

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

// newWatcher returns a Watcher closed at the end of the test, failing the
// test when it has no inotify instance.
func newWatcher(t *testing.T) *Watcher {
	t.Helper()
	w := New()
	if err := w.Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Error(err)
		}
	})
	return w
}

// watchedDir returns a temporary directory on a filesystem that reports
// its changes: under TMPDIR, else in /dev/shm. Without one the test
// skips, or fails in CI.
func watchedDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	err := reportsChanges(dir)
	if err == nil {
		return dir
	}
	shm, shmErr := os.MkdirTemp("/dev/shm", "pathwatch")
	if shmErr == nil {
		t.Cleanup(func() { os.RemoveAll(shm) })
		if shmErr = reportsChanges(shm); shmErr == nil {
			return shm
		}
	}
	if nstest.InCI() {
		t.Fatalf("no directory whose changes inotify sees: %v; %v", err, shmErr)
	}
	t.Skipf("no directory whose changes inotify sees: %v; %v", err, shmErr)
	return ""
}

func touch(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

// refreshed calls Refresh and returns Changed of each mark.
func refreshed(t *testing.T, w *Watcher, marks ...*Mark) []bool {
	t.Helper()
	if err := w.Refresh(); err != nil {
		t.Fatal(err)
	}
	var got []bool
	for _, m := range marks {
		got = append(got, m.Changed())
	}
	return got
}

func TestChangedOnlyWhenAnEventNamesThePath(t *testing.T) {
	dir := watchedDir(t)
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	touch(t, a)
	touch(t, b)
	w := newWatcher(t)
	ma, mb := w.Watch(a), w.Watch(b)
	if !ma.Watched() || !mb.Watched() {
		t.Fatal("paths in a local directory are not watched")
	}
	if !ma.Changed() || ma.Changed() {
		t.Fatal("a new Mark reports a change once, then none")
	}
	mb.Changed()
	if got := refreshed(t, w, ma, mb); got[0] || got[1] {
		t.Fatalf("changed %v with nothing done", got)
	}
	// Writing into a file changes no name.
	if err := os.WriteFile(a, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := refreshed(t, w, ma, mb); got[0] || got[1] {
		t.Fatalf("changed %v after a write", got)
	}

	steps := []struct {
		name   string
		do     func() error
		aGot   bool
		bAfter bool
	}{
		{"remove a", func() error { return os.Remove(a) }, true, false},
		{"create a", func() error { return os.WriteFile(a, nil, 0o600) }, true, false},
		{"create c", func() error { return os.WriteFile(filepath.Join(dir, "c"), nil, 0o600) }, false, false},
		{"rename c over a", func() error { return os.Rename(filepath.Join(dir, "c"), a) }, true, false},
		{"rename b away", func() error { return os.Rename(b, filepath.Join(dir, "d")) }, false, true},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if ma.Changed() || mb.Changed() {
			t.Fatalf("%s: changed before Refresh", s.name)
		}
		if got := refreshed(t, w, ma, mb); got[0] != s.aGot || got[1] != s.bAfter {
			t.Errorf("%s: changed a, b = %v, want %v, %v", s.name, got, s.aGot, s.bAfter)
		}
	}
}

func TestPathsNotWatched(t *testing.T) {
	w := newWatcher(t)
	// procfs: entries come and go without events.
	m := w.Watch("/proc/self/ns/net")
	if m.Watched() {
		t.Fatal("a path under /proc is watched")
	}
	for range 3 {
		if got := refreshed(t, w, m); !got[0] {
			t.Fatal("a path that is not watched reported no change")
		}
	}
	// A symbolic link: what it names may change in another directory.
	dir := watchedDir(t)
	target, link := filepath.Join(dir, "target"), filepath.Join(dir, "link")
	touch(t, target)
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if m := w.Watch(link); m.Watched() || !m.Changed() || !m.Changed() {
		t.Error("a symbolic link is watched")
	}
	// A directory that does not exist.
	if m := w.Watch(filepath.Join(t.TempDir(), "gone", "x")); m.Watched() || !m.Changed() || !m.Changed() {
		t.Error("a path in a missing directory is watched")
	}
}

func TestDirectoryGoneEndsTheWatch(t *testing.T) {
	parent := watchedDir(t)
	dir := filepath.Join(parent, "netns")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "a")
	touch(t, path)
	w := newWatcher(t)
	m := w.Watch(path)
	m.Changed()
	if err := os.Rename(dir, filepath.Join(parent, "moved")); err != nil {
		t.Fatal(err)
	}
	if got := refreshed(t, w, m); !got[0] || m.Watched() {
		t.Fatal("moving the directory away did not end its watch")
	}
	if !m.Changed() {
		t.Fatal("a Mark of an ended watch must report a change on every look")
	}
	// A new directory in the same place is watched afresh.
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	touch(t, path)
	m2 := w.Watch(path)
	if !m2.Watched() {
		t.Fatal("the new directory is not watched")
	}
	m2.Changed()
	if got := refreshed(t, w, m2); got[0] {
		t.Fatal("changed with nothing done")
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if got := refreshed(t, w, m2); !got[0] {
		t.Fatal("removal in the new directory not seen")
	}
	w.Unwatch(m)
	w.Unwatch(m2)
	if len(w.dirs) != 0 || len(w.byWD) != 0 {
		t.Errorf("directories still watched after the last Unwatch: %v", w.dirs)
	}
}

func TestUnwatchAndOverflow(t *testing.T) {
	dir := watchedDir(t)
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	w := newWatcher(t)
	ma, mb := w.Watch(a), w.Watch(b)
	ma.Changed()
	mb.Changed()
	w.Unwatch(ma)
	if !ma.Changed() || !ma.Changed() {
		t.Error("an unwatched Mark must report a change on every look")
	}
	if len(w.dirs) != 1 {
		t.Fatalf("%d directories watched while b is, want 1", len(w.dirs))
	}
	// A queue overflow flags every Mark.
	w.mu.Lock()
	w.eventLocked(-1, unix.IN_Q_OVERFLOW, "")
	w.mu.Unlock()
	if !mb.Changed() || mb.Changed() {
		t.Error("an overflow did not flag b once")
	}
	w.Unwatch(mb)
	if len(w.dirs) != 0 || len(w.byWD) != 0 {
		t.Error("the directory is still watched after its last Mark went")
	}
}

// event encodes one inotify event as the kernel does, its name padded
// with NULs to pad bytes.
func event(wd int32, mask uint32, name string, pad int) []byte {
	b := make([]byte, unix.SizeofInotifyEvent+len(name)+pad)
	binary.NativeEndian.PutUint32(b[0:4], uint32(wd))
	binary.NativeEndian.PutUint32(b[4:8], mask)
	binary.NativeEndian.PutUint32(b[12:16], uint32(len(name)+pad))
	copy(b[unix.SizeofInotifyEvent:], name)
	return b
}

func TestParseEvents(t *testing.T) {
	b := append(event(1, unix.IN_CREATE, "cni-1", 3), event(2, unix.IN_IGNORED, "", 0)...)
	b = append(b, event(1, unix.IN_DELETE, "x", 15)...)
	type ev struct {
		wd   int32
		mask uint32
		name string
	}
	var got []ev
	if err := parseEvents(b, func(wd int32, mask uint32, name string) { got = append(got, ev{wd, mask, name}) }); err != nil {
		t.Fatal(err)
	}
	want := []ev{{1, unix.IN_CREATE, "cni-1"}, {2, unix.IN_IGNORED, ""}, {1, unix.IN_DELETE, "x"}}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("event %d: %v, want %v", i, got[i], want[i])
		}
	}
	for _, bad := range [][]byte{b[:5], b[:unix.SizeofInotifyEvent+2]} {
		if err := parseEvents(bad, func(int32, uint32, string) {}); err == nil {
			t.Errorf("%d bytes of a cut event parsed", len(bad))
		}
	}
}

func FuzzParseEvents(f *testing.F) {
	f.Add(event(1, unix.IN_CREATE, "cni-1", 3))
	f.Add(append(event(2, unix.IN_DELETE, "a", 0), 1, 2, 3))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		n := 0
		err := parseEvents(b, func(_ int32, _ uint32, name string) {
			n += unix.SizeofInotifyEvent + len(name)
		})
		if err == nil && n > len(b) {
			t.Fatalf("events of %d bytes out of %d", n, len(b))
		}
	})
}
