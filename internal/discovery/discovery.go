// Package discovery finds the network namespaces of a node: the named ones
// bind-mounted in a directory such as /run/netns (ip netns, containerd and
// CRI-O pod namespaces), and the namespaces that running processes are in,
// found under /proc/PID/ns/net.
//
// A Scan lists each namespace once, identified by its inode: a namespace
// seen both in a directory and under /proc is reported with its directory
// name and the process information of /proc. Scans hold nothing open.
package discovery

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/podid"
)

// Source says where a namespace was found.
type Source string

// Sources of a discovered namespace.
const (
	// SourceDir is a namespace file in a discovery directory.
	SourceDir Source = "dir"
	// SourceProc is a namespace that a process is in, seen under /proc.
	SourceProc Source = "proc"
)

// DefaultProcRoot is where the process filesystem is mounted.
const DefaultProcRoot = "/proc"

// InodeName returns the label value of a namespace known only by its
// inode, such as one found under /proc: "ino-" and the inode number. It
// stays the same for the namespace's whole life.
func InodeName(inode uint64) string { return "ino-" + strconv.FormatUint(inode, 10) }

// Namespace is one network namespace found by a scan.
type Namespace struct {
	// Inode identifies the namespace.
	Inode uint64
	// Name is the proposed netns label value: the file name for SourceDir,
	// InodeName for SourceProc.
	Name string
	// Path is a file that referred to the namespace during the scan: the
	// directory entry, or /proc/PID/ns/net of the lowest PID in it.
	Path string
	// Source says where the namespace was found first.
	Source Source
	// PID is the lowest process ID in the namespace, 0 when unknown (no
	// /proc scan, or no process in it).
	PID int
	// Comm is the command name of PID.
	Comm string
	// Cgroup is the cgroup (v2, or the first hierarchy listed) of PID.
	Cgroup string
	// Pod is the Kubernetes pod and container PID belongs to, read from
	// the same cgroup file; zero when PID is not in a pod.
	Pod podid.Identity
}

// Result is the outcome of one scan.
type Result struct {
	// Namespaces lists every namespace found, each once: those of the
	// directories first, in the order of Options.Dirs and then by file
	// name, then those only seen under /proc, by their lowest PID.
	Namespaces []Namespace
	// Failed holds the sources that could not be read completely; what
	// they would have found is missing from Namespaces, so a caller must
	// not take its absence as the namespace being gone.
	Failed map[Source]bool
	// Unreadable counts processes whose namespace could not be read for
	// lack of permission (ptrace access to other users' processes).
	Unreadable int
}

// Options says where to look.
type Options struct {
	// Dirs are directories of namespace files, such as /run/netns. A
	// directory that does not exist is empty: ip netns creates /run/netns
	// only with the first namespace.
	Dirs []string
	// Proc scans ProcRoot/*/ns/net.
	Proc bool
	// ProcRoot is where the process filesystem is mounted; "" is /proc.
	ProcRoot string
	// SkipPID is a process left out of the /proc scan, normally the
	// exporter itself: a thread of it may sit in a namespace it entered,
	// which must not count as a process being there. 0 skips none.
	SkipPID int
}

// Scanner finds namespaces according to its Options.
type Scanner struct {
	opts Options
}

// New returns a Scanner.
func New(opts Options) *Scanner {
	if opts.ProcRoot == "" {
		opts.ProcRoot = DefaultProcRoot
	}
	opts.Dirs = append([]string(nil), opts.Dirs...)
	return &Scanner{opts: opts}
}

// Enabled reports whether the Scanner looks anywhere.
func (s *Scanner) Enabled() bool { return len(s.opts.Dirs) > 0 || s.opts.Proc }

// Scan lists the namespaces found now. It returns an error only with a
// Result whose Failed says which sources are incomplete; the namespaces
// of the other sources are still listed.
func (s *Scanner) Scan(ctx context.Context) (Result, error) {
	res := Result{Failed: map[Source]bool{}}
	seen := map[uint64]int{} // inode -> index in res.Namespaces
	names := map[string]bool{}
	var errs []error
	for _, dir := range s.opts.Dirs {
		if err := ctx.Err(); err != nil {
			res.Failed[SourceDir] = true
			return res, fmt.Errorf("scan %s: %w", dir, err)
		}
		found, err := scanDir(dir)
		if err != nil {
			res.Failed[SourceDir] = true
			errs = append(errs, err)
		}
		for _, ns := range found {
			if _, dup := seen[ns.Inode]; dup {
				continue
			}
			if names[ns.Name] || !utf8.ValidString(ns.Name) {
				ns.Name = InodeName(ns.Inode)
			}
			names[ns.Name] = true
			seen[ns.Inode] = len(res.Namespaces)
			res.Namespaces = append(res.Namespaces, ns)
		}
	}
	if s.opts.Proc {
		procs, unreadable, err := scanProc(ctx, s.opts.ProcRoot, s.opts.SkipPID)
		res.Unreadable = unreadable
		if err != nil {
			res.Failed[SourceProc] = true
			errs = append(errs, err)
		}
		for _, p := range procs {
			comm, cgroup, pod := processInfo(s.opts.ProcRoot, p.pid)
			if i, ok := seen[p.inode]; ok {
				ns := &res.Namespaces[i]
				ns.PID, ns.Comm, ns.Cgroup, ns.Pod = p.pid, comm, cgroup, pod
				continue
			}
			seen[p.inode] = len(res.Namespaces)
			res.Namespaces = append(res.Namespaces, Namespace{
				Inode:  p.inode,
				Name:   InodeName(p.inode),
				Path:   filepath.Join(s.opts.ProcRoot, strconv.Itoa(p.pid), "ns", "net"),
				Source: SourceProc,
				PID:    p.pid,
				Comm:   comm,
				Cgroup: cgroup,
				Pod:    pod,
			})
		}
	}
	return res, errors.Join(errs...)
}

// scanDir lists the network namespace files in dir, by file name. Entries
// that are not network namespaces (a file left behind by an interrupted
// ip netns add, a namespace being deleted) are skipped.
func scanDir(dir string) ([]Namespace, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("scan %s: %w", dir, err)
	}
	var out []Namespace
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		path := filepath.Join(dir, e.Name())
		ino, err := netns.Target{Name: e.Name(), Path: path}.Inode()
		if err != nil {
			continue
		}
		out = append(out, Namespace{Inode: ino, Name: e.Name(), Path: path, Source: SourceDir})
	}
	return out, nil
}

// procNamespace is a namespace found under /proc and its lowest PID.
type procNamespace struct {
	inode uint64
	pid   int
}

// scanProc reads root/*/ns/net of every process but skip and returns each
// namespace once, with its lowest PID, ordered by that PID. Processes that
// exit during the scan are left out; those whose namespace link may not
// be read are counted in unreadable.
func scanProc(ctx context.Context, root string, skip int) (found []procNamespace, unreadable int, err error) {
	d, err := os.Open(root)
	if err != nil {
		return nil, 0, fmt.Errorf("scan %s: %w", root, err)
	}
	defer d.Close()
	var pids []int
	for {
		names, err := d.Readdirnames(1024)
		for _, n := range names {
			pid, convErr := strconv.Atoi(n)
			if convErr == nil && pid > 0 && pid != skip {
				pids = append(pids, pid)
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, 0, fmt.Errorf("scan %s: %w", root, err)
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, 0, fmt.Errorf("scan %s: %w", root, ctxErr)
		}
	}
	sort.Ints(pids)
	lowest := map[uint64]bool{}
	for _, pid := range pids {
		link, err := os.Readlink(filepath.Join(root, strconv.Itoa(pid), "ns", "net"))
		if err != nil {
			if errors.Is(err, fs.ErrPermission) {
				unreadable++
			}
			continue
		}
		ino, ok := ParseNetnsLink(link)
		if !ok || lowest[ino] {
			continue
		}
		lowest[ino] = true
		found = append(found, procNamespace{inode: ino, pid: pid})
	}
	return found, unreadable, nil
}

// ParseNetnsLink parses the target of a /proc/PID/ns/net link,
// "net:[INODE]".
func ParseNetnsLink(link string) (uint64, bool) {
	rest, ok := strings.CutPrefix(link, "net:[")
	if !ok {
		return 0, false
	}
	num, ok := strings.CutSuffix(rest, "]")
	if !ok {
		return 0, false
	}
	ino, err := strconv.ParseUint(num, 10, 64)
	if err != nil || ino == 0 {
		return 0, false
	}
	return ino, true
}

// maxInfoLen bounds the length of a process's comm and cgroup as label
// values.
const maxInfoLen = 256

// processInfo returns the command name and cgroup of a process and the
// pod and container its cgroup names, empty when it exited meanwhile.
// The cgroup file is read once, so the cgroup and the pod agree.
func processInfo(root string, pid int) (comm, cgroup string, pod podid.Identity) {
	dir := filepath.Join(root, strconv.Itoa(pid))
	if b, err := os.ReadFile(filepath.Join(dir, "comm")); err == nil {
		comm = cleanLabel(strings.TrimSuffix(string(b), "\n"))
	}
	if b, err := os.ReadFile(filepath.Join(dir, "cgroup")); err == nil {
		cgroup = cleanLabel(ParseCgroup(bytes.NewReader(b)))
		pod = podid.FromProcCgroup(b)
	}
	return comm, cgroup, pod
}

// ParseCgroup returns the cgroup path of a /proc/PID/cgroup file: the
// unified (v2) hierarchy's, or else the first hierarchy's.
func ParseCgroup(r io.Reader) string {
	sc := bufio.NewScanner(r)
	first := ""
	seenFirst := false
	for sc.Scan() {
		// hierarchy-ID:controller-list:cgroup-path
		id, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		controllers, path, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		if id == "0" && controllers == "" {
			return path
		}
		if !seenFirst {
			first, seenFirst = path, true
		}
	}
	return first
}

// cleanLabel makes s a valid, bounded label value.
func cleanLabel(s string) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) > maxInfoLen {
		s = s[:maxInfoLen]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	return s
}
