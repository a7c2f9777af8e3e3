// Package histogram is the flow-lifetime histogram: how long the flows that
// reached ESTABLISHED (ASSURED) lived, by protocol and by the TCP state in
// which they died.
//
// The classic buckets resolve the timeouts people hit: the 300 s
// tcp_timeout_max_retrans / tcp_timeout_unacknowledged cut (250..350 s),
// cloud load balancer and NAT idle timeouts (240, 350, 900, 1200 s), the
// 2 h keepalive and the 5-day established timeout. Native-histogram
// buckets are kept beside them for Prometheus servers that ingest them.
//
// The package also holds the arithmetic the alert rules and the diagnose
// report share: the share of established-end deaths that lived 250..350 s.
package histogram

import (
	"math"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Name is the metric name of the histogram.
const Name = "conntrack_flow_lifetime_seconds"

// Label names of the histogram, besides netns.
const (
	ProtocolLabel = "protocol"
	EndStateLabel = "end_state"
)

// netnsLabel is collector.NetnsLabel; the collector package imports this
// one, so the name is repeated here.
const netnsLabel = "netns"

// Native-histogram settings: a bucket factor of 1.1 (schema 3, about 9 %
// wide buckets), at most 160 buckets per series, reset at most hourly.
const (
	NativeBucketFactor     = 1.1
	NativeMaxBucketNumber  = 160
	NativeMinResetDuration = time.Hour
)

// The lifetime window of the 300 s expiry path, as the alert
// ConntrackEstablishedLifetimeCollapse reads it (le="250" to le="350").
const (
	CollapseLow  = 250.0
	CollapseHigh = 350.0
)

// Buckets returns the upper bounds, in seconds, of the classic buckets.
// Each call returns a new slice.
func Buckets() []float64 {
	return []float64{
		1, 5, 10, 30, 60, 120, 180, 240, 250, 300, 350, 450, 600, 900, 1200,
		1800, 3600, 7200, 14400, 43200, 86400, 172800, 432000,
	}
}

// Protocol is the bounded protocol label value.
type Protocol uint8

// The protocol label values.
const (
	ProtocolOther Protocol = iota
	ProtocolTCP
	ProtocolUDP
	ProtocolSCTP
	ProtocolICMP
	ProtocolICMPv6
	// NumProtocols is the number of protocol values, not a protocol.
	NumProtocols
)

var protocolNames = [NumProtocols]string{
	ProtocolOther:  "other",
	ProtocolTCP:    "tcp",
	ProtocolUDP:    "udp",
	ProtocolSCTP:   "sctp",
	ProtocolICMP:   "icmp",
	ProtocolICMPv6: "icmpv6",
}

// ProtocolFromNumber maps an IP protocol number to its label value; every
// protocol not named here is ProtocolOther.
func ProtocolFromNumber(n uint8) Protocol {
	switch n {
	case 6:
		return ProtocolTCP
	case 17:
		return ProtocolUDP
	case 132:
		return ProtocolSCTP
	case 1:
		return ProtocolICMP
	case 58:
		return ProtocolICMPv6
	}
	return ProtocolOther
}

// String returns the label value.
func (p Protocol) String() string {
	if p >= NumProtocols {
		return protocolNames[ProtocolOther]
	}
	return protocolNames[p]
}

// EndState is the bounded end_state label value: the TCP conntrack state
// at DESTROY, or EndNone for other protocols.
type EndState uint8

// The end_state label values. The numbers are the kernel's enum
// tcp_conntrack.
const (
	EndNone        EndState = 0
	EndSynSent     EndState = 1
	EndSynRecv     EndState = 2
	EndEstablished EndState = 3
	EndFinWait     EndState = 4
	EndCloseWait   EndState = 5
	EndLastAck     EndState = 6
	EndTimeWait    EndState = 7
	EndClose       EndState = 8
	EndSynSent2    EndState = 9
	// NumEndStates is the number of end states, not a state.
	NumEndStates EndState = 10
)

var endStateNames = [NumEndStates]string{
	EndNone:        "none",
	EndSynSent:     "syn_sent",
	EndSynRecv:     "syn_recv",
	EndEstablished: "established",
	EndFinWait:     "fin_wait",
	EndCloseWait:   "close_wait",
	EndLastAck:     "last_ack",
	EndTimeWait:    "time_wait",
	EndClose:       "close",
	EndSynSent2:    "syn_sent2",
}

// EndStateFromTCP maps a TCP conntrack state number to its end state;
// unknown numbers are EndNone.
func EndStateFromTCP(state uint8) EndState {
	if EndState(state) >= NumEndStates {
		return EndNone
	}
	return EndState(state)
}

// String returns the label value.
func (s EndState) String() string {
	if s >= NumEndStates {
		return endStateNames[EndNone]
	}
	return endStateNames[s]
}

// Opts returns the histogram options of conntrack_flow_lifetime_seconds.
func Opts() prometheus.HistogramOpts {
	return prometheus.HistogramOpts{
		Name: Name,
		Help: "Lifetime of conntrack flows that reached ESTABLISHED (ASSURED), from creation to DESTROY, " +
			"by protocol and by the TCP state at DESTROY (end_state; none for other protocols).",
		Buckets:                         Buckets(),
		NativeHistogramBucketFactor:     NativeBucketFactor,
		NativeHistogramMaxBucketNumber:  NativeMaxBucketNumber,
		NativeHistogramMinResetDuration: NativeMinResetDuration,
	}
}

// Lifetimes is the lifetime histogram of one network namespace. Observe is
// safe for concurrent use and does not allocate once a label pair has been
// seen; it never waits for a scrape except, rarely, when the native
// buckets of a series are rescaled.
type Lifetimes struct {
	netns string
	vec   *prometheus.HistogramVec
	// obs caches the series of each label pair, created on first use so
	// that only observed pairs are exported.
	obs [NumProtocols][NumEndStates]atomic.Pointer[observer]
}

type observer struct{ prometheus.Observer }

// New returns an empty histogram for the namespace whose netns label value
// is netns.
func New(netns string) *Lifetimes {
	return &Lifetimes{
		netns: netns,
		vec:   prometheus.NewHistogramVec(Opts(), []string{netnsLabel, ProtocolLabel, EndStateLabel}),
	}
}

// Observe records one flow that lived seconds.
func (l *Lifetimes) Observe(p Protocol, s EndState, seconds float64) {
	if p >= NumProtocols {
		p = ProtocolOther
	}
	if s >= NumEndStates {
		s = EndNone
	}
	if seconds < 0 || math.IsNaN(seconds) {
		seconds = 0
	}
	slot := &l.obs[p][s]
	o := slot.Load()
	if o == nil {
		o = &observer{l.vec.WithLabelValues(l.netns, p.String(), s.String())}
		slot.Store(o)
	}
	o.Observe(seconds)
}

// Describe implements prometheus.Collector.
func (l *Lifetimes) Describe(ch chan<- *prometheus.Desc) { l.vec.Describe(ch) }

// Collect implements prometheus.Collector.
func (l *Lifetimes) Collect(ch chan<- prometheus.Metric) { l.vec.Collect(ch) }

// Each calls fn with every series observed so far, as Collect would send
// them, without a channel.
func (l *Lifetimes) Each(fn func(prometheus.Metric)) {
	for p := range l.obs {
		for s := range l.obs[p] {
			if o := l.obs[p][s].Load(); o != nil {
				fn(o.Observer.(prometheus.Metric))
			}
		}
	}
}

// Bucket is one classic bucket: the number of observations <= UpperBound.
type Bucket struct {
	UpperBound      float64
	CumulativeCount uint64
}

// ShareBetween returns the share (0..1) of count observations that fell in
// (lo, hi], from cumulative classic buckets whose upper bounds include lo
// and hi. ok is false when count is zero or a bound is missing.
func ShareBetween(buckets []Bucket, count uint64, lo, hi float64) (share float64, ok bool) {
	if count == 0 {
		return math.NaN(), false
	}
	var cLo, cHi uint64
	var haveLo, haveHi bool
	for _, b := range buckets {
		if b.UpperBound == lo {
			cLo, haveLo = b.CumulativeCount, true
		}
		if b.UpperBound == hi {
			cHi, haveHi = b.CumulativeCount, true
		}
	}
	if !haveLo || !haveHi || cHi < cLo {
		return math.NaN(), false
	}
	return float64(cHi-cLo) / float64(count), true
}

// CollapseShare returns the share of deaths that lived 250..350 s: the
// value the alert ConntrackEstablishedLifetimeCollapse compares with 0.5,
// when buckets and count are those of end_state="established" summed over
// protocols.
func CollapseShare(buckets []Bucket, count uint64) (float64, bool) {
	return ShareBetween(buckets, count, CollapseLow, CollapseHigh)
}
