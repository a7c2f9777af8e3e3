// Package e2e holds end-to-end tests that run the built ct-exporter binary
// against the real kernel in throwaway network namespaces, and, where the
// tools are installed, with real Prometheus and Alertmanager.
package e2e
