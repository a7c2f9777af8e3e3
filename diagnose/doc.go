// Package diagnose is the on-call checklist of ct-exporter as one command:
// it samples the conntrack state of one or more network namespaces for a
// while and turns what it measured into a Report with a verdict and
// recommendations.
//
// A Sampler measures one namespace (KernelSampler reads the kernel; tests
// use fakes): the table fill and the per-CPU counters at the start and the
// end of the sample, the sysctl settings, a breakdown of the table, and
// the lifetimes of the flows that died during the sample. Analyze turns
// one Sample into a NamespaceReport: fill verdict, counter rates with
// their meaning, unusual settings, the table breakdown, the lifetime
// cluster, findings and the recommendations tied to them. WriteText
// renders a Report for an 80-column terminal, WriteJSON as the stable JSON
// document described in docs/DIAGNOSE.md.
//
// Nothing here writes to the kernel. A table dump makes the kernel reap
// entries that already expired, as any conntrack -L does.
package diagnose
