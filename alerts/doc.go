// Package alerts holds the Prometheus recording and alerting rules of
// ct-exporter (ct-exporter.rules.yml), the Kubernetes and fleet recording
// rules (kubernetes.rules.yml), and their promtool unit tests
// (tests/*.yml), which this package's Go tests run with promtool. The Go
// code that reads, scales and renders the rules (into
// deploy/kubernetes/prometheusrule.yaml and
// deploy/kubernetes/prometheusrule-kubernetes.yaml) lives in the
// validation module, deploy/validate/alerts.
package alerts
