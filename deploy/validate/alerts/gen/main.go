// Command gen writes deploy/kubernetes/prometheusrule.yaml from
// alerts/ct-exporter.rules.yml, and with -name the PrometheusRule of
// another rule file of alerts/. Run it with "go generate ./alerts" in
// deploy/validate.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ct-exporter/ct-exporter/deploy/validate/alerts"
)

func main() {
	in := flag.String("in", "../../../"+alerts.RulesPath, "Prometheus rule file to read")
	out := flag.String("out", "../../../"+alerts.PrometheusRulePath, "PrometheusRule file to write")
	name := flag.String("name", alerts.PrometheusRuleName, "metadata.name of the PrometheusRule")
	flag.Parse()
	if err := run(*in, *out, *name); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(in, out, name string) error {
	rules, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	doc, err := alerts.NamedPrometheusRule(rules, "alerts/"+filepath.Base(in), name)
	if err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	return os.WriteFile(out, doc, 0o644)
}
