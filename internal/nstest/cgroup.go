package nstest

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// MakeCgroup creates the cgroup directory rel (slash-separated, relative)
// under the cgroup hierarchy mounted at root, with every missing parent,
// and removes the directories it created, leaf first, when the test ends.
// Cleanups run last-in first-out, so a process moved into the cgroup by a
// later StartInNamespaceAndCgroup has ended before the removal. Give rel a
// unique first element (see UniqueName) so that no cgroup of the host is
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
func StartInNamespaceAndCgroup(t testing.TB, ns *Namespace, dir string) int {
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

// Cgroup2Mount returns where the cgroup v2 hierarchy is mounted:
// /sys/fs/cgroup on a unified host, /sys/fs/cgroup/unified (or wherever
// mountinfo says) on a hybrid one. Without one the test cannot run: it
// skips outside CI and fails in CI.
func Cgroup2Mount(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	mounts := parseMountinfo(b)
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
	if InCI() {
		t.Fatal(msg + " (CI is set, so this test must run)")
	}
	t.Skip(msg)
	return ""
}

// CgroupV1Mount returns where the cgroup v1 hierarchy with the given
// controller (or name=...) option is mounted, or "".
func CgroupV1Mount(option string) string {
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

// mount is one line of /proc/self/mountinfo.
type mount struct{ point, fstype, options string }

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

// UniqueName returns prefix followed by 8 random hex digits: a name for
// a cgroup or file no one else uses.
func UniqueName(t testing.TB, prefix string) string {
	t.Helper()
	return prefix + randomHex(t, 4)
}

// RandomPodUID returns a random UUID in Kubernetes' form,
// 8-4-4-4-12 lowercase hex digits.
func RandomPodUID(t testing.TB) string {
	t.Helper()
	h := randomHex(t, 16)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// RandomContainerID returns a random container ID, 64 lowercase hex
// digits, as container runtimes make them.
func RandomContainerID(t testing.TB) string {
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
