package alerts_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

// rulesFiles are the rule files in this directory: the exporter's rules
// and alerts, and the Kubernetes and fleet recording rules.
var rulesFiles = []string{"ct-exporter.rules.yml", "kubernetes.rules.yml"}

func TestPromtoolCheckRules(t *testing.T) {
	nstest.Promtool(t, ".", append([]string{"check", "rules"}, rulesFiles...)...)
}

func TestPromtoolTestRules(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("tests", "*.yml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no promtool tests: %v", err)
	}
	nstest.Promtool(t, ".", append([]string{"test", "rules"}, files...)...)
}

// TestPromtoolNativeHistogramInput says whether the installed promtool can
// run rule tests with native-histogram input series. The promtool of
// Prometheus 2.42 (Debian 12) cannot: its test files accept only float
// series, so tests/*.yml give the lifetime rules classic series only, and
// the native form of the rules (histogram_count, histogram_fraction) is
// tested by the end-to-end run in deploy/validate/e2e, which scrapes the
// exporter once with classic and once with native ingestion. On a promtool
// that accepts the notation this test fails, as a reminder to add native
// input series to tests/lifetime_collapse.yml.
func TestPromtoolNativeHistogramInput(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"r.yml": "groups:\n  - name: g\n    rules:\n      - record: a:h:count\n        expr: histogram_count(h)\n",
		"t.yml": "rule_files: [r.yml]\ntests:\n  - interval: 1m\n    input_series:\n      - series: 'h'\n        values: '{{schema:0 sum:1 count:1 buckets:[1]}}x2'\n" +
			"    promql_expr_test:\n      - expr: a:h:count\n        eval_time: 1m\n        exp_samples:\n          - labels: 'a:h:count'\n            value: 1\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(nstest.PromtoolPath(t), "test", "rules", "t.yml")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	switch {
	case err != nil && strings.Contains(string(out), "unexpected character in series sequence"):
		t.Skipf("this promtool does not support native-histogram input series in rule tests; "+
			"the native form of the lifetime rules is tested end to end in deploy/validate/e2e:\n%s", out)
	case err != nil:
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	default:
		t.Errorf("this promtool supports native-histogram input series: add them to tests/lifetime_collapse.yml\n%s", out)
	}
}
