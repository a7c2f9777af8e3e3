package grafana_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ct-exporter/ct-exporter/deploy/validate/alerts"
	"github.com/ct-exporter/ct-exporter/deploy/validate/grafana"
)

// exporterMetrics are the metric names ct-exporter exposes (docs/CONTRACT.md
// and DESIGN.md), plus Prometheus' own up. Histograms are listed by their
// base name.
var exporterMetrics = []string{
	"conntrack_entries", "conntrack_entries_limit", "conntrack_fill_ratio",
	"conntrack_stat_found_total", "conntrack_stat_invalid_total",
	"conntrack_stat_insert_total", "conntrack_stat_insert_failed_total",
	"conntrack_stat_drop_total", "conntrack_stat_early_drop_total",
	"conntrack_stat_error_total", "conntrack_stat_search_restart_total",
	"conntrack_stat_clash_resolve_total", "conntrack_stat_chaintoolong_total",
	"conntrack_tcp_timeout_seconds", "conntrack_timestamp_enabled", "conntrack_events_mode",
	"conntrack_events_total", "conntrack_exporter_events_lost_total",
	"conntrack_exporter_event_overruns_total", "conntrack_exporter_flows_without_timestamp_total",
	"conntrack_table_entries", "conntrack_table_top_source_entries",
	"conntrack_table_top_destination_port_entries", "conntrack_table_shortened_timeout_entries",
	"conntrack_table_scan_duration_seconds", "conntrack_table_last_scan_timestamp_seconds",
	"conntrack_exporter_collector_success", "conntrack_exporter_collector_duration_seconds",
	"conntrack_exporter_build_info", "up",
	"conntrack_table_nat_entries", "conntrack_table_unreplied_entries",
	"conntrack_table_evictable_entries", "conntrack_table_helper_entries",
	"conntrack_flow_ends_top_source", "conntrack_flow_silent_ends_top_destination",
	"conntrack_flow_top_window_ends", "conntrack_flow_top_error_bound_ends",
}

var histograms = []string{"conntrack_flow_lifetime_seconds"}

// withoutNetns are the known metrics that carry no netns label.
var withoutNetns = []string{"up", "conntrack_exporter_build_info"}

// knownNames returns every metric name a dashboard query may use: the
// exporter's metrics, the series of its histograms, and the recording rules
// of alerts/.
func knownNames(t *testing.T) map[string]bool {
	t.Helper()
	known := map[string]bool{}
	for _, m := range exporterMetrics {
		known[m] = true
	}
	for _, h := range histograms {
		known[h] = true // the native histogram series
		for _, s := range []string{"_bucket", "_count", "_sum"} {
			known[h+s] = true
		}
	}
	for _, read := range []func() ([]byte, error){alerts.Rules, alerts.KubernetesRules} {
		b, err := read()
		if err != nil {
			t.Fatal(err)
		}
		rules, err := alerts.Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rules.RecordingRules() {
			known[r.Record] = true
		}
	}
	return known
}

// isFleetRule says whether name is a fleet recording rule ("job:" level):
// one series per cluster and job, or a few nodes of each. The fleet row
// shows every exporter the data source sees, so its queries are not
// filtered by the dashboard's instance and netns variables.
func isFleetRule(name string) bool {
	return strings.HasPrefix(name, "job:")
}

// dashboardFile returns the path of the repository's dashboard.
func dashboardFile(t *testing.T) string {
	t.Helper()
	p, err := grafana.DashboardFile()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func loadDashboard(t *testing.T) *grafana.Dashboard {
	t.Helper()
	d, err := grafana.Load(dashboardFile(t))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestParseStrict(t *testing.T) {
	b, err := grafana.DashboardJSON()
	if err != nil {
		t.Fatal(err)
	}
	good := string(b)
	for name, doc := range map[string]string{
		"unknown top-level field": strings.Replace(good, `"uid":`, `"links": [], "uid":`, 1),
		"unknown panel field":     strings.Replace(good, `"gridPos":`, `"transparent": true, "gridPos":`, 1),
		"unknown target field":    strings.Replace(good, `"refId":`, `"hide": false, "refId":`, 1),
		"wrong type":              strings.Replace(good, `"schemaVersion": 39`, `"schemaVersion": "39"`, 1),
		"trailing data":           good + "{}",
		"not JSON":                "uid: x",
	} {
		if doc == good {
			t.Fatalf("%s: the mutation did not apply", name)
		}
		if _, err := grafana.Parse([]byte(doc)); !errors.Is(err, grafana.ErrInvalidDashboard) {
			t.Errorf("%s: error = %v; want ErrInvalidDashboard", name, err)
		}
	}
}

func TestDashboardBasics(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q, title %q: both must be set", d.UID, d.Title)
	}
	if len(d.Panels) == 0 {
		t.Fatal("no panels")
	}
}

func TestPanels(t *testing.T) {
	d := loadDashboard(t)
	ids := map[int]string{}
	type rect struct {
		title string
		pos   grafana.GridPos
	}
	var placed []rect
	for _, p := range d.AllPanels() {
		if p.ID <= 0 {
			t.Errorf("panel %q: id %d, want > 0", p.Title, p.ID)
		}
		if other, dup := ids[p.ID]; dup {
			t.Errorf("panel id %d used by %q and %q", p.ID, other, p.Title)
		}
		ids[p.ID] = p.Title
		if p.Title == "" {
			t.Errorf("panel %d has no title", p.ID)
		}
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.Y < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, g)
		}
		for _, r := range placed {
			o := r.pos
			if g.X < o.X+o.W && o.X < g.X+g.W && g.Y < o.Y+o.H && o.Y < g.Y+g.H {
				t.Errorf("panels %q and %q overlap", r.title, p.Title)
			}
		}
		placed = append(placed, rect{p.Title, g})
		if p.Type == "row" {
			if len(p.Targets) != 0 {
				t.Errorf("row %q has targets", p.Title)
			}
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource %+v, want uid ${datasource}", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no targets", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q target %q: empty expr", p.Title, tg.RefID)
			}
			if tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("panel %q: missing or duplicate refId %q", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			if tg.Datasource != nil && tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q target %q: datasource %+v", p.Title, tg.RefID, tg.Datasource)
			}
			if p.Type == "heatmap" && (tg.Format != "heatmap" || !strings.Contains(tg.Expr, "_bucket") || !strings.Contains(tg.Expr, "by (le)")) {
				t.Errorf("heatmap %q target %q must sum _bucket series by (le) in heatmap format", p.Title, tg.RefID)
			}
		}
	}
}

func TestVariables(t *testing.T) {
	d := loadDashboard(t)
	ds := d.Variable("datasource")
	if ds == nil || ds.Type != "datasource" || ds.Query != "prometheus" {
		t.Fatalf("datasource variable: %+v", ds)
	}
	known := knownNames(t)
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*([a-z_]+)\)$`)
	for _, name := range []string{"instance", "netns"} {
		v := d.Variable(name)
		if v == nil {
			t.Errorf("variable %q missing", name)
			continue
		}
		if v.Type != "query" || v.Datasource == nil || v.Datasource.UID != "${datasource}" {
			t.Errorf("variable %q: type %q datasource %+v", name, v.Type, v.Datasource)
		}
		if !v.Multi || !v.IncludeAll {
			t.Errorf("variable %q must allow several values and All", name)
		}
		m := labelValues.FindStringSubmatch(v.Query)
		if m == nil || m[2] != name {
			t.Errorf("variable %q: query %q is not label_values(..., %s)", name, v.Query, name)
			continue
		}
		names, err := grafana.MetricNames(m[1])
		if err != nil || len(names) != 1 || !known[names[0]] {
			t.Errorf("variable %q: query %q uses metrics %v (%v)", name, v.Query, names, err)
		}
	}
}

// TestQueriesUseKnownMetrics is the guard against a dashboard that queries
// a metric nobody exports.
func TestQueriesUseKnownMetrics(t *testing.T) {
	known := knownNames(t)
	queries, err := grafana.PanelQueries(dashboardFile(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range queries {
		sels, err := grafana.Selectors(q.Expr)
		if err != nil {
			t.Errorf("panel %q %s: %v", q.PanelTitle, q.RefID, err)
			continue
		}
		if len(sels) == 0 {
			t.Errorf("panel %q %s: no metric in %q", q.PanelTitle, q.RefID, q.Expr)
		}
		for _, s := range sels {
			if !known[s.Name] {
				t.Errorf("panel %q %s: unknown metric %q", q.PanelTitle, q.RefID, s.Name)
			}
			if isFleetRule(s.Name) {
				if strings.Contains(s.Matchers, "$instance") || strings.Contains(s.Matchers, "$netns") {
					t.Errorf("panel %q %s: fleet rule %s is filtered by the instance or netns variable: %s", q.PanelTitle, q.RefID, s.Name, s.Matchers)
				}
				continue
			}
			if !strings.Contains(s.Matchers, `instance=~"$instance"`) {
				t.Errorf("panel %q %s: %s is not filtered by $instance", q.PanelTitle, q.RefID, s.Name)
			}
			if !slices.Contains(withoutNetns, s.Name) && !strings.Contains(s.Matchers, `netns=~"$netns"`) {
				t.Errorf("panel %q %s: %s is not filtered by $netns", q.PanelTitle, q.RefID, s.Name)
			}
		}
	}
}

// TestHistogramQueriesHaveNativeForm: a query that reads a histogram's
// classic series (_bucket, _count) also reads its native histogram, so
// that the panel has data whether Prometheus ingested classic series,
// native histograms or both.
func TestHistogramQueriesHaveNativeForm(t *testing.T) {
	queries, err := grafana.PanelQueries(dashboardFile(t))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, q := range queries {
		names, err := grafana.MetricNames(q.Expr)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range histograms {
			if slices.Contains(names, h+"_bucket") || slices.Contains(names, h+"_count") {
				n++
				if !slices.Contains(names, h) {
					t.Errorf("panel %q %s reads the classic series of %s but not its native histogram: %s", q.PanelTitle, q.RefID, h, q.Expr)
				}
			}
		}
	}
	if n == 0 {
		t.Error("no panel reads a histogram: the test checks nothing")
	}
}

// TestDashboardCoverage: the panels the dashboard promises are there.
func TestDashboardCoverage(t *testing.T) {
	queries, err := grafana.PanelQueries(dashboardFile(t))
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	panelTypes := map[string]bool{}
	for _, q := range queries {
		names, err := grafana.MetricNames(q.Expr)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			used[n] = true
		}
		panelTypes[q.PanelType] = true
	}
	for _, m := range []string{
		"conntrack_fill_ratio", "conntrack_entries_limit",
		"conntrack_stat_drop_total", "conntrack_stat_early_drop_total",
		"conntrack_stat_insert_failed_total", "conntrack_stat_search_restart_total",
		"conntrack_stat_clash_resolve_total",
		"conntrack_flow_lifetime_seconds_bucket", "conntrack_flow_lifetime_seconds_count",
		"netns:conntrack_flow_lifetime_established_250_350:ratio_rate30m",
		"conntrack_table_top_source_entries", "conntrack_table_top_destination_port_entries",
		"conntrack_table_shortened_timeout_entries",
		"conntrack_exporter_events_lost_total", "conntrack_exporter_event_overruns_total",
		"conntrack_exporter_collector_success", "up",
		"conntrack_table_nat_entries", "conntrack_table_unreplied_entries",
		"conntrack_table_evictable_entries", "conntrack_table_helper_entries",
		"conntrack_flow_ends_top_source", "conntrack_flow_silent_ends_top_destination",
		"netns:conntrack_table_top_source_entries:pod", "netns:conntrack_flow_ends_top_source:pod",
		"netns:conntrack_flow_silent_ends_top_destination:pod",
		"job:conntrack_fill_ratio:topk10", "job:conntrack_stat_drop:topk10_rate5m",
		"job:conntrack_flow_silent_ends:topk10_sum_window",
	} {
		if !used[m] {
			t.Errorf("no panel queries %s", m)
		}
	}
	if !panelTypes["heatmap"] {
		t.Error("no heatmap panel")
	}
}

// vars are the values a test gives the dashboard variables.
var vars = map[string]string{
	"instance":        "node-a:9549",
	"netns":           "self|blue",
	"__rate_interval": "1m",
	"datasource":      "prometheus",
}

func TestExpandEveryQuery(t *testing.T) {
	queries, err := grafana.PanelQueries(dashboardFile(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(queries) == 0 {
		t.Fatal("no queries")
	}
	n := 0
	for _, p := range loadDashboard(t).AllPanels() {
		n += len(p.Targets)
	}
	if len(queries) != n {
		t.Errorf("PanelQueries returned %d queries, the panels have %d targets", len(queries), n)
	}
	for _, q := range queries {
		out, err := grafana.Expand(q.Expr, vars)
		if err != nil {
			t.Errorf("panel %q %s: %v", q.PanelTitle, q.RefID, err)
			continue
		}
		if strings.Contains(out, "$") {
			t.Errorf("panel %q %s: %q still has a variable", q.PanelTitle, q.RefID, out)
		}
	}
}

func TestExpand(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`rate(x{instance=~"$instance"}[$__rate_interval])`, `rate(x{instance=~"node-a:9549"}[1m])`},
		{`x{netns=~"${netns}"}`, `x{netns=~"self|blue"}`},
		{`x{netns=~"${netns:regex}"}`, `x{netns=~"self|blue"}`},
		{`x{netns=~"[[netns]]"}`, `x{netns=~"self|blue"}`},
		{`x`, `x`},
	} {
		got, err := grafana.Expand(tc.in, vars)
		if err != nil || got != tc.want {
			t.Errorf("Expand(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	if _, err := grafana.Expand(`x{a="$nope"}`, vars); !errors.Is(err, grafana.ErrUnknownVariable) {
		t.Errorf("unknown variable: error = %v", err)
	}
	if got := grafana.Variables(`a{b=~"$netns", c="${instance}"}[$__rate_interval] + $netns`); !slices.Equal(got, []string{"__rate_interval", "instance", "netns"}) {
		t.Errorf("Variables = %v", got)
	}
}

func TestSelectors(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []grafana.Selector
	}{
		{`up`, []grafana.Selector{{Name: "up"}}},
		{`rate(conntrack_stat_drop_total{instance=~"$instance", netns=~"$netns"}[$__rate_interval])`,
			[]grafana.Selector{{Name: "conntrack_stat_drop_total", Matchers: `instance=~"$instance", netns=~"$netns"`}}},
		{`sum by (le, end_state) (rate(h_bucket{le="+Inf"}[5m])) / on (instance) group_left (netns) b`,
			[]grafana.Selector{{Name: "h_bucket", Matchers: `le="+Inf"`}, {Name: "b"}}},
		{`sum(rate(x_total[5m] offset 1h)) without (cpu) > bool 1e-3 and y unless z or a:b:c`,
			[]grafana.Selector{{Name: "x_total"}, {Name: "y"}, {Name: "z"}, {Name: "a:b:c"}}},
		{`histogram_quantile(0.99, sum by (le) (x_bucket{a="}{"}))`,
			[]grafana.Selector{{Name: "x_bucket", Matchers: `a="}{"`}}},
		{`label_replace(vector(1), "dst", "$1", "src", "(.*)") * 0x1F + 1.5e+3 + Inf + NaN`, nil},
		{`time() - last_scan_seconds {job = "a"} @ end()`, []grafana.Selector{{Name: "last_scan_seconds", Matchers: `job = "a"`}}},
		{`{__name__="hidden"} + max_over_time(m[30m:1m]) # comment metric`, []grafana.Selector{{Name: "m"}}},
		{`topk(5, sort_desc(conntrack_table_top_source_entries))`, []grafana.Selector{{Name: "conntrack_table_top_source_entries"}}},
	} {
		got, err := grafana.Selectors(tc.expr)
		if err != nil {
			t.Errorf("Selectors(%q): %v", tc.expr, err)
			continue
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("Selectors(%q) = %+v; want %+v", tc.expr, got, tc.want)
		}
	}
	for _, bad := range []string{`x{a="b"`, `rate(x[5m)`, `x{a="b}`} {
		if _, err := grafana.Selectors(bad); !errors.Is(err, grafana.ErrPromQL) {
			t.Errorf("Selectors(%q) error = %v; want ErrPromQL", bad, err)
		}
	}
	names, err := grafana.MetricNames(`b + a + b{x="1"}`)
	if err != nil || !slices.Equal(names, []string{"a", "b"}) {
		t.Errorf("MetricNames = %v, %v", names, err)
	}
}

// TestPromtoolParsesQueries parses every expanded query with Prometheus'
// own parser, as the expression of a recording rule.
func TestPromtoolParsesQueries(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("promtool not found (apt-get install prometheus): %v", err)
		}
		t.Skipf("promtool not found: %v", err)
	}
	queries, err := grafana.PanelQueries(dashboardFile(t))
	if err != nil {
		t.Fatal(err)
	}
	rules := alerts.RuleFile{Groups: []alerts.RuleGroup{{Name: "dashboard"}}}
	for _, q := range queries {
		expr, err := grafana.Expand(q.Expr, vars)
		if err != nil {
			t.Fatal(err)
		}
		rules.Groups[0].Rules = append(rules.Groups[0].Rules, alerts.Rule{
			Record: fmt.Sprintf("dashboard:panel_%d_%s:query", q.PanelID, q.RefID),
			Expr:   expr,
		})
	}
	b, err := rulesYAML(rules)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dashboard.rules.yml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool, "check", "rules", path).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
}

func TestRateInterval(t *testing.T) {
	for _, tc := range []struct {
		scrape, step time.Duration
		want         string
	}{
		{15 * time.Second, 15 * time.Second, "60s"},
		{15 * time.Second, 2 * time.Minute, "135s"},
		{time.Second, 0, "4s"},
		{250 * time.Millisecond, 100 * time.Millisecond, "1s"},
		{300 * time.Millisecond, 0, "1200ms"},
	} {
		if got := grafana.RateInterval(tc.scrape, tc.step); got != tc.want {
			t.Errorf("RateInterval(%v, %v) = %q; want %q", tc.scrape, tc.step, got, tc.want)
		}
	}
}

// TestPodPanelsFallBackToAddresses: a query that reads a Kubernetes ":pod"
// recording rule also reads the exporter's family the rule joins, minus
// the addresses the rule names, so that the panel shows addresses, and
// not nothing, where no pod is known (no kube-state-metrics, host-network
// pods, peers outside the cluster). The end-to-end run checks what the
// queries return with and without kube_pod_info.
func TestPodPanelsFallBackToAddresses(t *testing.T) {
	queries, err := grafana.PanelQueries(dashboardFile(t))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, q := range queries {
		names, err := grafana.MetricNames(q.Expr)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range names {
			if !strings.HasPrefix(name, "netns:") || !strings.HasSuffix(name, ":pod") {
				continue
			}
			n++
			family := strings.TrimSuffix(strings.TrimPrefix(name, "netns:"), ":pod")
			if family == "conntrack_netns_info" {
				continue
			}
			if !slices.Contains(names, family) {
				t.Errorf("panel %q %s reads %s but not %s, the addresses it falls back to: %s", q.PanelTitle, q.RefID, name, family, q.Expr)
			}
			if !strings.Contains(q.Expr, "unless ignoring (namespace, pod)") || !strings.Contains(q.Expr, " or\n") {
				t.Errorf("panel %q %s: want pods \"or\" the addresses \"unless ignoring (namespace, pod)\" a pod was joined to: %s", q.PanelTitle, q.RefID, q.Expr)
			}
			if !strings.Contains(q.LegendFormat, "{{who}}") {
				t.Errorf("panel %q %s: legend %q does not show who (pod and address, or address)", q.PanelTitle, q.RefID, q.LegendFormat)
			}
		}
	}
	if n == 0 {
		t.Error("no panel reads a :pod recording rule")
	}
}
