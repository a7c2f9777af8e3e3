// Package grafana reads the Grafana dashboard of ct-exporter, kept in the
// repository's deploy/grafana/ct-exporter.json: a strict decoder into typed
// structs, the list of every panel's PromQL queries, Grafana variable
// expansion, and the metric selectors of a query found by Prometheus'
// PromQL parser. The end-to-end test runs each panel query against a real
// Prometheus with them.
package grafana
