// Package tablescan computes the breakdown of a conntrack table in one
// streaming pass over a ctnetlink dump: entries per protocol and state, by
// NAT kind, without a reply, not ASSURED (evictable), per conntrack helper,
// the top sources and destination ports, the ESTABLISHED entries whose
// timeout the kernel shortened, and optionally entries per zone and per
// mark.
//
// Entries are aggregated as the dump arrives and never kept, so memory does
// not grow with the table: the top-K breakdowns use bounded Space-Saving
// summaries (package topk; exact while the distinct values fit in their
// capacity, see Options.Capacity), the helper names are capped at
// MaxHelpers, every other count is a fixed-size array.
package tablescan

import (
	"cmp"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"

	"github.com/ct-exporter/ct-exporter/internal/ctnl"
	"github.com/ct-exporter/ct-exporter/internal/topk"
)

// DefaultTopK is the default number of sources, destination ports, zones
// and marks reported by name.
const DefaultTopK = 10

// DefaultCapacity is the default number of counters of each top-K summary.
// Up to this many distinct sources (or ports, zones, marks) the counts are
// exact; with N entries and more distinct values, a reported count is at
// most N/DefaultCapacity too high (15 entries for a 1M-entry table).
const DefaultCapacity = 1 << 16

// Options configure an Aggregator.
type Options struct {
	// TopK is how many sources, destination ports, zones and marks are
	// reported by name, besides one remainder; 0 reports none.
	TopK int
	// ByZoneMark also counts entries per conntrack zone and per mark, as
	// top-K breakdowns with the same K; it has no effect when TopK is 0.
	ByZoneMark bool
	// Capacity is the number of counters of each top-K summary; 0 means
	// DefaultCapacity. It is raised to TopK if smaller. Each counter costs
	// about 60 bytes once used.
	Capacity int
}

// Timeouts are the namespace's TCP timeout sysctls the shortened-timeout
// count depends on, in seconds.
type Timeouts struct {
	// Established is nf_conntrack_tcp_timeout_established.
	Established uint32
	// MaxRetrans is nf_conntrack_tcp_timeout_max_retrans.
	MaxRetrans uint32
	// Unacknowledged is nf_conntrack_tcp_timeout_unacknowledged.
	Unacknowledged uint32
}

// ShortenedThreshold returns the remaining timeout at or below which an
// ESTABLISHED entry is counted as shortened: the larger of MaxRetrans and
// Unacknowledged. ok is false when Established is not larger than that,
// because then a shortened entry cannot be told from a normal one.
func (t Timeouts) ShortenedThreshold() (threshold uint32, ok bool) {
	threshold = max(t.MaxRetrans, t.Unacknowledged)
	return threshold, t.Established > threshold
}

const (
	protoTCP = 6
	// noPort marks a destination-port key of a protocol without ports.
	noPort = 1 << 16
)

// Aggregator counts the entries of one table scan. It is reused from one
// scan to the next (Reset), keeps its memory, and allocates nothing per
// entry. It is not safe for concurrent use.
type Aggregator struct {
	opts Options

	states    [256][numStates]uint64
	total     uint64
	malformed uint64
	shortened uint64
	timeouts  Timeouts
	threshold uint32
	detect    bool

	nat       [4]uint64 // by ctnl.NATKind
	unreplied uint64
	evictable uint64
	helpers   helperCounts

	sources, ports, zones, marks *topk.Summary

	flow ctnl.Flow // decoding scratch space
}

// NewAggregator returns an empty Aggregator.
func NewAggregator(opts Options) *Aggregator {
	if opts.TopK < 0 {
		opts.TopK = 0
	}
	if opts.Capacity <= 0 {
		opts.Capacity = DefaultCapacity
	}
	opts.Capacity = max(opts.Capacity, opts.TopK)
	a := &Aggregator{opts: opts}
	if opts.TopK > 0 {
		a.sources = topk.NewSummary(opts.Capacity, rand.Uint64())
		a.ports = topk.NewSummary(opts.Capacity, rand.Uint64())
	}
	if opts.ByZoneMark && opts.TopK > 0 {
		a.zones = topk.NewSummary(opts.Capacity, rand.Uint64())
		a.marks = topk.NewSummary(opts.Capacity, rand.Uint64())
	}
	return a
}

// Options returns the options in effect, defaults applied.
func (a *Aggregator) Options() Options { return a.opts }

// Reset empties the Aggregator for a new scan of a namespace with the
// given timeouts.
func (a *Aggregator) Reset(t Timeouts) {
	a.states = [256][numStates]uint64{}
	a.total, a.malformed, a.shortened = 0, 0, 0
	a.nat = [4]uint64{}
	a.unreplied, a.evictable = 0, 0
	a.helpers.reset()
	a.timeouts = t
	a.threshold, a.detect = t.ShortenedThreshold()
	for _, s := range []*topk.Summary{a.sources, a.ports, a.zones, a.marks} {
		if s != nil {
			s.Reset()
		}
	}
}

// AddMessage decodes the body of one dumped entry message (as passed by
// ctnl.Conn.Dump) and counts it. An entry that does not decode, or lacks
// its protocol or addresses, is counted as malformed and skipped; it is
// never an error.
func (a *Aggregator) AddMessage(data []byte) error {
	if err := ctnl.DecodeFlow(data, &a.flow); err != nil {
		a.malformed++
		return nil
	}
	a.Add(&a.flow)
	return nil
}

// Add counts one decoded entry, or counts it as malformed when it lacks
// its protocol or addresses.
func (a *Aggregator) Add(f *ctnl.Flow) {
	if !f.Has(ctnl.HasProtocol | ctnl.HasAddrs) {
		a.malformed++
		return
	}
	a.total++
	state := stateNone
	if f.Protocol == protoTCP && f.Has(ctnl.HasTCPState) {
		switch {
		case f.TCPState == ctnl.TCPStateNone:
		case f.TCPState < numTCPStates:
			state = int(f.TCPState)
		default:
			state = stateUnknown
		}
		if f.TCPState == ctnl.TCPStateEstablished && a.detect &&
			f.Has(ctnl.HasTimeout) && f.Timeout <= a.threshold {
			a.shortened++
		}
	}
	a.states[f.Protocol][state]++
	a.nat[f.NATKind()]++
	if !f.Replied() {
		a.unreplied++
	}
	if !f.Assured() {
		a.evictable++
	}
	if f.Has(ctnl.HasHelper) {
		a.helpers.add(f.Helper())
	}
	if a.sources != nil {
		a.sources.Add(topk.AddrKey(f.Src))
		port := uint64(noPort)
		if f.Has(ctnl.HasPorts) {
			port = uint64(f.DstPort)
		}
		a.ports.Add(topk.NumberKey(uint64(f.Protocol)<<17 | port))
	}
	if a.zones != nil {
		a.zones.Add(topk.NumberKey(uint64(f.Zone)))
		a.marks.Add(topk.NumberKey(uint64(f.Mark)))
	}
}

// StateCount is the number of entries of one protocol in one state.
type StateCount struct {
	// Protocol is the protocol label value (ProtocolName).
	Protocol string
	// State is the TCP state in lower case, or none.
	State string
	// Entries is the number of entries.
	Entries uint64
}

// Top is a top-K breakdown: the K largest values, largest first (ties in
// value order), and the remainder, so that the entries of Top and Other
// add up to the number of entries counted.
type Top[T any] struct {
	// Top holds at most K values with their entry counts.
	Top []Counted[T]
	// Other is the number of entries of every other value.
	Other uint64
	// MaxError is how much any count in Top may exceed the true count:
	// 0 while the distinct values fit in the summary's capacity.
	MaxError uint64
	// Distinct is the number of distinct values seen, or the capacity
	// once it was reached.
	Distinct int
}

// Counted is one value of a top-K breakdown.
type Counted[T any] struct {
	Value   T
	Entries uint64
}

// Port is a destination port of one protocol.
type Port struct {
	// Protocol is the protocol number.
	Protocol uint8
	// Port is the destination port of the original direction; HasPort is
	// false for protocols without ports (ICMP and others).
	Port    uint16
	HasPort bool
}

// ProtocolLabel returns the protocol label value (ProtocolName).
func (p Port) ProtocolLabel() string { return ProtocolName(p.Protocol) }

// PortLabel returns the port label value: the decimal port, or none.
func (p Port) PortLabel() string {
	if !p.HasPort {
		return "none"
	}
	return strconv.Itoa(int(p.Port))
}

// Result is the breakdown of one scan. It is never changed once returned.
type Result struct {
	// Total is the number of entries counted, malformed ones excluded.
	Total uint64
	// Malformed is the number of entries skipped because they did not
	// decode or lacked their protocol or addresses.
	Malformed uint64
	// States holds the entries per protocol and state, by protocol then
	// state label; they add up to Total.
	States []StateCount
	// Shortened is the number of ESTABLISHED TCP entries whose remaining
	// timeout is at or below Timeouts.ShortenedThreshold; 0 when the
	// established timeout is not larger than that threshold.
	Shortened uint64
	// Timeouts are the sysctls read for this scan.
	Timeouts Timeouts
	// Sources are the top original-direction source addresses; nil when
	// TopK is 0.
	Sources *Top[netip.Addr]
	// Ports are the top original-direction destination ports; nil when
	// TopK is 0.
	Ports *Top[Port]
	// Zones and Marks are the top conntrack zones and marks (0 for
	// entries without one); nil unless ByZoneMark and TopK > 0.
	Zones *Top[uint16]
	Marks *Top[uint32]
	// NAT holds the entries by the address translation the kernel applied
	// to them; its four counts add up to Total.
	NAT NATCounts
	// Unreplied is the number of entries that have seen no reply
	// (no SEEN_REPLY status bit): SYN floods, scans, dead backends, UDP
	// to nowhere.
	Unreplied uint64
	// Evictable is the number of entries not ASSURED: those early_drop and
	// the garbage collector may evict when the table is full.
	Evictable uint64
	// Helpers holds the entries with a conntrack helper (ALG) attached, by
	// helper name in name order, at most MaxHelpers names and then
	// OtherHelper for the rest; entries without a helper are not listed.
	Helpers []HelperCount
}

// NATCounts are the entries of a table by NAT kind.
type NATCounts struct {
	// None, SNAT, DNAT and Both count the entries with no NAT, source NAT
	// only, destination NAT only, and both (ctnl.NATKind).
	None, SNAT, DNAT, Both uint64
}

// NATCount is the number of entries of one NAT kind.
type NATCount struct {
	// NAT is the label value: none, snat, dnat or both.
	NAT string
	// Entries is the number of entries.
	Entries uint64
}

// Kinds returns the four counts with their label values, in the order
// none, snat, dnat, both.
func (n NATCounts) Kinds() []NATCount {
	return []NATCount{
		{ctnl.NATNone.String(), n.None},
		{ctnl.NATSource.String(), n.SNAT},
		{ctnl.NATDestination.String(), n.DNAT},
		{ctnl.NATBoth.String(), n.Both},
	}
}

// HelperCount is the number of entries with one conntrack helper.
type HelperCount struct {
	// Helper is the helper's name as the kernel reports it (ftp, sip ...),
	// or OtherHelper.
	Helper string
	// Entries is the number of entries.
	Entries uint64
}

// Result returns the breakdown of the entries counted since Reset.
func (a *Aggregator) Result() *Result {
	r := &Result{
		Total:     a.total,
		Malformed: a.malformed,
		Shortened: a.shortened,
		Timeouts:  a.timeouts,
		NAT: NATCounts{
			None: a.nat[ctnl.NATNone], SNAT: a.nat[ctnl.NATSource],
			DNAT: a.nat[ctnl.NATDestination], Both: a.nat[ctnl.NATBoth],
		},
		Unreplied: a.unreplied,
		Evictable: a.evictable,
		Helpers:   a.helpers.result(),
	}
	for p := range a.states {
		for s, n := range a.states[p] {
			if n > 0 {
				r.States = append(r.States, StateCount{Protocol: ProtocolName(uint8(p)), State: stateName(s), Entries: n})
			}
		}
	}
	slices.SortFunc(r.States, func(x, y StateCount) int {
		if c := cmp.Compare(x.Protocol, y.Protocol); c != 0 {
			return c
		}
		return cmp.Compare(x.State, y.State)
	})
	k := a.opts.TopK
	if a.sources != nil {
		r.Sources = topOf(a.sources, k, topk.Key.Addr)
		r.Ports = topOf(a.ports, k, func(k topk.Key) Port {
			n := k.Number()
			return Port{Protocol: uint8(n >> 17), Port: uint16(n), HasPort: n&noPort == 0}
		})
	}
	if a.zones != nil {
		r.Zones = topOf(a.zones, k, func(k topk.Key) uint16 { return uint16(k.Number()) })
		r.Marks = topOf(a.marks, k, func(k topk.Key) uint32 { return uint32(k.Number()) })
	}
	return r
}

// topOf converts a summary's top k into a Top.
func topOf[T any](s *topk.Summary, k int, conv func(topk.Key) T) *Top[T] {
	items, other, maxErr := s.Top(k)
	t := &Top[T]{Other: other, MaxError: maxErr, Distinct: s.Distinct(), Top: make([]Counted[T], len(items))}
	for i, it := range items {
		t.Top[i] = Counted[T]{Value: conv(it.Key), Entries: it.Count}
	}
	return t
}
