// Package netns identifies the network namespaces the exporter watches and
// runs work inside them.
//
// A Target names one namespace: either the exporter's own (the zero Path)
// or a namespace file such as /run/netns/NAME or /proc/PID/ns/net. Targets
// are opened afresh for every use, so a namespace that disappears shows up
// as an error on the next use instead of being kept alive by the exporter.
package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// SelfName is the label value of the exporter's own network namespace.
const SelfName = "self"

// ErrNotExist reports that a namespace path does not exist.
var ErrNotExist = errors.New("network namespace path does not exist")

// ErrNotNetns reports that a path exists but is not a network namespace.
var ErrNotNetns = errors.New("path is not a network namespace")

func init() {
	// Do runs work on a thread that entered another namespace and lets
	// that thread die with its goroutine. The Go runtime cannot end the
	// main thread: it would park it, still in the other namespace, for the
	// life of the process. Keeping the main goroutine on the main thread
	// means no other goroutine, and so no Do, ever runs there.
	runtime.LockOSThread()
}

// Target is one network namespace to watch.
type Target struct {
	// Name is the value of the netns label, stable and readable.
	Name string
	// Path is the namespace file, or "" for the exporter's own namespace.
	Path string
}

// Self returns the Target of the exporter's own network namespace.
func Self() Target { return Target{Name: SelfName} }

// IsSelf reports whether t is the exporter's own namespace.
func (t Target) IsSelf() bool { return t.Path == "" }

// String returns the name and, for other namespaces, the path.
func (t Target) String() string {
	if t.IsSelf() {
		return t.Name
	}
	return t.Name + " (" + t.Path + ")"
}

// NameFromPath derives a readable label value from a namespace path:
// /run/netns/NAME and /var/run/netns/NAME give NAME, /proc/PID/ns/net gives
// pid-PID, anything else its cleaned path.
func NameFromPath(path string) string {
	clean := filepath.Clean(path)
	dir, base := filepath.Split(clean)
	dir = filepath.Clean(dir)
	switch {
	case dir == "/run/netns" || dir == "/var/run/netns":
		return base
	case strings.HasPrefix(clean, "/proc/") && strings.HasSuffix(clean, "/ns/net"):
		pid := strings.TrimSuffix(strings.TrimPrefix(clean, "/proc/"), "/ns/net")
		if pid != "" && !strings.Contains(pid, "/") {
			return "pid-" + pid
		}
	}
	return clean
}

// ErrEmptyPath reports an empty namespace path.
var ErrEmptyPath = errors.New("empty path")

// SameNameError reports two namespace paths that get the same name.
type SameNameError struct {
	// Path gets the name Name, which Earlier got first.
	Path, Name, Earlier string
}

// Error implements error.
func (e *SameNameError) Error() string {
	return fmt.Sprintf("%s: same namespace name %q as %s", e.Path, e.Name, e.Earlier)
}

// TargetsFromPaths turns namespace paths (the --conntrack.netns values)
// into Targets. No paths means the exporter's own namespace. An empty path
// is ErrEmptyPath; two paths with one name are a *SameNameError.
func TargetsFromPaths(paths []string) ([]Target, error) {
	if len(paths) == 0 {
		return []Target{Self()}, nil
	}
	seenName := map[string]string{}
	targets := make([]Target, 0, len(paths))
	for _, p := range paths {
		if p == "" {
			return nil, ErrEmptyPath
		}
		name := NameFromPath(p)
		if prev, ok := seenName[name]; ok {
			return nil, &SameNameError{Path: p, Name: name, Earlier: prev}
		}
		seenName[name] = p
		targets = append(targets, Target{Name: name, Path: filepath.Clean(p)})
	}
	return targets, nil
}

// Open opens the namespace file of t and checks that it is a network
// namespace. The caller closes the returned file. Open of the exporter's
// own namespace returns /proc/thread-self/ns/net.
func (t Target) Open() (*os.File, error) {
	path := t.Path
	if t.IsSelf() {
		path = "/proc/thread-self/ns/net"
	}
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("netns %s: %w", t, ErrNotExist)
		}
		return nil, fmt.Errorf("netns %s: %w", t, err)
	}
	nstype, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE)
	if err != nil || nstype != unix.CLONE_NEWNET {
		f.Close()
		return nil, fmt.Errorf("netns %s: %w", t, ErrNotNetns)
	}
	return f, nil
}

// Inode returns the inode number that identifies the namespace of t. Two
// paths of the same namespace give the same inode; a namespace deleted and
// created again under the same path gives a new one.
func (t Target) Inode() (uint64, error) {
	f, err := t.Open()
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, fmt.Errorf("netns %s: stat: %w", t, err)
	}
	return st.Ino, nil
}

// PathInode returns the inode of what the path of t names now, with one
// stat(2) and without opening it or checking that it is a network
// namespace: a cheap way to tell whether the path still names a namespace
// whose inode Inode returned earlier. For the exporter's own namespace it
// is the inode of /proc/thread-self/ns/net.
func (t Target) PathInode() (uint64, error) {
	path := t.Path
	if t.IsSelf() {
		path = "/proc/thread-self/ns/net"
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return 0, fmt.Errorf("netns %s: %w", t, ErrNotExist)
		}
		return 0, fmt.Errorf("netns %s: stat: %w", t, err)
	}
	return st.Ino, nil
}

// Do runs fn with the calling context inside the namespace of t. For the
// exporter's own namespace fn runs directly. Otherwise fn runs on a new OS
// thread that has entered the namespace; that thread is thrown away
// afterwards, so no goroutine ever runs in the wrong namespace. Entering
// another namespace needs CAP_SYS_ADMIN.
func (t Target) Do(fn func() error) error {
	if t.IsSelf() {
		return fn()
	}
	f, err := t.Open()
	if err != nil {
		return err
	}
	defer f.Close()
	errc := make(chan error, 1)
	go func() {
		// The thread stays locked and is destroyed when this goroutine
		// returns: it may not go back to the scheduler in another namespace.
		runtime.LockOSThread()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("netns %s: setns: %w", t, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}
