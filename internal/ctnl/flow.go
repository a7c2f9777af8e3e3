package ctnl

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
)

// Netlink header types of ctnetlink conntrack messages
// (NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_*). A dump reply and the NEW
// and UPDATE events are MsgTypeCTNew; a NEW event has NLM_F_CREATE (and
// NLM_F_EXCL) in its header flags, an UPDATE event has neither. A DESTROY
// event is MsgTypeCTDelete.
const (
	MsgTypeCTNew    uint16 = subsysCTNetlink<<8 | 0
	MsgTypeCTDelete uint16 = subsysCTNetlink<<8 | 2
)

// Conntrack status bits (enum ip_conntrack_status) carried in CTA_STATUS.
const (
	StatusExpected     uint32 = 1 << 0
	StatusSeenReply    uint32 = 1 << 1
	StatusAssured      uint32 = 1 << 2
	StatusConfirmed    uint32 = 1 << 3
	StatusSrcNAT       uint32 = 1 << 4
	StatusDstNAT       uint32 = 1 << 5
	StatusDying        uint32 = 1 << 9
	StatusFixedTimeout uint32 = 1 << 10
	StatusOffload      uint32 = 1 << 14
	StatusHWOffload    uint32 = 1 << 15
)

// TCP conntrack states (enum tcp_conntrack) carried in
// CTA_PROTOINFO_TCP_STATE.
const (
	TCPStateNone        uint8 = 0
	TCPStateSynSent     uint8 = 1
	TCPStateSynRecv     uint8 = 2
	TCPStateEstablished uint8 = 3
	TCPStateFinWait     uint8 = 4
	TCPStateCloseWait   uint8 = 5
	TCPStateLastAck     uint8 = 6
	TCPStateTimeWait    uint8 = 7
	TCPStateClose       uint8 = 8
	TCPStateSynSent2    uint8 = 9
)

// FlowAttrs is a set of Flow fields that were present in a message.
type FlowAttrs uint32

// Fields of Flow whose presence DecodeFlow records in Flow.Present.
const (
	// HasProtocol: the original tuple carried CTA_PROTO_NUM.
	HasProtocol FlowAttrs = 1 << iota
	// HasAddrs: the original tuple carried both source and destination.
	HasAddrs
	// HasPorts: the original tuple carried both ports (TCP, UDP, SCTP...).
	HasPorts
	// HasICMP: the original tuple carried ICMP or ICMPv6 type, code and id.
	HasICMP
	// HasStatus: CTA_STATUS.
	HasStatus
	// HasTCPState: CTA_PROTOINFO_TCP_STATE.
	HasTCPState
	// HasSCTPState: CTA_PROTOINFO_SCTP_STATE.
	HasSCTPState
	// HasTimeout: CTA_TIMEOUT; absent from the DESTROY event of an entry
	// that expired.
	HasTimeout
	// HasStart: CTA_TIMESTAMP_START (nf_conntrack_timestamp was 1 when the
	// entry was created).
	HasStart
	// HasStop: CTA_TIMESTAMP_STOP (DESTROY events of timestamped entries).
	HasStop
	// HasID: CTA_ID.
	HasID
	// HasMark: CTA_MARK.
	HasMark
	// HasZone: CTA_ZONE.
	HasZone
	// HasHelper: CTA_HELP with its CTA_HELP_NAME: a conntrack helper (ALG)
	// is attached to the entry. Dump replies and NEW or UPDATE events carry
	// it; DESTROY events do not.
	HasHelper
)

// HelperNameLen is the longest helper name DecodeFlow accepts, in bytes:
// NF_CT_HELPER_NAME_LEN, 16 bytes with the kernel's terminating NUL.
const HelperNameLen = 16

// Flow is the part of one conntrack entry the exporter uses, decoded from a
// ctnetlink message by DecodeFlow. It holds no references into the message.
type Flow struct {
	// Present tells which of the fields below the message carried.
	Present FlowAttrs
	// Family is the nfgenmsg family: AF_INET (2) or AF_INET6 (10).
	Family uint8
	// Protocol is the layer-4 protocol number of the original tuple.
	Protocol uint8
	// Src and Dst are the addresses of the original tuple.
	Src, Dst netip.Addr
	// SrcPort and DstPort are the ports of the original tuple.
	SrcPort, DstPort uint16
	// ICMPType, ICMPCode and ICMPID describe an ICMP or ICMPv6 tuple.
	ICMPType, ICMPCode uint8
	ICMPID             uint16
	// Status is CTA_STATUS, a set of Status* bits.
	Status uint32
	// TCPState is one of the TCPState* values.
	TCPState uint8
	// SCTPState is enum sctp_conntrack.
	SCTPState uint8
	// Timeout is the remaining timeout in seconds.
	Timeout uint32
	// Start and Stop are CTA_TIMESTAMP_START and _STOP, in nanoseconds
	// since the Unix epoch (CLOCK_REALTIME).
	Start, Stop uint64
	// ID is CTA_ID, the kernel's identifier of the entry.
	ID uint32
	// Mark is CTA_MARK.
	Mark uint32
	// Zone is CTA_ZONE.
	Zone uint16
	// HelperLen is the length of the helper name in HelperBuf; use Helper.
	HelperLen uint8
	// HelperBuf holds the helper name (CTA_HELP_NAME) without its
	// terminating NUL, in its first HelperLen bytes; use Helper.
	HelperBuf [HelperNameLen]byte
}

// Helper returns the name of the conntrack helper attached to the entry,
// such as ftp or sip, as a slice of f's own storage (valid until f is
// decoded into again), or nil when the message carried none (!HasHelper).
func (f *Flow) Helper() []byte {
	if !f.Has(HasHelper) {
		return nil
	}
	return f.HelperBuf[:f.HelperLen]
}

// NATKind returns which network address translation the kernel applied to
// the entry, from its status bits: NATNone, NATSource, NATDestination or
// NATBoth.
func (f *Flow) NATKind() NATKind {
	k := NATNone
	if f.Status&StatusSrcNAT != 0 {
		k |= NATSource
	}
	if f.Status&StatusDstNAT != 0 {
		k |= NATDestination
	}
	return k
}

// Replied reports whether the entry has seen traffic in the reply
// direction (StatusSeenReply).
func (f *Flow) Replied() bool { return f.Status&StatusSeenReply != 0 }

// SilentEnd reports whether a flow that a DESTROY event ended had reached
// ESTABLISHED (ASSURED) and ended still ESTABLISHED: a TCP flow that saw no
// FIN or RST, expired or was removed while established. It also requires
// the original-direction addresses and ports, the key of a silent end.
func (f *Flow) SilentEnd() bool {
	return f.Protocol == protoTCP && f.Has(HasProtocol|HasAddrs|HasPorts|HasTCPState) &&
		f.TCPState == TCPStateEstablished && f.Assured()
}

// protoTCP is IPPROTO_TCP.
const protoTCP = 6

// NATKind is the kind of address translation applied to an entry: a set
// of NATSource and NATDestination.
type NATKind uint8

// NAT kinds of an entry.
const (
	// NATNone: neither source nor destination NAT.
	NATNone NATKind = 0
	// NATSource: source NAT (SNAT, masquerade) only.
	NATSource NATKind = 1
	// NATDestination: destination NAT (DNAT, redirect) only.
	NATDestination NATKind = 2
	// NATBoth: source and destination NAT.
	NATBoth NATKind = NATSource | NATDestination
)

// String returns the label value of k: none, snat, dnat or both.
func (k NATKind) String() string {
	switch k {
	case NATNone:
		return "none"
	case NATSource:
		return "snat"
	case NATDestination:
		return "dnat"
	}
	return "both"
}

// Has reports whether every field in a was present.
func (f *Flow) Has(a FlowAttrs) bool { return f.Present&a == a }

// Assured reports whether the entry reached ASSURED: for TCP, it saw the
// three-way handshake complete (ESTABLISHED); for other protocols, it saw
// traffic in both directions.
func (f *Flow) Assured() bool { return f.Has(HasStatus) && f.Status&StatusAssured != 0 }

// Lifetime returns Stop - Start when both timestamps are present and in
// order.
func (f *Flow) Lifetime() (time.Duration, bool) {
	if !f.Has(HasStart|HasStop) || f.Start == 0 || f.Stop < f.Start {
		return 0, false
	}
	d := f.Stop - f.Start
	if d > uint64(1<<63-1) {
		return 0, false
	}
	return time.Duration(d), true
}

// ctnetlink attribute numbers (include/uapi/linux/netfilter/
// nfnetlink_conntrack.h) decoded by DecodeFlow.
const (
	flTupleOrig = 1  // CTA_TUPLE_ORIG
	flStatus    = 3  // CTA_STATUS
	flProtoinfo = 4  // CTA_PROTOINFO
	flHelp      = 5  // CTA_HELP
	flTimeout   = 7  // CTA_TIMEOUT
	flMark      = 8  // CTA_MARK
	flID        = 12 // CTA_ID
	flZone      = 18 // CTA_ZONE
	flTimestamp = 20 // CTA_TIMESTAMP

	flTupleIP    = 1 // CTA_TUPLE_IP
	flTupleProto = 2 // CTA_TUPLE_PROTO

	flIPv4Src = 1 // CTA_IP_V4_SRC
	flIPv4Dst = 2 // CTA_IP_V4_DST
	flIPv6Src = 3 // CTA_IP_V6_SRC
	flIPv6Dst = 4 // CTA_IP_V6_DST

	flProtoNum       = 1 // CTA_PROTO_NUM
	flProtoSrcPort   = 2 // CTA_PROTO_SRC_PORT
	flProtoDstPort   = 3 // CTA_PROTO_DST_PORT
	flProtoICMPID    = 4 // CTA_PROTO_ICMP_ID
	flProtoICMPType  = 5 // CTA_PROTO_ICMP_TYPE
	flProtoICMPCode  = 6 // CTA_PROTO_ICMP_CODE
	flProtoICMP6ID   = 7 // CTA_PROTO_ICMPV6_ID
	flProtoICMP6Type = 8 // CTA_PROTO_ICMPV6_TYPE
	flProtoICMP6Code = 9 // CTA_PROTO_ICMPV6_CODE

	flProtoinfoTCP  = 1 // CTA_PROTOINFO_TCP
	flProtoinfoSCTP = 3 // CTA_PROTOINFO_SCTP
	flTCPState      = 1 // CTA_PROTOINFO_TCP_STATE
	flSCTPState     = 1 // CTA_PROTOINFO_SCTP_STATE

	flHelpName = 1 // CTA_HELP_NAME

	flTimestampStart = 1 // CTA_TIMESTAMP_START
	flTimestampStop  = 2 // CTA_TIMESTAMP_STOP

	flNLATypeMask = 0x3fff // NLA_TYPE_MASK: drops NLA_F_NESTED, NLA_F_NET_BYTEORDER
)

// attrIter walks the netlink attributes of one nesting level without
// allocating.
type attrIter struct {
	rest []byte
	typ  uint16
	data []byte
	bad  bool
}

// next advances to the next attribute. It returns false at the end or on a
// malformed attribute, which sets bad.
func (it *attrIter) next() bool {
	// Kept within the inliner's budget: it runs for every attribute of
	// every event.
	r := it.rest
	if len(r) < 4 {
		it.bad = len(r) != 0
		return false
	}
	l := int(binary.NativeEndian.Uint16(r))
	if l < 4 || l > len(r) {
		it.bad = true
		return false
	}
	it.typ = binary.NativeEndian.Uint16(r[2:]) & flNLATypeMask
	it.data = r[4:l]
	it.rest = r[min((l+3)&^3, len(r)):]
	return true
}

// malformed returns an error wrapping ErrMalformed.
func malformed(what string, n int) error {
	return fmt.Errorf("flow: %s (%d bytes): %w", what, n, ErrMalformed)
}

// putBE32 stores a 4-byte big-endian attribute in dst, or reports the
// attribute named what as malformed.
func putBE32(d []byte, what string, dst *uint32) error {
	if len(d) != 4 {
		return malformed(what, len(d))
	}
	*dst = binary.BigEndian.Uint32(d)
	return nil
}

// DecodeFlow decodes the body of one ctnetlink conntrack message (a dump
// reply or a NEW, UPDATE or DESTROY event: nfgenmsg header and attributes,
// without the netlink header) into f, which it resets first. It decodes
// only the fields of Flow, ignores attributes it does not know, does not
// allocate, and returns an error wrapping ErrMalformed, never a panic, when
// the bytes are not a well-formed message.
func DecodeFlow(b []byte, f *Flow) error {
	*f = Flow{}
	if len(b) < nfgenmsgLen {
		return malformed("short nfgenmsg header", len(b))
	}
	f.Family = b[0]
	it := attrIter{rest: b[nfgenmsgLen:]}
	for it.next() {
		d := it.data
		switch it.typ {
		case flTupleOrig:
			if err := decodeTuple(d, f); err != nil {
				return err
			}
		case flStatus:
			if err := putBE32(d, "CTA_STATUS", &f.Status); err != nil {
				return err
			}
			f.Present |= HasStatus
		case flProtoinfo:
			if err := decodeProtoinfo(d, f); err != nil {
				return err
			}
		case flTimeout:
			if err := putBE32(d, "CTA_TIMEOUT", &f.Timeout); err != nil {
				return err
			}
			f.Present |= HasTimeout
		case flMark:
			if err := putBE32(d, "CTA_MARK", &f.Mark); err != nil {
				return err
			}
			f.Present |= HasMark
		case flID:
			if err := putBE32(d, "CTA_ID", &f.ID); err != nil {
				return err
			}
			f.Present |= HasID
		case flZone:
			if len(d) != 2 {
				return malformed("CTA_ZONE", len(d))
			}
			f.Zone = binary.BigEndian.Uint16(d)
			f.Present |= HasZone
		case flTimestamp:
			if err := decodeTimestamp(d, f); err != nil {
				return err
			}
		case flHelp:
			if err := decodeHelp(d, f); err != nil {
				return err
			}
		}
	}
	if it.bad {
		return malformed("attribute header", len(it.rest))
	}
	return nil
}

// decodeHelp decodes CTA_HELP: the helper name, a NUL-terminated string
// of printable ASCII of at most HelperNameLen bytes. The kernel always
// sends CTA_HELP_NAME inside CTA_HELP; an empty or overlong name, or one
// with bytes that are not printable ASCII, is malformed.
func decodeHelp(b []byte, f *Flow) error {
	it := attrIter{rest: b}
	for it.next() {
		if it.typ != flHelpName {
			continue
		}
		d := it.data
		for i, c := range d {
			if c == 0 {
				d = d[:i]
				break
			}
		}
		if len(d) == 0 || len(d) > HelperNameLen {
			return malformed("CTA_HELP_NAME", len(d))
		}
		for _, c := range d {
			if c <= ' ' || c > '~' {
				return malformed("CTA_HELP_NAME byte", len(d))
			}
		}
		f.HelperLen = uint8(copy(f.HelperBuf[:], d))
		f.Present |= HasHelper
	}
	if it.bad {
		return malformed("CTA_HELP attribute header", len(it.rest))
	}
	return nil
}

// decodeTuple decodes CTA_TUPLE_ORIG. The kernel sends one; of repeated
// ones the last counts whole, as with repeated CTA_TUPLE_IP and
// CTA_TUPLE_PROTO inside one.
func decodeTuple(b []byte, f *Flow) error {
	clearTupleIP(f)
	clearTupleProto(f)
	it := attrIter{rest: b}
	for it.next() {
		switch it.typ {
		case flTupleIP:
			if err := decodeTupleIP(it.data, f); err != nil {
				return err
			}
		case flTupleProto:
			if err := decodeTupleProto(it.data, f); err != nil {
				return err
			}
		}
	}
	if it.bad {
		return malformed("CTA_TUPLE_ORIG attribute header", len(it.rest))
	}
	return nil
}

// clearTupleIP forgets what a CTA_TUPLE_IP set.
func clearTupleIP(f *Flow) {
	f.Src, f.Dst = netip.Addr{}, netip.Addr{}
	f.Present &^= HasAddrs
}

// clearTupleProto forgets what a CTA_TUPLE_PROTO set.
func clearTupleProto(f *Flow) {
	f.Protocol, f.SrcPort, f.DstPort = 0, 0, 0
	f.ICMPType, f.ICMPCode, f.ICMPID = 0, 0, 0
	f.Present &^= HasProtocol | HasPorts | HasICMP
}

// decodeTupleIP decodes CTA_TUPLE_IP.
func decodeTupleIP(b []byte, f *Flow) error {
	clearTupleIP(f)
	var haveSrc, haveDst bool
	it := attrIter{rest: b}
	for it.next() {
		d := it.data
		switch it.typ {
		case flIPv4Src, flIPv4Dst:
			if len(d) != 4 {
				return malformed("CTA_IP_V4 address", len(d))
			}
			a := netip.AddrFrom4([4]byte(d))
			if it.typ == flIPv4Src {
				f.Src, haveSrc = a, true
			} else {
				f.Dst, haveDst = a, true
			}
		case flIPv6Src, flIPv6Dst:
			if len(d) != 16 {
				return malformed("CTA_IP_V6 address", len(d))
			}
			a := netip.AddrFrom16([16]byte(d))
			if it.typ == flIPv6Src {
				f.Src, haveSrc = a, true
			} else {
				f.Dst, haveDst = a, true
			}
		}
	}
	if it.bad {
		return malformed("CTA_TUPLE_IP attribute header", len(it.rest))
	}
	if haveSrc && haveDst {
		f.Present |= HasAddrs
	}
	return nil
}

// decodeTupleProto decodes CTA_TUPLE_PROTO.
func decodeTupleProto(b []byte, f *Flow) error {
	clearTupleProto(f)
	var have uint8
	const (
		sport = 1 << iota
		dport
		icmpType
		icmpCode
		icmpID
	)
	it := attrIter{rest: b}
	for it.next() {
		d := it.data
		switch it.typ {
		case flProtoNum:
			if len(d) != 1 {
				return malformed("CTA_PROTO_NUM", len(d))
			}
			f.Protocol = d[0]
			f.Present |= HasProtocol
		case flProtoSrcPort, flProtoDstPort, flProtoICMPID, flProtoICMP6ID:
			if len(d) != 2 {
				return malformed("CTA_PROTO port or id", len(d))
			}
			v := binary.BigEndian.Uint16(d)
			switch it.typ {
			case flProtoSrcPort:
				f.SrcPort, have = v, have|sport
			case flProtoDstPort:
				f.DstPort, have = v, have|dport
			default:
				f.ICMPID, have = v, have|icmpID
			}
		case flProtoICMPType, flProtoICMP6Type:
			if len(d) != 1 {
				return malformed("CTA_PROTO_ICMP_TYPE", len(d))
			}
			f.ICMPType, have = d[0], have|icmpType
		case flProtoICMPCode, flProtoICMP6Code:
			if len(d) != 1 {
				return malformed("CTA_PROTO_ICMP_CODE", len(d))
			}
			f.ICMPCode, have = d[0], have|icmpCode
		}
	}
	if it.bad {
		return malformed("CTA_TUPLE_PROTO attribute header", len(it.rest))
	}
	if have&(sport|dport) == sport|dport {
		f.Present |= HasPorts
	}
	if have&(icmpType|icmpCode|icmpID) == icmpType|icmpCode|icmpID {
		f.Present |= HasICMP
	}
	return nil
}

// decodeProtoinfo decodes CTA_PROTOINFO: the TCP or SCTP state.
func decodeProtoinfo(b []byte, f *Flow) error {
	it := attrIter{rest: b}
	for it.next() {
		if it.typ != flProtoinfoTCP && it.typ != flProtoinfoSCTP {
			continue
		}
		in := attrIter{rest: it.data}
		for in.next() {
			if in.typ != flTCPState { // == flSCTPState
				continue
			}
			if len(in.data) != 1 {
				return malformed("protocol state", len(in.data))
			}
			if it.typ == flProtoinfoTCP {
				f.TCPState = in.data[0]
				f.Present |= HasTCPState
			} else {
				f.SCTPState = in.data[0]
				f.Present |= HasSCTPState
			}
		}
		if in.bad {
			return malformed("CTA_PROTOINFO_* attribute header", len(in.rest))
		}
	}
	if it.bad {
		return malformed("CTA_PROTOINFO attribute header", len(it.rest))
	}
	return nil
}

// decodeTimestamp decodes CTA_TIMESTAMP.
func decodeTimestamp(b []byte, f *Flow) error {
	it := attrIter{rest: b}
	for it.next() {
		switch it.typ {
		case flTimestampStart, flTimestampStop:
			if len(it.data) != 8 {
				return malformed("CTA_TIMESTAMP value", len(it.data))
			}
			v := binary.BigEndian.Uint64(it.data)
			if it.typ == flTimestampStart {
				f.Start = v
				f.Present |= HasStart
			} else {
				f.Stop = v
				f.Present |= HasStop
			}
		}
	}
	if it.bad {
		return malformed("CTA_TIMESTAMP attribute header", len(it.rest))
	}
	return nil
}
