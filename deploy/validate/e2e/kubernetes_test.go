package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/ct-exporter/ct-exporter/deploy/validate/alerts"
	"github.com/ct-exporter/ct-exporter/deploy/validate/grafana"
)

// This file stands in for kube-state-metrics in the end-to-end run: a
// static exposition of kube_pod_info, kube_pod_status_phase and
// kube_pod_created, scraped as a job of its own, so that the shipped
// Kubernetes recording rules (alerts/kubernetes.rules.yml) join the
// exporter's addresses with pods in a real Prometheus.

// ksmJob is the scrape job of the kube-state-metrics stand-in.
const ksmJob = "kube-state-metrics"

// ksmPod is one pod as kube-state-metrics reports it.
type ksmPod struct {
	Namespace, Name, UID string
	IP                   string
	HostNetwork          bool
	// Phase is the pod's phase: Pending, Running, Succeeded, Failed or
	// Unknown.
	Phase string
	// Created is the pod's creation time, Unix seconds.
	Created int64
}

// ksmPhases are the phases kube-state-metrics reports for every pod, 1 for
// the pod's phase and 0 for the others.
var ksmPhases = []string{"Pending", "Running", "Succeeded", "Failed", "Unknown"}

// ksmExposition returns the text exposition kube-state-metrics serves for
// pods: kube_pod_info, kube_pod_status_phase and kube_pod_created, with
// the labels kube-state-metrics v2 gives them.
func ksmExposition(pods []ksmPod) []byte {
	var info, phase, created strings.Builder
	for _, p := range pods {
		id := fmt.Sprintf(`namespace=%q,pod=%q,uid=%q`, p.Namespace, p.Name, p.UID)
		fmt.Fprintf(&info, "kube_pod_info{%s,host_ip=\"10.0.0.1\",pod_ip=%q,node=\"node-a\",created_by_kind=\"StatefulSet\",created_by_name=%q,priority_class=\"\",host_network=\"%t\"} 1\n",
			id, p.IP, p.Name, p.HostNetwork)
		for _, ph := range ksmPhases {
			v := 0
			if ph == p.Phase {
				v = 1
			}
			fmt.Fprintf(&phase, "kube_pod_status_phase{%s,phase=%q} %d\n", id, ph, v)
		}
		fmt.Fprintf(&created, "kube_pod_created{%s} %d\n", id, p.Created)
	}
	return []byte("# HELP kube_pod_info Information about pod.\n# TYPE kube_pod_info gauge\n" + info.String() +
		"# HELP kube_pod_status_phase The pods current phase.\n# TYPE kube_pod_status_phase gauge\n" + phase.String() +
		"# HELP kube_pod_created Unix creation timestamp\n# TYPE kube_pod_created gauge\n" + created.String())
}

// startKubeStateMetrics serves exposition on loopback until the test ends
// and returns its host:port.
func startKubeStateMetrics(t *testing.T, exposition []byte) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		w.Write(exposition)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// kubernetesTestRules returns the shipped Kubernetes and fleet recording
// rules, time-scaled as the main rules are (ruleScale).
func kubernetesTestRules(t *testing.T) []byte {
	t.Helper()
	prod, err := alerts.KubernetesRules()
	if err != nil {
		t.Fatal(err)
	}
	scaled, err := alerts.Scaled(prod, ruleScale())
	if err != nil {
		t.Fatal(err)
	}
	return scaled
}

// drillPods are the pods the kube-state-metrics stand-in reports in a run
// whose lifetime drill dials from client to server (the drill's addresses)
// and whose other namespaces use nodeAddr, here the address of the node's
// host-network pods:
//   - drill/client and drill/server, running, with the drill's addresses;
//   - drill/client-old, a completed (Succeeded) pod whose address the
//     client reused;
//   - kube-system/kube-proxy and monitoring/node-exporter, host-network
//     pods that share the node's address.
func drillPods(client, server, nodeAddr string) []ksmPod {
	const uid = "6f1c2a3b-0000-4000-8000-00000000000"
	return []ksmPod{
		{Namespace: "drill", Name: "client", UID: uid + "1", IP: client, Phase: "Running", Created: 1700000300},
		{Namespace: "drill", Name: "server", UID: uid + "2", IP: server, Phase: "Running", Created: 1700000200},
		{Namespace: "drill", Name: "client-old", UID: uid + "3", IP: client, Phase: "Succeeded", Created: 1700000100},
		{Namespace: "kube-system", Name: "kube-proxy", UID: uid + "4", IP: nodeAddr, HostNetwork: true, Phase: "Running", Created: 1690000000},
		{Namespace: "monitoring", Name: "node-exporter", UID: uid + "5", IP: nodeAddr, HostNetwork: true, Phase: "Running", Created: 1690000000},
	}
}

// joinedSeries is one series a ":pod" recording rule produced during the
// run, by its labels.
type joinedSeries struct {
	rule   string
	labels model.Metric
}

// podSeries returns every series of the ":pod" address rules (top sources
// of flow ends and of table entries, silent-end destinations) over the
// run, that is, every address the rules joined with a pod.
func podSeries(t *testing.T, s *stack, end time.Time) []joinedSeries {
	t.Helper()
	var out []joinedSeries
	for _, rule := range []string{
		"netns:conntrack_flow_ends_top_source:pod",
		"netns:conntrack_flow_silent_ends_top_destination:pod",
		"netns:conntrack_table_top_source_entries:pod",
	} {
		m, err := s.prom.QueryRange(context.Background(), rule, s.start, end, scrapeInterval)
		if err != nil {
			t.Fatalf("%s: %v", rule, err)
		}
		for _, ss := range m {
			out = append(out, joinedSeries{rule: rule, labels: ss.Metric})
		}
	}
	return out
}

// addressSeries returns the label sets of the exporter's series of family
// with the label addrLabel equal to addr in netns over the run.
func addressSeries(t *testing.T, s *stack, end time.Time, family, addrLabel, addr, netns string) []model.Metric {
	t.Helper()
	expr := fmt.Sprintf(`%s{job=%q, netns=%q, %s=%q}`, family, promJob, netns, addrLabel, addr)
	m, err := s.prom.QueryRange(context.Background(), expr, s.start, end, scrapeInterval)
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	var out []model.Metric
	for _, ss := range m {
		out = append(out, ss.Metric)
	}
	return out
}

// wantJoin is an address of the run that a ":pod" rule must join with a
// pod in one namespace of the exporter.
type wantJoin struct {
	rule, addrLabel, addr, port, netns string
	namespace, pod                     string
}

// checkPodJoins checks what the Kubernetes recording rules made of the
// run with kube-state-metrics: each of want is joined with its pod, and
// only with it (a completed pod with the same address never); the
// host-network pods' address hostAddr, which the exporter reports in
// hostNetns, is never joined; a joined series carries the exporter's
// labels plus namespace and pod, and none of kube-state-metrics' own. It
// logs every joined series.
func checkPodJoins(t *testing.T, s *stack, end time.Time, want []wantJoin, hostAddr, hostNetns string) {
	joined := podSeries(t, s, end)
	for _, j := range joined {
		t.Logf("joined: %v", j.labels)
		for _, l := range []model.LabelName{"uid", "pod_ip", "host_ip", "host_network", "created_by_kind", "phase", "container"} {
			if _, ok := j.labels[l]; ok {
				t.Errorf("%s%v carries kube-state-metrics' or the target's label %s", j.rule, j.labels, l)
			}
		}
		if j.labels["job"] != promJob || j.labels["instance"] != model.LabelValue(s.exporter.Addr) {
			t.Errorf("%s%v: want the exporter's job %s and instance %s", j.rule, j.labels, promJob, s.exporter.Addr)
		}
		if j.labels["source"] == model.LabelValue(hostAddr) || j.labels["destination"] == model.LabelValue(hostAddr) {
			t.Errorf("%s%v: the host-network pods' address %s was joined with a pod", j.rule, j.labels, hostAddr)
		}
	}
	for _, w := range want {
		var pods []string
		for _, j := range joined {
			if j.rule != w.rule || string(j.labels[model.LabelName(w.addrLabel)]) != w.addr || string(j.labels["netns"]) != w.netns {
				continue
			}
			if w.port != "" && string(j.labels["port"]) != w.port {
				continue
			}
			if p := string(j.labels["namespace"]) + "/" + string(j.labels["pod"]); !slices.Contains(pods, p) {
				pods = append(pods, p)
			}
		}
		if wantPod := w.namespace + "/" + w.pod; !slices.Equal(pods, []string{wantPod}) {
			t.Errorf("%s{netns=%q, %s=%q, port=%q}: pods %v over the run, want only %s", w.rule, w.netns, w.addrLabel, w.addr, w.port, pods, wantPod)
		} else {
			t.Logf("%s{netns=%q, %s=%q}: joined with pod %s", w.rule, w.netns, w.addrLabel, w.addr, wantPod)
		}
	}
	// The host-network address is there to be joined: the exporter
	// reported it, and the rules left it alone.
	raw := addressSeries(t, s, end, "conntrack_table_top_source_entries", "source", hostAddr, hostNetns)
	if len(raw) == 0 {
		t.Errorf("no conntrack_table_top_source_entries{netns=%q, source=%q} during the run: the host-network case checks nothing", hostNetns, hostAddr)
	} else {
		t.Logf("conntrack_table_top_source_entries{netns=%q, source=%q} (host-network pods' address): %d series, none joined", hostNetns, hostAddr, len(raw))
	}
}

// checkNoPodJoins checks the run without kube-state-metrics: the ":pod"
// rules produce nothing (and evaluate without error, see checkRuleHealth).
func checkNoPodJoins(t *testing.T, s *stack, end time.Time) {
	for _, j := range podSeries(t, s, end) {
		t.Errorf("without kube-state-metrics, %s%v", j.rule, j.labels)
	}
}

// checkPanelNames runs the instant query of the dashboard panel title
// (refId A) for netns at the end of the run and checks that one bar's
// "who" label is want: "namespace/pod address" where the rules joined the
// address with a pod, the address alone where they did not.
func checkPanelNames(t *testing.T, s *stack, end time.Time, title, netns, want string) {
	q := dashboardQuery(t, title, "A")
	expr := expandForNetns(t, s, q.Expr, netns)
	v, err := s.prom.Query(context.Background(), expr, end)
	if err != nil {
		t.Fatalf("panel %q: %s: %v", title, expr, err)
	}
	vec, ok := v.(model.Vector)
	if !ok {
		t.Fatalf("panel %q returned %s", title, v.Type())
	}
	var who []string
	for _, smp := range vec {
		who = append(who, string(smp.Metric["who"]))
	}
	t.Logf("panel %q for netns %s shows %v", title, netns, who)
	if !slices.Contains(who, want) {
		t.Errorf("panel %q for netns %s shows %v, want %q among them: %s", title, netns, who, want, expr)
	}
}

// dashboardQuery returns the query refID of the shipped dashboard's panel
// title.
func dashboardQuery(t *testing.T, title, refID string) grafana.PanelQuery {
	t.Helper()
	path, err := grafana.DashboardFile()
	if err != nil {
		t.Fatal(err)
	}
	queries, err := grafana.PanelQueries(path)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(queries, func(q grafana.PanelQuery) bool { return q.PanelTitle == title && q.RefID == refID })
	if i < 0 {
		t.Fatalf("dashboard has no panel %q with query %s", title, refID)
	}
	return queries[i]
}

// expandForNetns expands a dashboard query as Grafana does with the run's
// exporter and one namespace selected.
func expandForNetns(t *testing.T, s *stack, expr, netns string) string {
	t.Helper()
	out, err := grafana.Expand(expr, map[string]string{
		"instance":        strings.ReplaceAll(regexp.QuoteMeta(s.exporter.Addr), `\`, `\\`),
		"netns":           regexp.QuoteMeta(netns),
		"__rate_interval": grafana.RateInterval(scrapeInterval, 2*time.Second),
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
