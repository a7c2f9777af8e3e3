package alerts_test

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"

	"github.com/ct-exporter/ct-exporter/deploy/validate/alerts"
	"github.com/ct-exporter/ct-exporter/deploy/validate/internal/repo"
)

// contractAlerts are the alert names DESIGN.md promises.
var contractAlerts = []string{
	"ConntrackTableNearlyFull",
	"ConntrackTableFull",
	"ConntrackInsertFailures",
	"ConntrackEstablishedLifetimeCollapse",
	"ConntrackShortenedTimeouts",
	"ConntrackEventsLost",
	"ConntrackExporterDown",
}

const runbookPrefix = "https://github.com/ct-exporter/ct-exporter/blob/main/docs/runbook.md#"

func parseRules(t *testing.T) *alerts.RuleFile {
	t.Helper()
	f, err := alerts.Parse(rulesYAML(t))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestAlertNamesMatchContract(t *testing.T) {
	var got []string
	for _, r := range parseRules(t).AlertingRules() {
		if !slices.Contains(got, r.Alert) {
			got = append(got, r.Alert)
		}
	}
	slices.Sort(got)
	want := slices.Clone(contractAlerts)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("alerts %v, want %v", got, want)
	}
}

// githubAnchors returns the anchors GitHub generates for the headings of a
// Markdown document.
func githubAnchors(md string) map[string]bool {
	out := map[string]bool{}
	inFence := false
	for _, line := range strings.Split(md, "\n") {
		if strings.HasPrefix(line, "```") {
			inFence = !inFence
			continue
		}
		if inFence || !strings.HasPrefix(line, "#") {
			continue
		}
		title := strings.ToLower(strings.TrimSpace(strings.TrimLeft(line, "#")))
		var b strings.Builder
		for _, r := range title {
			switch {
			case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
				b.WriteRune(r)
			case r == ' ':
				b.WriteRune('-')
			}
		}
		out[b.String()] = true
	}
	return out
}

func readRunbook(t *testing.T) string {
	t.Helper()
	b, err := repo.ReadFile("docs/runbook.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestAlertsAreDocumented(t *testing.T) {
	runbook := readRunbook(t)
	anchors := githubAnchors(runbook)
	for _, r := range parseRules(t).AlertingRules() {
		if s := r.Labels["severity"]; s != "warning" && s != "critical" {
			t.Errorf("%s: severity %q, want warning or critical", r.Alert, s)
		}
		if len(r.Labels) != 1 {
			t.Errorf("%s: labels %v, want only severity", r.Alert, r.Labels)
		}
		keys := make([]string, 0, len(r.Annotations))
		for k := range r.Annotations {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if !slices.Equal(keys, []string{"description", "runbook_url", "summary"}) {
			t.Errorf("%s: annotations %v, want description, runbook_url, summary", r.Alert, keys)
		}
		if r.Annotations["summary"] == "" {
			t.Errorf("%s: empty summary", r.Alert)
		}
		for _, v := range []string{"{{ $labels.instance }}", "{{ $labels.netns }}"} {
			if !strings.Contains(r.Annotations["description"], v) {
				t.Errorf("%s: description does not name %s", r.Alert, v)
			}
		}
		want := runbookPrefix + strings.ToLower(r.Alert)
		if r.Annotations["runbook_url"] != want {
			t.Errorf("%s: runbook_url %q, want %q", r.Alert, r.Annotations["runbook_url"], want)
		}
		if !anchors[strings.ToLower(r.Alert)] {
			t.Errorf("%s: docs/runbook.md has no section %q", r.Alert, "## "+r.Alert)
		}
	}
	// Links inside the runbook must resolve too.
	for _, m := range regexp.MustCompile(`\]\(#([^)]+)\)`).FindAllStringSubmatch(runbook, -1) {
		if !anchors[m[1]] {
			t.Errorf("runbook links to missing anchor #%s", m[1])
		}
	}
}

func TestNearlyFullThresholdDefinedOnce(t *testing.T) {
	var expr string
	for _, r := range parseRules(t).AlertingRules() {
		if r.Alert == "ConntrackTableNearlyFull" {
			expr = r.Expr
		}
	}
	m := regexp.MustCompile(`^conntrack_fill_ratio > (0\.[0-9]+)$`).FindStringSubmatch(strings.TrimSpace(expr))
	if m == nil {
		t.Fatalf("ConntrackTableNearlyFull expr %q is not `conntrack_fill_ratio > LITERAL`", expr)
	}
	threshold := m[1]
	var exprs []string
	for _, g := range parseRules(t).Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
		}
	}
	if n := strings.Count(strings.Join(exprs, "\n"), threshold); n != 1 {
		t.Errorf("threshold %s appears in %d rule expressions, want 1", threshold, n)
	}
	if !strings.Contains(readRunbook(t), "`conntrack_fill_ratio > "+threshold+"`") {
		t.Errorf("docs/runbook.md does not document the threshold %s", threshold)
	}
}

func TestRecordingRuleNames(t *testing.T) {
	nameRE := regexp.MustCompile(`^[a-z_]+:[a-z0-9_]+:[a-z0-9_]+$`)
	seen := map[string]bool{}
	k8s, err := alerts.KubernetesRules()
	if err != nil {
		t.Fatal(err)
	}
	kf, err := alerts.Parse(k8s)
	if err != nil {
		t.Fatal(err)
	}
	if len(kf.AlertingRules()) != 0 {
		t.Errorf("%s has alerting rules; alerts live in %s", alerts.KubernetesRulesPath, alerts.RulesPath)
	}
	for _, r := range append(parseRules(t).RecordingRules(), kf.RecordingRules()...) {
		if !nameRE.MatchString(r.Record) {
			t.Errorf("recording rule %q is not level:metric:operations", r.Record)
		}
		if seen[r.Record] {
			t.Errorf("recording rule %q defined twice", r.Record)
		}
		seen[r.Record] = true
	}
}

// Every alert has a promtool test file that expects it to fire at least once
// and to stay silent at least twice (healthy and quiet node).
func TestEveryAlertHasPromtoolTests(t *testing.T) {
	dir, err := repo.Path("alerts/tests")
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.yml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no promtool tests: %v", err)
	}
	fires := map[string]int{}
	silent := map[string]int{}
	// An alert_rule_test entry: alertname, then exp_alerts either [] or a list.
	entryRE := regexp.MustCompile(`(?m)^\s*alertname: (\S+)\n\s*exp_alerts:(.*)$`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// Tests of the Kubernetes rules are named kubernetes_*.yml.
		want := alerts.RulesFileName
		if strings.HasPrefix(filepath.Base(f), "kubernetes_") {
			want = alerts.KubernetesRulesFileName
		}
		if !strings.Contains(string(b), "- ../"+want) {
			t.Errorf("%s does not load ../%s", f, want)
		}
		for _, m := range entryRE.FindAllStringSubmatch(string(b), -1) {
			if strings.TrimSpace(m[2]) == "[]" {
				silent[m[1]]++
			} else {
				fires[m[1]]++
			}
		}
	}
	for _, a := range contractAlerts {
		if fires[a] < 1 || silent[a] < 2 {
			t.Errorf("%s: %d firing and %d silent promtool expectations, want >= 1 and >= 2", a, fires[a], silent[a])
		}
	}
}

func TestParseStrict(t *testing.T) {
	for _, tc := range []struct{ name, in string }{
		{"unknown field", "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        severity: page\n"},
		{"both record and alert", "groups:\n  - name: g\n    rules:\n      - alert: A\n        record: a:b:c\n        expr: up\n"},
		{"neither", "groups:\n  - name: g\n    rules:\n      - expr: up\n"},
		{"empty expr", "groups:\n  - name: g\n    rules:\n      - alert: A\n"},
		{"recording rule with for", "groups:\n  - name: g\n    rules:\n      - record: a:b:c\n        expr: up\n        for: 5m\n"},
		{"no groups", "groups: []\n"},
		{"unnamed group", "groups:\n  - rules: []\n"},
		{"two documents", "groups:\n  - name: g\n    rules: []\n---\ngroups: []\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := alerts.Parse([]byte(tc.in)); !errors.Is(err, alerts.ErrInvalidRules) {
				t.Errorf("error = %v; want ErrInvalidRules", err)
			}
		})
	}
}

// TestLifetimeRulesHaveNativeForm: every rule that reads the classic series
// of the lifetime histogram also reads the native histogram, joined with
// "or", so that it has a value whether Prometheus ingested classic series,
// native histograms or both.
func TestLifetimeRulesHaveNativeForm(t *testing.T) {
	const h = "conntrack_flow_lifetime_seconds"
	p := parser.NewParser(parser.Options{})
	n := 0
	for _, r := range parseRules(t).RecordingRules() {
		e, err := p.ParseExpr(r.Expr)
		if err != nil {
			t.Fatalf("%s: %v", r.Record, err)
		}
		names := map[string]bool{}
		ors := 0
		parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
			switch node := node.(type) {
			case *parser.VectorSelector:
				names[node.Name] = true
			case *parser.BinaryExpr:
				if node.Op == parser.LOR {
					ors++
				}
			}
			return nil
		})
		if !names[h+"_bucket"] && !names[h+"_count"] {
			continue
		}
		n++
		if !names[h] || ors == 0 {
			t.Errorf("%s reads the classic series of %s but has no native form joined with or", r.Record, h)
		}
	}
	if n == 0 {
		t.Error("no rule reads the lifetime histogram: the test checks nothing")
	}
}
