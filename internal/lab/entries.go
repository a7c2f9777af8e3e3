package lab

import (
	"encoding/binary"
	"net/netip"

	"golang.org/x/sys/unix"
)

// TCP states as ctnetlink numbers them (enum tcp_conntrack).
const (
	TCPNone        uint8 = 0
	TCPSynSent     uint8 = 1
	TCPSynRecv     uint8 = 2
	TCPEstablished uint8 = 3
	TCPFinWait     uint8 = 4
	TCPCloseWait   uint8 = 5
	TCPLastAck     uint8 = 6
	TCPTimeWait    uint8 = 7
	TCPClose       uint8 = 8
)

// Entry describes one conntrack entry to create over ctnetlink.
type Entry struct {
	Proto        uint8 // unix.IPPROTO_TCP or unix.IPPROTO_UDP
	Src, Dst     netip.Addr
	SPort, DPort uint16
	Timeout      uint32 // seconds, required by the kernel
	TCPState     uint8  // for TCP; TCPNone leaves it unset
	// Assured creates the entry CONFIRMED|ASSURED|SEEN_REPLY, so early_drop
	// cannot evict it.
	Assured bool
	Mark    uint32
}

// conntrack status bits (enum ip_conntrack_status).
const (
	statusSeenReply = 1 << 1
	statusAssured   = 1 << 2
	statusConfirmed = 1 << 3
)

// ctnetlink attribute numbers used to build entries.
const (
	ctaTupleOrig  = 1
	ctaTupleReply = 2
	ctaStatus     = 3
	ctaProtoinfo  = 4
	ctaTimeout    = 7
	ctaMark       = 8
	ctaTupleIP    = 1
	ctaTupleProto = 2
	ctaIPv4Src    = 1
	ctaIPv4Dst    = 2
	ctaIPv6Src    = 3
	ctaIPv6Dst    = 4
	ctaProtoNum   = 1
	ctaProtoSPort = 2
	ctaProtoDPort = 3
	ctaProtoTCP   = 1
	ctaTCPState   = 1
	nlaNested     = 0x8000
	msgCTNew      = 1<<8 | 0
)

// attrBuf appends netlink attributes to a byte slice.
type attrBuf []byte

func (b attrBuf) put(typ uint16, data []byte) attrBuf {
	l := 4 + len(data)
	b = binary.NativeEndian.AppendUint16(b, uint16(l))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func (b attrBuf) nested(typ uint16, inner attrBuf) attrBuf { return b.put(typ|nlaNested, inner) }

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func tuple(proto uint8, src, dst netip.Addr, sport, dport uint16) attrBuf {
	var ip attrBuf
	if src.Is4() {
		s, d := src.As4(), dst.As4()
		ip = ip.put(ctaIPv4Src, s[:]).put(ctaIPv4Dst, d[:])
	} else {
		s, d := src.As16(), dst.As16()
		ip = ip.put(ctaIPv6Src, s[:]).put(ctaIPv6Dst, d[:])
	}
	var p attrBuf
	p = p.put(ctaProtoNum, []byte{proto}).put(ctaProtoSPort, be16(sport)).put(ctaProtoDPort, be16(dport))
	var tb attrBuf
	return tb.nested(ctaTupleIP, ip).nested(ctaTupleProto, p)
}

// createMessage encodes the IPCTNL_MSG_CT_NEW request that creates e. An
// Assured entry carries its status in the same request, so that it is
// never an unassured entry that early_drop or the garbage collector of a
// nearly full table may evict before it is marked.
func createMessage(e Entry, seq uint32) []byte {
	family := byte(unix.AF_INET)
	if e.Src.Is6() {
		family = unix.AF_INET6
	}
	var a attrBuf
	a = a.nested(ctaTupleOrig, tuple(e.Proto, e.Src, e.Dst, e.SPort, e.DPort))
	a = a.nested(ctaTupleReply, tuple(e.Proto, e.Dst, e.Src, e.DPort, e.SPort))
	a = a.put(ctaTimeout, be32(e.Timeout))
	if e.Mark != 0 {
		a = a.put(ctaMark, be32(e.Mark))
	}
	if e.Proto == unix.IPPROTO_TCP && e.TCPState != TCPNone {
		var tcp, pi attrBuf
		tcp = tcp.put(ctaTCPState, []byte{e.TCPState})
		a = a.nested(ctaProtoinfo, pi.nested(ctaProtoTCP, tcp))
	}
	if e.Assured {
		a = a.put(ctaStatus, be32(statusConfirmed|statusAssured|statusSeenReply))
	}
	return request(msgCTNew, unix.NLM_F_REQUEST|unix.NLM_F_ACK|unix.NLM_F_CREATE|unix.NLM_F_EXCL, seq, family, a)
}

// EstablishedEntries returns count distinct ASSURED ESTABLISHED TCP
// entries from sources in 198.19.0.0/16 to dst:443, with the given
// timeout. early_drop cannot evict them.
func EstablishedEntries(count int, timeout uint32) []Entry {
	out := make([]Entry, count)
	dst := netip.MustParseAddr("198.18.255.254")
	for i := range out {
		src := netip.AddrFrom4([4]byte{198, 19, byte(i >> 16 & 0xff), byte(i >> 8 & 0xff)})
		out[i] = Entry{
			Proto: unix.IPPROTO_TCP, Src: src, Dst: dst,
			SPort: uint16(1024 + i&0xff), DPort: 443,
			Timeout: timeout, TCPState: TCPEstablished, Assured: true,
		}
	}
	return out
}
