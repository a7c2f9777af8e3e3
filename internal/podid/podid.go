// Package podid finds the Kubernetes pod and the container a process
// belongs to from its cgroup path, as the kubelet and the container
// runtimes lay the cgroups of pods out on a node. It needs no access to
// the Kubernetes API: the pod UID it returns is the key that
// kube-state-metrics' kube_pod_info carries as its uid label.
//
// Recognised layouts (cgroup v1 and v2 alike):
//
//	systemd driver   .../kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope
//	                 .../kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice/crio-<id>.scope
//	                 .../kubepods.slice/kubepods-pod<uid>.slice/docker-<id>.scope   (guaranteed)
//	                 .../kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod<uid>.slice/...   (kind)
//	cgroupfs driver  .../kubepods/burstable/pod<uid>/<id>
//	                 .../kubepods/besteffort/pod<uid>/crio-<id>
//	                 .../kubepods/pod<uid>/<id>   (guaranteed)
//
// Anything may precede the kubepods part (a Docker-in-Docker or kind node
// prefix such as /docker/<id>/ or /system.slice/docker-<id>.scope/), and a
// path relative to the reader's cgroup namespace (/../../kubepods-...) is
// read the same way. Segments after the container's are allowed (nested
// cgroups inside a container).
//
// The pod UID is returned with dashes, as Kubernetes writes it (the
// systemd driver writes it with underscores). The container ID is the 64
// lowercase hex digits the runtime uses; a pause (sandbox) container's ID
// is an ID like any other.
//
// Not a pod's, so empty: system services, user sessions, plain Docker or
// Podman containers, the root cgroup, and CRI-O's container monitor
// (crio-conmon-<id>.scope), which runs in the node's namespaces and not in
// the pod's. When the pod's cgroup is recognised but the container's is
// not (an unknown runtime's naming), the pod UID is returned with an
// empty container ID.
package podid

import (
	"bytes"
	"strings"
)

// Identity is the pod and the container a process belongs to. Both are
// empty when the process is not in a pod; ContainerID alone may be empty
// when the container's cgroup name is not recognised.
type Identity struct {
	// PodUID is the pod's UID as Kubernetes writes it, with dashes:
	// 8-4-4-4-12 lowercase hex digits, or 32 hex digits for a static pod
	// (the kubelet's hash of its manifest).
	PodUID string
	// ContainerID is the container's ID, 64 lowercase hex digits, without
	// the runtime prefix (containerd://, cri-o://, docker://).
	ContainerID string
}

// IsZero reports whether the identity names no pod.
func (i Identity) IsZero() bool { return i.PodUID == "" && i.ContainerID == "" }

// Parse returns the pod and container of a cgroup path (the path part of
// one /proc/PID/cgroup line). It returns the zero Identity when the path
// is not a pod's.
func Parse(cgroupPath string) Identity {
	path := strings.TrimSuffix(cgroupPath, " (deleted)")
	segs := strings.Split(path, "/")
	// The innermost pod wins: in nested clusters (a kind node inside a
	// pod) the process belongs directly to the last pod in its path.
	for i := len(segs) - 1; i >= 0; i-- {
		uid, systemd, ok := podSegment(segs, i)
		if !ok {
			continue
		}
		if i+1 >= len(segs) {
			return Identity{PodUID: uid}
		}
		id, monitor := containerSegment(segs[i+1], systemd)
		if monitor {
			return Identity{}
		}
		return Identity{PodUID: uid, ContainerID: id}
	}
	return Identity{}
}

// FromProcCgroup returns the pod and container of a whole /proc/PID/cgroup
// file. With cgroup v2 it reads the one "0::/path" line; with cgroup v1 (or
// the hybrid layout) it prefers the unified hierarchy, then name=systemd,
// memory, cpu, pids and the others in the order listed, taking the first
// path that names a pod, and among those naming the same pod one that also
// names the container. Malformed lines are skipped.
func FromProcCgroup(content []byte) Identity {
	type candidate struct {
		rank int
		path string
	}
	var cands []candidate
	for line := range bytes.SplitSeq(content, []byte{'\n'}) {
		fields := bytes.SplitN(line, []byte{':'}, 3)
		if len(fields) != 3 || len(fields[2]) == 0 || fields[2][0] != '/' {
			continue
		}
		cands = append(cands, candidate{hierarchyRank(string(fields[0]), string(fields[1])), string(fields[2])})
	}
	var found Identity
	for rank := 0; rank <= rankOther; rank++ {
		for _, c := range cands {
			if c.rank != rank {
				continue
			}
			id := Parse(c.path)
			if id.PodUID == "" {
				continue
			}
			if found.PodUID == "" {
				found = id
			} else if id.PodUID != found.PodUID || found.ContainerID != "" {
				continue
			}
			if id.ContainerID != "" {
				return id
			}
		}
	}
	return found
}

// Preference of the hierarchies of a /proc/PID/cgroup file, best first.
const (
	rankUnified = iota
	rankSystemd
	rankMemory
	rankCPU
	rankPids
	rankOther
)

// hierarchyRank ranks one line of /proc/PID/cgroup by its hierarchy ID
// and controller list.
func hierarchyRank(id, controllers string) int {
	if id == "0" && controllers == "" {
		return rankUnified
	}
	best := rankOther
	for c := range strings.SplitSeq(controllers, ",") {
		r := rankOther
		switch c {
		case "name=systemd":
			r = rankSystemd
		case "memory":
			r = rankMemory
		case "cpu", "cpuacct":
			r = rankCPU
		case "pids":
			r = rankPids
		}
		best = min(best, r)
	}
	return best
}

// podSegment reports whether segs[i] is a pod's cgroup, with the pod UID
// in Kubernetes' form and whether the systemd driver named it.
func podSegment(segs []string, i int) (uid string, systemd, ok bool) {
	seg := segs[i]
	if name, isSlice := strings.CutSuffix(seg, ".slice"); isSlice {
		uid, ok = systemdPodSlice(name)
		return uid, true, ok
	}
	raw, isPod := strings.CutPrefix(seg, "pod")
	if !isPod || !cgroupfsParent(segs[:i]) {
		return "", false, false
	}
	uid, ok = podUID(raw, '-')
	return uid, false, ok
}

// systemdPodSlice parses the name of a pod's slice without ".slice":
// dash-separated parts ending in "kubepods", an optional QoS class, and
// "pod<uid with _>", such as kubepods-burstable-pod<uid> or
// kubelet-kubepods-pod<uid>. systemd names a slice after its parents, so
// the name alone places it under kubepods.
func systemdPodSlice(name string) (string, bool) {
	parts := strings.Split(name, "-")
	n := len(parts)
	if n < 2 {
		return "", false
	}
	raw, isPod := strings.CutPrefix(parts[n-1], "pod")
	if !isPod {
		return "", false
	}
	k := n - 2
	if parts[k] == "burstable" || parts[k] == "besteffort" {
		k--
	}
	if k < 0 || parts[k] != "kubepods" {
		return "", false
	}
	for _, p := range parts[:k] {
		if p == "" {
			return "", false
		}
	}
	return podUID(raw, '_')
}

// cgroupfsParent reports whether the segments before a cgroupfs driver's
// pod<uid> are a kubepods hierarchy: "kubepods" or "kubepods/<qos>", or a
// path relative to the reader's cgroup namespace ("..", "../<qos>").
func cgroupfsParent(before []string) bool {
	n := len(before)
	if n > 0 && (before[n-1] == "burstable" || before[n-1] == "besteffort") {
		n--
	}
	return n > 0 && (before[n-1] == "kubepods" || before[n-1] == "..")
}

// podUID checks a pod UID as the cgroup name writes it, with sep between
// its groups, and returns it with dashes. A static pod's UID is 32 hex
// digits without separators.
func podUID(raw string, sep byte) (string, bool) {
	switch len(raw) {
	case 32:
		if isLowerHex(raw) {
			return raw, true
		}
	case 36:
		b := []byte(raw)
		for i, c := range b {
			switch i {
			case 8, 13, 18, 23:
				if c != sep {
					return "", false
				}
				b[i] = '-'
			default:
				if !lowerHexDigit(c) {
					return "", false
				}
			}
		}
		return string(b), true
	}
	return "", false
}

// Container cgroup names of the runtimes: under the systemd driver a
// scope "<prefix><id>.scope", under cgroupfs the bare ID or "crio-<id>".
var (
	systemdContainerPrefixes  = []string{"cri-containerd-", "crio-", "docker-"}
	cgroupfsContainerPrefixes = []string{"", "crio-", "docker-"}
)

// crioMonitorPrefix names the cgroup of conmon, CRI-O's monitor process
// of a container. conmon runs in the node's namespaces, so its cgroup
// names no pod for the purpose of a network namespace.
const crioMonitorPrefix = "crio-conmon-"

// containerSegment returns the container ID named by the segment after a
// pod's, and whether it is CRI-O's monitor rather than a container.
func containerSegment(seg string, systemd bool) (id string, monitor bool) {
	prefixes := cgroupfsContainerPrefixes
	if systemd {
		name, isScope := strings.CutSuffix(seg, ".scope")
		if !isScope {
			return "", false
		}
		seg, prefixes = name, systemdContainerPrefixes
	}
	if rest, ok := strings.CutPrefix(seg, crioMonitorPrefix); ok && isContainerID(rest) {
		return "", true
	}
	for _, p := range prefixes {
		if rest, ok := strings.CutPrefix(seg, p); ok && isContainerID(rest) {
			return rest, false
		}
	}
	return "", false
}

// isContainerID reports whether s is 64 lowercase hex digits.
func isContainerID(s string) bool { return len(s) == 64 && isLowerHex(s) }

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if !lowerHexDigit(s[i]) {
			return false
		}
	}
	return true
}

func lowerHexDigit(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' }
