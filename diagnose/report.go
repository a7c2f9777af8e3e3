package diagnose

import "time"

// SchemaVersion is the version of the JSON document. It changes only when
// a field is removed or changes meaning; new fields keep the version.
const SchemaVersion = 1

// Verdict is the overall judgement of a namespace or a whole report.
type Verdict string

// Verdicts, from best to worst.
const (
	VerdictOK       Verdict = "ok"
	VerdictWarning  Verdict = "warning"
	VerdictCritical Verdict = "critical"
)

// rank orders verdicts: a higher rank is worse.
func (v Verdict) rank() int {
	switch v {
	case VerdictWarning:
		return 1
	case VerdictCritical:
		return 2
	}
	return 0
}

// Worse returns the worse of v and o.
func (v Verdict) Worse(o Verdict) Verdict {
	if o.rank() > v.rank() {
		return o
	}
	if v == "" {
		return VerdictOK
	}
	return v
}

// Severity grades one finding. Info findings explain the measurement and
// never change the verdict.
type Severity string

// Severities, from least to most severe.
const (
	SeverityInfo     Severity = "info"
	SeverityWarning  Severity = "warning"
	SeverityCritical Severity = "critical"
)

// Verdict returns the verdict a finding of severity s implies.
func (s Severity) Verdict() Verdict {
	switch s {
	case SeverityWarning:
		return VerdictWarning
	case SeverityCritical:
		return VerdictCritical
	}
	return VerdictOK
}

// Report is the result of one diagnose run. Its JSON form is the document
// `ct-exporter diagnose --output=json` prints, described field by field in
// docs/DIAGNOSE.md.
type Report struct {
	// SchemaVersion is SchemaVersion.
	SchemaVersion int `json:"schema_version"`
	// Start is when the sample began.
	Start time.Time `json:"start"`
	// DurationSeconds is the requested sample duration.
	DurationSeconds float64 `json:"duration_seconds"`
	// Verdict is the worst verdict of the namespaces; a namespace that
	// could not be sampled does not change it (see NamespaceReport.Error).
	Verdict Verdict `json:"verdict"`
	// Namespaces holds one report per namespace, in the order requested.
	Namespaces []NamespaceReport `json:"namespaces"`
}

// NamespaceReport is what diagnose found in one network namespace.
type NamespaceReport struct {
	// Name is the namespace's netns label value (self, NAME, pid-PID).
	Name string `json:"name"`
	// Path is the namespace file; empty for the process's own namespace.
	Path string `json:"path,omitempty"`
	// Error is set when the namespace could not be sampled; every other
	// section is then empty.
	Error string `json:"error,omitempty"`
	// Verdict is the worst severity among the findings.
	Verdict Verdict `json:"verdict"`
	// SampleSeconds is the time between the first and last reading.
	SampleSeconds float64 `json:"sample_seconds"`
	// Fill is the table fill.
	Fill Fill `json:"fill"`
	// Counters are the kernel counters' rates over the sample.
	Counters []CounterRate `json:"counters"`
	// Settings are the sysctls that matter.
	Settings Settings `json:"settings"`
	// Table is the breakdown of a table dump at the end of the sample.
	Table Table `json:"table"`
	// Lifetimes are the lifetimes of the flows that died during the
	// sample.
	Lifetimes Lifetimes `json:"lifetimes"`
	// FlowEnds says who ended flows during the sample, and where the flows
	// that died silently went.
	FlowEnds FlowEnds `json:"flow_ends"`
	// Findings are what is unusual, worst first.
	Findings []Finding `json:"findings"`
	// Recommendations are what to do about the warning and critical
	// findings; empty on a healthy namespace.
	Recommendations []Recommendation `json:"recommendations"`
}

// Fill is the namespace's table fill at the end of the sample.
type Fill struct {
	// Entries is nf_conntrack_count of the namespace.
	Entries uint64 `json:"entries"`
	// Limit is nf_conntrack_max (global, checked against each
	// namespace's count).
	Limit uint64 `json:"limit"`
	// Ratio is Entries / Limit.
	Ratio float64 `json:"ratio"`
	// Verdict is ok up to 75 %, warning above 75 %, critical above 90 %.
	Verdict Verdict `json:"verdict"`
	// Buckets is nf_conntrack_buckets (global); 0 when it was not read.
	Buckets uint64 `json:"buckets"`
	// EntriesPerBucket is Entries / Buckets, the mean hash chain length
	// this namespace contributes.
	EntriesPerBucket float64 `json:"entries_per_bucket"`
	// Memory estimates the kernel memory of the entries.
	Memory Memory `json:"memory"`
}

// Memory is an estimate of the kernel memory conntrack entries use.
type Memory struct {
	// BytesPerEntry is the estimated cost of one entry.
	BytesPerEntry uint64 `json:"bytes_per_entry"`
	// Source says where BytesPerEntry comes from: "slabinfo" (object size
	// of the nf_conntrack slab cache, measured, plus ExtensionBytes) or
	// "documented" (DocumentedBytesPerEntry, when /proc/slabinfo cannot
	// be read).
	Source string `json:"source"`
	// SlabObjectBytes is the nf_conntrack slab object size; 0 when not
	// measured.
	SlabObjectBytes uint64 `json:"slab_object_bytes,omitempty"`
	// ExtensionBytes is the extension area added to the slab object.
	ExtensionBytes uint64 `json:"extension_bytes,omitempty"`
	// EntriesBytes is Entries * BytesPerEntry.
	EntriesBytes uint64 `json:"entries_bytes"`
	// LimitBytes is Limit * BytesPerEntry: the cost of a full table.
	LimitBytes uint64 `json:"limit_bytes"`
}

// CounterRate is one kernel counter over the sample, summed over CPUs.
type CounterRate struct {
	// Name is the counter as conntrack -S names it (drop, early_drop,
	// insert_failed, clash_resolve, chaintoolong, search_restart).
	Name string `json:"name"`
	// Increase is how much it rose during the sample.
	Increase uint64 `json:"increase"`
	// PerSecond is Increase / NamespaceReport.SampleSeconds.
	PerSecond float64 `json:"per_second"`
	// Meaning says what a rising counter means.
	Meaning string `json:"meaning"`
	// Verdict is what a rise of this counter implies: drop and
	// early_drop are critical, insert_failed and chaintoolong warnings,
	// the others never worse than ok.
	Verdict Verdict `json:"verdict"`
}

// Settings are the namespace's conntrack sysctls that explain its
// behaviour.
type Settings struct {
	// Sysctls maps sysctl names under /proc/sys/net/netfilter (for example
	// nf_conntrack_tcp_timeout_established) to their values.
	Sysctls map[string]int64 `json:"sysctls"`
	// Helpers lists the conntrack helpers built in or loaded
	// (nf_conntrack_NAME under /sys/module), by NAME. A helper inspects
	// only the flows an nftables or iptables rule assigns to it.
	Helpers []string `json:"helpers"`
	// Keepalive are the namespace's TCP keepalive settings; nil when they
	// could not be read.
	Keepalive *Keepalive `json:"keepalive"`
}

// Keepalive are the TCP keepalive sysctls of a namespace
// (net.ipv4.tcp_keepalive_*), and the middlebox idle timeout they were
// compared with.
type Keepalive struct {
	// TimeSeconds is net.ipv4.tcp_keepalive_time: the idle time before
	// the first probe of a socket that enables keepalive.
	TimeSeconds int64 `json:"time_seconds"`
	// IntervalSeconds is net.ipv4.tcp_keepalive_intvl.
	IntervalSeconds int64 `json:"interval_seconds"`
	// Probes is net.ipv4.tcp_keepalive_probes.
	Probes int64 `json:"probes"`
	// MiddleboxIdleTimeoutSeconds is the idle timeout of a NAT gateway or
	// load balancer on the path given with --middlebox-idle-timeout; 0
	// when none was given.
	MiddleboxIdleTimeoutSeconds float64 `json:"middlebox_idle_timeout_seconds"`
}

// Table is the breakdown of one table dump, taken at the end of the
// sample.
type Table struct {
	// Available is false when the dump could not be taken; Reason says
	// why, and the other fields are empty.
	Available bool   `json:"available"`
	Reason    string `json:"reason,omitempty"`
	// Entries is the number of entries the dump counted.
	Entries uint64 `json:"entries"`
	// Malformed is the number of entries that did not decode, not in
	// Entries.
	Malformed uint64 `json:"malformed"`
	// ScanSeconds is how long the dump took.
	ScanSeconds float64 `json:"scan_seconds"`
	// States are the entries per protocol and state, largest first.
	States []StateCount `json:"states"`
	// Sources are the top original-direction source addresses, largest
	// first; OtherSources counts the entries of every other source.
	Sources      []SourceCount `json:"sources"`
	OtherSources uint64        `json:"other_sources"`
	// Ports are the top original-direction destination ports, largest
	// first; OtherPorts counts the entries of every other port.
	Ports      []PortCount `json:"ports"`
	OtherPorts uint64      `json:"other_ports"`
	// EstablishedTCP is the number of TCP entries in established.
	EstablishedTCP uint64 `json:"established_tcp"`
	// Shortened is the number of ESTABLISHED entries whose remaining
	// timeout is at or below ShortenedThreshold (the larger of the
	// max_retrans and unacknowledged timeouts): flows on the ~300 s
	// expiry path now. ShortenedDetectable is false when the established
	// timeout is not larger than that threshold, so such entries cannot
	// be told apart.
	Shortened           uint64 `json:"shortened_timeout_entries"`
	ShortenedThreshold  uint64 `json:"shortened_threshold_seconds"`
	ShortenedDetectable bool   `json:"shortened_detectable"`
	// NAT are the entries by the address translation the kernel applied:
	// none, snat, dnat and both, which sum to Entries.
	NAT []NATCount `json:"nat"`
	// Unreplied is the number of entries that have seen no reply (half
	// open: SYN floods, scans, dead backends, UDP to nowhere).
	Unreplied      uint64  `json:"unreplied_entries"`
	UnrepliedShare float64 `json:"unreplied_share"`
	// Evictable is the number of entries not ASSURED: those early_drop
	// and the garbage collector may free when the table is full.
	Evictable      uint64  `json:"evictable_entries"`
	EvictableShare float64 `json:"evictable_share"`
	// Helpers are the entries with a conntrack helper (ALG) attached, by
	// the kernel's helper name, largest first.
	Helpers []HelperCount `json:"helper_entries"`
	// TimeWait is the number of TCP entries in time_wait, held for
	// nf_conntrack_tcp_timeout_time_wait after each close.
	TimeWait      uint64  `json:"time_wait_entries"`
	TimeWaitShare float64 `json:"time_wait_share"`
}

// NATCount is the number of entries of one NAT kind.
type NATCount struct {
	// NAT is none, snat, dnat or both.
	NAT     string  `json:"nat"`
	Entries uint64  `json:"entries"`
	Share   float64 `json:"share"`
}

// HelperCount is the number of entries with one conntrack helper.
type HelperCount struct {
	// Helper is the kernel's helper name (ftp, sip, ...), or other.
	Helper  string  `json:"helper"`
	Entries uint64  `json:"entries"`
	Share   float64 `json:"share"`
}

// StateCount is the number of entries of one protocol in one state.
type StateCount struct {
	Protocol string  `json:"protocol"`
	State    string  `json:"state"`
	Entries  uint64  `json:"entries"`
	Share    float64 `json:"share"`
}

// SourceCount is the number of entries from one source address.
type SourceCount struct {
	Address string  `json:"address"`
	Entries uint64  `json:"entries"`
	Share   float64 `json:"share"`
}

// PortCount is the number of entries to one destination port. Port is
// "none" for protocols without ports.
type PortCount struct {
	Protocol string  `json:"protocol"`
	Port     string  `json:"port"`
	Entries  uint64  `json:"entries"`
	Share    float64 `json:"share"`
}

// Lifetimes are the lifetimes of the flows that reached ESTABLISHED and
// died during the sample, from the kernel's DESTROY events.
type Lifetimes struct {
	// Available is false when lifetimes could not be measured; Reason
	// says why (timestamps or events off, no subscriber).
	Available bool   `json:"available"`
	Reason    string `json:"reason,omitempty"`
	// Deaths is the number of flows that died with a measured lifetime.
	Deaths uint64 `json:"deaths"`
	// EndStates are the deaths per TCP state at death, largest first.
	EndStates []EndStateCount `json:"end_states"`
	// EstablishedDeaths is the number of deaths in established (no FIN
	// or RST: expired or killed), EstablishedShare their share of Deaths.
	EstablishedDeaths uint64  `json:"established_deaths"`
	EstablishedShare  float64 `json:"established_share"`
	// Share250To350 is the share of established deaths aged 250..350 s,
	// the signature of the kernel's 300 s max_retrans/unacknowledged
	// expiry.
	Share250To350 float64 `json:"established_250_350_share"`
	// Buckets is the histogram of established deaths, only the non-empty
	// buckets, by age.
	Buckets []LifetimeBucket `json:"established_buckets"`
	// Cluster is the modal bucket of established deaths when it holds at
	// least half of them; nil otherwise.
	Cluster *Cluster `json:"cluster"`
	// Lost is the number of events the subscriber lost (socket buffer
	// full); the counts above miss those flows.
	Lost uint64 `json:"events_lost"`
	// WithoutTimestamp is the number of deaths without start/stop
	// timestamps, not in the counts above.
	WithoutTimestamp uint64 `json:"without_timestamp"`
	// Distribution is the histogram of every death (all end states), only
	// the buckets that have deaths, by upper bound.
	Distribution []DistributionBucket `json:"distribution"`
}

// DistributionBucket is one bucket of the lifetime distribution: deaths
// aged at most UpperSeconds and more than the previous bucket's bound
// (UpperSeconds is 0 for the last, unbounded bucket).
type DistributionBucket struct {
	UpperSeconds float64 `json:"upper_seconds"`
	Deaths       uint64  `json:"deaths"`
}

// FlowEnds says who ended flows during the sample, from the kernel's
// DESTROY events of every protocol: the sources that ended the most flows
// (connection churn, the retry storm of a reconnecting pool), and the
// destinations of the flows that reached ESTABLISHED and ended still
// ESTABLISHED, with no FIN or RST seen (silent ends: expired idle flows,
// flows cut by a middlebox).
type FlowEnds struct {
	// Available is false when flow ends could not be counted; Reason
	// says why.
	Available bool   `json:"available"`
	Reason    string `json:"reason,omitempty"`
	// Ends is the number of flows that ended.
	Ends uint64 `json:"ends"`
	// Sources are the original-direction sources that ended the most
	// flows, largest first; OtherSources counts the ends of every other
	// source.
	Sources      []EndSource `json:"sources"`
	OtherSources uint64      `json:"other_sources"`
	// SilentEnds is the number of silent ends.
	SilentEnds uint64 `json:"silent_ends"`
	// SilentDestinations are the original-direction destinations with the
	// most silent ends, largest first; OtherSilent counts the others.
	SilentDestinations []SilentDestination `json:"silent_destinations"`
	OtherSilent        uint64              `json:"other_silent_destinations"`
	// MaxError bounds how far any count above may be from the true count:
	// 0 unless the sample saw more distinct keys than the counters hold.
	MaxError uint64 `json:"max_error"`
}

// EndSource is the number of flows one source ended.
type EndSource struct {
	Address string  `json:"address"`
	Ends    uint64  `json:"ends"`
	Share   float64 `json:"share"`
}

// SilentDestination is the number of silent ends to one destination
// address and port.
type SilentDestination struct {
	Address string  `json:"address"`
	Port    uint16  `json:"port"`
	Ends    uint64  `json:"ends"`
	Share   float64 `json:"share"`
}

// EndStateCount is the number of deaths in one TCP state.
type EndStateCount struct {
	State  string `json:"state"`
	Deaths uint64 `json:"deaths"`
}

// LifetimeBucket is one histogram bucket: deaths aged more than
// FromSeconds and at most ToSeconds (ToSeconds is 0 for the last,
// unbounded bucket).
type LifetimeBucket struct {
	FromSeconds float64 `json:"from_seconds"`
	ToSeconds   float64 `json:"to_seconds"`
	Deaths      uint64  `json:"deaths"`
}

// Cluster is where established deaths pile up.
type Cluster struct {
	LifetimeBucket
	// Share is Deaths / Lifetimes.EstablishedDeaths.
	Share float64 `json:"share"`
	// Near says which timeout the cluster matches: "max_retrans" (the
	// ~300 s max_retrans/unacknowledged expiry), "established" (the
	// namespace's established timeout: idle flows expired), or "" when
	// it matches neither.
	Near string `json:"near"`
}

// Finding is one thing diagnose noticed.
type Finding struct {
	// Code identifies the finding, stable across versions (see
	// docs/DIAGNOSE.md).
	Code string `json:"code"`
	// Section is the report section it belongs to: fill, counters,
	// settings, table, lifetimes or flow_ends.
	Section string `json:"section"`
	// Severity is info, warning or critical.
	Severity Severity `json:"severity"`
	// Message says what was measured, in one sentence.
	Message string `json:"message"`
}

// Recommendation is what to do about a finding.
type Recommendation struct {
	// Code identifies the recommendation, stable across versions.
	Code string `json:"code"`
	// Because is the measurement that triggered it.
	Because string `json:"because"`
	// Action says what to do.
	Action string `json:"action"`
	// Commands are commands to confirm or apply it, if any.
	Commands []string `json:"commands,omitempty"`
}
