// Package pathwatch tells whether the file a path names may have been
// removed or replaced since the path was last looked at, without a
// stat(2) per look. It watches the directories that hold the paths with
// inotify: a path counts as changed when an event named it (created,
// deleted, moved in or out), when its directory itself went away, or when
// the kernel's event queue overflowed. A path on a filesystem whose
// changes inotify may not see (procfs, network and FUSE filesystems), or
// any path when inotify cannot be used, counts as changed on every look,
// so the caller falls back to its own check.
//
// What inotify does not report is a mount or unmount over a file that
// stays: a caller that must notice one still has to look by itself, less
// often (package watch's rescans do).
package pathwatch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// dirEvents are the events of a watched directory that change what one of
// its names refers to, and those that end the watch.
const dirEvents = unix.IN_CREATE | unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO |
	unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR

// watchEnded are the event bits after which a directory's watch no
// longer reports anything: the directory was deleted, moved (its old path
// may name another one now), its filesystem unmounted, or the watch
// removed.
const watchEnded = unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_UNMOUNT | unix.IN_IGNORED

// Watcher watches the directories of the paths given to Watch. Its methods
// may be called from any goroutine.
type Watcher struct {
	fd  int   // inotify instance, non-blocking; -1 without one
	err error // why there is no instance

	mu   sync.Mutex
	dirs map[string]*dir // by directory path
	byWD map[int32]*dir
	buf  []byte
}

// dir is one watched directory.
type dir struct {
	wd    int32
	ended bool // its watch reports nothing any more
	marks map[string][]*Mark
}

// each calls fn with every Mark of d.
func (d *dir) each(fn func(*Mark)) {
	for _, marks := range d.marks {
		for _, m := range marks {
			fn(m)
		}
	}
}

// setAlways and setChanged are what each calls to make a Mark report a
// change on every look, or on the next one.
func setAlways(m *Mark)  { m.always.Store(true) }
func setChanged(m *Mark) { m.changed.Store(true) }

// Mark is the change flag of one path given to Watch.
type Mark struct {
	changed atomic.Bool
	// always: the path is not watched; every look is a change.
	always atomic.Bool
	dir    *dir // nil when always was set at Watch
	name   string
}

// Changed reports whether the path may have changed since the last call
// that reported true, and clears the flag: true on the first call, after
// an event named the path, and on every call for a path that is not
// watched.
func (m *Mark) Changed() bool {
	if m.always.Load() {
		return true
	}
	return m.changed.Swap(false)
}

// Watched reports whether the path is watched through its directory;
// when it is not, Changed is always true.
func (m *Mark) Watched() bool { return !m.always.Load() }

// New returns a Watcher. When inotify cannot be used (no instance left:
// fs.inotify.max_user_instances), the Watcher works without it and Err
// says why.
func New() *Watcher {
	w := &Watcher{fd: -1, dirs: map[string]*dir{}, byWD: map[int32]*dir{}}
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		w.err = fmt.Errorf("inotify: %w", err)
		return w
	}
	w.fd = fd
	w.buf = make([]byte, 64<<10)
	return w
}

// Err returns why the Watcher runs without inotify, or nil.
func (w *Watcher) Err() error { return w.err }

// Watch returns the Mark of path. The path's directory is watched when
// its filesystem reports its changes to inotify; otherwise, when the
// directory cannot be watched, and when path is a symbolic link (what it
// points to may change elsewhere), the Mark reports a change on every
// look.
func (w *Watcher) Watch(path string) *Mark {
	dirPath, name := filepath.Split(filepath.Clean(path))
	m := &Mark{name: name}
	m.changed.Store(true)
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		m.always.Store(true)
		return m
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	d, err := w.dirLocked(filepath.Clean(dirPath))
	if err != nil {
		m.always.Store(true)
		return m
	}
	m.dir = d
	d.marks[name] = append(d.marks[name], m)
	return m
}

// dirLocked returns the watched directory at path, watching it first.
// The caller holds w.mu.
func (w *Watcher) dirLocked(path string) (*dir, error) {
	if d, ok := w.dirs[path]; ok {
		return d, nil
	}
	if w.fd < 0 {
		return nil, w.err
	}
	if err := reportsChanges(path); err != nil {
		return nil, err
	}
	wd, err := unix.InotifyAddWatch(w.fd, path, dirEvents)
	if err != nil {
		return nil, fmt.Errorf("inotify watch %s: %w", path, err)
	}
	if d, ok := w.byWD[int32(wd)]; ok {
		// The same directory under another path (a symbolic link): one
		// watch serves both.
		w.dirs[path] = d
		return d, nil
	}
	d := &dir{wd: int32(wd), marks: map[string][]*Mark{}}
	w.dirs[path] = d
	w.byWD[d.wd] = d
	return d, nil
}

// Unwatch forgets m; its directory is no longer watched once it holds no
// Mark. m reports a change on every later look.
func (w *Watcher) Unwatch(m *Mark) {
	m.always.Store(true)
	if m.dir == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	d := m.dir
	marks := d.marks[m.name]
	for i, other := range marks {
		if other == m {
			marks = append(marks[:i], marks[i+1:]...)
			break
		}
	}
	if len(marks) == 0 {
		delete(d.marks, m.name)
	} else {
		d.marks[m.name] = marks
	}
	if len(d.marks) > 0 || d.ended {
		return
	}
	w.dropLocked(d)
	_, _ = unix.InotifyRmWatch(w.fd, uint32(d.wd)) // its IN_IGNORED names a number no longer known
}

// Refresh reads the events queued since the last Refresh and flags the
// Marks of the paths they name. A change made before Refresh is called
// is reported by the Changed calls after it returns. On a read error
// every Mark is flagged, and the error returned.
func (w *Watcher) Refresh() error {
	if w.fd < 0 {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		n, err := unix.Read(w.fd, w.buf)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			w.flagAllLocked()
			return fmt.Errorf("inotify read: %w", err)
		}
		if err := parseEvents(w.buf[:n], w.eventLocked); err != nil {
			w.flagAllLocked()
			return err
		}
	}
}

// eventLocked flags the Marks one event concerns. The caller holds w.mu.
func (w *Watcher) eventLocked(wd int32, mask uint32, name string) {
	if mask&unix.IN_Q_OVERFLOW != 0 {
		w.flagAllLocked()
		return
	}
	d, ok := w.byWD[wd]
	if !ok {
		return // a directory no longer watched
	}
	if mask&watchEnded != 0 {
		w.endLocked(d, mask&unix.IN_IGNORED == 0)
		return
	}
	for _, m := range d.marks[name] {
		setChanged(m)
	}
}

// endLocked gives up the watch of d, which reports nothing any more: its
// Marks report a change on every look, and a later Watch of a path in the
// same place watches the directory found there then. The kernel has
// removed the watch already unless remove is set. The caller holds w.mu.
func (w *Watcher) endLocked(d *dir, remove bool) {
	d.ended = true
	d.each(setAlways)
	w.dropLocked(d)
	if remove {
		_, _ = unix.InotifyRmWatch(w.fd, uint32(d.wd)) // gone already is as good
	}
}

// dropLocked removes d from the Watcher's maps. The caller holds w.mu.
func (w *Watcher) dropLocked(d *dir) {
	for path, other := range w.dirs {
		if other == d {
			delete(w.dirs, path)
		}
	}
	if w.byWD[d.wd] == d { // the kernel may have given d's number to a newer watch
		delete(w.byWD, d.wd)
	}
}

// flagAllLocked flags every Mark. The caller holds w.mu.
func (w *Watcher) flagAllLocked() {
	for _, d := range w.byWD {
		d.each(setChanged)
	}
}

// Close releases the inotify instance; every Mark reports a change on
// every later look.
func (w *Watcher) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, d := range w.byWD {
		d.each(setAlways)
	}
	w.dirs, w.byWD = map[string]*dir{}, map[int32]*dir{}
	if w.fd < 0 {
		return nil
	}
	fd := w.fd
	w.fd, w.err = -1, errors.New("inotify: watcher closed")
	if err := unix.Close(fd); err != nil {
		return fmt.Errorf("inotify close: %w", err)
	}
	return nil
}

// ErrMalformed reports an inotify event that runs past the bytes read.
var ErrMalformed = errors.New("inotify: malformed event")

// parseEvents calls fn with each inotify event in b: struct inotify_event
// (wd, mask, cookie, len) and len bytes of NUL-padded name.
func parseEvents(b []byte, fn func(wd int32, mask uint32, name string)) error {
	for len(b) > 0 {
		if len(b) < unix.SizeofInotifyEvent {
			return fmt.Errorf("%w: %d bytes left, an event header is %d", ErrMalformed, len(b), unix.SizeofInotifyEvent)
		}
		wd := int32(binary.NativeEndian.Uint32(b[0:4]))
		mask := binary.NativeEndian.Uint32(b[4:8])
		nameLen := binary.NativeEndian.Uint32(b[12:16])
		b = b[unix.SizeofInotifyEvent:]
		if uint64(nameLen) > uint64(len(b)) {
			return fmt.Errorf("%w: name of %d bytes, %d left", ErrMalformed, nameLen, len(b))
		}
		name := b[:nameLen]
		for i, c := range name {
			if c == 0 {
				name = name[:i]
				break
			}
		}
		fn(wd, mask, string(name))
		b = b[nameLen:]
	}
	return nil
}
