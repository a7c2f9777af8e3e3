package podid

import (
	"strings"
	"testing"
)

// IDs in the shapes the kubelet and the runtimes write them.
const (
	uid     = "7e5a2b55-f8a3-4a4b-9c1d-0123456789ab"
	uidU    = "7e5a2b55_f8a3_4a4b_9c1d_0123456789ab" // as the systemd driver writes it
	cid     = "0b3e5f6a7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7081"
	cid2    = "34dc0b5e626f2c5c4c5170e34b10e7654ce36f0fcd532739f4445baabea03376"
	uidGKE  = "74c13223-5a00-11e9-b385-42010a80018d" // a real v1 UUID from a GKE node
	static  = "0f5a4c3e0c8b5b3b1c2a0d9e8f7a6b5c"     // a static pod's UID: md5 of its manifest
	nodeCID = "f1e2d3c4b5a697887766554433221100ffeeddccbbaa99887766554433221100"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name      string
		path      string
		pod, cont string
	}{
		// systemd driver, cgroup v1 and v2 alike.
		{"systemd burstable containerd", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope", uid, cid},
		{"systemd besteffort containerd", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope", uid, cid},
		{"systemd guaranteed containerd", "/kubepods.slice/kubepods-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope", uid, cid},
		{"systemd burstable cri-o", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/crio-" + cid + ".scope", uid, cid},
		{"systemd guaranteed cri-o", "/kubepods.slice/kubepods-pod" + uidU + ".slice/crio-" + cid + ".scope", uid, cid},
		{"systemd besteffort docker", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidU + ".slice/docker-" + cid + ".scope", uid, cid},
		{"systemd guaranteed docker", "/kubepods.slice/kubepods-pod" + uidU + ".slice/docker-" + cid + ".scope", uid, cid},
		{"systemd static pod", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + static + ".slice/cri-containerd-" + cid + ".scope", static, cid},
		{"systemd nested cgroup inside the container", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope/init.scope", uid, cid},
		{"systemd pod slice itself", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice", uid, ""},
		{"systemd cgroup removed", "/kubepods.slice/kubepods-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope (deleted)", uid, cid},
		// kind and other nodes that run in a container.
		{"kind systemd", "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope", uid, cid},
		{"kind systemd guaranteed", "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope", uid, cid},
		{"kind node seen from the host", "/system.slice/docker-" + nodeCID + ".scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope", uid, cid},
		{"kind v1 cgroupfs docker-in-docker", "/docker/" + nodeCID + "/kubelet/kubepods/burstable/pod" + uid + "/" + cid, uid, cid},
		{"k3d cgroupfs docker-in-docker", "/docker/" + nodeCID + "/kubepods/besteffort/pod" + uid + "/" + cid, uid, cid},
		// Relative to the reader's cgroup namespace (an exporter pod on cgroup v2).
		{"cgroupns relative systemd", "/../../kubepods-besteffort.slice/kubepods-besteffort-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope", uid, cid},
		{"cgroupns relative cgroupfs", "/../../pod" + uid + "/" + cid, uid, cid},
		{"cgroupns relative cgroupfs other qos", "/../../../besteffort/pod" + uid + "/" + cid, uid, cid},
		// cgroupfs driver.
		{"cgroupfs burstable", "/kubepods/burstable/pod" + uid + "/" + cid, uid, cid},
		{"cgroupfs besteffort GKE", "/kubepods/besteffort/pod" + uidGKE + "/" + cid2, uidGKE, cid2},
		{"cgroupfs guaranteed", "/kubepods/pod" + uid + "/" + cid, uid, cid},
		{"cgroupfs cri-o", "/kubepods/burstable/pod" + uid + "/crio-" + cid, uid, cid},
		{"cgroupfs static pod", "/kubepods/burstable/pod" + static + "/" + cid, static, cid},
		{"cgroupfs pod cgroup itself", "/kubepods/burstable/pod" + uid, uid, ""},
		{"cgroupfs nested cgroup inside the container", "/kubepods/pod" + uid + "/" + cid + "/sub", uid, cid},
		{"cgroupfs under a custom cgroup root", "/k8s/kubepods/burstable/pod" + uid + "/" + cid, uid, cid},
		// The innermost pod owns the process.
		{"kind inside a pod", "/kubepods/burstable/pod" + uidGKE + "/" + cid2 + "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope", uid, cid},
		// The pod is known, the container's naming is not.
		{"unknown runtime prefix", "/kubepods.slice/kubepods-pod" + uidU + ".slice/kata-" + cid + ".scope", uid, ""},
		{"63-digit container id", "/kubepods/burstable/pod" + uid + "/" + cid[:63], uid, ""},
		{"65-digit container id", "/kubepods/burstable/pod" + uid + "/" + cid + "0", uid, ""},
		{"uppercase container id", "/kubepods/burstable/pod" + uid + "/" + strings.ToUpper(cid), uid, ""},
		{"systemd container without .scope", "/kubepods.slice/kubepods-pod" + uidU + ".slice/cri-containerd-" + cid, uid, ""},
		{"cgroupfs containerd scope name", "/kubepods/pod" + uid + "/cri-containerd-" + cid + ".scope", uid, ""},
		// CRI-O's monitor runs in the node's namespaces: not the pod's.
		{"cri-o conmon systemd", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/crio-conmon-" + cid + ".scope", "", ""},
		{"cri-o conmon cgroupfs", "/kubepods/burstable/pod" + uid + "/crio-conmon-" + cid, "", ""},
		// Not a pod.
		{"root", "/", "", ""},
		{"empty", "", "", ""},
		{"init scope", "/init.scope", "", ""},
		{"system service", "/system.slice/containerd.service", "", ""},
		{"kubelet service", "/system.slice/kubelet.service", "", ""},
		{"user session", "/user.slice/user-1000.slice/session-3.scope", "", ""},
		{"plain docker container", "/system.slice/docker-" + cid + ".scope", "", ""},
		{"plain docker cgroupfs", "/docker/" + cid, "", ""},
		{"podman pod", "/machine.slice/libpod-pod-" + cid + ".slice/libpod-" + cid + ".scope", "", ""},
		{"kubepods slice", "/kubepods.slice", "", ""},
		{"qos slice", "/kubepods.slice/kubepods-burstable.slice", "", ""},
		{"cgroupfs qos", "/kubepods/besteffort", "", ""},
		{"uid-looking service outside kubepods", "/system.slice/pod" + uid + ".service", "", ""},
		{"uid-looking cgroup outside kubepods", "/docker/pod" + uid + "/" + cid, "", ""},
		{"uid-looking slice outside kubepods", "/user.slice/user-pod" + uidU + ".slice/docker-" + cid + ".scope", "", ""},
		{"systemd unknown qos", "/kubepods.slice/kubepods-gold.slice/kubepods-gold-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope", "", ""},
		{"systemd uid with dashes", "/kubepods.slice/kubepods-pod" + uid + ".slice/cri-containerd-" + cid + ".scope", "", ""},
		{"cgroupfs uid with underscores", "/kubepods/pod" + uidU + "/" + cid, "", ""},
		{"uppercase uid", "/kubepods/burstable/pod" + strings.ToUpper(uid) + "/" + cid, "", ""},
		{"uppercase uid systemd", "/kubepods.slice/kubepods-pod" + strings.ToUpper(uidU) + ".slice/cri-containerd-" + cid + ".scope", "", ""},
		{"short uid", "/kubepods/burstable/pod" + uid[:35] + "/" + cid, "", ""},
		{"uid with misplaced dash", "/kubepods/burstable/pod7e5a2b5-5f8a3-4a4b-9c1d-0123456789ab/" + cid, "", ""},
		{"non-hex uid", "/kubepods/burstable/pod7e5a2b55-f8a3-4a4b-9c1d-0123456789ag/" + cid, "", ""},
		{"empty slice part", "/kubepods.slice/-kubepods-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope", "", ""},
		{"pod prefix only", "/kubepods/burstable/pod/" + cid, "", ""},
		{"garbage", "::::////\x00\xff", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Parse(tc.path)
			want := Identity{PodUID: tc.pod, ContainerID: tc.cont}
			if got != want {
				t.Errorf("Parse(%q)\n got  %+v\n want %+v", tc.path, got, want)
			}
		})
	}
}

func TestFromProcCgroup(t *testing.T) {
	v1 := func(systemd, memory, cpu string) string {
		return "12:hugetlb:/\n" +
			"11:cpuset:/\n" +
			"10:memory:" + memory + "\n" +
			"9:net_cls,net_prio:/\n" +
			"4:cpu,cpuacct:" + cpu + "\n" +
			"3:pids:/\n" +
			"1:name=systemd:" + systemd + "\n"
	}
	sysPath := "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope"
	fsPath := "/kubepods/besteffort/pod" + uidGKE + "/" + cid2
	tests := []struct {
		name    string
		content string
		want    Identity
	}{
		{"v2", "0::" + sysPath + "\n", Identity{uid, cid}},
		{"v2 without newline", "0::" + sysPath, Identity{uid, cid}},
		{"v2 not a pod", "0::/system.slice/containerd.service\n", Identity{}},
		{"v2 root", "0::/\n", Identity{}},
		{"v1 all hierarchies", v1(fsPath, fsPath, fsPath), Identity{uidGKE, cid2}},
		{"v1 systemd hierarchy only", v1(sysPath, "/", "/"), Identity{uid, cid}},
		{"v1 memory hierarchy only", v1("/system.slice/docker.service", fsPath, "/"), Identity{uidGKE, cid2}},
		{"v1 cpu hierarchy only", v1("/", "/", fsPath), Identity{uidGKE, cid2}},
		{"v1 systemd preferred over memory", v1(sysPath, fsPath, "/"), Identity{uid, cid}},
		{"v1 container found in a later hierarchy",
			v1("/kubepods/besteffort/pod"+uidGKE, "/kubepods/besteffort/pod"+uidGKE, fsPath), Identity{uidGKE, cid2}},
		{"v1 later hierarchy of another pod ignored",
			v1("/kubepods/besteffort/pod"+uidGKE, sysPath, "/"), Identity{uidGKE, ""}},
		{"v1 not a pod", v1("/user.slice/user-1000.slice/session-2.scope", "/user.slice", "/user.slice"), Identity{}},
		{"hybrid unified preferred", "1:name=systemd:" + fsPath + "\n0::" + sysPath + "\n", Identity{uid, cid}},
		{"hybrid unified at root", "1:name=systemd:" + fsPath + "\n0::/\n", Identity{uidGKE, cid2}},
		{"v1 named hierarchy", "2:name=elogind:" + fsPath + "\n", Identity{uidGKE, cid2}},
		{"malformed lines skipped", "garbage\n0:\n::\n5:memory\n7:pids:relative/pod" + uid + "\n0::" + sysPath + "\n", Identity{uid, cid}},
		{"empty", "", Identity{}},
		{"crlf", "0::" + sysPath + "\r\n", Identity{uid, ""}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := FromProcCgroup([]byte(tc.content)); got != tc.want {
				t.Errorf("FromProcCgroup(%q)\n got  %+v\n want %+v", tc.content, got, tc.want)
			}
		})
	}
}

func TestIdentityIsZero(t *testing.T) {
	if !(Identity{}).IsZero() {
		t.Error("zero Identity is not IsZero")
	}
	if (Identity{PodUID: uid}).IsZero() {
		t.Error("Identity with a pod UID is IsZero")
	}
}

func FuzzParse(f *testing.F) {
	f.Add("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope")
	f.Add("/kubepods/burstable/pod" + uid + "/" + cid)
	f.Add("/../../pod" + uid + "/crio-conmon-" + cid)
	f.Add("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod" + static + ".slice/docker-" + cid + ".scope (deleted)")
	f.Add("0::/system.slice/containerd.service\n1:name=systemd:/kubepods/pod" + uid + "\n")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		for _, id := range []Identity{Parse(s), FromProcCgroup([]byte(s))} {
			if id.PodUID == "" && id.ContainerID != "" {
				t.Fatalf("%q: container ID %q without a pod", s, id.ContainerID)
			}
			if id.PodUID != "" && len(id.PodUID) != 36 && len(id.PodUID) != 32 {
				t.Fatalf("%q: pod UID %q has the wrong length", s, id.PodUID)
			}
			if id.ContainerID != "" && !isContainerID(id.ContainerID) {
				t.Fatalf("%q: container ID %q is not 64 hex digits", s, id.ContainerID)
			}
			if strings.ContainsAny(id.PodUID, "_/") || !strings.Contains(s, id.ContainerID) {
				t.Fatalf("%q: identity %+v not taken from the input", s, id)
			}
		}
	})
}
