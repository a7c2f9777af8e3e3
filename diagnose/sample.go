package diagnose

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/ct-exporter/ct-exporter/internal/ctnl"
	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/sysctl"
	"github.com/ct-exporter/ct-exporter/internal/topk"
)

// ErrNotAvailable marks a section a Sampler could not measure for a reason
// that is not a failure (the feature is off, or not in this build). The
// error's text is shown as the reason.
var ErrNotAvailable = errors.New("not available")

// Sample is everything measured in one namespace.
type Sample struct {
	// Target is the namespace sampled.
	Target netns.Target
	// Start and End are when the first and the last reading were taken.
	Start, End time.Time
	// Before and After are the statistics at Start and at End.
	Before, After ctnl.Snapshot
	// Settings are the sysctls, read at Start.
	Settings sysctl.Values
	// Keepalive are the TCP keepalive sysctls (sysctl.Keepalive), read at
	// Start; KeepaliveErr is set instead when they could not be read.
	Keepalive    sysctl.Values
	KeepaliveErr error
	// Host holds what is read outside the namespace.
	Host HostInfo
	// Table is the breakdown of a table dump at the end of the sample;
	// TableErr is set instead when there is none.
	Table    *TableSample
	TableErr error
	// Lifetimes are the deaths seen during the sample; LifetimesErr is set
	// instead when there are none.
	Lifetimes    *LifetimeSample
	LifetimesErr error
}

// HostInfo is what diagnose reads from the host rather than the namespace.
type HostInfo struct {
	// SlabObjectBytes is the object size of the nf_conntrack slab cache
	// from /proc/slabinfo; 0 when it could not be read.
	SlabObjectBytes uint64
	// Helpers are the conntrack helpers built in or loaded.
	Helpers []string
}

// TableSample is the breakdown of one table dump.
type TableSample struct {
	// Entries is the number of entries counted.
	Entries uint64
	// Malformed is the number of entries that did not decode.
	Malformed uint64
	// Duration is how long the dump took.
	Duration time.Duration
	// States are the entries per protocol and state.
	States []StateCount
	// Sources and Ports are the top sources and destination ports, and
	// the remainder of each.
	Sources      []SourceCount
	OtherSources uint64
	Ports        []PortCount
	OtherPorts   uint64
	// Shortened, ShortenedThreshold and ShortenedDetectable are as in
	// Table.
	Shortened           uint64
	ShortenedThreshold  uint64
	ShortenedDetectable bool
	// NAT, Unreplied, Evictable and Helpers are as in Table; their shares
	// are left to Analyze.
	NAT       []NATCount
	Unreplied uint64
	Evictable uint64
	Helpers   []HelperCount
}

// LifetimeSample is the histogram of the lifetimes of the flows that
// reached ESTABLISHED (ASSURED) and died during the sample.
type LifetimeSample struct {
	// Bounds are the upper bounds of the buckets in seconds, ascending;
	// a last bucket without upper bound follows them.
	Bounds []float64
	// Counts holds, per TCP state at death (established, time_wait,
	// close, ...), the deaths per bucket: len(Bounds)+1 counts.
	Counts map[string][]uint64
	// Lost is the number of events lost by the subscriber.
	Lost uint64
	// WithoutTimestamp is the number of deaths without timestamps.
	WithoutTimestamp uint64
	// Attribution are the top sources of flow ends and the top
	// destinations of silent ends of the sample; nil when they were not
	// counted.
	Attribution *AttributionSample
}

// AttributionSample is one read of an events.Attribution at the end of a
// sample.
type AttributionSample struct {
	// Ends are the sources of every flow that ended, Silent the
	// destinations (address and port) of the silent ends.
	Ends, Silent topk.WindowTop
}

// Sampler measures one namespace over a duration.
type Sampler interface {
	// Sample measures target for d and returns what it read. An error
	// means the namespace could not be sampled at all; a section that
	// could not be measured is reported in Sample.TableErr or
	// Sample.LifetimesErr instead.
	Sample(ctx context.Context, target netns.Target, d time.Duration) (Sample, error)
}

// Options tune the analysis.
type Options struct {
	// TopK is how many sources and destination ports are shown; 0 means
	// DefaultTopK.
	TopK int
	// MiddleboxIdleTimeout is the idle timeout of a NAT gateway or load
	// balancer on the path; when it is positive, a keepalive time at or
	// above it is a warning. 0 turns the check off.
	MiddleboxIdleTimeout time.Duration
}

// DefaultTopK is the default number of top sources and ports shown.
const DefaultTopK = 5

// Run samples every target for d, all at once, and returns the report. A
// namespace that could not be sampled has its Error set; Run returns an
// error only when the context ended first.
func Run(ctx context.Context, s Sampler, targets []netns.Target, d time.Duration, opts Options) (*Report, error) {
	r := &Report{
		SchemaVersion:   SchemaVersion,
		Start:           time.Now().UTC(),
		DurationSeconds: d.Seconds(),
		Namespaces:      make([]NamespaceReport, len(targets)),
	}
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Go(func() {
			sample, err := s.Sample(ctx, t, d)
			if err != nil {
				r.Namespaces[i] = failedReport(t, err)
				return
			}
			r.Namespaces[i] = Analyze(sample, opts)
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.Verdict = VerdictOK
	for _, ns := range r.Namespaces {
		r.Verdict = r.Verdict.Worse(ns.Verdict)
	}
	return r, nil
}

// Failed returns the namespaces that could not be sampled.
func (r *Report) Failed() []NamespaceReport {
	var out []NamespaceReport
	for _, ns := range r.Namespaces {
		if ns.Error != "" {
			out = append(out, ns)
		}
	}
	return out
}

// failedReport is the report of a namespace that could not be sampled:
// its error, and every section empty.
func failedReport(t netns.Target, err error) NamespaceReport {
	return NamespaceReport{
		Name: t.Name, Path: t.Path, Error: err.Error(), Verdict: VerdictOK,
		Counters: []CounterRate{}, Findings: []Finding{}, Recommendations: []Recommendation{},
		Settings:  Settings{Sysctls: map[string]int64{}, Helpers: []string{}},
		Table:     emptyTable(),
		Lifetimes: emptyLifetimes(),
		FlowEnds:  emptyFlowEnds(),
	}
}
