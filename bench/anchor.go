package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"

	"github.com/ct-exporter/ct-exporter/internal/lab"
	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/tablescan"
)

// Anchor names, as the tables print them.
const (
	AnchorEvents = "conntrack -E"
	AnchorList   = "conntrack -L"
	AnchorCount  = "conntrack -C"
	AnchorStats  = "conntrack -S"
	AnchorTiMo   = "ti-mo/conntrack Dump"
	AnchorFloor  = "raw ctnetlink dump (floor)"
	// AnchorEventFloor is the floor of the event path (StartEventFloor).
	AnchorEventFloor = "raw DESTROY receiver (floor)"
	AnchorSysctl     = "sysctl"
	AnchorDrill      = "drill"
)

// netlinkSocket is one line of /proc/net/netlink.
type netlinkSocket struct {
	Protocol int
	PortID   int64
	Groups   uint64
	Drops    uint64
	Inode    uint64
}

// conntrack multicast group bits in the Groups column
// (NFNLGRP_CONNTRACK_NEW = 1, UPDATE = 2, DESTROY = 3).
const (
	groupNew     = 1 << 0
	groupUpdate  = 1 << 1
	groupDestroy = 1 << 2
)

// parseNetlinkSockets parses /proc/net/netlink.
func parseNetlinkSockets(b []byte) ([]netlinkSocket, error) {
	var out []netlinkSocket
	sc := bufio.NewScanner(bytes.NewReader(b))
	first := true
	for sc.Scan() {
		if first {
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 10 {
			continue
		}
		var s netlinkSocket
		var err error
		if s.Protocol, err = strconv.Atoi(f[1]); err != nil {
			return nil, fmt.Errorf("/proc/net/netlink: %w", err)
		}
		if s.PortID, err = strconv.ParseInt(f[2], 10, 64); err != nil {
			return nil, fmt.Errorf("/proc/net/netlink: %w", err)
		}
		if s.Groups, err = strconv.ParseUint(f[3], 16, 64); err != nil {
			return nil, fmt.Errorf("/proc/net/netlink: %w", err)
		}
		if s.Drops, err = strconv.ParseUint(f[8], 10, 64); err != nil {
			return nil, fmt.Errorf("/proc/net/netlink: %w", err)
		}
		if s.Inode, err = strconv.ParseUint(f[9], 10, 64); err != nil {
			return nil, fmt.Errorf("/proc/net/netlink: %w", err)
		}
		out = append(out, s)
	}
	return out, sc.Err()
}

// conntrackListeners returns the ctnetlink sockets of the namespace that
// are subscribed to DESTROY events.
func conntrackListeners(ns *lab.Namespace) ([]netlinkSocket, error) {
	b, err := ns.ReadFile("/proc/thread-self/net/netlink")
	if err != nil {
		return nil, err
	}
	all, err := parseNetlinkSockets(b)
	if err != nil {
		return nil, err
	}
	var out []netlinkSocket
	for _, s := range all {
		if s.Protocol == syscall.NETLINK_NETFILTER && s.Groups&groupDestroy != 0 {
			out = append(out, s)
		}
	}
	return out, nil
}

// EventCounts are the events an event listener received, and what it
// cost.
type EventCounts struct {
	New, Update, Destroy uint64
	// Drops is the kernel's drop count of the listener's socket
	// (sk_drops): events lost because its buffer was full.
	Drops uint64
	// Usage is the listener's CPU time and peak RSS.
	Usage lab.Usage
}

// EventAnchor is conntrack -E running inside a namespace, its events
// counted by type.
type EventAnchor struct {
	ns     *lab.Namespace
	cmd    *exec.Cmd
	onLine func(line []byte)
	stderr bytes.Buffer

	mu     sync.Mutex
	counts EventCounts
	done   chan struct{}
}

// StartEventAnchor starts conntrack -E with args (for example "-e",
// "DESTROY") in the namespace and returns once its socket is subscribed,
// so that no event of the drill comes too early for it. onLine, if not
// nil, sees every line conntrack prints.
func StartEventAnchor(l *Lab, ns *lab.Namespace, onLine func(line []byte), args ...string) (*EventAnchor, error) {
	a := &EventAnchor{ns: ns, onLine: onLine, done: make(chan struct{})}
	a.cmd = exec.Command("ip", append([]string{"netns", "exec", ns.Name, "conntrack", "-E"}, args...)...)
	a.cmd.Stderr = &a.stderr
	out, err := a.cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("conntrack -E: %w", err)
	}
	if err := l.Start(a.cmd); err != nil {
		return nil, fmt.Errorf("conntrack -E: %w", err)
	}
	go a.read(out)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := a.socket(); err == nil {
			return a, nil
		} else if time.Now().After(deadline) {
			_ = a.cmd.Process.Kill()
			<-a.done
			return nil, fmt.Errorf("conntrack -E did not subscribe within 10s: %w: %s", err, a.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// read counts the lines conntrack -E prints until it exits.
func (a *EventAnchor) read(out io.Reader) {
	defer close(a.done)
	r := bufio.NewReaderSize(out, 1<<20)
	for {
		line, err := r.ReadSlice('\n')
		if len(line) > 0 {
			a.count(line)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			_ = a.cmd.Wait()
			return
		}
	}
}

func (a *EventAnchor) count(line []byte) {
	head := line[:min(len(line), 64)]
	a.mu.Lock()
	switch {
	case bytes.Contains(head, []byte("[DESTROY]")):
		a.counts.Destroy++
	case bytes.Contains(head, []byte("[NEW]")):
		a.counts.New++
	case bytes.Contains(head, []byte("[UPDATE]")):
		a.counts.Update++
	}
	a.mu.Unlock()
	if a.onLine != nil {
		a.onLine(line)
	}
}

// socket finds the listener's subscribed netlink socket among the
// sockets the process holds (conntrack -E opens a second, unsubscribed
// one for queries).
func (a *EventAnchor) socket() (netlinkSocket, error) {
	return subscribedSocket(a.cmd.Process.Pid, a.ns)
}

// terminate sends SIGTERM to the process of cmd and waits until done is
// closed (the process was waited for); after 10 s it kills the process.
// It reports whether the process ended within the 10 s.
func terminate(cmd *exec.Cmd, done <-chan struct{}) bool {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return true
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		return false
	}
}

// subscribedSocket finds the socket of process pid that listens to the
// DESTROY events of the namespace.
func subscribedSocket(pid int, ns *lab.Namespace) (netlinkSocket, error) {
	inodes, err := socketInodes(pid)
	if err != nil {
		return netlinkSocket{}, err
	}
	socks, err := conntrackListeners(ns)
	if err != nil {
		return netlinkSocket{}, err
	}
	for _, s := range socks {
		if inodes[s.Inode] {
			return s, nil
		}
	}
	return netlinkSocket{}, fmt.Errorf("process %d: no socket subscribed to DESTROY events in %s yet", pid, ns.Name)
}

// socketInodes returns the inodes of the sockets a process has open.
func socketInodes(pid int) (map[uint64]bool, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("sockets of process %d: %w", pid, err)
	}
	out := map[uint64]bool{}
	for _, e := range ents {
		link, err := os.Readlink(dir + "/" + e.Name())
		if err != nil {
			continue
		}
		if rest, ok := strings.CutPrefix(link, "socket:["); ok {
			if ino, err := strconv.ParseUint(strings.TrimSuffix(rest, "]"), 10, 64); err == nil {
				out[ino] = true
			}
		}
	}
	return out, nil
}

// Counts returns the events counted so far.
func (a *EventAnchor) Counts() EventCounts {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.counts
}

// WaitQuiet waits until no new line arrived for quiet, or until max
// passed.
func (a *EventAnchor) WaitQuiet(quiet, max time.Duration) {
	end := time.Now().Add(max)
	last := a.Counts()
	lastChange := time.Now()
	for time.Now().Before(end) {
		time.Sleep(quiet / 5)
		c := a.Counts()
		if c != last {
			last, lastChange = c, time.Now()
			continue
		}
		if time.Since(lastChange) >= quiet {
			return
		}
	}
}

// Snapshot returns the events counted so far, the socket's drop count
// and the process's CPU time and peak RSS, while conntrack -E runs.
func (a *EventAnchor) Snapshot() (EventCounts, error) {
	sock, err := a.socket()
	if err != nil {
		return EventCounts{}, err
	}
	u, err := lab.ProcUsage(a.cmd.Process.Pid)
	if err != nil {
		return EventCounts{}, fmt.Errorf("conntrack -E: %w", err)
	}
	c := a.Counts()
	c.Drops, c.Usage = sock.Drops, u
	return c, nil
}

// Sub returns what was counted since an earlier snapshot; the peak RSS
// is c's.
func (c EventCounts) Sub(earlier EventCounts) EventCounts {
	return EventCounts{
		New:     c.New - earlier.New,
		Update:  c.Update - earlier.Update,
		Destroy: c.Destroy - earlier.Destroy,
		Drops:   c.Drops - earlier.Drops,
		Usage:   c.Usage.Sub(earlier.Usage),
	}
}

// Stop reads the socket's drop count and the process's peak RSS, stops
// conntrack -E and returns what it counted.
func (a *EventAnchor) Stop() (EventCounts, error) {
	sock, sockErr := a.socket()
	live, liveErr := lab.ProcUsage(a.cmd.Process.Pid)
	terminate(a.cmd, a.done)
	c := a.Counts()
	c.Drops = sock.Drops
	c.Usage = lab.Usage{CPU: lab.ExitedCPU(a.cmd), PeakRSS: live.PeakRSS}
	if sockErr != nil {
		return c, fmt.Errorf("conntrack -E drop count: %w", sockErr)
	}
	if liveErr != nil {
		return c, fmt.Errorf("conntrack -E peak RSS: %w", liveErr)
	}
	return c, nil
}

// ToolRun is one timed run of a command-line tool.
type ToolRun struct {
	Wall  time.Duration
	Usage lab.Usage
	// Count is the number of entries the tool said it showed.
	Count int
}

// shownRE matches conntrack's closing line on stderr.
var shownRE = regexp.MustCompile(`(\d+) flow entries have been shown`)

// GNUTime is GNU time, which the conntrack -L anchor runs under: it
// forks (no shared memory), so its %M is conntrack's own peak RSS.
const GNUTime = "/usr/bin/time"

// RunConntrackList runs conntrack -L > /dev/null in the namespace, under
// GNU time for its peak RSS, and times it.
func RunConntrackList(ctx context.Context, l *Lab, ns *lab.Namespace) (ToolRun, error) {
	f, err := os.CreateTemp("", "ct-drill-time")
	if err != nil {
		return ToolRun{}, fmt.Errorf("conntrack -L: %w", err)
	}
	f.Close()
	defer os.Remove(f.Name())
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns.Name, GNUTime, "-f", "%M", "-o", f.Name(), "conntrack", "-L")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := l.Start(cmd); err != nil {
		return ToolRun{}, err
	}
	err = cmd.Wait()
	run := ToolRun{Wall: time.Since(start), Usage: lab.Usage{CPU: lab.ExitedCPU(cmd)}}
	if err != nil {
		return run, fmt.Errorf("conntrack -L: %w: %s", err, stderr.String())
	}
	m := shownRE.FindStringSubmatch(stderr.String())
	if m == nil {
		return run, fmt.Errorf("conntrack -L: no entry count in %q", stderr.String())
	}
	run.Count, _ = strconv.Atoi(m[1])
	out, err := os.ReadFile(f.Name())
	if err != nil {
		return run, fmt.Errorf("conntrack -L: %w", err)
	}
	kb, err := strconv.ParseUint(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		return run, fmt.Errorf("conntrack -L: GNU time output %q: %w", out, err)
	}
	run.Usage.PeakRSS = kb * 1024
	return run, nil
}

// ChildEnv is the environment variable that makes the drill executable
// run an anchor instead of its main program (see RunChild).
const ChildEnv = "CT_DRILL_CHILD"

// childNetnsEnv names the namespace file the child works in.
const childNetnsEnv = "CT_DRILL_NETNS"

// The child anchors, by the value of ChildEnv.
const (
	// childTiMoDump dumps a table with ti-mo/conntrack's Dump.
	childTiMoDump = "timo-dump"
	// childFloor reads a table with lab.CountDump, the floor.
	childFloor = "floor"
	// childTableScan runs the exporter's table scan alone.
	childTableScan = "table-scan"
	// childEventFloor receives DESTROY events with
	// lab.ReceiveDestroys until SIGTERM (see StartEventFloor).
	childEventFloor = "event-floor"
)

// children are the child anchors' readers of the table of the namespace
// file they are given: each returns the entries it saw.
var children = map[string]func(ctx context.Context, target netns.Target) (int, error){
	childTiMoDump:   tiMoDump,
	childFloor:      floorDump,
	childTableScan:  tableScan,
	childEventFloor: eventFloor,
}

// ChildReport is what a child anchor prints on stdout, as JSON.
type ChildReport struct {
	Entries    int     `json:"entries"`
	Seconds    float64 `json:"seconds"`
	AllocBytes uint64  `json:"alloc_bytes"`
	Mallocs    uint64  `json:"mallocs"`
	// PeakRSS is the child's own VmHWM at the end, in bytes.
	PeakRSS uint64 `json:"peak_rss"`
}

// IsChild reports whether this process was started as a child anchor.
func IsChild() bool { return os.Getenv(ChildEnv) != "" }

// RunChild runs the child anchor named by ChildEnv, writes its report to
// stdout and returns the exit code. The drill tool's main, and the
// TestMain of tests that run drills, call it first when IsChild.
func RunChild() int {
	name := os.Getenv(ChildEnv)
	read, ok := children[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "%s=%q: unknown child\n", ChildEnv, name)
		return 2
	}
	path := os.Getenv(childNetnsEnv)
	rep, err := measureChild(read, netns.Target{Name: netns.NameFromPath(path), Path: path})
	if err == nil {
		err = json.NewEncoder(os.Stdout).Encode(rep)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 1
	}
	return 0
}

// measureChild runs one read of a table in this process and reports its
// time, its allocations and the process's peak RSS.
func measureChild(read func(context.Context, netns.Target) (int, error), target netns.Target) (ChildReport, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	n, err := read(ctx, target)
	took := time.Since(start)
	if err != nil {
		return ChildReport{}, err
	}
	runtime.ReadMemStats(&after)
	peak, err := lab.SelfPeakRSS()
	if err != nil {
		return ChildReport{}, err
	}
	return ChildReport{
		Entries:    n,
		Seconds:    took.Seconds(),
		AllocBytes: after.TotalAlloc - before.TotalAlloc,
		Mallocs:    after.Mallocs - before.Mallocs,
		PeakRSS:    peak,
	}, nil
}

// tiMoDump dumps the table with ti-mo/conntrack's Dump, the way a program
// built on that library reads a table.
func tiMoDump(_ context.Context, target netns.Target) (int, error) {
	f, err := target.Open()
	if err != nil {
		return 0, err
	}
	defer f.Close()
	c, err := conntrack.Dial(&netlink.Config{NetNS: int(f.Fd())})
	if err != nil {
		return 0, fmt.Errorf("ti-mo/conntrack dial: %w", err)
	}
	defer c.Close()
	flows, err := c.Dump(nil)
	if err != nil {
		return 0, fmt.Errorf("ti-mo/conntrack dump: %w", err)
	}
	return len(flows), nil
}

// floorDump reads the table with one raw ctnetlink dump into a reused
// 1 MiB buffer, counted, not decoded (lab.CountDump).
func floorDump(_ context.Context, target netns.Target) (int, error) {
	n, err := lab.CountDump(target, make([]byte, lab.FloorBufferSize))
	return int(n), err
}

// tableScan runs the exporter's table scan (package tablescan, with the
// exporter's default top K) alone in a process.
func tableScan(ctx context.Context, target netns.Target) (int, error) {
	s, err := tablescan.NewScanner(tablescan.Options{TopK: tablescan.DefaultTopK}).Scan(ctx, target)
	if err != nil {
		return 0, err
	}
	return int(s.Total), nil
}

// RunChildAnchor runs a child anchor (childTiMoDump, childFloor,
// childTableScan) on the namespace in a child process (env.Self), so
// that its peak RSS is its own.
func RunChildAnchor(ctx context.Context, env *Env, ns *lab.Namespace, child string) (ChildReport, ToolRun, error) {
	cmd := exec.CommandContext(ctx, env.Self)
	cmd.Env = append(os.Environ(), ChildEnv+"="+child, childNetnsEnv+"="+ns.Path)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := env.Lab.Start(cmd); err != nil {
		return ChildReport{}, ToolRun{}, err
	}
	err := cmd.Wait()
	run := ToolRun{Wall: time.Since(start), Usage: lab.Usage{CPU: lab.ExitedCPU(cmd)}}
	if err != nil {
		return ChildReport{}, run, fmt.Errorf("%s child: %w: %s", child, err, stderr.String())
	}
	var rep ChildReport
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		return ChildReport{}, run, fmt.Errorf("%s child: %w: %q", child, err, stdout.String())
	}
	run.Count, run.Usage.PeakRSS = rep.Entries, rep.PeakRSS
	return rep, run, nil
}
