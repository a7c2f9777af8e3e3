package alerts_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/ct-exporter/ct-exporter/deploy/validate/alerts"
	"github.com/ct-exporter/ct-exporter/deploy/validate/internal/repo"
)

func TestCommittedPrometheusRuleIsGenerated(t *testing.T) {
	want, err := alerts.PrometheusRule(rulesYAML(t))
	if err != nil {
		t.Fatal(err)
	}
	got, err := repo.ReadFile(alerts.PrometheusRulePath)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("%s is not the generator's output: run go generate ./alerts", alerts.PrometheusRulePath)
	}
}

func TestCommittedKubernetesPrometheusRuleIsGenerated(t *testing.T) {
	rules, err := alerts.KubernetesRules()
	if err != nil {
		t.Fatal(err)
	}
	want, err := alerts.NamedPrometheusRule(rules, alerts.KubernetesRulesPath, alerts.KubernetesPrometheusRuleName)
	if err != nil {
		t.Fatal(err)
	}
	got, err := repo.ReadFile(alerts.KubernetesPrometheusRulePath)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("%s is not the generator's output: run go generate ./alerts", alerts.KubernetesPrometheusRulePath)
	}
	pr, err := alerts.ParsePrometheusRule(got)
	if err != nil {
		t.Fatal(err)
	}
	if pr.Metadata.Name != alerts.KubernetesPrometheusRuleName || len(pr.Spec.RecordingRules()) == 0 {
		t.Errorf("metadata.name %q with %d recording rules", pr.Metadata.Name, len(pr.Spec.RecordingRules()))
	}
}

func TestPrometheusRuleContent(t *testing.T) {
	out, err := alerts.PrometheusRule(rulesYAML(t))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(out), "# Code generated ") || !strings.Contains(strings.SplitN(string(out), "\n", 2)[0], "DO NOT EDIT.") {
		t.Error("no generated-code header on the first line")
	}
	pr, err := alerts.ParsePrometheusRule(out)
	if err != nil {
		t.Fatal(err)
	}
	if pr.Metadata.Name != alerts.PrometheusRuleName {
		t.Errorf("metadata.name %q", pr.Metadata.Name)
	}
	src := parseRules(t)
	if !reflect.DeepEqual(&pr.Spec, src) {
		t.Error("spec.groups differ from the rule file")
	}
	if len(pr.Spec.AlertingRules()) == 0 {
		t.Error("no alerting rules rendered")
	}
}

func TestParsePrometheusRuleRejects(t *testing.T) {
	good, err := alerts.PrometheusRule(rulesYAML(t))
	if err != nil {
		t.Fatal(err)
	}
	for name, doc := range map[string]string{
		"wrong kind":    strings.Replace(string(good), "kind: PrometheusRule", "kind: ConfigMap", 1),
		"unknown field": strings.Replace(string(good), "spec:\n", "spec:\n  extra: 1\n", 1),
		"bad rule":      strings.Replace(string(good), "alert: ConntrackTableFull", "alert: ConntrackTableFull\n          record: x:y:z", 1),
	} {
		if _, err := alerts.ParsePrometheusRule([]byte(doc)); !errors.Is(err, alerts.ErrInvalidRules) {
			t.Errorf("%s: error = %v; want ErrInvalidRules", name, err)
		}
	}
}
