package diagnose

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/ct-exporter/ct-exporter/internal/sysctl"
)

// Attribution thresholds: what share of the table or of the flow ends
// makes one kind of entry or one client worth a finding.
const (
	// helperShare and helperMin: entries with a conntrack helper are a
	// real share of the table when they are 10 % of it and at least 10
	// entries. A helper parses every packet of the flows it is assigned
	// to and opens expectations for related flows; a few entries are a
	// deliberate exception, a tenth of the table is a rule that assigns
	// it too widely.
	helperShare = 0.10
	helperMin   = 10
	// unrepliedShare and unrepliedMin: entries that have seen no reply
	// are a warning at 20 % of the table and at least 20 entries. On a
	// healthy host nearly every flow is answered within a round trip, so
	// unreplied entries are the few in flight.
	unrepliedShare = 0.20
	unrepliedMin   = 20
	// timeWaitShare and timeWaitMin: entries in time_wait are named (info)
	// at 30 % of the table and at least 100 entries.
	timeWaitShare = 0.30
	timeWaitMin   = 100
	// churnShare and churnMin: one source that ended half of the flows of
	// the sample, at least 20, is named (info).
	churnShare = 0.5
	churnMin   = 20
	// silentMin: a destination with this many silent ends is named (info).
	silentMin = clusterMin
)

// emptyTable is the table section without a dump.
func emptyTable() Table {
	return Table{States: []StateCount{}, Sources: []SourceCount{}, Ports: []PortCount{}, NAT: []NATCount{}, Helpers: []HelperCount{}}
}

// emptyLifetimes is the lifetimes section without events.
func emptyLifetimes() Lifetimes {
	return Lifetimes{EndStates: []EndStateCount{}, Buckets: []LifetimeBucket{}, Distribution: []DistributionBucket{}}
}

// emptyFlowEnds is the flow-ends section without events.
func emptyFlowEnds() FlowEnds {
	return FlowEnds{Sources: []EndSource{}, SilentDestinations: []SilentDestination{}}
}

// keepalive reads the keepalive settings and compares the keepalive time
// with the middlebox idle timeout.
func (a *analysis) keepalive() {
	k := a.s.Keepalive
	if a.s.KeepaliveErr != nil || !k.Has(sysctl.KeepaliveTime) {
		return
	}
	ka := &Keepalive{
		TimeSeconds:                 k[sysctl.KeepaliveTime],
		IntervalSeconds:             k[sysctl.KeepaliveInterval],
		Probes:                      k[sysctl.KeepaliveProbes],
		MiddleboxIdleTimeoutSeconds: a.opts.MiddleboxIdleTimeout.Seconds(),
	}
	a.r.Settings.Keepalive = ka
	idle := a.opts.MiddleboxIdleTimeout
	if idle <= 0 || time.Duration(ka.TimeSeconds)*time.Second < idle {
		return
	}
	a.find("keepalive_above_idle_timeout", "settings", SeverityWarning,
		"net.ipv4.%s is %d s, at or above the middlebox idle timeout of %s: idle connections through it are dropped "+
			"there before the first keepalive probe", sysctl.KeepaliveTime, ka.TimeSeconds, seconds(idle.Seconds()))
}

// suggestedKeepalive proposes a keepalive time safely below a middlebox
// idle timeout: four fifths of it, in whole tens of seconds from 60 s.
func suggestedKeepalive(idle time.Duration) int64 {
	v := int64(idle.Seconds() * 0.8)
	if v >= 60 {
		v = v / 10 * 10
	}
	return max(v, 1)
}

// tableAttribution fills the NAT, unreplied, evictable, helper and
// time_wait parts of the table section and records their findings.
func (a *analysis) tableAttribution(t *Table, ts *TableSample) {
	share := func(n uint64) float64 {
		if t.Entries == 0 {
			return 0
		}
		return float64(n) / float64(t.Entries)
	}
	for _, n := range ts.NAT {
		n.Share = share(n.Entries)
		t.NAT = append(t.NAT, n)
	}
	t.Unreplied, t.UnrepliedShare = ts.Unreplied, share(ts.Unreplied)
	t.Evictable, t.EvictableShare = ts.Evictable, share(ts.Evictable)
	var helpers uint64
	for _, h := range ts.Helpers {
		h.Share = share(h.Entries)
		t.Helpers = append(t.Helpers, h)
		helpers += h.Entries
	}
	slices.SortStableFunc(t.Helpers, func(x, y HelperCount) int { return cmp.Compare(y.Entries, x.Entries) })
	for _, sc := range t.States {
		if sc.Protocol == "tcp" && sc.State == "time_wait" {
			t.TimeWait += sc.Entries
		}
	}
	t.TimeWaitShare = share(t.TimeWait)

	if helpers >= helperMin && share(helpers) >= helperShare {
		var names []string
		for _, h := range t.Helpers {
			names = append(names, fmt.Sprintf("%s %s", h.Helper, count(h.Entries)))
		}
		a.find("helper_entries", "table", SeverityWarning,
			"%s of the entries (%s) have a conntrack helper attached: %s",
			percent(share(helpers)), count(helpers), strings.Join(names, ", "))
	}
	if t.Unreplied >= unrepliedMin && t.UnrepliedShare >= unrepliedShare {
		a.find("unreplied_share", "table", SeverityWarning,
			"%s of the entries (%s) have seen no reply: half-open flows to a dead backend, a scan or a flood",
			percent(t.UnrepliedShare), count(t.Unreplied))
	}
	if t.TimeWait >= timeWaitMin && t.TimeWaitShare >= timeWaitShare {
		a.find("time_wait_share", "table", SeverityInfo,
			"%s of the entries (%s) are in time_wait, each held %d s after its close by %s",
			percent(t.TimeWaitShare), count(t.TimeWait), a.sysctlOr(sysTimeWait, 120), sysTimeWait)
	}
}

// flowEnds fills the flow-ends section from the attribution read at the
// end of the sample.
func (a *analysis) flowEnds() {
	fe := emptyFlowEnds()
	switch {
	case a.s.Lifetimes == nil:
		fe.Reason = reason(a.s.LifetimesErr, "no events were read")
		a.r.FlowEnds = fe
		return
	case a.s.Lifetimes.Attribution == nil:
		fe.Reason = "the event subscriber did not count flow ends"
		a.r.FlowEnds = fe
		return
	}
	at := a.s.Lifetimes.Attribution
	fe.Available = true
	fe.Ends, fe.SilentEnds = at.Ends.Total, at.Silent.Total
	fe.MaxError = max(at.Ends.MaxError, at.Silent.MaxError)
	share := func(n, total uint64) float64 {
		if total == 0 {
			return 0
		}
		return float64(n) / float64(total)
	}
	fe.OtherSources = at.Ends.Other
	for i, it := range at.Ends.Items {
		if i >= a.opts.TopK {
			fe.OtherSources += it.Count
			continue
		}
		fe.Sources = append(fe.Sources, EndSource{Address: it.Key.Addr().String(), Ends: it.Count, Share: share(it.Count, fe.Ends)})
	}
	fe.OtherSilent = at.Silent.Other
	for i, it := range at.Silent.Items {
		if i >= a.opts.TopK {
			fe.OtherSilent += it.Count
			continue
		}
		fe.SilentDestinations = append(fe.SilentDestinations, SilentDestination{
			Address: it.Key.Addr().String(), Port: it.Key.Port(), Ends: it.Count, Share: share(it.Count, fe.SilentEnds),
		})
	}
	a.r.FlowEnds = fe

	if len(fe.Sources) > 0 && fe.Sources[0].Ends >= churnMin && fe.Sources[0].Share >= churnShare {
		s := fe.Sources[0]
		a.find("churning_source", "flow_ends", SeverityInfo,
			"%s ended %s of the %s flows that ended during the sample (%s)",
			s.Address, count(s.Ends), count(fe.Ends), percent(s.Share))
	}
	if len(fe.SilentDestinations) > 0 && fe.SilentDestinations[0].Ends >= silentMin {
		d := fe.SilentDestinations[0]
		a.find("silent_destination", "flow_ends", SeverityInfo,
			"%s flows to %s ended silently (established, no FIN or RST): %s of the %s silent ends",
			count(d.Ends), d.name(), percent(d.Share), count(fe.SilentEnds))
	}
}

// name writes a silent-end destination as address:port.
func (d SilentDestination) name() string {
	addr, err := netip.ParseAddr(d.Address)
	if err != nil {
		return fmt.Sprintf("%s:%d", d.Address, d.Port)
	}
	return netip.AddrPortFrom(addr, d.Port).String()
}

// topSilent names the destination with the most silent ends, or "".
func (a *analysis) topSilent() string {
	fe := a.r.FlowEnds
	if len(fe.SilentDestinations) == 0 {
		return ""
	}
	d := fe.SilentDestinations[0]
	return fmt.Sprintf(" The most silent ends of the sample went to %s (%s of %s).", d.name(), count(d.Ends), count(fe.SilentEnds))
}

// distribution returns the non-empty buckets of every death.
func distribution(bounds []float64, counts map[string][]uint64) []DistributionBucket {
	sums := make([]uint64, len(bounds)+1)
	for _, c := range counts {
		for i, n := range c {
			if i < len(sums) {
				sums[i] += n
			}
		}
	}
	out := []DistributionBucket{}
	for i, n := range sums {
		if n == 0 {
			continue
		}
		b := DistributionBucket{Deaths: n}
		if i < len(bounds) {
			b.UpperSeconds = bounds[i]
		}
		out = append(out, b)
	}
	return out
}
