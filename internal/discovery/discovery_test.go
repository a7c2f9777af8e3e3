package discovery

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/ct-exporter/ct-exporter/internal/podid"
)

func TestParseNetnsLink(t *testing.T) {
	for _, tc := range []struct {
		link string
		ino  uint64
		ok   bool
	}{
		{"net:[4026531840]", 4026531840, true},
		{"net:[1]", 1, true},
		{"net:[0]", 0, false},
		{"mnt:[4026531840]", 0, false},
		{"net:[4026531840", 0, false},
		{"net:[x]", 0, false},
		{"", 0, false},
	} {
		ino, ok := ParseNetnsLink(tc.link)
		if ino != tc.ino || ok != tc.ok {
			t.Errorf("ParseNetnsLink(%q) = %d, %v; want %d, %v", tc.link, ino, ok, tc.ino, tc.ok)
		}
	}
}

func TestParseCgroup(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"v2", "0::/kubepods.slice/kubepods-pod1234.slice/cri-containerd-abc.scope\n", "/kubepods.slice/kubepods-pod1234.slice/cri-containerd-abc.scope"},
		{"hybrid prefers unified", "12:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n0::/system.slice/docker.service\n", "/system.slice/docker.service"},
		{"v1 only takes the first", "12:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/def\n", "/docker/abc"},
		{"garbage", "nothing here\n", ""},
		{"empty", "", ""},
	} {
		if got := ParseCgroup(strings.NewReader(tc.in)); got != tc.want {
			t.Errorf("%s: ParseCgroup = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestCleanLabel(t *testing.T) {
	if got := cleanLabel("ok\xffname"); got != "ok?name" {
		t.Errorf("cleanLabel(invalid UTF-8) = %q", got)
	}
	long := strings.Repeat("é", maxInfoLen) // two bytes each
	got := cleanLabel(long)
	if len(got) > maxInfoLen || !strings.HasPrefix(long, got) || len(got) < maxInfoLen-1 {
		t.Errorf("cleanLabel(long) has %d bytes, want a valid prefix of at most %d", len(got), maxInfoLen)
	}
}

func TestInodeName(t *testing.T) {
	if got := InodeName(4026532288); got != "ino-4026532288" {
		t.Errorf("InodeName = %q", got)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// fakeProc builds a process filesystem with one process per entry of
// procs: pid -> "net:[INODE]" link target, plus comm and cgroup files.
func fakeProc(t *testing.T, procs map[int]string) string {
	t.Helper()
	root := t.TempDir()
	for pid, link := range procs {
		dir := filepath.Join(root, strconv.Itoa(pid))
		if err := os.MkdirAll(filepath.Join(dir, "ns"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(link, filepath.Join(dir, "ns", "net")); err != nil {
			t.Fatal(err)
		}
		comm := "proc" + strconv.Itoa(pid) + "\n"
		if err := os.WriteFile(filepath.Join(dir, "comm"), []byte(comm), 0o644); err != nil {
			t.Fatal(err)
		}
		cg := "0::/pod/" + strconv.Itoa(pid) + "\n"
		if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte(cg), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Entries that are not processes.
	if err := os.MkdirAll(filepath.Join(root, "sys", "net"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "uptime"), []byte("1 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestScanProcLowestPIDPerNamespace(t *testing.T) {
	root := fakeProc(t, map[int]string{
		1:    "net:[100]",
		2:    "net:[100]",
		10:   "net:[300]",
		9:    "net:[200]", // lower than 10 numerically, higher as text
		11:   "net:[300]",
		12:   "net:[200]",
		42:   "net:[400]", // the exporter itself: skipped
		77:   "mnt:[5]",   // not a net link
		1000: "net:[100]",
	})
	// PID 10 is a container of a burstable pod (systemd driver, cgroup
	// v2); PID 9 one of a best-effort pod (cgroupfs driver) on a hybrid
	// host, where the unified line says "/" and name=systemd names the pod.
	const (
		uid10 = "6f1c3a2e-9b0d-4c57-8e21-0d4f5a6b7c8d"
		cid10 = "4be1a2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f"
		uid9  = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
		cid9  = "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0"
	)
	cg10 := "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" +
		strings.ReplaceAll(uid10, "-", "_") + ".slice/cri-containerd-" + cid10 + ".scope"
	writeFile(t, filepath.Join(root, "10", "cgroup"), "0::"+cg10+"\n")
	writeFile(t, filepath.Join(root, "9", "cgroup"),
		"12:pids:/kubepods/besteffort/pod"+uid9+"/"+cid9+"\n"+
			"1:name=systemd:/kubepods/besteffort/pod"+uid9+"/"+cid9+"\n0::/\n")
	// PID 11 is the same namespace's, but not its lowest PID: its pod is
	// not the namespace's.
	writeFile(t, filepath.Join(root, "11", "cgroup"), "0::/kubepods/pod"+uid9+"/"+cid9+"\n")

	res, err := New(Options{Proc: true, ProcRoot: root, SkipPID: 42}).Scan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []Namespace{
		{Inode: 100, Name: "ino-100", Path: filepath.Join(root, "1/ns/net"), Source: SourceProc, PID: 1, Comm: "proc1", Cgroup: "/pod/1"},
		{Inode: 200, Name: "ino-200", Path: filepath.Join(root, "9/ns/net"), Source: SourceProc, PID: 9, Comm: "proc9", Cgroup: "/",
			Pod: podid.Identity{PodUID: uid9, ContainerID: cid9}},
		{Inode: 300, Name: "ino-300", Path: filepath.Join(root, "10/ns/net"), Source: SourceProc, PID: 10, Comm: "proc10", Cgroup: cg10,
			Pod: podid.Identity{PodUID: uid10, ContainerID: cid10}},
	}
	if !reflect.DeepEqual(res.Namespaces, want) {
		t.Errorf("Scan:\n got %+v\nwant %+v", res.Namespaces, want)
	}
	if len(res.Failed) != 0 || res.Unreadable != 0 {
		t.Errorf("Failed %v, Unreadable %d; want none", res.Failed, res.Unreadable)
	}
}

func TestScanMissingSources(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "netns") // not created: no namespace yet
	s := New(Options{Dirs: []string{dir}})
	if !s.Enabled() {
		t.Error("Enabled = false with a directory")
	}
	res, err := s.Scan(context.Background())
	if err != nil || len(res.Namespaces) != 0 || len(res.Failed) != 0 {
		t.Errorf("missing directory: %+v, %v; want nothing found and no error", res, err)
	}

	res, err = New(Options{Proc: true, ProcRoot: filepath.Join(dir, "proc")}).Scan(context.Background())
	if err == nil || !res.Failed[SourceProc] {
		t.Errorf("missing proc root: Failed %v, err %v; want a failed proc source", res.Failed, err)
	}
	if New(Options{}).Enabled() {
		t.Error("Enabled = true without sources")
	}
}

func TestScanDirSkipsFilesThatAreNotNamespaces(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "stale"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "subdir"), 0o755); err != nil {
		t.Fatal(err)
	}
	res, err := New(Options{Dirs: []string{dir}}).Scan(context.Background())
	if err != nil || len(res.Namespaces) != 0 {
		t.Errorf("Scan = %+v, %v; want nothing", res.Namespaces, err)
	}
}

func TestScanCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res, err := New(Options{Dirs: []string{t.TempDir()}}).Scan(ctx)
	if err == nil || !res.Failed[SourceDir] {
		t.Errorf("cancelled scan: Failed %v, err %v", res.Failed, err)
	}
}
