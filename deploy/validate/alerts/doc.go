// Package alerts reads and checks the Prometheus recording and alerting
// rules of ct-exporter, which live in the repository's
// alerts/ct-exporter.rules.yml and alerts/kubernetes.rules.yml (with
// promtool tests in alerts/tests/*.yml), and derives other files from
// them: Scaled shortens every window for end-to-end tests, and
// PrometheusRule renders the Prometheus Operator resources in
// deploy/kubernetes/prometheusrule.yaml and
// deploy/kubernetes/prometheusrule-kubernetes.yaml.
package alerts

//go:generate go run ./gen -in ../../../alerts/ct-exporter.rules.yml -out ../../../deploy/kubernetes/prometheusrule.yaml
//go:generate go run ./gen -in ../../../alerts/kubernetes.rules.yml -out ../../../deploy/kubernetes/prometheusrule-kubernetes.yaml -name ct-exporter-kubernetes
