package podid

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
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
	root := nstest.Cgroup2Mount(t)
	podUID, containerID := nstest.RandomPodUID(t), nstest.RandomContainerID(t)
	rel := filepath.Join(nstest.UniqueName(t, "ctx-podid-"),
		"kubepods.slice",
		"kubepods-burstable.slice",
		"kubepods-burstable-pod"+strings.ReplaceAll(podUID, "-", "_")+".slice",
		"cri-containerd-"+containerID+".scope")
	assertPodInCgroup(t, root, rel, "0::", Identity{PodUID: podUID, ContainerID: containerID})
}

// TestKernelCgroupfsPodV1 does the same with the cgroupfs driver's layout
// of a best-effort pod in the name=systemd hierarchy of cgroup v1 (the
// hybrid layout), where the unified hierarchy still says "/": the right
// hierarchy must be picked. It skips where the kernel has no cgroup v1
// hierarchy mounted, which is normal on cgroup v2 hosts.
func TestKernelCgroupfsPodV1(t *testing.T) {
	nstest.RequireRoot(t)
	root := nstest.CgroupV1Mount("name=systemd")
	if root == "" {
		t.Skip("no cgroup v1 name=systemd hierarchy mounted (a cgroup v2 only host)")
	}
	podUID, containerID := nstest.RandomPodUID(t), nstest.RandomContainerID(t)
	rel := filepath.Join(nstest.UniqueName(t, "ctx-podid-"), "kubepods", "besteffort", "pod"+podUID, containerID)
	assertPodInCgroup(t, root, rel, ":name=systemd:", Identity{PodUID: podUID, ContainerID: containerID})
}

// assertPodInCgroup starts a process in a new namespace inside the cgroup
// rel under root, checks that /proc/PID/cgroup shows it there on the line
// of the hierarchy marked by hierarchy, and that FromProcCgroup finds want.
func assertPodInCgroup(t *testing.T, root, rel, hierarchy string, want Identity) {
	t.Helper()
	dir := nstest.MakeCgroup(t, root, rel)
	ns := nstest.NewNamespace(t)
	pid := nstest.StartInNamespaceAndCgroup(t, ns, dir)
	content, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(content, []byte(hierarchy)) || !bytes.Contains(content, []byte("/"+rel+"\n")) {
		t.Fatalf("/proc/%d/cgroup does not show the process in %s:\n%s", pid, rel, content)
	}
	if got := FromProcCgroup(content); got != want {
		t.Errorf("FromProcCgroup = %+v, want %+v\n%s", got, want, content)
	}
	assertInNamespace(t, pid, ns)
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
