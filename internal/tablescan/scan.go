package tablescan

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ct-exporter/ct-exporter/internal/ctnl"
	"github.com/ct-exporter/ct-exporter/internal/netns"
)

// Scan is the Result of one scan of a namespace with its timing.
type Scan struct {
	*Result
	// Start and End are when the scan began and finished.
	Start, End time.Time
	// Dump describes the ctnetlink dump: entries and datagrams read, and
	// whether the kernel flagged it interrupted.
	Dump ctnl.DumpInfo
}

// Duration returns how long the scan took.
func (s *Scan) Duration() time.Duration { return s.End.Sub(s.Start) }

// Scanner scans conntrack tables, one at a time, reusing one Aggregator's
// memory from one scan to the next. It is safe for concurrent use: scans
// of several namespaces run one after the other, which also keeps the
// kernel from walking its (global) hash table for several dumps at once.
type Scanner struct {
	sem chan struct{} // holds agg
	agg *Aggregator
}

// NewScanner returns a Scanner.
func NewScanner(opts Options) *Scanner {
	return &Scanner{sem: make(chan struct{}, 1), agg: NewAggregator(opts)}
}

// Scan reads the TCP timeout sysctls of the namespace of target, dumps its
// table over a new ctnetlink socket and returns the breakdown. The dump is
// skipped when the namespace's entry count is 0: the kernel walks its
// global hash table, shared by every namespace, for each dump. It first
// waits for any other scan of this Scanner to finish. The context bounds
// the wait and the scan. It fails when the namespace or the socket cannot
// be opened, or the dump does not complete; entries that do not decode are
// counted in Result.Malformed instead.
//
// The kernel walks its hash table bucket by bucket while it dumps; entries
// created or destroyed during the scan may or may not be counted, and it
// does not flag such a dump (see ctnl.DumpInfo.Interrupted). The scan
// counts exactly the entries the kernel sent.
func (s *Scanner) Scan(ctx context.Context, target netns.Target) (*Scan, error) {
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("netns %s: table scan: waiting for another scan: %w", target, ctx.Err())
	}
	defer func() { <-s.sem }()
	start := time.Now()
	t, err := ReadTimeouts(target)
	if err != nil {
		return nil, fmt.Errorf("table scan: %w", err)
	}
	c, err := ctnl.Dial(target)
	if err != nil {
		return nil, fmt.Errorf("table scan: %w", err)
	}
	defer c.Close()
	s.agg.Reset(t)
	// A dump walks the kernel's global hash table whatever the namespace
	// holds; an empty namespace needs none.
	g, err := c.GlobalStats(ctx)
	if err != nil {
		return nil, fmt.Errorf("table scan: %w", err)
	}
	var info ctnl.DumpInfo
	if g.Entries > 0 {
		info, err = c.Dump(ctx, s.agg.AddMessage)
		if err != nil {
			return nil, fmt.Errorf("table scan: %w", err)
		}
	}
	return &Scan{Result: s.agg.Result(), Start: start, End: time.Now(), Dump: info}, nil
}

// timeoutSysctls are the per-namespace files Timeouts are read from.
const (
	sysctlDir            = "/proc/sys/net/netfilter/"
	sysctlEstablished    = "nf_conntrack_tcp_timeout_established"
	sysctlMaxRetrans     = "nf_conntrack_tcp_timeout_max_retrans"
	sysctlUnacknowledged = "nf_conntrack_tcp_timeout_unacknowledged"
)

// ReadTimeouts reads the TCP timeout sysctls of the namespace of target.
// They are per namespace, so they are read from a thread inside it.
func ReadTimeouts(target netns.Target) (Timeouts, error) {
	var t Timeouts
	err := target.Do(func() error {
		for _, v := range []struct {
			name string
			dst  *uint32
		}{
			{sysctlEstablished, &t.Established},
			{sysctlMaxRetrans, &t.MaxRetrans},
			{sysctlUnacknowledged, &t.Unacknowledged},
		} {
			n, err := readUint32(sysctlDir + v.name)
			if err != nil {
				return err
			}
			*v.dst = n
		}
		return nil
	})
	if err != nil {
		return Timeouts{}, fmt.Errorf("netns %s: tcp timeouts: %w", target, err)
	}
	return t, nil
}

// readUint32 reads a file holding one unsigned decimal number.
func readUint32(path string) (uint32, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return uint32(v), nil
}
