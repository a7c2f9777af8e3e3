package diagnose

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/ct-exporter/ct-exporter/histogram"
)

// Width is the terminal width the text output is laid out for.
const Width = 80

// TextOptions tune WriteText.
type TextOptions struct {
	// Color marks verdicts and severities with ANSI colours; set it only
	// when writing to a terminal.
	Color bool
	// Unicode draws the bars of the lifetime charts with block
	// characters; without it they are plain ASCII (#). Set it only when
	// writing to a terminal.
	Unicode bool
}

// ANSI colour sequences.
const (
	ansiReset  = "\x1b[0m"
	ansiRed    = "\x1b[1;31m"
	ansiYellow = "\x1b[1;33m"
	ansiGreen  = "\x1b[32m"
	ansiCyan   = "\x1b[36m"
)

// textWriter renders a Report.
type textWriter struct {
	w     *bufio.Writer
	color bool
	bar   string // one unit of a chart bar
}

// WriteText writes the report for a terminal of Width columns.
func WriteText(w io.Writer, r *Report, opts TextOptions) error {
	tw := &textWriter{w: bufio.NewWriter(w), color: opts.Color, bar: "#"}
	if opts.Unicode {
		tw.bar = "\u2588" // full block
	}
	tw.report(r)
	if err := tw.w.Flush(); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// WriteJSON writes the report as an indented JSON document.
func WriteJSON(w io.Writer, r *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

func (t *textWriter) printf(format string, args ...any) { fmt.Fprintf(t.w, format, args...) }

// paint wraps s in a colour when colour is on.
func (t *textWriter) paint(code, s string) string {
	if !t.color || code == "" {
		return s
	}
	return code + s + ansiReset
}

// verdict writes a verdict in upper case, coloured.
func (t *textWriter) verdict(v Verdict) string { return t.verdictText(v, strings.ToUpper(string(v))) }

// severity writes a severity in upper case, coloured, padded to 8.
func (t *textWriter) severity(s Severity) string {
	code := map[Severity]string{SeverityInfo: ansiCyan, SeverityWarning: ansiYellow, SeverityCritical: ansiRed}[s]
	word := strings.ToUpper(string(s))
	return t.paint(code, word) + strings.Repeat(" ", max(0, 8-len(word)))
}

func (t *textWriter) report(r *Report) {
	n := len(r.Namespaces)
	what := "1 namespace"
	if n != 1 {
		what = strconv.Itoa(n) + " namespaces"
	}
	t.printf("ct-exporter diagnose: %s, %s sample from %s\n", what,
		seconds(r.DurationSeconds), r.Start.UTC().Format("2006-01-02 15:04:05 UTC"))
	for _, ns := range r.Namespaces {
		t.printf("\n")
		t.namespace(ns)
	}
	t.printf("\nverdict: %s", t.verdict(r.Verdict))
	if failed := r.Failed(); len(failed) > 0 {
		t.printf(" (%d of %d namespaces could not be sampled)", len(failed), n)
	}
	t.printf("\n")
}

// rule writes a section heading padded with = to the full width.
func (t *textWriter) rule(left string, v Verdict, vText string) {
	head := "== " + left + " "
	tail := " " + vText + " =="
	pad := max(3, Width-1-len(head)-len(tail))
	t.printf("%s%s %s ==\n", head, strings.Repeat("=", pad), t.verdictText(v, vText))
}

// verdictText colours a verdict word already chosen.
func (t *textWriter) verdictText(v Verdict, s string) string {
	code := map[Verdict]string{VerdictOK: ansiGreen, VerdictWarning: ansiYellow, VerdictCritical: ansiRed}[v]
	return t.paint(code, s)
}

func (t *textWriter) namespace(ns NamespaceReport) {
	label := "netns " + ns.Name
	if ns.Error != "" {
		t.rule(label, VerdictCritical, "NOT SAMPLED")
		t.wrap("  ", "  ", "error: "+ns.Error)
		return
	}
	t.rule(label, ns.Verdict, strings.ToUpper(string(ns.Verdict)))
	where := "own namespace"
	if ns.Path != "" {
		where = ns.Path
	}
	t.printf("  %s, sampled %s\n", where, seconds(ns.SampleSeconds))
	t.fill(ns)
	t.counters(ns)
	t.settings(ns)
	t.table(ns)
	t.lifetimes(ns)
	t.flowEnds(ns)
	t.findings(ns)
	t.recommendations(ns)
}

// heading writes a section heading with an optional verdict at the right.
func (t *textWriter) heading(title string, v Verdict) {
	t.printf("\n%s", title)
	if v != "" {
		word := strings.ToUpper(string(v))
		t.printf("%s%s", strings.Repeat(" ", max(1, Width-1-len(title)-len(word))), t.verdict(v))
	}
	t.printf("\n")
}

// wrapField writes a field whose value is word-wrapped under itself.
func (t *textWriter) wrapField(label, value string) {
	t.wrap(fmt.Sprintf("  %-14s ", label), strings.Repeat(" ", 17), value)
}

// field writes "  label  value" with the label padded to 14 columns.
func (t *textWriter) field(label, value string) {
	t.printf("  %-14s %s\n", label, value)
}

func (t *textWriter) fill(ns NamespaceReport) {
	f := ns.Fill
	t.heading("Fill", f.Verdict)
	t.field("entries", fmt.Sprintf("%s of %s (%s)", count(f.Entries), count(f.Limit), percent(f.Ratio)))
	if f.Buckets > 0 {
		t.field("buckets", fmt.Sprintf("%s (%.2f entries per bucket from this namespace)", count(f.Buckets), f.EntriesPerBucket))
	}
	m := f.Memory
	t.field("memory", fmt.Sprintf("~%s now, ~%s when full, at ~%d B per entry",
		bytesIEC(m.EntriesBytes), bytesIEC(m.LimitBytes), m.BytesPerEntry))
	t.field("", "("+memorySource(m)+")")
}

// rate writes a per-second rate.
func rate(r float64) string {
	switch {
	case r == 0:
		return "0"
	case r < 10:
		return strconv.FormatFloat(r, 'f', 2, 64)
	}
	return strconv.FormatFloat(r, 'f', 0, 64)
}

func (t *textWriter) counters(ns NamespaceReport) {
	worst := VerdictOK
	for _, c := range ns.Counters {
		worst = worst.Worse(c.Verdict)
	}
	t.heading("Counters over "+seconds(ns.SampleSeconds)+", all CPUs", worst)
	t.printf("  %-14s %9s %9s  %s\n", "", "increase", "per s", "meaning")
	for _, c := range ns.Counters {
		mark := "  "
		if c.Verdict != VerdictOK {
			mark = t.verdictText(c.Verdict, "!") + " "
		}
		t.printf("%s%-14s %9s %9s  %s\n", mark, c.Name, count(c.Increase), rate(c.PerSecond), c.Meaning)
	}
}

// tcpTimeoutOrder lists the TCP timeouts shown, in order.
var tcpTimeoutOrder = []string{"established", "max_retrans", "unacknowledged", "time_wait", "close_wait", "fin_wait", "syn_sent"}

// switchOrder lists the switches shown, with their short names.
var switchOrder = []struct{ sysctl, name string }{
	{sysEvents, "events"},
	{sysTimestamp, "timestamp"},
	{"nf_conntrack_acct", "acct"},
	{sysBeLiberal, "be_liberal"},
	{sysLoose, "loose"},
	{"nf_conntrack_tcp_max_retrans", "max_retrans"},
}

func (t *textWriter) settings(ns NamespaceReport) {
	s := ns.Settings
	t.heading("Settings", "")
	var timeouts []string
	for _, st := range tcpTimeoutOrder {
		if v, ok := s.Sysctls["nf_conntrack_tcp_timeout_"+st]; ok {
			timeouts = append(timeouts, st+" "+strconv.FormatInt(v, 10)+" s")
		}
	}
	if len(timeouts) > 0 {
		t.list("tcp timeouts", timeouts)
	}
	var switches []string
	for _, sw := range switchOrder {
		if v, ok := s.Sysctls[sw.sysctl]; ok {
			switches = append(switches, sw.name+" "+strconv.FormatInt(v, 10))
		}
	}
	if len(switches) > 0 {
		t.list("switches", switches)
	}
	if len(s.Helpers) > 0 {
		t.list("helpers", s.Helpers)
		t.field("", "(each inspects only the flows a rule assigns to it)")
	} else {
		t.field("helpers", "none")
	}
	if k := s.Keepalive; k != nil {
		t.wrapField("keepalive", fmt.Sprintf("time %d s, interval %d s, probes %d (net.ipv4.tcp_keepalive_*)",
			k.TimeSeconds, k.IntervalSeconds, k.Probes))
		if k.MiddleboxIdleTimeoutSeconds > 0 {
			where := "below it"
			if float64(k.TimeSeconds) >= k.MiddleboxIdleTimeoutSeconds {
				where = "at or above it"
			}
			t.field("middlebox", fmt.Sprintf("idle timeout %s: keepalive time %s", seconds(k.MiddleboxIdleTimeoutSeconds), where))
		}
	}
}

// list writes a labelled comma-separated list, wrapped between items.
func (t *textWriter) list(label string, items []string) {
	line := fmt.Sprintf("  %-14s ", label)
	indent := strings.Repeat(" ", len(line))
	for i, item := range items {
		if i < len(items)-1 {
			item += ","
		}
		if i > 0 && len(line)+1+len(item) > Width-1 {
			t.printf("%s\n", line)
			line = indent + item
			continue
		}
		if i > 0 {
			line += " "
		}
		line += item
	}
	t.printf("%s\n", line)
}

// wrap writes text word-wrapped to Width-1 columns: the first line starts
// with first, the others with rest.
func (t *textWriter) wrap(first, rest, text string) {
	line := first
	empty := true
	for _, word := range strings.Fields(text) {
		if !empty && len(line)+1+len(word) > Width-1 {
			t.printf("%s\n", line)
			line, empty = rest, true
		}
		if !empty {
			line += " "
		}
		line += word
		empty = false
	}
	t.printf("%s\n", line)
}

// row writes one line of a breakdown: label column, name, entries, share.
func (t *textWriter) row(label, name string, nameWidth int, entries uint64, share float64) {
	t.printf("  %-14s %-*s %9s %7s\n", label, nameWidth, name, count(entries), percent(share))
}

// maxStates is how many protocol/state lines the table section shows.
const maxStates = 8

func (t *textWriter) table(ns NamespaceReport) {
	tb := ns.Table
	if !tb.Available {
		t.heading("Table", "")
		t.wrap("  not available: ", "    ", tb.Reason)
		return
	}
	t.heading(fmt.Sprintf("Table (dump of %s entries in %s)", count(tb.Entries), seconds(tb.ScanSeconds)), "")
	share := func(n uint64) float64 {
		if tb.Entries == 0 {
			return 0
		}
		return float64(n) / float64(tb.Entries)
	}
	width := 16
	for _, s := range tb.Sources {
		width = max(width, len(s.Address))
	}
	label := "states"
	var rest uint64
	for i, s := range tb.States {
		if i >= maxStates {
			rest += s.Entries
			continue
		}
		t.row(label, s.Protocol+" "+s.State, width, s.Entries, s.Share)
		label = ""
	}
	if rest > 0 {
		t.row("", "other", width, rest, share(rest))
	}
	if len(tb.States) == 0 {
		t.field("states", "empty")
	}
	label = "top sources"
	for _, s := range tb.Sources {
		t.row(label, s.Address, width, s.Entries, s.Share)
		label = ""
	}
	if tb.OtherSources > 0 {
		t.row(label, "other", width, tb.OtherSources, share(tb.OtherSources))
	}
	label = "top dst ports"
	for _, p := range tb.Ports {
		t.row(label, portName(p), width, p.Entries, p.Share)
		label = ""
	}
	if tb.OtherPorts > 0 {
		t.row(label, "other", width, tb.OtherPorts, share(tb.OtherPorts))
	}
	if tb.ShortenedDetectable {
		t.field("shortened", fmt.Sprintf("%s of %s established entries have a timeout <= %d s",
			count(tb.Shortened), count(tb.EstablishedTCP), tb.ShortenedThreshold))
	} else {
		t.field("shortened", "not detectable: established timeout <= max_retrans")
	}
	if len(tb.NAT) > 0 {
		var kinds []string
		for _, n := range tb.NAT {
			kinds = append(kinds, fmt.Sprintf("%s %s (%s)", n.NAT, count(n.Entries), percent(n.Share)))
		}
		t.list("nat", kinds)
	}
	t.wrapField("unreplied", fmt.Sprintf("%s (%s) have seen no reply; %s (%s) not assured, evictable",
		count(tb.Unreplied), percent(tb.UnrepliedShare), count(tb.Evictable), percent(tb.EvictableShare)))
	t.wrapField("time_wait", fmt.Sprintf("%s (%s), each held %d s by %s", count(tb.TimeWait), percent(tb.TimeWaitShare),
		ns.Settings.Sysctls[sysTimeWait], sysTimeWait))
	label = "helper entries"
	for _, h := range tb.Helpers {
		t.row(label, h.Helper, width, h.Entries, h.Share)
		label = ""
	}
	if len(tb.Helpers) == 0 {
		t.field("helper entries", "none")
	}
}

func (t *textWriter) flowEnds(ns NamespaceReport) {
	fe := ns.FlowEnds
	t.heading("Flow ends during the sample (DESTROY events, all protocols)", "")
	if !fe.Available {
		t.wrap("  not available: ", "    ", fe.Reason)
		return
	}
	t.wrap(fmt.Sprintf("  %-14s ", "ended"), strings.Repeat(" ", 17), fmt.Sprintf("%s flows, %s of them silently (established, no FIN or RST)",
		count(fe.Ends), count(fe.SilentEnds)))
	width := 16
	for _, s := range fe.Sources {
		width = max(width, len(s.Address))
	}
	for _, d := range fe.SilentDestinations {
		width = max(width, len(d.name()))
	}
	share := func(n, total uint64) float64 {
		if total == 0 {
			return 0
		}
		return float64(n) / float64(total)
	}
	label := "top enders"
	for _, s := range fe.Sources {
		t.row(label, s.Address, width, s.Ends, s.Share)
		label = ""
	}
	if fe.OtherSources > 0 {
		t.row(label, "other", width, fe.OtherSources, share(fe.OtherSources, fe.Ends))
	}
	label = "silent ends to"
	for _, d := range fe.SilentDestinations {
		t.row(label, d.name(), width, d.Ends, d.Share)
		label = ""
	}
	if fe.OtherSilent > 0 {
		t.row(label, "other", width, fe.OtherSilent, share(fe.OtherSilent, fe.SilentEnds))
	}
	if fe.MaxError > 0 {
		t.field("max error", fmt.Sprintf("each count above may be off by up to %s", count(fe.MaxError)))
	}
}

// distributionRange writes the range of a distribution bucket: from the
// bound before it in the lifetime layout to its upper bound.
func distributionRange(b DistributionBucket) string {
	bounds := histogram.Buckets()
	if b.UpperSeconds == 0 {
		return bucketRange(LifetimeBucket{FromSeconds: bounds[len(bounds)-1]})
	}
	i := slices.Index(bounds, b.UpperSeconds)
	if i < 0 {
		return "<= " + bound(b.UpperSeconds) + " s"
	}
	lb := LifetimeBucket{ToSeconds: b.UpperSeconds}
	if i > 0 {
		lb.FromSeconds = bounds[i-1]
	}
	return bucketRange(lb)
}

// bars writes n of most as a bar of at most maxBar units.
func (t *textWriter) bars(n, most uint64) string {
	if most == 0 {
		return ""
	}
	return strings.Repeat(t.bar, int((n*maxBar+most-1)/most))
}

// maxBar is the width of the longest bar of the lifetime histogram.
const maxBar = 30

func (t *textWriter) lifetimes(ns NamespaceReport) {
	l := ns.Lifetimes
	t.heading("Lifetimes of TCP flows that died during the sample", "")
	if !l.Available {
		t.wrap("  not available: ", "    ", l.Reason)
		return
	}
	t.wrap(fmt.Sprintf("  %-14s ", "deaths"), strings.Repeat(" ", 17), fmt.Sprintf("%s, %s in established (%s); %s lost, %s without timestamps",
		count(l.Deaths), count(l.EstablishedDeaths), percent(l.EstablishedShare), count(l.Lost), count(l.WithoutTimestamp)))
	if len(l.EndStates) > 0 {
		var states []string
		for _, e := range l.EndStates {
			states = append(states, e.State+" "+count(e.Deaths))
		}
		t.list("end states", states)
	}
	var most uint64
	for _, b := range l.Distribution {
		most = max(most, b.Deaths)
	}
	label := "all deaths"
	for _, b := range l.Distribution {
		t.printf("  %-14s %-16s %9s %s\n", label, distributionRange(b), count(b.Deaths), t.bars(b.Deaths, most))
		label = ""
	}
	if l.EstablishedDeaths == 0 {
		return
	}
	most = 0
	for _, b := range l.Buckets {
		most = max(most, b.Deaths)
	}
	label = "in established"
	for _, b := range l.Buckets {
		t.printf("  %-14s %-16s %9s %s\n", label, bucketRange(b), count(b.Deaths), t.bars(b.Deaths, most))
		label = ""
	}
	t.field("250..350 s", percent(l.Share250To350)+" of the established deaths")
	if c := l.Cluster; c != nil {
		text := fmt.Sprintf("%s (%s) at %s", count(c.Deaths), percent(c.Share), bucketRange(c.LifetimeBucket))
		switch c.Near {
		case "max_retrans":
			text += ": the ~300 s max_retrans/unacknowledged expiry"
		case "established":
			text += fmt.Sprintf(": the established timeout (%d s)", ns.Settings.Sysctls[sysEstablished])
		}
		t.wrap(fmt.Sprintf("  %-14s ", "cluster"), strings.Repeat(" ", 17), text)
	} else {
		t.field("cluster", "none")
	}
}

func (t *textWriter) findings(ns NamespaceReport) {
	t.heading("Findings", "")
	if len(ns.Findings) == 0 {
		t.printf("  none\n")
		return
	}
	for _, f := range ns.Findings {
		t.wrapColored("  "+t.severity(f.Severity)+"  ", 12, f.Message)
	}
}

// wrapColored wraps text after a prefix whose visible width is indent.
func (t *textWriter) wrapColored(prefix string, indent int, text string) {
	var b strings.Builder
	sub := &textWriter{w: bufio.NewWriter(&b)}
	sub.wrap(strings.Repeat(" ", indent), strings.Repeat(" ", indent), text)
	sub.w.Flush()
	lines := strings.SplitAfter(b.String(), "\n")
	for i, line := range lines {
		if line == "" {
			continue
		}
		if i == 0 {
			line = prefix + line[indent:]
		}
		t.printf("%s", line)
	}
}

func (t *textWriter) recommendations(ns NamespaceReport) {
	t.heading("Recommendations", "")
	if len(ns.Recommendations) == 0 {
		t.printf("  none\n")
		return
	}
	for i, r := range ns.Recommendations {
		num := fmt.Sprintf("  %d. ", i+1)
		ind := strings.Repeat(" ", len(num))
		t.wrap(num, ind, "["+r.Code+"] "+r.Action)
		t.wrap(ind+"because: ", ind+"  ", r.Because)
		for _, c := range r.Commands {
			t.printf("%s$ %s\n", ind, c)
		}
	}
}
