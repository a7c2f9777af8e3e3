// Package sysctl reads (and, on explicit request, writes) the conntrack
// sysctls of a network namespace, and the TCP keepalive sysctls that
// decide whether idle connections outlive a middlebox. The kernel shows under /proc/sys the
// values of the reading thread's namespace, so every read and write runs
// on a thread that entered the namespace of its target.
package sysctl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ct-exporter/ct-exporter/internal/netns"
)

// Dir is where the kernel shows the conntrack sysctls of the reading
// thread's network namespace.
const Dir = "/proc/sys/net/netfilter"

// IPv4Dir is where the kernel shows the IPv4 sysctls of the reading
// thread's network namespace, the TCP keepalive settings among them.
const IPv4Dir = "/proc/sys/net/ipv4"

// Names of the TCP keepalive sysctls under IPv4Dir. They are per network
// namespace and apply to IPv6 sockets too.
const (
	// KeepaliveTime is the idle time in seconds before the first
	// keepalive probe (net.ipv4.tcp_keepalive_time, 7200 by default).
	KeepaliveTime = "tcp_keepalive_time"
	// KeepaliveInterval is the time in seconds between probes
	// (net.ipv4.tcp_keepalive_intvl, 75 by default).
	KeepaliveInterval = "tcp_keepalive_intvl"
	// KeepaliveProbes is the number of unanswered probes after which the
	// connection is dropped (net.ipv4.tcp_keepalive_probes, 9 by default).
	KeepaliveProbes = "tcp_keepalive_probes"
)

// Keepalive returns the names of the TCP keepalive sysctls under IPv4Dir.
// Each call returns a new slice.
func Keepalive() []string {
	return []string{KeepaliveTime, KeepaliveInterval, KeepaliveProbes}
}

// Names of sysctls that more than one part of the exporter reads.
const (
	Events                   = "nf_conntrack_events"
	Timestamp                = "nf_conntrack_timestamp"
	TCPTimeoutEstablished    = "nf_conntrack_tcp_timeout_established"
	TCPTimeoutMaxRetrans     = "nf_conntrack_tcp_timeout_max_retrans"
	TCPTimeoutUnacknowledged = "nf_conntrack_tcp_timeout_unacknowledged"
)

// TCPTimeoutPrefix starts the name of each TCP timeout sysctl; the TCP
// state follows it (nf_conntrack_tcp_timeout_established).
const TCPTimeoutPrefix = "nf_conntrack_tcp_timeout_"

// ErrNoSysctls reports a directory without any of the conntrack sysctls
// asked for: conntrack is not available in the namespace.
var ErrNoSysctls = errors.New("no conntrack sysctls")

// Values maps sysctl file names under Dir (for example
// "nf_conntrack_tcp_timeout_established") to their values. A sysctl the
// kernel does not have is absent.
type Values map[string]int64

// Has reports whether the kernel has the sysctl name.
func (v Values) Has(name string) bool {
	_, ok := v[name]
	return ok
}

// Conntrack returns the names of every conntrack sysctl the exporter
// reports: the TCP and UDP timeouts, the table size and the switches that
// change how the table behaves. Each call returns a new slice.
func Conntrack() []string {
	names := make([]string, 0, 24)
	for _, state := range TCPTimeoutStates() {
		names = append(names, TCPTimeoutPrefix+state)
	}
	return append(names,
		"nf_conntrack_udp_timeout",
		"nf_conntrack_udp_timeout_stream",
		"nf_conntrack_buckets",
		Events,
		Timestamp,
		"nf_conntrack_acct",
		"nf_conntrack_checksum",
		"nf_conntrack_tcp_be_liberal",
		"nf_conntrack_tcp_loose",
		"nf_conntrack_tcp_ignore_invalid_rst",
		"nf_conntrack_tcp_max_retrans",
		"nf_conntrack_icmp_timeout",
		"nf_conntrack_icmpv6_timeout",
		"nf_conntrack_generic_timeout",
	)
}

// TCPTimeoutStates returns the TCP states that have a timeout sysctl, in
// the kernel's order, as the suffix of their sysctl names. Each call
// returns a new slice.
func TCPTimeoutStates() []string {
	return []string{
		"syn_sent", "syn_recv", "established", "fin_wait", "close_wait",
		"last_ack", "time_wait", "close", "max_retrans", "unacknowledged",
	}
}

// Reader reads the sysctls of a namespace. The zero value reads Dir and
// IPv4Dir.
type Reader struct {
	// Dir overrides Dir, for tests.
	Dir string
	// IPv4Dir overrides IPv4Dir, for tests.
	IPv4Dir string
}

// ipv4Dir returns the directory the IPv4 sysctls are read from.
func (r Reader) ipv4Dir() string {
	if r.IPv4Dir == "" {
		return IPv4Dir
	}
	return r.IPv4Dir
}

// dir returns the directory the sysctls are read from.
func (r Reader) dir() string {
	if r.Dir == "" {
		return Dir
	}
	return r.Dir
}

// Read reads the named sysctls of the namespace of target. A name the
// kernel does not have is left out of the result; when none of them
// exists, the error wraps ErrNoSysctls.
func (r Reader) Read(_ context.Context, target netns.Target, names ...string) (Values, error) {
	out, err := readAll(target, r.dir(), names)
	if err != nil {
		return nil, err
	}
	if len(out) == 0 && len(names) > 0 {
		return nil, fmt.Errorf("netns %s: %w under %s", target, ErrNoSysctls, r.dir())
	}
	return out, nil
}

// ReadIPv4 reads the named IPv4 sysctls (for example Keepalive()) of the
// namespace of target, by their file names under IPv4Dir. A name the
// kernel does not have is left out of the result; an empty result is not
// an error.
func (r Reader) ReadIPv4(_ context.Context, target netns.Target, names ...string) (Values, error) {
	return readAll(target, r.ipv4Dir(), names)
}

// ReadBoth reads the named conntrack sysctls, as Read does, and the named
// IPv4 sysctls, as ReadIPv4 does, entering the namespace of target once
// for both.
func (r Reader) ReadBoth(_ context.Context, target netns.Target, conntrack, ipv4 []string) (Values, Values, error) {
	ct, v4 := Values{}, Values{}
	err := target.Do(func() error {
		if err := readInto(ct, target, r.dir(), conntrack); err != nil {
			return err
		}
		return readInto(v4, target, r.ipv4Dir(), ipv4)
	})
	if err != nil {
		return nil, nil, err
	}
	if len(ct) == 0 && len(conntrack) > 0 {
		return nil, nil, fmt.Errorf("netns %s: %w under %s", target, ErrNoSysctls, r.dir())
	}
	return ct, v4, nil
}

// readAll reads the named files of dir in the namespace of target,
// skipping those that do not exist.
func readAll(target netns.Target, dir string, names []string) (Values, error) {
	out := Values{}
	err := target.Do(func() error { return readInto(out, target, dir, names) })
	if err != nil {
		return nil, err
	}
	return out, nil
}

// readInto reads the named files of dir into out, skipping those that do
// not exist; the caller is inside the namespace of target.
func readInto(out Values, target netns.Target, dir string, names []string) error {
	for _, name := range names {
		v, err := readInt(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("netns %s: %w", target, err)
		}
		out[name] = v
	}
	return nil
}

// Int reads one sysctl of the namespace of target. A sysctl the kernel
// does not have is an error that wraps os.ErrNotExist.
func (r Reader) Int(target netns.Target, name string) (int64, error) {
	var v int64
	err := target.Do(func() error {
		var err error
		v, err = readInt(filepath.Join(r.dir(), name))
		if err != nil {
			return fmt.Errorf("netns %s: %w", target, err)
		}
		return nil
	})
	return v, err
}

// Write sets one sysctl in the namespace of target. The exporter writes
// only where the operator asked for it explicitly.
func (r Reader) Write(target netns.Target, name string, value int64) error {
	path := filepath.Join(r.dir(), name)
	return target.Do(func() error {
		if err := os.WriteFile(path, []byte(strconv.FormatInt(value, 10)), 0o644); err != nil {
			return fmt.Errorf("netns %s: write %s: %w", target, path, err)
		}
		return nil
	})
}

// readInt reads a file holding one decimal integer.
func readInt(path string) (int64, error) {
	var buf [64]byte // an integer sysctl and its line feed
	n, err := readOnce(path, buf[:])
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", filepath.Base(path), err)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(buf[:n])), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", filepath.Base(path), err)
	}
	return v, nil
}

// readOnce reads a small file with one open, one read and one close: a
// namespace's settings are some 30 files read every interval, and
// os.ReadFile would also stat each and try to register it with the
// runtime's poller. A file longer than buf is cut, which an integer
// sysctl never is. An error is an *os.PathError, so a missing sysctl
// still matches os.ErrNotExist.
func readOnce(path string, buf []byte) (int, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, &os.PathError{Op: "read", Path: path, Err: err}
		}
		return n, nil
	}
}
