package bench

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/ct-exporter/ct-exporter/internal/lab"
)

// NamespacePrefix starts the name of every namespace a drill creates.
const NamespacePrefix = "ctdrill-"

// conntrackMaxPath is the one global sysctl a drill may change, and only
// to make room for a table larger than the current limit.
const conntrackMaxPath = "/proc/sys/net/netfilter/nf_conntrack_max"

// Lab owns everything a drill changes on the machine: the namespaces it
// creates, the child processes it starts, and a raised nf_conntrack_max.
// Close undoes all of it, whatever state the drill stopped in. A Lab is
// safe for concurrent use.
type Lab struct {
	log io.Writer

	mu         sync.Mutex
	namespaces []*lab.Namespace
	dirs       []string
	mounts     []string
	children   []*exec.Cmd
	restores   []func() error
	closed     bool

	spawn chan spawnRequest
}

// spawnRequest asks the spawner goroutine to start a command.
type spawnRequest struct {
	cmd  *exec.Cmd
	done chan error
}

// NewLab returns an empty Lab that logs what it does to log.
func NewLab(log io.Writer) *Lab {
	l := &Lab{log: log, spawn: make(chan spawnRequest)}
	go l.spawner()
	return l
}

// spawner starts every child process from one OS thread that lives as
// long as the Lab: the children's parent-death signal fires when the
// thread that started them ends, and threads that entered a namespace
// end when their work is done.
func (l *Lab) spawner() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for req := range l.spawn {
		req.done <- req.cmd.Start()
	}
}

// Start starts cmd and has Close kill it if it is still running then.
// The command dies with the drill process too.
func (l *Lab) Start(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = childAttr()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errors.New("lab is closed")
	}
	done := make(chan error, 1)
	l.spawn <- spawnRequest{cmd: cmd, done: done}
	if err := <-done; err != nil {
		return fmt.Errorf("start %s: %w", strings.Join(cmd.Args, " "), err)
	}
	l.children = append(l.children, cmd)
	return nil
}

// Namespace creates a namespace whose name starts with NamespacePrefix,
// tracking connections when track is set. Close removes it.
func (l *Lab) Namespace(track bool) (*lab.Namespace, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errors.New("lab is closed")
	}
	n, err := lab.CreateNamespace(NamespacePrefix, track)
	if n != nil {
		l.namespaces = append(l.namespaces, n)
	}
	if err != nil {
		return nil, fmt.Errorf("create namespace: %w", err)
	}
	return n, nil
}

// NetnsDir creates an empty directory for namespace files, a directory
// the exporter can discover namespaces in (--conntrack.netns-discover).
// Close unmounts what Expose put there and removes it.
func (l *Lab) NetnsDir() (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return "", errors.New("lab is closed")
	}
	dir, err := os.MkdirTemp("", NamespacePrefix+"dir-")
	if err != nil {
		return "", fmt.Errorf("namespace directory: %w", err)
	}
	l.dirs = append(l.dirs, dir)
	return dir, nil
}

// Expose makes the namespace appear in dir under its name, with a bind
// mount of its file, as a container runtime's namespace directory holds
// it. Close unmounts it.
func (l *Lab) Expose(dir string, ns *lab.Namespace) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errors.New("lab is closed")
	}
	dst := filepath.Join(dir, ns.Name)
	if err := os.WriteFile(dst, nil, 0o444); err != nil {
		return fmt.Errorf("expose %s: %w", ns.Name, err)
	}
	if _, err := lab.CombinedOutput("mount", "--bind", ns.Path, dst); err != nil {
		return fmt.Errorf("expose %s: %w", ns.Name, err)
	}
	l.mounts = append(l.mounts, dst)
	return nil
}

// Unexpose takes the namespace out of dir again, as a container runtime
// does when a pod goes: it unmounts its file and removes it.
func (l *Lab) Unexpose(dir string, ns *lab.Namespace) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errors.New("lab is closed")
	}
	dst := filepath.Join(dir, ns.Name)
	if _, err := lab.CombinedOutput("umount", dst); err != nil {
		return fmt.Errorf("unexpose %s: %w", ns.Name, err)
	}
	for i, m := range l.mounts {
		if m == dst {
			l.mounts = append(l.mounts[:i], l.mounts[i+1:]...)
			break
		}
	}
	if err := os.Remove(dst); err != nil {
		return fmt.Errorf("unexpose %s: %w", ns.Name, err)
	}
	return nil
}

// RemoveNamespace deletes a namespace the Lab created before Close does;
// Close does not try again.
func (l *Lab) RemoveNamespace(ns *lab.Namespace) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := ns.Remove(); err != nil {
		return fmt.Errorf("remove namespace %s: %w", ns.Name, err)
	}
	return nil
}

// Created returns the paths of the namespaces the Lab created.
func (l *Lab) Created() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, len(l.namespaces))
	for _, n := range l.namespaces {
		out = append(out, n.Path)
	}
	return out
}

// ConntrackMax returns the global nf_conntrack_max.
func ConntrackMax() (int, error) {
	b, err := os.ReadFile(conntrackMaxPath)
	if err != nil {
		return 0, fmt.Errorf("read nf_conntrack_max: %w", err)
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("nf_conntrack_max: %w", err)
	}
	return v, nil
}

// EnsureConntrackMax raises the global nf_conntrack_max to at least n if
// it is lower, and has Close put the old value back. It is the only
// global setting a drill changes. It returns the limit in force.
func (l *Lab) EnsureConntrackMax(n int) (int, error) {
	cur, err := ConntrackMax()
	if err != nil {
		return 0, err
	}
	if cur >= n {
		return cur, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, errors.New("lab is closed")
	}
	old := strconv.Itoa(cur)
	// The restore is registered before the change, so that an
	// interrupted write is undone too.
	l.restores = append(l.restores, func() error {
		if err := os.WriteFile(conntrackMaxPath, []byte(old), 0o644); err != nil {
			return fmt.Errorf("restore nf_conntrack_max=%s: %w", old, err)
		}
		fmt.Fprintf(l.log, "restored nf_conntrack_max=%s\n", old)
		return nil
	})
	fmt.Fprintf(l.log, "raising nf_conntrack_max from %d to %d for this drill\n", cur, n)
	if err := os.WriteFile(conntrackMaxPath, []byte(strconv.Itoa(n)), 0o644); err != nil {
		return 0, fmt.Errorf("raise nf_conntrack_max to %d: %w", n, err)
	}
	return n, nil
}

// Close kills the children still running, unmounts what Expose mounted,
// removes the directories of NetnsDir and every namespace the Lab created,
// and restores nf_conntrack_max. It is safe to call more than
// once and from a signal handler's goroutine.
func (l *Lab) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	var errs []error
	for _, c := range l.children {
		// Kill of a process that has already been waited for is a
		// harmless error.
		_ = c.Process.Kill()
	}
	for i := len(l.mounts) - 1; i >= 0; i-- {
		if _, err := lab.CombinedOutput("umount", l.mounts[i]); err != nil {
			errs = append(errs, err)
		}
	}
	for _, dir := range l.dirs {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", dir, err))
		}
	}
	for i := len(l.namespaces) - 1; i >= 0; i-- {
		if err := l.namespaces[i].Remove(); err != nil {
			errs = append(errs, err)
		}
	}
	for i := len(l.restores) - 1; i >= 0; i-- {
		if err := l.restores[i](); err != nil {
			errs = append(errs, err)
		}
	}
	close(l.spawn)
	return errors.Join(errs...)
}

// childAttr makes a child process die with the drill process, so that an
// anchor or an exporter never outlives a killed drill.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
