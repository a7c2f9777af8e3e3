package tablescan

import "strconv"

// ProtocolName returns the label value of a layer-4 protocol number, as
// conntrack -L names it: tcp, udp, icmp, icmpv6, sctp, dccp, udplite, gre,
// igmp; other protocols by number.
func ProtocolName(p uint8) string {
	switch p {
	case 1:
		return "icmp"
	case 2:
		return "igmp"
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 33:
		return "dccp"
	case 47:
		return "gre"
	case 58:
		return "icmpv6"
	case 132:
		return "sctp"
	case 136:
		return "udplite"
	}
	return strconv.Itoa(int(p))
}

// State indices of Aggregator's per-protocol counts: the TCP states
// (enum tcp_conntrack, 0 to 9), then stateNone for entries without a TCP
// state and stateUnknown for a TCP state this package does not know.
const (
	numTCPStates = 10
	stateNone    = numTCPStates
	stateUnknown = numTCPStates + 1
	numStates    = numTCPStates + 2
)

// stateName returns the label value of a state index: the kernel's name of
// a TCP state in lower case, none, or unknown.
func stateName(i int) string {
	switch i {
	case 0, stateNone:
		return "none"
	case 1:
		return "syn_sent"
	case 2:
		return "syn_recv"
	case 3:
		return "established"
	case 4:
		return "fin_wait"
	case 5:
		return "close_wait"
	case 6:
		return "last_ack"
	case 7:
		return "time_wait"
	case 8:
		return "close"
	case 9:
		return "syn_sent2"
	}
	return "unknown"
}
