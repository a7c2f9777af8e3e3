package artifacts_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	kjson "sigs.k8s.io/json"
)

const (
	k8sDir        = "deploy/kubernetes"
	metricsPort   = 9549
	exporterImage = "ct-exporter"
)

// kustomization is the part of kustomize's Kustomization type the project
// uses; decoding is strict, so any other field is an error.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace,omitempty"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
		Digest  string `json:"digest,omitempty"`
	} `json:"images,omitempty"`
	Patches []struct {
		Path string `json:"path"`
	} `json:"patches,omitempty"`
}

// decodeStrict reads a YAML manifest (one document) into obj the way the
// API server's strict field validation does: field names are matched case
// sensitively, and unknown fields, duplicate keys and wrong types fail.
func decodeStrict(t *testing.T, rel string, obj any) {
	t.Helper()
	j, err := yamlToJSON(readRepoFile(t, rel))
	if err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	strictErrs, err := kjson.UnmarshalStrict(j, obj, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	for _, e := range strictErrs {
		t.Errorf("%s: %v", rel, e)
	}
	if len(strictErrs) > 0 {
		t.FailNow()
	}
}

// yamlToJSON converts one YAML document to JSON. Duplicate keys and a
// second document are errors.
func yamlToJSON(doc []byte) ([]byte, error) {
	dec := yaml.NewDecoder(bytes.NewReader(doc))
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("more than one YAML document")
	}
	return json.Marshal(v)
}

func loadKustomization(t *testing.T, rel string) kustomization {
	t.Helper()
	var k kustomization
	decodeStrict(t, rel, &k)
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("%s: apiVersion/kind %s/%s", rel, k.APIVersion, k.Kind)
	}
	return k
}

// TestKustomizationListsEveryManifest decodes every resource the base lists
// into its real API type, and requires every manifest in the directory to be
// listed.
func TestKustomizationListsEveryManifest(t *testing.T) {
	k := loadKustomization(t, k8sDir+"/kustomization.yaml")
	if k.Namespace != "ct-exporter" {
		t.Errorf("namespace %q, want ct-exporter", k.Namespace)
	}
	files, err := filepath.Glob(repoPath(k8sDir + "/*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		base := filepath.Base(f)
		if base != "kustomization.yaml" && !slices.Contains(k.Resources, base) {
			t.Errorf("%s/%s is not listed in kustomization.yaml resources", k8sDir, base)
		}
	}
	kinds := map[string]int{}
	for _, r := range k.Resources {
		rel := k8sDir + "/" + r
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		j, err := yamlToJSON(readRepoFile(t, rel))
		if err == nil {
			err = json.Unmarshal(j, &meta)
		}
		if err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		kinds[meta.Kind]++
		var obj any
		switch meta.APIVersion + " " + meta.Kind {
		case "v1 Namespace":
			obj = &corev1.Namespace{}
		case "v1 ServiceAccount":
			obj = &corev1.ServiceAccount{}
		case "v1 Service":
			obj = &corev1.Service{}
		case "apps/v1 DaemonSet":
			obj = &appsv1.DaemonSet{}
		case "monitoring.coreos.com/v1 PodMonitor":
			obj = &monitoringv1.PodMonitor{}
		case "monitoring.coreos.com/v1 PrometheusRule":
			obj = &monitoringv1.PrometheusRule{}
		default:
			t.Errorf("%s: unexpected %s %s", rel, meta.APIVersion, meta.Kind)
			continue
		}
		decodeStrict(t, rel, obj)
	}
	for _, kind := range []string{"Namespace", "ServiceAccount", "DaemonSet", "Service", "PodMonitor"} {
		if kinds[kind] != 1 {
			t.Errorf("%d %s resources listed, want 1", kinds[kind], kind)
		}
	}
	if len(k.Images) != 1 || k.Images[0].Name != exporterImage {
		t.Errorf("images: want one entry for %q, got %+v", exporterImage, k.Images)
	}
}

func loadDaemonSet(t *testing.T, rel string) *appsv1.DaemonSet {
	t.Helper()
	ds := &appsv1.DaemonSet{}
	decodeStrict(t, rel, ds)
	return ds
}

func findContainer(t *testing.T, spec *corev1.PodSpec, name string) *corev1.Container {
	t.Helper()
	for i := range spec.Containers {
		if spec.Containers[i].Name == name {
			return &spec.Containers[i]
		}
	}
	t.Fatalf("no container %q", name)
	return nil
}

func capNames(cs []corev1.Capability) []string {
	var out []string
	for _, c := range cs {
		out = append(out, string(c))
	}
	return out
}

// TestDaemonSetSecurity checks the DaemonSet's isolation: host network,
// non-root numeric user, NET_ADMIN only, read-only root, no escalation,
// RuntimeDefault seccomp, probes and resources.
func TestDaemonSetSecurity(t *testing.T) {
	ds := loadDaemonSet(t, k8sDir+"/daemonset.yaml")
	pod := &ds.Spec.Template.Spec
	c := findContainer(t, pod, "ct-exporter")

	if !pod.HostNetwork {
		t.Error("hostNetwork must be true: the exporter watches the node's table")
	}
	if pod.HostPID || pod.HostIPC {
		t.Error("hostPID/hostIPC must stay off")
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("automountServiceAccountToken must be false")
	}
	if len(pod.Volumes) != 0 || len(c.VolumeMounts) != 0 {
		t.Error("the base DaemonSet mounts nothing")
	}
	sel := ds.Spec.Selector.MatchLabels
	for k, v := range sel {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the pod template", k, v)
		}
	}

	psc := pod.SecurityContext
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("pod seccompProfile must be RuntimeDefault")
	}
	sc := c.SecurityContext
	if sc == nil {
		t.Fatal("container securityContext missing")
	}
	if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Error("runAsNonRoot must be true")
	}
	if sc.RunAsUser == nil || *sc.RunAsUser == 0 {
		t.Error("runAsUser must be a numeric non-zero UID")
	} else if uid := dockerfileUser(t); *sc.RunAsUser != uid {
		t.Errorf("runAsUser %d differs from the image's USER %d", *sc.RunAsUser, uid)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation must be false")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("privileged must be false")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem must be true")
	}
	if sc.Capabilities == nil {
		t.Fatal("capabilities missing")
	}
	if got := capNames(sc.Capabilities.Drop); !slices.Equal(got, []string{"ALL"}) {
		t.Errorf("capabilities.drop %v, want [ALL]", got)
	}
	if got := capNames(sc.Capabilities.Add); !slices.Equal(got, []string{"NET_ADMIN"}) {
		t.Errorf("capabilities.add %v, want [NET_ADMIN]", got)
	}
	if sc.SeccompProfile != nil && sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("container seccompProfile must be RuntimeDefault")
	}

	if !strings.HasPrefix(c.Image, exporterImage+":") || strings.HasSuffix(c.Image, ":latest") {
		t.Errorf("image %q: want %s:<tag>, not latest", c.Image, exporterImage)
	}
	if len(c.Ports) != 1 || c.Ports[0].Name != "metrics" || c.Ports[0].ContainerPort != metricsPort {
		t.Errorf("ports %+v: want one port %d named metrics", c.Ports, metricsPort)
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"liveness", c.LivenessProbe, "/-/healthy"}, {"readiness", c.ReadinessProbe, "/-/ready"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s probe must be an httpGet", p.name)
			continue
		}
		g := p.probe.HTTPGet
		port := g.Port
		if port.Type == intstr.String && port.StrVal == "metrics" {
			port = intstr.FromInt32(metricsPort)
		}
		if g.Path != p.path || port.IntValue() != metricsPort {
			t.Errorf("%s probe GET %s on %s, want %s on %d", p.name, g.Path, g.Port.String(), p.path, metricsPort)
		}
	}
	if !slices.Contains(c.Args, "--web.listen-address=:9549") {
		t.Errorf("args %v: want --web.listen-address=:9549", c.Args)
	}

	res := c.Resources
	for name, want := range map[string]string{"requests.cpu": "20m", "requests.memory": "32Mi", "limits.memory": "128Mi"} {
		list := res.Requests
		if strings.HasPrefix(name, "limits.") {
			list = res.Limits
		}
		q, ok := list[corev1.ResourceName(strings.SplitN(name, ".", 2)[1])]
		if !ok || q.String() != want {
			t.Errorf("resources %s = %v, want %s", name, q.String(), want)
		}
	}
}

// TestServiceAndPodMonitor checks that the headless Service and the
// PodMonitor select the DaemonSet's pods on the port named metrics.
func TestServiceAndPodMonitor(t *testing.T) {
	ds := loadDaemonSet(t, k8sDir+"/daemonset.yaml")
	podLabels := ds.Spec.Template.Labels

	svc := &corev1.Service{}
	decodeStrict(t, k8sDir+"/service.yaml", svc)
	if svc.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("clusterIP %q, want None (headless)", svc.Spec.ClusterIP)
	}
	if len(svc.Spec.Selector) == 0 {
		t.Error("service selector is empty")
	}
	for k, v := range svc.Spec.Selector {
		if podLabels[k] != v {
			t.Errorf("service selector %s=%s does not match the pods", k, v)
		}
	}
	if len(svc.Spec.Ports) != 1 {
		t.Fatalf("want one service port, got %d", len(svc.Spec.Ports))
	}
	sp := svc.Spec.Ports[0]
	if sp.Name != "metrics" || sp.Port != metricsPort || sp.TargetPort.String() != "metrics" {
		t.Errorf("service port %+v: want metrics %d -> metrics", sp, metricsPort)
	}

	pm := &monitoringv1.PodMonitor{}
	decodeStrict(t, k8sDir+"/podmonitor.yaml", pm)
	if len(pm.Spec.Selector.MatchLabels) == 0 {
		t.Error("PodMonitor selector is empty")
	}
	for k, v := range pm.Spec.Selector.MatchLabels {
		if podLabels[k] != v {
			t.Errorf("PodMonitor selector %s=%s does not match the pods", k, v)
		}
	}
	if len(pm.Spec.PodMetricsEndpoints) != 1 {
		t.Fatalf("want one podMetricsEndpoint, got %d", len(pm.Spec.PodMetricsEndpoints))
	}
	ep := pm.Spec.PodMetricsEndpoints[0]
	if ep.Port == nil || *ep.Port != "metrics" || ep.Path != "/metrics" {
		t.Errorf("podMetricsEndpoint port %v path %q, want metrics /metrics", ep.Port, ep.Path)
	}
}

// TestNetnsOverlay checks the opt-in overlay for pod namespaces: it patches
// the base DaemonSet, adds SYS_ADMIN (needed by setns) to NET_ADMIN and
// nothing else, and mounts the host's /run/netns read-only with
// HostToContainer propagation.
func TestNetnsOverlay(t *testing.T) {
	const dir = k8sDir + "/netns"
	k := loadKustomization(t, dir+"/kustomization.yaml")
	if !slices.Equal(k.Resources, []string{".."}) {
		t.Errorf("overlay resources %v, want [..]", k.Resources)
	}
	if len(k.Patches) != 1 {
		t.Fatalf("want one patch, got %d", len(k.Patches))
	}
	patch := dir + "/" + k.Patches[0].Path
	if _, err := os.Stat(repoPath(patch)); err != nil {
		t.Fatal(err)
	}
	ds := loadDaemonSet(t, patch)
	base := loadDaemonSet(t, k8sDir+"/daemonset.yaml")
	if ds.Name != base.Name || ds.Kind != "DaemonSet" {
		t.Errorf("patch targets %s %q, want DaemonSet %q", ds.Kind, ds.Name, base.Name)
	}
	pod := &ds.Spec.Template.Spec
	c := findContainer(t, pod, "ct-exporter")
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatal("patch sets no capabilities")
	}
	if got := capNames(sc.Capabilities.Drop); !slices.Equal(got, []string{"ALL"}) {
		t.Errorf("capabilities.drop %v, want [ALL]", got)
	}
	if got := capNames(sc.Capabilities.Add); !slices.Equal(got, []string{"NET_ADMIN", "SYS_ADMIN"}) {
		t.Errorf("capabilities.add %v, want [NET_ADMIN SYS_ADMIN]", got)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation must stay false")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("privileged must stay off")
	}
	if len(c.VolumeMounts) != 1 {
		t.Fatalf("want one volume mount, got %d", len(c.VolumeMounts))
	}
	m := c.VolumeMounts[0]
	if m.MountPath != "/run/netns" || !m.ReadOnly || m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationHostToContainer {
		t.Errorf("mount %+v: want /run/netns read-only, HostToContainer", m)
	}
	if len(pod.Volumes) != 1 || pod.Volumes[0].Name != m.Name || pod.Volumes[0].HostPath == nil || pod.Volumes[0].HostPath.Path != "/run/netns" {
		t.Errorf("volumes %+v: want hostPath /run/netns named %q", pod.Volumes, m.Name)
	}
	hasNetns := false
	for _, a := range c.Args {
		if strings.HasPrefix(a, "--conntrack.netns=/run/netns/") {
			hasNetns = true
		}
	}
	if !hasNetns {
		t.Errorf("args %v: want a --conntrack.netns=/run/netns/... example", c.Args)
	}
}

// TestPodsOverlay checks the opt-in overlay that watches every pod's
// namespace and names its pod: host PID namespace, /proc discovery, root
// with NET_ADMIN, SYS_ADMIN and SYS_PTRACE and nothing else, no host path,
// no escalation, not privileged; the base's host network stays.
func TestPodsOverlay(t *testing.T) {
	const dir = k8sDir + "/pods"
	k := loadKustomization(t, dir+"/kustomization.yaml")
	if !slices.Equal(k.Resources, []string{".."}) {
		t.Errorf("overlay resources %v, want [..]", k.Resources)
	}
	if len(k.Patches) != 1 {
		t.Fatalf("want one patch, got %d", len(k.Patches))
	}
	ds := loadDaemonSet(t, dir+"/"+k.Patches[0].Path)
	base := loadDaemonSet(t, k8sDir+"/daemonset.yaml")
	if ds.Name != base.Name || ds.Kind != "DaemonSet" {
		t.Errorf("patch targets %s %q, want DaemonSet %q", ds.Kind, ds.Name, base.Name)
	}
	pod := &ds.Spec.Template.Spec
	if !pod.HostPID {
		t.Error("hostPID must be true: /proc discovery reads the node's processes")
	}
	if pod.HostIPC {
		t.Error("hostIPC must stay off")
	}
	if len(pod.Volumes) != 0 {
		t.Errorf("volumes %+v: the overlay mounts nothing", pod.Volumes)
	}
	c := findContainer(t, pod, "ct-exporter")
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatal("patch sets no capabilities")
	}
	if got := capNames(sc.Capabilities.Drop); !slices.Equal(got, []string{"ALL"}) {
		t.Errorf("capabilities.drop %v, want [ALL]", got)
	}
	if got := capNames(sc.Capabilities.Add); !slices.Equal(got, []string{"NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE"}) {
		t.Errorf("capabilities.add %v, want [NET_ADMIN SYS_ADMIN SYS_PTRACE]", got)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation must stay false")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("privileged must stay off")
	}
	if len(c.VolumeMounts) != 0 {
		t.Errorf("volume mounts %+v: the overlay mounts nothing", c.VolumeMounts)
	}
	if !slices.Contains(c.Args, "--conntrack.netns-discover-proc") {
		t.Errorf("args %v: want --conntrack.netns-discover-proc", c.Args)
	}
}

// TestManifestFlagsExist checks that every flag the manifests pass is one
// the binary knows.
func TestManifestFlagsExist(t *testing.T) {
	help := helpText(t, exporterBinary(t))
	for _, rel := range []string{k8sDir + "/daemonset.yaml", k8sDir + "/netns/daemonset-netns.yaml", k8sDir + "/pods/daemonset-pods.yaml"} {
		c := findContainer(t, &loadDaemonSet(t, rel).Spec.Template.Spec, "ct-exporter")
		for _, a := range c.Args {
			name, _, _ := strings.Cut(a, "=")
			// A boolean flag is listed as --[no-]NAME.
			if !strings.Contains(help, name) && !strings.Contains(help, "--[no-]"+strings.TrimPrefix(name, "--")) {
				t.Errorf("%s passes %s, which `ct-exporter --help` does not list", rel, name)
			}
		}
	}
}
