// Package grafana holds the Grafana dashboard of ct-exporter
// (ct-exporter.json) and helpers to read it: a strict decoder into typed
// structs, the list of every panel's PromQL queries, Grafana variable
// expansion, and a small PromQL metric-name extractor. The end-to-end test
// runs each panel query against a real Prometheus with them.
package grafana
