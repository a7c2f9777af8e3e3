package podid

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

// TestKernelSystemdBurstablePodV2 puts a process of a fresh network
// namespace into a cgroup v2 directory laid out as the kubelet's systemd
// driver lays out a burstable pod's containerd container, and checks that
// the kernel's /proc/PID/cgroup of that process gives the pod's UID and
// the container's ID.
func TestKernelSystemdBurstablePodV2(t *testing.T) {
	nstest.RequireRoot(t)
	root := cgroup2Mount(t)
	podUID, containerID := randomPodUID(t), randomContainerID(t)
	rel := filepath.Join(uniqueName(t, "ctx-podid-"),
		"kubepods.slice",
		"kubepods-burstable.slice",
		"kubepods-burstable-pod"+strings.ReplaceAll(podUID, "-", "_")+".slice",
		"cri-containerd-"+containerID+".scope")
	dir := MakeCgroup(t, root, rel)

	ns := nstest.NewNamespace(t)
	pid := StartInNamespaceAndCgroup(t, ns, dir)

	content, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(content, []byte("0::")) || !bytes.Contains(content, []byte("/"+rel+"\n")) {
		t.Fatalf("/proc/%d/cgroup does not show the process in %s:\n%s", pid, rel, content)
	}
	if got, want := FromProcCgroup(content), (Identity{PodUID: podUID, ContainerID: containerID}); got != want {
		t.Errorf("FromProcCgroup = %+v, want %+v\n%s", got, want, content)
	}
	got, err := ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	if want := (Identity{PodUID: podUID, ContainerID: containerID}); got != want {
		t.Errorf("ReadFile = %+v, want %+v", got, want)
	}
	assertInNamespace(t, pid, ns)
}

// TestKernelCgroupfsPodV1 does the same with the cgroupfs driver's layout
// of a best-effort pod in the name=systemd hierarchy of cgroup v1 (the
// hybrid layout), where the unified hierarchy still says "/": the right
// hierarchy must be picked. It skips where the kernel has no cgroup v1
// hierarchy mounted, which is normal on cgroup v2 hosts.
func TestKernelCgroupfsPodV1(t *testing.T) {
	nstest.RequireRoot(t)
	root := cgroupV1Mount("name=systemd")
	if root == "" {
		t.Skip("no cgroup v1 name=systemd hierarchy mounted (a cgroup v2 only host)")
	}
	podUID, containerID := randomPodUID(t), randomContainerID(t)
	rel := filepath.Join(uniqueName(t, "ctx-podid-"), "kubepods", "besteffort", "pod"+podUID, containerID)
	dir := MakeCgroup(t, root, rel)

	ns := nstest.NewNamespace(t)
	pid := StartInNamespaceAndCgroup(t, ns, dir)

	content, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(content, []byte(":name=systemd:")) || !bytes.Contains(content, []byte("/"+rel+"\n")) {
		t.Fatalf("/proc/%d/cgroup does not show the process in %s:\n%s", pid, rel, content)
	}
	if got, want := FromProcCgroup(content), (Identity{PodUID: podUID, ContainerID: containerID}); got != want {
		t.Errorf("FromProcCgroup = %+v, want %+v\n%s", got, want, content)
	}
	assertInNamespace(t, pid, ns)
}

// MakeCgroup creates the cgroup directory rel (slash-separated, relative)
// under the cgroup hierarchy mounted at root, with every missing parent,
// and removes the directories it created, leaf first, when the test ends.
// Cleanups run last-in first-out, so a process moved into the cgroup by a
// later StartInNamespaceAndCgroup has ended before the removal. Give rel a
// unique first element (see uniqueName) so that no cgroup of the host is
// reused or removed.
func MakeCgroup(t testing.TB, root, rel string) string {
	t.Helper()
	var created []string
	t.Cleanup(func() {
		for i := len(created) - 1; i >= 0; i-- {
			if err := os.Remove(created[i]); err != nil {
				t.Errorf("remove cgroup: %v", err)
			}
		}
	})
	dir := root
	for _, part := range strings.Split(filepath.Clean(rel), "/") {
		if part == "" || part == "." || part == ".." {
			t.Fatalf("cgroup path %q is not relative and clean", rel)
		}
		dir = filepath.Join(dir, part)
		if err := os.Mkdir(dir, 0o755); err != nil {
			if errors.Is(err, os.ErrExist) {
				continue
			}
			t.Fatalf("create cgroup: %v", err)
		}
		created = append(created, dir)
	}
	return dir
}

// StartInNamespaceAndCgroup starts a long-running process (sleep) inside
// the network namespace ns, moves it into the cgroup directory dir by
// writing its PID to dir/cgroup.procs, and returns its PID. When it
// returns, the process is in both. The process is killed and reaped when
// the test ends, before the cleanups registered earlier (the cgroup's
// removal, the namespace's deletion) run. An end-to-end test uses it to
// give a namespace found through /proc a process whose cgroup is a pod's.
func StartInNamespaceAndCgroup(t testing.TB, ns *nstest.Namespace, dir string) int {
	t.Helper()
	// ip netns exec enters the namespace, then execs the shell, which
	// says so and execs sleep: one PID throughout.
	cmd := exec.Command("ip", "netns", "exec", ns.Name, "sh", "-c", "echo ready; exec sleep 3600")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start process in %s: %v", ns.Name, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("process in %s did not start: %q, %v: %s", ns.Name, line, err, stderr.String())
	}
	pid := cmd.Process.Pid
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
		t.Fatalf("move process %d into cgroup %s: %v", pid, dir, err)
	}
	return pid
}

// assertInNamespace checks that the process is in the namespace ns.
func assertInNamespace(t *testing.T, pid int, ns *nstest.Namespace) {
	t.Helper()
	var want, got syscall.Stat_t
	if err := syscall.Stat(ns.Path, &want); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &got); err != nil {
		t.Fatal(err)
	}
	if got.Ino != want.Ino {
		t.Errorf("process %d is in netns inode %d, want %s (inode %d)", pid, got.Ino, ns.Name, want.Ino)
	}
}

// cgroup2Mount returns where the cgroup v2 hierarchy is mounted:
// /sys/fs/cgroup on a unified host, /sys/fs/cgroup/unified (or wherever
// mountinfo says) on a hybrid one. Without one the test cannot run: it
// skips outside CI and fails in CI.
func cgroup2Mount(t testing.TB) string {
	t.Helper()
	mounts := cgroupMounts(t)
	for _, m := range mounts {
		if m.fstype == "cgroup2" && m.point == "/sys/fs/cgroup" {
			return m.point
		}
	}
	for _, m := range mounts {
		if m.fstype == "cgroup2" {
			return m.point
		}
	}
	msg := "no cgroup2 hierarchy mounted"
	if nstest.InCI() {
		t.Fatal(msg + " (CI is set, so this test must run)")
	}
	t.Skip(msg)
	return ""
}

// cgroupV1Mount returns where the cgroup v1 hierarchy with the given
// controller (or name=...) option is mounted, or "".
func cgroupV1Mount(option string) string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	for _, m := range parseMountinfo(b) {
		if m.fstype != "cgroup" {
			continue
		}
		for o := range strings.SplitSeq(m.options, ",") {
			if o == option {
				return m.point
			}
		}
	}
	return ""
}

type mount struct{ point, fstype, options string }

func cgroupMounts(t testing.TB) []mount {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return parseMountinfo(b)
}

// parseMountinfo reads the mount point, file system type and super block
// options of each line of /proc/self/mountinfo.
func parseMountinfo(b []byte) []mount {
	var out []mount
	for line := range strings.SplitSeq(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 3 {
			continue
		}
		out = append(out, mount{point: f[4], fstype: g[0], options: g[2]})
	}
	return out
}

func uniqueName(t testing.TB, prefix string) string {
	t.Helper()
	return prefix + randomHex(t, 4)
}

// randomPodUID returns a random UUID in Kubernetes' form.
func randomPodUID(t testing.TB) string {
	t.Helper()
	h := randomHex(t, 16)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func randomContainerID(t testing.TB) string {
	t.Helper()
	return randomHex(t, 32)
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
