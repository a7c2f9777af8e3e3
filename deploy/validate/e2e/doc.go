// Package e2e holds the end-to-end alerting test of ct-exporter: the
// exporter, the Debian Prometheus and Alertmanager on loopback with the
// shipped rules and dashboard, against network namespaces that go through
// drills.
package e2e
