// Package bench runs drills: named, repeatable experiments that load the
// conntrack table of throwaway network namespaces, run ct-exporter
// against them, and measure it side by side, in the same run, against
// anchors (conntrack -E, conntrack -L, conntrack -C/-S, ti-mo/conntrack).
//
// Every drill goes through a Lab, which creates the namespaces (named
// ctdrill-*), starts the child processes, and on Close kills those
// children, removes those namespaces and restores nf_conntrack_max if a
// drill raised it. Nothing else on the machine is touched. Results are
// rows of exporter value, anchor value and their ratio; they print as a
// table, serialise to JSON and draw as an SVG plot.
//
// The drills are too heavy for the default test run; the package's test
// runs each of them once at a small size (see Drill.Smoke). The command
// is cmd/ct-drill.
package bench
