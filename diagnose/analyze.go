package diagnose

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/ct-exporter/ct-exporter/histogram"
	"github.com/ct-exporter/ct-exporter/internal/ctnl"
)

// Fill thresholds: above WarningFill the fill is a warning, above
// CriticalFill critical.
const (
	WarningFill  = 0.75
	CriticalFill = 0.90
)

// Memory estimate of one entry. The kernel allocates each entry from the
// nf_conntrack slab cache (the object size is in /proc/slabinfo: 256 bytes
// on 6.x x86-64 kernels) and, once any extension is attached (events,
// timestamps, accounting, NAT, a helper), an extension area of at least
// NF_CT_EXT_PREALLOC = 128 bytes (nf_conntrack_extend.c). Every hash
// bucket costs one pointer, whether used or not.
const (
	// ExtensionBytes is the extension area added to the measured slab
	// object size.
	ExtensionBytes = 128
	// DocumentedBytesPerEntry is the usual approximation when the slab
	// object size cannot be read.
	DocumentedBytesPerEntry = 320
	// BytesPerBucket is the cost of one hash bucket.
	BytesPerBucket = 8
)

// Analysis thresholds. Each recommendation is tied to a measurement past
// one of them; a healthy namespace gets none.
const (
	// dominantSourceShare: one source holding this share of a table under
	// pressure is named as the cause.
	dominantSourceShare = 0.30
	// dominantPortShare: likewise for one destination port.
	dominantPortShare = 0.50
	// closingShare: TCP entries in TIME_WAIT and the other closing states
	// holding this share of a table under pressure.
	closingShare = 0.50
	// shortenedShare and shortenedMin: ESTABLISHED entries with a
	// shortened timeout, as the ConntrackShortenedTimeouts alert.
	shortenedShare = 0.10
	shortenedMin   = 20
	// clusterShare and clusterMin: the modal bucket of established
	// deaths is a cluster when it holds this share and this many deaths.
	clusterShare = 0.5
	clusterMin   = 5
	// lowEstablished and shortEstablished grade the established timeout,
	// highEstablished is the kernel default above which it is unusual.
	lowEstablished   = 300
	shortEstablished = 3600
	highEstablished  = 432000
	// retransTimeout is the kernel default of the max_retrans and
	// unacknowledged timeouts.
	retransTimeout = 300
)

// reportedCounters are the counters diagnose shows, in order.
var reportedCounters = []struct {
	c       ctnl.Counter
	meaning string
	verdict Verdict // when it rose
}{
	{ctnl.Drop, "table full: new flows were dropped", VerdictCritical},
	{ctnl.EarlyDrop, "table full: unassured entries evicted", VerdictCritical},
	{ctnl.InsertFailed, "clash or long chain: a packet was lost", VerdictWarning},
	{ctnl.ClashResolve, "clash resolved without a drop", VerdictOK},
	{ctnl.ChainTooLong, "hash chain too long: insert refused", VerdictWarning},
	{ctnl.SearchRestart, "lookup restarted: entries moved chains", VerdictOK},
}

// Sysctl names diagnose interprets.
const (
	sysEstablished    = "nf_conntrack_tcp_timeout_established"
	sysMaxRetrans     = "nf_conntrack_tcp_timeout_max_retrans"
	sysUnacknowledged = "nf_conntrack_tcp_timeout_unacknowledged"
	sysTimeWait       = "nf_conntrack_tcp_timeout_time_wait"
	sysBuckets        = "nf_conntrack_buckets"
	sysEvents         = "nf_conntrack_events"
	sysTimestamp      = "nf_conntrack_timestamp"
	sysBeLiberal      = "nf_conntrack_tcp_be_liberal"
	sysLoose          = "nf_conntrack_tcp_loose"
)

// analysis holds the state of one Analyze call.
type analysis struct {
	s    Sample
	opts Options
	r    NamespaceReport

	increase map[string]uint64
	pressure bool
	recs     []Recommendation
}

// Analyze turns one namespace's Sample into its report.
func Analyze(s Sample, opts Options) NamespaceReport {
	if opts.TopK <= 0 {
		opts.TopK = DefaultTopK
	}
	a := &analysis{s: s, opts: opts, increase: map[string]uint64{}}
	a.r = NamespaceReport{
		Name:            s.Target.Name,
		Path:            s.Target.Path,
		SampleSeconds:   s.End.Sub(s.Start).Seconds(),
		Counters:        []CounterRate{},
		Findings:        []Finding{},
		Recommendations: []Recommendation{},
	}
	a.fill()
	a.counters()
	a.settings()
	a.table()
	a.lifetimes()
	a.flowEnds()
	a.recommend()

	slices.SortStableFunc(a.r.Findings, func(x, y Finding) int {
		return cmp.Compare(y.Severity.Verdict().rank(), x.Severity.Verdict().rank())
	})
	a.r.Verdict = VerdictOK
	for _, f := range a.r.Findings {
		a.r.Verdict = a.r.Verdict.Worse(f.Severity.Verdict())
	}
	a.r.Recommendations = a.recs
	if a.r.Recommendations == nil {
		a.r.Recommendations = []Recommendation{}
	}
	return a.r
}

// find records a finding.
func (a *analysis) find(code, section string, sev Severity, format string, args ...any) {
	a.r.Findings = append(a.r.Findings, Finding{Code: code, Section: section, Severity: sev, Message: fmt.Sprintf(format, args...)})
}

// has reports whether a finding with code was recorded.
func (a *analysis) has(code string) bool {
	return slices.ContainsFunc(a.r.Findings, func(f Finding) bool { return f.Code == code })
}

// sysctl returns a sysctl's value and whether it was read.
func (a *analysis) sysctl(name string) (int64, bool) {
	v, ok := a.s.Settings[name]
	return v, ok
}

func (a *analysis) fill() {
	g := a.s.After.Global
	f := Fill{Entries: uint64(g.Entries), Limit: uint64(g.MaxEntries), Verdict: VerdictOK}
	if f.Limit > 0 {
		f.Ratio = float64(f.Entries) / float64(f.Limit)
	}
	if b, ok := a.sysctl(sysBuckets); ok && b > 0 {
		f.Buckets = uint64(b)
		f.EntriesPerBucket = float64(f.Entries) / float64(f.Buckets)
	}
	f.Memory = memoryEstimate(a.s.Host.SlabObjectBytes, f.Entries, f.Limit)
	switch {
	case f.Ratio > CriticalFill:
		f.Verdict = VerdictCritical
		a.find("fill_high", "fill", SeverityCritical,
			"the table is %s full (%s of %s entries): at 100 %% new flows are dropped",
			percent(f.Ratio), count(f.Entries), count(f.Limit))
	case f.Ratio > WarningFill:
		f.Verdict = VerdictWarning
		a.find("fill_high", "fill", SeverityWarning,
			"the table is %s full (%s of %s entries)", percent(f.Ratio), count(f.Entries), count(f.Limit))
	}
	a.r.Fill = f
	a.pressure = f.Verdict != VerdictOK
}

// memoryEstimate estimates the memory of entries and of a full table.
func memoryEstimate(slab, entries, limit uint64) Memory {
	m := Memory{BytesPerEntry: DocumentedBytesPerEntry, Source: "documented"}
	if slab > 0 {
		m = Memory{BytesPerEntry: slab + ExtensionBytes, Source: "slabinfo", SlabObjectBytes: slab, ExtensionBytes: ExtensionBytes}
	}
	m.EntriesBytes = entries * m.BytesPerEntry
	m.LimitBytes = limit * m.BytesPerEntry
	return m
}

func (a *analysis) counters() {
	before := map[uint16][ctnl.NumCounters]uint32{}
	for _, c := range a.s.Before.CPUs {
		before[c.CPU] = c.Counters
	}
	var inc [ctnl.NumCounters]uint64
	for _, c := range a.s.After.CPUs {
		prev, ok := before[c.CPU]
		if !ok {
			continue // a CPU without a first reading has no known increase
		}
		for i, v := range c.Counters {
			inc[i] += uint64(v - prev[i]) // 32-bit counters: modulo 2^32
		}
	}
	secs := a.r.SampleSeconds
	for _, rc := range reportedCounters {
		n := inc[rc.c]
		cr := CounterRate{Name: rc.c.String(), Increase: n, Meaning: rc.meaning, Verdict: VerdictOK}
		if secs > 0 {
			cr.PerSecond = float64(n) / secs
		}
		if n > 0 {
			cr.Verdict = rc.verdict
		}
		a.increase[cr.Name] = n
		a.r.Counters = append(a.r.Counters, cr)
	}
	over := "over " + seconds(secs)
	if n := a.increase["drop"]; n > 0 {
		a.find("drop", "counters", SeverityCritical,
			"drop rose by %s %s: packets were dropped because the table was full", count(n), over)
	}
	if n := a.increase["early_drop"]; n > 0 {
		a.find("early_drop", "counters", SeverityCritical,
			"early_drop rose by %s %s: entries were evicted to make room in a full table", count(n), over)
	}
	if n := a.increase["insert_failed"]; n > 0 {
		a.find("insert_failed", "counters", SeverityWarning,
			"insert_failed rose by %s %s: packets were lost at confirm time (clash or long chain)", count(n), over)
	}
	if n := a.increase["chaintoolong"]; n > 0 {
		a.find("chaintoolong", "counters", SeverityWarning,
			"chaintoolong rose by %s %s: inserts found a hash chain too long", count(n), over)
	}
	if a.increase["drop"] > 0 || a.increase["early_drop"] > 0 {
		a.pressure = true
	}
}

func (a *analysis) settings() {
	sysctls := make(map[string]int64, len(a.s.Settings))
	for k, v := range a.s.Settings {
		sysctls[k] = v
	}
	helpers := slices.Clone(a.s.Host.Helpers)
	if helpers == nil {
		helpers = []string{}
	}
	a.r.Settings = Settings{Sysctls: sysctls, Helpers: helpers}
	a.keepalive()

	retrans := a.retransTimeout()
	if est, ok := a.sysctl(sysEstablished); ok {
		switch {
		case est < lowEstablished || (retrans > 0 && est <= retrans):
			a.find("established_timeout_low", "settings", SeverityWarning,
				"%s is %d s: idle established flows expire after %s without FIN or RST",
				sysEstablished, est, seconds(float64(est)))
		case est < shortEstablished:
			a.find("established_timeout_short", "settings", SeverityInfo,
				"%s is %d s: connections idle longer (pools, WebSockets) need keepalives below it",
				sysEstablished, est)
		case est > highEstablished:
			a.find("established_timeout_high", "settings", SeverityInfo,
				"%s is %d s, above the kernel default 432000: entries of vanished peers linger",
				sysEstablished, est)
		}
	}
	if v, ok := a.sysctl(sysTimestamp); ok && v == 0 {
		a.find("timestamps_off", "settings", SeverityInfo,
			"%s is 0: only flows created during the sample get a lifetime (from their NEW event)", sysTimestamp)
	}
	switch v, ok := a.sysctl(sysEvents); {
	case ok && v == 0:
		a.find("events_off", "settings", SeverityInfo,
			"%s is 0: the kernel sends no events, so lifetimes cannot be measured", sysEvents)
	case ok && v == 2:
		a.find("events_listener_only", "settings", SeverityInfo,
			"%s is 2: flows created before the sample began send no DESTROY event, so their deaths are not seen", sysEvents)
	}
	if v, ok := a.sysctl(sysBeLiberal); ok && v != 0 {
		a.find("be_liberal", "settings", SeverityInfo,
			"%s is %d: out-of-window TCP packets are accepted, not marked INVALID", sysBeLiberal, v)
	}
	if v, ok := a.sysctl(sysLoose); ok && v == 0 {
		a.find("loose_off", "settings", SeverityInfo,
			"%s is 0: flows are not picked up mid-stream (after a flush or failover)", sysLoose)
	}
	for _, name := range []string{sysMaxRetrans, sysUnacknowledged} {
		if v, ok := a.sysctl(name); ok && v != retransTimeout {
			a.find("retrans_timeout_changed", "settings", SeverityInfo,
				"%s is %d s, not 300: the 250..350 s lifetime band does not apply", name, v)
		}
	}
}

// retransTimeout returns the larger of the max_retrans and unacknowledged
// timeouts, or 0 when neither was read.
func (a *analysis) retransTimeout() int64 {
	mr, _ := a.sysctl(sysMaxRetrans)
	un, _ := a.sysctl(sysUnacknowledged)
	return max(mr, un)
}

// closingStates are the TCP states of connections being closed.
var closingStates = []string{"fin_wait", "close_wait", "last_ack", "time_wait", "close"}

func (a *analysis) table() {
	t := emptyTable()
	if a.s.Table == nil {
		t.Reason = reason(a.s.TableErr, "no table dump was taken")
		a.r.Table = t
		return
	}
	ts := a.s.Table
	t.Available = true
	t.Entries = ts.Entries
	t.Malformed = ts.Malformed
	t.ScanSeconds = ts.Duration.Seconds()
	share := func(n uint64) float64 {
		if ts.Entries == 0 {
			return 0
		}
		return float64(n) / float64(ts.Entries)
	}
	for _, sc := range ts.States {
		sc.Share = share(sc.Entries)
		t.States = append(t.States, sc)
		if sc.Protocol == "tcp" && sc.State == "established" {
			t.EstablishedTCP += sc.Entries
		}
	}
	slices.SortStableFunc(t.States, func(x, y StateCount) int { return cmp.Compare(y.Entries, x.Entries) })
	t.OtherSources, t.OtherPorts = ts.OtherSources, ts.OtherPorts
	for i, sc := range ts.Sources {
		if i >= a.opts.TopK {
			t.OtherSources += sc.Entries
			continue
		}
		sc.Share = share(sc.Entries)
		t.Sources = append(t.Sources, sc)
	}
	for i, pc := range ts.Ports {
		if i >= a.opts.TopK {
			t.OtherPorts += pc.Entries
			continue
		}
		pc.Share = share(pc.Entries)
		t.Ports = append(t.Ports, pc)
	}
	t.Shortened, t.ShortenedThreshold, t.ShortenedDetectable = ts.Shortened, ts.ShortenedThreshold, ts.ShortenedDetectable
	a.tableAttribution(&t, ts)
	a.r.Table = t

	if t.ShortenedDetectable && t.EstablishedTCP > 0 && t.Shortened > shortenedMin &&
		float64(t.Shortened) > shortenedShare*float64(t.EstablishedTCP) {
		a.find("shortened_timeouts", "table", SeverityWarning,
			"%s of %s established entries (%s) have a timeout cut to <= %d s: their peers stopped acknowledging",
			count(t.Shortened), count(t.EstablishedTCP), percent(float64(t.Shortened)/float64(t.EstablishedTCP)), t.ShortenedThreshold)
	}
	if !a.pressure || t.Entries == 0 {
		return
	}
	var closing uint64
	for _, sc := range t.States {
		if sc.Protocol == "tcp" && slices.Contains(closingStates, sc.State) {
			closing += sc.Entries
		}
	}
	if share(closing) >= closingShare {
		a.find("closing_states_dominate", "table", SeverityInfo,
			"%s of the entries (%s) are TCP connections closing, mostly time_wait",
			percent(share(closing)), count(closing))
	}
	if len(t.Sources) > 0 && t.Sources[0].Share >= dominantSourceShare {
		s := t.Sources[0]
		a.find("source_dominates", "table", SeverityInfo,
			"one source, %s, holds %s of the entries (%s)", s.Address, percent(s.Share), count(s.Entries))
	}
	if len(t.Ports) > 0 && t.Ports[0].Share >= dominantPortShare {
		p := t.Ports[0]
		a.find("port_dominates", "table", SeverityInfo,
			"one destination port, %s, holds %s of the entries (%s)", portName(p), percent(p.Share), count(p.Entries))
	}
}

// portName writes a port as protocol/port.
func portName(p PortCount) string {
	if p.Port == "none" || p.Port == "" {
		return p.Protocol
	}
	return p.Protocol + "/" + p.Port
}

// reason returns the text of a not-available error.
func reason(err error, fallback string) string {
	switch {
	case err == nil:
		return fallback
	case errors.Is(err, ErrNotAvailable):
		return strings.TrimPrefix(err.Error(), ErrNotAvailable.Error()+": ")
	}
	return "failed: " + err.Error()
}

func (a *analysis) lifetimes() {
	l := emptyLifetimes()
	if a.s.Lifetimes == nil {
		l.Reason = reason(a.s.LifetimesErr, "no events were read")
		a.r.Lifetimes = l
		return
	}
	ls := a.s.Lifetimes
	l.Available = true
	l.Lost, l.WithoutTimestamp = ls.Lost, ls.WithoutTimestamp
	l.Distribution = distribution(ls.Bounds, ls.Counts)
	for state, counts := range ls.Counts {
		var n uint64
		for _, c := range counts {
			n += c
		}
		if n == 0 {
			continue
		}
		l.EndStates = append(l.EndStates, EndStateCount{State: state, Deaths: n})
		l.Deaths += n
	}
	slices.SortFunc(l.EndStates, func(x, y EndStateCount) int {
		if c := cmp.Compare(y.Deaths, x.Deaths); c != 0 {
			return c
		}
		return cmp.Compare(x.State, y.State)
	})
	est := ls.Counts["established"]
	modal := -1
	for i, n := range est {
		if n == 0 {
			continue
		}
		b := bucketOf(ls.Bounds, i)
		b.Deaths = n
		l.Buckets = append(l.Buckets, b)
		if modal < 0 || n > est[modal] {
			modal = i
		}
	}
	buckets, total := cumulative(ls.Bounds, est)
	l.EstablishedDeaths = total
	if l.Deaths > 0 {
		l.EstablishedShare = float64(l.EstablishedDeaths) / float64(l.Deaths)
	}
	if share, ok := histogram.CollapseShare(buckets, total); ok {
		l.Share250To350 = share
	}
	if modal >= 0 && est[modal] >= clusterMin && float64(est[modal]) >= clusterShare*float64(l.EstablishedDeaths) {
		c := &Cluster{LifetimeBucket: bucketOf(ls.Bounds, modal), Share: float64(est[modal]) / float64(l.EstablishedDeaths)}
		c.Deaths = est[modal]
		estTimeout, _ := a.sysctl(sysEstablished)
		switch {
		case overlaps(c.LifetimeBucket, histogram.CollapseLow, histogram.CollapseHigh) || contains(c.LifetimeBucket, float64(a.retransTimeout())):
			c.Near = "max_retrans"
		case estTimeout > 0 && overlaps(c.LifetimeBucket, float64(estTimeout), float64(estTimeout)*1.5+1):
			c.Near = "established"
		}
		l.Cluster = c
	}
	a.r.Lifetimes = l

	if c := l.Cluster; c != nil {
		what := fmt.Sprintf("%s of %s flows that died in established (%s) were %s old",
			count(c.Deaths), count(l.EstablishedDeaths), percent(c.Share), bucketRange(c.LifetimeBucket))
		switch c.Near {
		case "max_retrans":
			a.find("lifetime_300s", "lifetimes", SeverityWarning,
				"%s: the ~300 s max_retrans/unacknowledged expiry of unanswered flows", what)
		case "established":
			estTimeout, _ := a.sysctl(sysEstablished)
			a.find("lifetime_established_timeout", "lifetimes", SeverityWarning,
				"%s: the established timeout (%d s) expired idle flows", what, estTimeout)
		default:
			a.find("lifetime_cluster", "lifetimes", SeverityInfo,
				"%s: compare with idle timeouts on the path", what)
		}
	}
	if l.Lost > 0 {
		a.find("events_lost", "lifetimes", SeverityInfo,
			"%s events were lost (socket buffer full): the counts miss those flows", count(l.Lost))
	}
}

// bucketOf returns bucket i of the layout bounds.
func bucketOf(bounds []float64, i int) LifetimeBucket {
	var b LifetimeBucket
	if i > 0 && i-1 < len(bounds) {
		b.FromSeconds = bounds[i-1]
	}
	if i < len(bounds) {
		b.ToSeconds = bounds[i]
	}
	return b
}

// overlaps reports whether the bucket's range (from, to] meets [lo, hi].
func overlaps(b LifetimeBucket, lo, hi float64) bool {
	to := b.ToSeconds
	if to == 0 {
		to = math.Inf(1)
	}
	return b.FromSeconds < hi && to >= lo
}

// contains reports whether v lies in the bucket's range (from, to].
func contains(b LifetimeBucket, v float64) bool {
	if v <= 0 {
		return false
	}
	return v > b.FromSeconds && (b.ToSeconds == 0 || v <= b.ToSeconds)
}
