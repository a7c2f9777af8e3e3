package tablescan

import (
	"context"
	"fmt"
	"math"
	"os"
	"time"

	"github.com/ct-exporter/ct-exporter/internal/ctnl"
	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/sysctl"
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
// memory and the dump's receive memory from one scan to the next. It is
// safe for concurrent use: scans of several namespaces run one after the
// other, which also keeps the kernel from walking its (global) hash table
// for several dumps at once.
type Scanner struct {
	sem chan struct{} // holds agg and mem
	agg *Aggregator
	mem *ctnl.DumpMemory
}

// NewScanner returns a Scanner.
func NewScanner(opts Options) *Scanner {
	return &Scanner{sem: make(chan struct{}, 1), agg: NewAggregator(opts), mem: ctnl.NewDumpMemory()}
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
	t, err := readTimeouts(ctx, target)
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
		info, err = c.DumpWith(ctx, s.mem, s.agg.AddMessage)
		if err != nil {
			return nil, fmt.Errorf("table scan: %w", err)
		}
	}
	return &Scan{Result: s.agg.Result(), Start: start, End: time.Now(), Dump: info}, nil
}

// readTimeouts reads the TCP timeout sysctls of the namespace of target,
// entering it once for the three.
func readTimeouts(ctx context.Context, target netns.Target) (Timeouts, error) {
	var t Timeouts
	fields := []struct {
		name string
		dst  *uint32
	}{
		{sysctl.TCPTimeoutEstablished, &t.Established},
		{sysctl.TCPTimeoutMaxRetrans, &t.MaxRetrans},
		{sysctl.TCPTimeoutUnacknowledged, &t.Unacknowledged},
	}
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.name
	}
	values, err := sysctl.Reader{}.Read(ctx, target, names...)
	if err != nil {
		return Timeouts{}, fmt.Errorf("tcp timeouts: %w", err)
	}
	for _, f := range fields {
		n, ok := values[f.name]
		if !ok {
			return Timeouts{}, fmt.Errorf("tcp timeouts: netns %s: read %s: %w", target, f.name, os.ErrNotExist)
		}
		if n < 0 || n > math.MaxUint32 {
			return Timeouts{}, fmt.Errorf("tcp timeouts: netns %s: %s=%d out of range", target, f.name, n)
		}
		*f.dst = uint32(n)
	}
	return t, nil
}
