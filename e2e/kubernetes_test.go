package e2e

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/ct-exporter/ct-exporter/internal/discovery"
	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

// TestPodIdentityOfDiscoveredNamespace gives a fresh network namespace a
// process in a cgroup v2 directory laid out as the kubelet's systemd
// driver lays out a burstable pod's containerd container, and a second
// namespace a process in a system service's cgroup. The exporter, finding
// both through /proc, labels the first one's conntrack_netns_info with
// the pod's UID and the container's ID and leaves the second one's empty.
// When the pod's process ends its namespace and series go, and the test's
// cgroups are removed afterwards.
func TestPodIdentityOfDiscoveredNamespace(t *testing.T) {
	nstest.RequireRoot(t, "sleep", "sh")
	root := nstest.Cgroup2Mount(t)
	top := nstest.UniqueName(t, "ctx-e2e-pod-")
	t.Cleanup(func() {
		// Registered first, so it runs after every other cleanup: the
		// test leaves no cgroup of its own behind.
		if _, err := os.Stat(filepath.Join(root, top)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("cgroup %s left behind: %v", top, err)
		}
	})
	podUID, containerID := nstest.RandomPodUID(t), nstest.RandomContainerID(t)
	podRel := filepath.Join(top,
		"kubepods.slice",
		"kubepods-burstable.slice",
		"kubepods-burstable-pod"+strings.ReplaceAll(podUID, "-", "_")+".slice",
		"cri-containerd-"+containerID+".scope")
	serviceRel := filepath.Join(top, "system.slice", "ctx-e2e.service")
	podDir := nstest.MakeCgroup(t, root, podRel)
	serviceDir := nstest.MakeCgroup(t, root, serviceRel)

	podNs, serviceNs := nstest.NewNamespace(t), nstest.NewNamespace(t)
	podPID := nstest.StartInNamespaceAndCgroup(t, podNs, podDir)
	servicePID := nstest.StartInNamespaceAndCgroup(t, serviceNs, serviceDir)
	podName, serviceName := inodeName(t, podNs), inodeName(t, serviceNs)

	d := startDaemon(t, "--conntrack.netns-discover-proc", "--conntrack.netns-max=100000",
		"--conntrack.netns-discover-interval=200ms")
	var podInfo, serviceInfo map[string]string
	waitFor(t, d, 30*time.Second, "both namespaces in conntrack_netns_info with their sleep process",
		func(mfs map[string]*dto.MetricFamily) bool {
			podInfo, serviceInfo = netnsInfo(mfs, podName), netnsInfo(mfs, serviceName)
			return podInfo["comm"] == "sleep" && serviceInfo["comm"] == "sleep"
		})
	want := map[string]string{
		"netns": podName, "source": "proc", "pid": strconv.Itoa(podPID), "comm": "sleep",
		"pod_uid": podUID, "container_id": containerID,
	}
	for k, v := range want {
		if podInfo[k] != v {
			t.Errorf("pod namespace: conntrack_netns_info %s=%q, want %q (all: %v)", k, podInfo[k], v, podInfo)
		}
	}
	if !strings.HasSuffix(podInfo["cgroup"], "/"+podRel) {
		t.Errorf("pod namespace: cgroup=%q, want it to end in /%s", podInfo["cgroup"], podRel)
	}
	want = map[string]string{
		"netns": serviceName, "source": "proc", "pid": strconv.Itoa(servicePID), "comm": "sleep",
		"pod_uid": "", "container_id": "",
	}
	for k, v := range want {
		if got, ok := serviceInfo[k]; !ok || got != v {
			t.Errorf("service namespace: conntrack_netns_info %s=%q (present %v), want %q (all: %v)", k, got, ok, v, serviceInfo)
		}
	}
	if !strings.HasSuffix(serviceInfo["cgroup"], "/"+serviceRel) {
		t.Errorf("service namespace: cgroup=%q, want it to end in /%s", serviceInfo["cgroup"], serviceRel)
	}

	// The pod's process ends: its namespace, found only through it, goes
	// with every series, while the other stays.
	if err := syscall.Kill(podPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, d, 30*time.Second, podName+" dropped", func(mfs map[string]*dto.MetricFamily) bool {
		return seriesOf(mfs, podName) == 0
	})
	if info := netnsInfo(Families(t, d.Scrape(t)), serviceName); info["pid"] != strconv.Itoa(servicePID) {
		t.Errorf("service namespace after the pod's went: %v", info)
	}
}

// inodeName returns the netns label the exporter gives a namespace it
// finds only under /proc.
func inodeName(t *testing.T, ns *nstest.Namespace) string {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(ns.Path, &st); err != nil {
		t.Fatal(err)
	}
	return discovery.InodeName(st.Ino)
}

// netnsInfo returns the labels of the conntrack_netns_info series of
// namespace name, nil when there is none.
func netnsInfo(mfs map[string]*dto.MetricFamily, name string) map[string]string {
	for _, m := range mfs["conntrack_netns_info"].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["netns"] == name {
			return labels
		}
	}
	return nil
}
