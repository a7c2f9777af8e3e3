package diagnose

import (
	"fmt"
	"strings"
)

// recommend derives the recommendations from the findings. Each one names
// the measurement that triggered it; info findings alone trigger none
// except where they explain a table under pressure.
func (a *analysis) recommend() {
	f := a.r.Fill
	if a.pressure {
		a.raiseLimit()
	}
	if a.has("closing_states_dominate") {
		tw := a.sysctlOr(sysTimeWait, 120)
		a.rec(Recommendation{
			Code:    "connection_reuse",
			Because: a.message("closing_states_dominate"),
			Action: fmt.Sprintf("Reuse connections (HTTP keep-alive, pools, gRPC) instead of one per request.%s "+
				"Entries stay in time_wait for %s = %d s: lowering it to 30 s frees them sooner. "+
				"net.ipv4.tcp_fin_timeout does not shorten it: that is the socket's FIN_WAIT_2 time, not conntrack's.",
				a.topChurner(), sysTimeWait, tw),
			Commands: []string{"sysctl -w net.netfilter." + sysTimeWait + "=30"},
		})
	}
	if a.has("source_dominates") {
		s := a.r.Table.Sources[0]
		a.rec(Recommendation{
			Code:    "dominant_source",
			Because: a.message("source_dominates"),
			Action: fmt.Sprintf("Look at the client %s: a connection leak, a retry storm or a scan. "+
				"Fix or rate-limit it; if its traffic is stateless and not NATed, exempt it from tracking with NOTRACK "+
				"in a prerouting chain at raw priority (docs/runbook.md).", s.Address),
			Commands: []string{
				fmt.Sprintf("conntrack -L -s %s 2>/dev/null | head -20", s.Address),
				fmt.Sprintf("nft add rule inet raw prerouting %s saddr %s notrack", ipFamilyKeyword(s.Address), s.Address),
			},
		})
	}
	if a.has("port_dominates") {
		p := a.r.Table.Ports[0]
		action := fmt.Sprintf("%s carries most entries: reuse connections to it, or if it is stateless (DNS, metrics) and not NATed, NOTRACK it.", portName(p))
		var cmds []string
		if p.Port != "none" && (p.Protocol == "udp" || p.Protocol == "tcp") {
			cmds = []string{fmt.Sprintf("nft add rule inet raw prerouting %s dport %s notrack", p.Protocol, p.Port)}
		}
		a.rec(Recommendation{Code: "dominant_port", Because: a.message("port_dominates"), Action: action, Commands: cmds})
	}
	if a.has("insert_failed") {
		action := "On Kubernetes this is the DNS/SNAT race: run a node-local DNS cache, or serialise the A and AAAA queries " +
			"(dnsConfig option single-request-reopen, glibc only)."
		if a.has("chaintoolong") {
			action += " chaintoolong rose too: raise nf_conntrack_buckets (below)."
		}
		a.rec(Recommendation{
			Code:     "insert_failed",
			Because:  a.message("insert_failed"),
			Action:   action,
			Commands: []string{"conntrack -S | grep -o 'insert_failed=[0-9]*'"},
		})
	}
	if a.has("chaintoolong") && !a.hasRec("raise_limit") {
		want := max(f.Limit/4, f.Buckets*2)
		a.rec(Recommendation{
			Code:    "raise_buckets",
			Because: a.message("chaintoolong"),
			Action: fmt.Sprintf("Raise nf_conntrack_buckets (now %s, global, initial namespace only) to %s: %s more at %d bytes per bucket.",
				count(f.Buckets), count(want), bytesIEC((want-min(want, f.Buckets))*BytesPerBucket), BytesPerBucket),
			Commands: []string{fmt.Sprintf("sysctl -w net.netfilter.nf_conntrack_buckets=%d", want)},
		})
	}
	if a.has("lifetime_300s") || a.has("shortened_timeouts") {
		because := a.message("lifetime_300s")
		if because == "" {
			because = a.message("shortened_timeouts")
		}
		a.rec(Recommendation{
			Code:    "unanswered_flows",
			Because: because,
			Action: "Flows went unanswered and the kernel cut their timeout to max_retrans/unacknowledged. " +
				"Find the common destination, then check middlebox idle timeouts on the path (keepalive below them), " +
				"path MTU and routing symmetry." + a.topSilent(),
			Commands: []string{
				"conntrack -L -p tcp --state ESTABLISHED 2>/dev/null | awk '$3 <= 300'",
			},
		})
	}
	a.attributionRecs()
	if a.has("lifetime_established_timeout") || a.has("established_timeout_low") {
		because := a.message("lifetime_established_timeout")
		if because == "" {
			because = a.message("established_timeout_low")
		}
		est := a.sysctlOr(sysEstablished, 0)
		a.rec(Recommendation{
			Code:    "established_timeout",
			Because: because,
			Action: fmt.Sprintf("Raise %s (now %d s) above the longest idle time of the connections "+
				"(kernel default 432000 s, kube-proxy 86400 s), or keep them alive with TCP keepalive below it.%s",
				sysEstablished, est, a.topSilent()),
			Commands: []string{"sysctl -w net.netfilter." + sysEstablished + "=86400"},
		})
	}
}

// attributionRecs recommends what to do about helper entries, unreplied
// entries and a keepalive time above the middlebox idle timeout.
func (a *analysis) attributionRecs() {
	if a.has("helper_entries") {
		var cmds []string
		for _, h := range a.r.Table.Helpers {
			if h.Helper == "other" {
				continue
			}
			cmds = append(cmds, fmt.Sprintf("conntrack -L 2>/dev/null | grep -c 'helper=%s'", h.Helper))
		}
		cmds = append(cmds, "nft -a list ruleset | grep -E 'ct helper|type \"'")
		for _, h := range a.r.Table.Helpers {
			if h.Helper != "other" {
				cmds = append(cmds, "modprobe -r nf_conntrack_"+h.Helper)
			}
		}
		a.rec(Recommendation{
			Code:    "helper_assignment",
			Because: a.message("helper_entries"),
			Action: "A conntrack helper (ALG) parses every packet of the flows assigned to it and opens expectations for " +
				"related flows. Unless these flows need it (active FTP or SIP through NAT), do not assign it: with nftables " +
				"a ct helper object acts only where a rule sets it (ct helper set), so keep that rule for the servers that " +
				"need it, or delete the rule and the object. nf_conntrack_helper=0 is the old switch that stopped the kernel " +
				"from assigning helpers by port on its own (recent kernels never do). Where the helper is a loadable module " +
				"(lsmod lists it), unload it once no rule uses it (its nf_nat_ module first).",
			Commands: cmds,
		})
	}
	if a.has("unreplied_share") {
		a.rec(Recommendation{
			Code:    "unreplied_flows",
			Because: a.message("unreplied_share"),
			Action: "Find what the unreplied entries share. One destination that never answers is a dead or unreachable " +
				"backend (check it and its health checks; clients stuck in syn_sent retry). Many destination ports from " +
				"few sources is a scan: rate-limit or drop those sources. Many sources, often spoofed, to one port is a " +
				"SYN flood: keep net.ipv4.tcp_syncookies on and drop or rate-limit it before conntrack (raw table, " +
				"synproxy). UDP to a silent port is a misdirected client. These entries are not ASSURED: when the table " +
				"is full, early_drop evicts them first.",
			Commands: []string{
				"conntrack -L 2>/dev/null | grep UNREPLIED | head -20",
				"conntrack -L -p tcp --state SYN_SENT 2>/dev/null | wc -l",
			},
		})
	}
	if a.has("keepalive_above_idle_timeout") {
		ka := a.r.Settings.Keepalive
		idle := a.opts.MiddleboxIdleTimeout
		want := suggestedKeepalive(idle)
		a.rec(Recommendation{
			Code:    "keepalive_below_idle_timeout",
			Because: a.message("keepalive_above_idle_timeout"),
			Action: fmt.Sprintf("A connection idle for %s is forgotten by the middlebox without a FIN or RST; its next "+
				"segment goes unanswered, conntrack cuts the entry to the max_retrans/unacknowledged timeout (%d s) and "+
				"it expires still ESTABLISHED about that long later. Keep idle connections alive below the idle timeout: "+
				"set net.ipv4.tcp_keepalive_time (now %d s) below it, e.g. %d s, in the namespace of the application (it "+
				"applies to sockets that enable SO_KEEPALIVE), or set the keepalive in the application's socket options "+
				"(TCP_KEEPIDLE, or its client's keepalive setting).%s",
				seconds(idle.Seconds()), a.sysctlOr(sysMaxRetrans, retransTimeout), ka.TimeSeconds, want, a.topSilent()),
			Commands: []string{fmt.Sprintf("sysctl -w net.ipv4.tcp_keepalive_time=%d", want)},
		})
	}
}

// topChurner names the source that ended the most flows, or "".
func (a *analysis) topChurner() string {
	fe := a.r.FlowEnds
	if len(fe.Sources) == 0 {
		return ""
	}
	s := fe.Sources[0]
	return fmt.Sprintf(" The client that ended the most flows during the sample is %s (%s of %s).", s.Address, count(s.Ends), count(fe.Ends))
}

// raiseLimit recommends a larger table when it is under pressure.
func (a *analysis) raiseLimit() {
	f := a.r.Fill
	if f.Limit == 0 {
		return
	}
	newMax := f.Limit * 2
	m := memoryEstimate(a.s.Host.SlabObjectBytes, f.Entries, newMax)
	because := a.message("fill_high")
	if because == "" {
		because = a.message("drop")
	}
	if because == "" {
		because = a.message("early_drop")
	}
	action := fmt.Sprintf("Raise nf_conntrack_max to %s once you know what fills the table: a full table then takes about %s "+
		"at ~%d bytes per entry (%s), against %s for the %s entries now.",
		count(newMax), bytesIEC(m.LimitBytes), m.BytesPerEntry, memorySource(m), bytesIEC(f.Memory.EntriesBytes), count(f.Entries))
	cmds := []string{fmt.Sprintf("sysctl -w net.netfilter.nf_conntrack_max=%d", newMax)}
	if f.Buckets > 0 && f.Buckets < newMax/4 {
		action += fmt.Sprintf(" Raise nf_conntrack_buckets (now %s) to %s too, %s at %d bytes per bucket, so chains stay short.",
			count(f.Buckets), count(newMax/4), bytesIEC(newMax/4*BytesPerBucket), BytesPerBucket)
		cmds = append(cmds, fmt.Sprintf("sysctl -w net.netfilter.nf_conntrack_buckets=%d", newMax/4))
	} else if f.Buckets > 0 {
		action += fmt.Sprintf(" nf_conntrack_buckets (%s) stays at max/4 or more.", count(f.Buckets))
	}
	action += " Persist in /etc/sysctl.d/; on Kubernetes set kube-proxy's conntrack.min and maxPerCore instead."
	a.rec(Recommendation{Code: "raise_limit", Because: because, Action: action, Commands: cmds})
}

// memorySource says where a per-entry estimate comes from.
func memorySource(m Memory) string {
	if m.Source == "slabinfo" {
		return fmt.Sprintf("slab object %d B from /proc/slabinfo + %d B extensions", m.SlabObjectBytes, m.ExtensionBytes)
	}
	return "documented approximation"
}

// rec appends a recommendation.
func (a *analysis) rec(r Recommendation) { a.recs = append(a.recs, r) }

// hasRec reports whether a recommendation with code was made.
func (a *analysis) hasRec(code string) bool {
	for _, r := range a.recs {
		if r.Code == code {
			return true
		}
	}
	return false
}

// message returns the message of the finding with code, or "".
func (a *analysis) message(code string) string {
	for _, f := range a.r.Findings {
		if f.Code == code {
			return f.Message
		}
	}
	return ""
}

// sysctlOr returns a sysctl's value or def when it was not read.
func (a *analysis) sysctlOr(name string, def int64) int64 {
	if v, ok := a.sysctl(name); ok {
		return v
	}
	return def
}

// ipFamilyKeyword returns the nftables keyword of an address: ip or ip6.
func ipFamilyKeyword(addr string) string {
	if strings.Contains(addr, ":") {
		return "ip6"
	}
	return "ip"
}
