// Package alerts holds the Prometheus recording and alerting rules for
// ct-exporter (ct-exporter.rules.yml, tested with "promtool test rules"
// against tests/*.yml) and the helpers that derive other files from them:
// Scaled shortens every window for end-to-end tests, and PrometheusRule
// renders the Prometheus Operator resource in
// deploy/kubernetes/prometheusrule.yaml.
package alerts

//go:generate go run ./gen -in ct-exporter.rules.yml -out ../deploy/kubernetes/prometheusrule.yaml
