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
	// settings, table or lifetimes.
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
