package alerts_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ct-exporter/ct-exporter/deploy/validate/alerts"
	"github.com/ct-exporter/ct-exporter/deploy/validate/internal/repo"
	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

// promtool returns the path of promtool. It fails the test in CI when
// promtool is missing, and skips it elsewhere. (promtool check rules and
// promtool test rules of the rule file itself run in the repository's
// alerts/ package.)
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if nstest.InCI() {
			t.Fatalf("promtool not found (apt-get install prometheus): %v", err)
		}
		t.Skipf("promtool not found: %v", err)
	}
	return p
}

func runPromtool(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
}

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
		runPromtool(t, dir, "check", "rules", "spec.rules.yml")
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
	runPromtool(t, dir, "check", "rules", "scaled.rules.yml")
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
