package alerts_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ct-exporter/ct-exporter/alerts"
	"gopkg.in/yaml.v3"
)

// promtool returns the path of promtool. It fails the test in CI
// (CI=true) when promtool is missing, and skips it elsewhere.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
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

func TestPromtoolCheckRules(t *testing.T) {
	runPromtool(t, ".", "check", "rules", alerts.RulesFileName)
}

func TestPromtoolCheckPrometheusRuleSpec(t *testing.T) {
	pr, err := os.ReadFile(filepath.Join("..", alerts.PrometheusRulePath))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := alerts.ParsePrometheusRule(pr)
	if err != nil {
		t.Fatal(err)
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

func TestPromtoolCheckScaledRules(t *testing.T) {
	out, err := alerts.Scaled(alerts.Rules(), alerts.Scale{Divisor: 30, MinRange: 4 * time.Second, MinFor: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "scaled.rules.yml"), out, 0o644); err != nil {
		t.Fatal(err)
	}
	runPromtool(t, dir, "check", "rules", "scaled.rules.yml")
}

func TestPromtoolTestRules(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("tests", "*.yml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no promtool tests: %v", err)
	}
	runPromtool(t, ".", append([]string{"test", "rules"}, files...)...)
}
