// Package ctnl speaks the few ctnetlink (NETLINK_NETFILTER, subsystem
// NFNL_SUBSYS_CTNETLINK) requests the exporter needs, on top of
// mdlayher/netlink: per-CPU and global statistics.
//
// It exists because github.com/ti-mo/conntrack drops the clash_resolve and
// chaintoolong counters and materialises whole dumps. Decoders in this
// package are pure functions over message bytes so they can be fuzzed, and
// they never panic on malformed input: they return an error wrapping
// ErrMalformed.
package ctnl
