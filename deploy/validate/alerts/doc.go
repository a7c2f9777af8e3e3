// Package alerts reads and checks the Prometheus recording and alerting
// rules of ct-exporter, which live in the repository's
// alerts/ct-exporter.rules.yml (with promtool tests in alerts/tests/*.yml),
// and derives other files from them: Scaled shortens every window for
// end-to-end tests, and PrometheusRule renders the Prometheus Operator
// resource in deploy/kubernetes/prometheusrule.yaml.
package alerts

//go:generate go run ./gen -in ../../../alerts/ct-exporter.rules.yml -out ../../../deploy/kubernetes/prometheusrule.yaml
