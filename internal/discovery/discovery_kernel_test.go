package discovery

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

// startIn starts "sleep" with the given command prefix (ip netns exec
// NAME, or unshare -n) and stops it when the test ends.
func startIn(t *testing.T, prefix ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(prefix[0], append(prefix[1:], "sleep", "300")...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("%v: %v", prefix, err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// Wait until the process runs sleep inside its namespace.
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(cmd.Process.Pid), "comm"))
		if string(b) == "sleep\n" {
			return cmd
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v: sleep did not start", prefix)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func inodeOf(t *testing.T, path string) uint64 {
	t.Helper()
	ino, err := netns.Target{Name: path, Path: path}.Inode()
	if err != nil {
		t.Fatal(err)
	}
	return ino
}

// bindMount makes a namespace file appear at dst, as ip netns add does.
func bindMount(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.WriteFile(dst, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	nstest.Run(t, "mount", "--bind", src, dst)
	t.Cleanup(func() { exec.Command("umount", dst).Run() })
}

func TestScanRealNamespaces(t *testing.T) {
	nstest.RequireRoot(t, "unshare", "mount", "sleep")
	a, b := nstest.NewNamespace(t), nstest.NewNamespace(t)
	inA := startIn(t, "ip", "netns", "exec", a.Name)
	unnamed := startIn(t, "unshare", "--net")
	unnamedIno := inodeOf(t, filepath.Join("/proc", strconv.Itoa(unnamed.Process.Pid), "ns", "net"))
	selfIno, err := netns.Self().Inode()
	if err != nil {
		t.Fatal(err)
	}

	// A second directory: A again under another name (same inode: found
	// once, under its /run/netns name), and the unnamed namespace under
	// B's name (a name already taken: named by its inode).
	other := t.TempDir()
	bindMount(t, a.Path, filepath.Join(other, "a-again"))
	bindMount(t, filepath.Join("/proc", strconv.Itoa(unnamed.Process.Pid), "ns", "net"), filepath.Join(other, b.Name))

	res, err := New(Options{Dirs: []string{"/run/netns", other}, Proc: true, SkipPID: os.Getpid()}).Scan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	byInode := map[uint64]Namespace{}
	for _, ns := range res.Namespaces {
		if _, dup := byInode[ns.Inode]; dup {
			t.Errorf("inode %d listed twice", ns.Inode)
		}
		byInode[ns.Inode] = ns
	}

	nsA := byInode[inodeOf(t, a.Path)]
	if nsA.Name != a.Name || nsA.Source != SourceDir || nsA.Path != a.Path {
		t.Errorf("namespace A: %+v; want name %s from %s", nsA, a.Name, a.Path)
	}
	if nsA.PID != inA.Process.Pid || nsA.Comm != "sleep" || nsA.Cgroup == "" {
		t.Errorf("namespace A: pid %d comm %q cgroup %q; want pid %d comm sleep and a cgroup", nsA.PID, nsA.Comm, nsA.Cgroup, inA.Process.Pid)
	}
	nsB := byInode[inodeOf(t, b.Path)]
	if nsB.Name != b.Name || nsB.Source != SourceDir || nsB.PID != 0 {
		t.Errorf("namespace B: %+v; want name %s and no process", nsB, b.Name)
	}
	nsU := byInode[unnamedIno]
	if nsU.Name != InodeName(unnamedIno) || nsU.Source != SourceDir || nsU.PID != unnamed.Process.Pid {
		t.Errorf("unnamed namespace: %+v; want name %s (its directory name is taken), pid %d",
			nsU, InodeName(unnamedIno), unnamed.Process.Pid)
	}
	if nsSelf, ok := byInode[selfIno]; !ok || nsSelf.PID == 0 || nsSelf.PID == os.Getpid() {
		t.Errorf("own namespace: %+v (found %v); want it found through another process", nsSelf, ok)
	}

	// Only /proc: the unnamed namespace is named by its inode, and the
	// path found opens the same namespace.
	res, err = New(Options{Proc: true, SkipPID: os.Getpid()}).Scan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range res.Namespaces {
		if ns.Inode != unnamedIno {
			continue
		}
		if ns.Name != InodeName(unnamedIno) || ns.Source != SourceProc || inodeOf(t, ns.Path) != unnamedIno {
			t.Errorf("unnamed namespace from /proc: %+v", ns)
		}
		return
	}
	t.Errorf("unnamed namespace %d not found under /proc", unnamedIno)
}
