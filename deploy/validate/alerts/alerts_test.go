package alerts_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ct-exporter/ct-exporter/deploy/validate/alerts"
	"github.com/ct-exporter/ct-exporter/deploy/validate/internal/repo"
	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

func TestPromtoolCheckPrometheusRuleSpec(t *testing.T) {
	for _, path := range []string{alerts.PrometheusRulePath, alerts.KubernetesPrometheusRulePath} {
		pr, err := repo.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := alerts.ParsePrometheusRule(pr)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		spec, err := yaml.Marshal(doc.Spec)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "spec.rules.yml"), spec, 0o644); err != nil {
			t.Fatal(err)
		}
		nstest.Promtool(t, dir, "check", "rules", "spec.rules.yml")
	}
}

func TestPromtoolCheckScaledRules(t *testing.T) {
	out, err := alerts.Scaled(rulesYAML(t), alerts.Scale{Divisor: 30, MinRange: 4 * time.Second, MinFor: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "scaled.rules.yml"), out, 0o644); err != nil {
		t.Fatal(err)
	}
	nstest.Promtool(t, dir, "check", "rules", "scaled.rules.yml")
}

// rulesYAML returns the repository's rule file.
func rulesYAML(t *testing.T) []byte {
	t.Helper()
	b, err := alerts.Rules()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
