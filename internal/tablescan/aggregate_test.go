package tablescan

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"reflect"
	"testing"

	"github.com/ct-exporter/ct-exporter/internal/ctnl"
)

// attrs appends netlink attributes.
type attrs []byte

func (b attrs) put(typ uint16, data []byte) attrs {
	b = binary.NativeEndian.AppendUint16(b, uint16(4+len(data)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func (b attrs) nest(typ uint16, in attrs) attrs { return b.put(typ|0x8000, in) }

// message encodes a dumped entry the way ctnetlink does (the attributes
// the aggregator reads).
func message(f ctnl.Flow) []byte {
	var ip attrs
	if f.Src.Is4() {
		s, d := f.Src.As4(), f.Dst.As4()
		ip = ip.put(1, s[:]).put(2, d[:])
	} else {
		s, d := f.Src.As16(), f.Dst.As16()
		ip = ip.put(3, s[:]).put(4, d[:])
	}
	var proto attrs
	proto = proto.put(1, []byte{f.Protocol})
	if f.Has(ctnl.HasPorts) {
		proto = proto.put(2, binary.BigEndian.AppendUint16(nil, f.SrcPort)).put(3, binary.BigEndian.AppendUint16(nil, f.DstPort))
	}
	var tuple attrs
	tuple = tuple.nest(1, ip).nest(2, proto)
	var a attrs
	a = a.nest(1, tuple).nest(2, tuple)
	a = a.put(3, binary.BigEndian.AppendUint32(nil, f.Status))
	if f.Has(ctnl.HasTimeout) {
		a = a.put(7, binary.BigEndian.AppendUint32(nil, f.Timeout))
	}
	a = a.put(8, binary.BigEndian.AppendUint32(nil, f.Mark))
	if f.Has(ctnl.HasTCPState) {
		var st attrs
		st = st.put(1, []byte{f.TCPState})
		var pi attrs
		a = a.nest(4, pi.nest(1, st))
	}
	if f.Zone != 0 {
		a = a.put(18, binary.BigEndian.AppendUint16(nil, f.Zone))
	}
	if f.Has(ctnl.HasHelper) {
		var help attrs
		a = a.nest(5, help.put(1, append(f.Helper(), 0)))
	}
	family := byte(2)
	if f.Src.Is6() {
		family = 10
	}
	return append([]byte{family, 0, 0, 0}, a...)
}

func tcp(src string, dport uint16, state uint8, timeout uint32) ctnl.Flow {
	return ctnl.Flow{
		Present:  ctnl.HasProtocol | ctnl.HasAddrs | ctnl.HasPorts | ctnl.HasTCPState | ctnl.HasTimeout,
		Protocol: 6, Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr("192.0.2.1"),
		SrcPort: 40000, DstPort: dport, TCPState: state, Timeout: timeout,
	}
}

func udp(src string, dport uint16) ctnl.Flow {
	return ctnl.Flow{
		Present:  ctnl.HasProtocol | ctnl.HasAddrs | ctnl.HasPorts | ctnl.HasTimeout,
		Protocol: 17, Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr("192.0.2.1"),
		SrcPort: 40000, DstPort: dport, Timeout: 30,
	}
}

func icmp(src string) ctnl.Flow {
	return ctnl.Flow{
		Present:  ctnl.HasProtocol | ctnl.HasAddrs | ctnl.HasTimeout,
		Protocol: 1, Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr("192.0.2.1"), Timeout: 30,
	}
}

var defaultTimeouts = Timeouts{Established: 432000, MaxRetrans: 300, Unacknowledged: 300}

func TestAggregatorBreakdown(t *testing.T) {
	a := NewAggregator(Options{TopK: 2, ByZoneMark: true})
	a.Reset(defaultTimeouts)
	var flows []ctnl.Flow
	add := func(n int, f ctnl.Flow) {
		for range n {
			flows = append(flows, f)
		}
	}
	add(5, tcp("10.0.0.1", 443, ctnl.TCPStateEstablished, 432000))
	add(2, tcp("10.0.0.1", 443, ctnl.TCPStateEstablished, 300)) // shortened
	add(1, tcp("10.0.0.2", 80, ctnl.TCPStateEstablished, 299))  // shortened
	add(1, tcp("10.0.0.2", 80, ctnl.TCPStateEstablished, 301))
	add(3, tcp("10.0.0.3", 80, ctnl.TCPStateTimeWait, 120))
	add(4, udp("2001:db8::1", 53))
	add(1, icmp("10.0.0.9"))
	noState := tcp("10.0.0.4", 22, 0, 10)
	noState.Present &^= ctnl.HasTCPState
	add(1, noState)
	add(1, tcp("10.0.0.4", 22, ctnl.TCPStateNone, 10))
	marked := udp("10.0.0.5", 53)
	marked.Mark, marked.Zone = 7, 3
	add(2, marked)
	for _, f := range flows {
		if err := a.AddMessage(message(f)); err != nil {
			t.Fatal(err)
		}
	}
	// Malformed: garbage, and an entry without its original tuple.
	_ = a.AddMessage([]byte{2, 0, 0, 0, 0xff, 0xff})
	a.Add(&ctnl.Flow{Present: ctnl.HasProtocol, Protocol: 6})

	r := a.Result()
	want := &Result{
		Total: 21, Malformed: 2, Shortened: 3, Timeouts: defaultTimeouts,
		// No status bits: no NAT, no reply, not assured.
		NAT: NATCounts{None: 21}, Unreplied: 21, Evictable: 21,
		States: []StateCount{
			{"icmp", "none", 1},
			{"tcp", "established", 9},
			{"tcp", "none", 2},
			{"tcp", "time_wait", 3},
			{"udp", "none", 6},
		},
		Sources: &Top[netip.Addr]{
			Top: []Counted[netip.Addr]{
				{netip.MustParseAddr("10.0.0.1"), 7},
				{netip.MustParseAddr("2001:db8::1"), 4},
			},
			Other: 10, Distinct: 7,
		},
		Ports: &Top[Port]{
			Top: []Counted[Port]{
				{Port{6, 443, true}, 7},
				{Port{17, 53, true}, 6},
			},
			Other: 8, Distinct: 5,
		},
		Zones: &Top[uint16]{Top: []Counted[uint16]{{0, 19}, {3, 2}}, Distinct: 2},
		Marks: &Top[uint32]{Top: []Counted[uint32]{{0, 19}, {7, 2}}, Distinct: 2},
	}
	if !reflect.DeepEqual(r, want) {
		t.Fatalf("result\n%+v\nwant\n%+v\nsources %+v\nports %+v", r, want, r.Sources, r.Ports)
	}
	if p := r.Ports.Top[0].Value; p.ProtocolLabel() != "tcp" || p.PortLabel() != "443" {
		t.Fatalf("labels %s %s", p.ProtocolLabel(), p.PortLabel())
	}
	if p := (Port{Protocol: 1}); p.PortLabel() != "none" || p.ProtocolLabel() != "icmp" {
		t.Fatalf("icmp labels %s %s", p.ProtocolLabel(), p.PortLabel())
	}

	// A reset starts from nothing.
	a.Reset(defaultTimeouts)
	if r := a.Result(); r.Total != 0 || r.Malformed != 0 || len(r.States) != 0 || r.Sources.Other != 0 || len(r.Sources.Top) != 0 {
		t.Fatalf("after reset: %+v", r)
	}
}

// withStatus returns f with its status and, unless empty, a helper.
func withStatus(f ctnl.Flow, status uint32, helper string) ctnl.Flow {
	f.Status = status
	f.Present |= ctnl.HasStatus
	if helper != "" {
		f.HelperLen = uint8(copy(f.HelperBuf[:], helper))
		f.Present |= ctnl.HasHelper
	}
	return f
}

func TestAggregatorNATRepliesHelpers(t *testing.T) {
	const (
		replied = ctnl.StatusConfirmed | ctnl.StatusSeenReply
		assured = replied | ctnl.StatusAssured
		snat    = ctnl.StatusSrcNAT
		dnat    = ctnl.StatusDstNAT
	)
	cases := []struct {
		name  string
		flows map[ctnl.Flow]int
		want  Result
	}{{
		name: "nat kinds",
		flows: map[ctnl.Flow]int{
			withStatus(tcp("10.0.0.1", 80, ctnl.TCPStateEstablished, 100), assured, ""):               3,
			withStatus(tcp("10.0.0.2", 80, ctnl.TCPStateEstablished, 100), assured|snat, ""):          5,
			withStatus(tcp("10.0.0.3", 80, ctnl.TCPStateEstablished, 100), assured|dnat, ""):          7,
			withStatus(udp("10.0.0.4", 53), replied|snat|dnat, ""):                                    2,
			withStatus(tcp("10.0.0.5", 80, ctnl.TCPStateSynSent, 100), ctnl.StatusConfirmed|dnat, ""): 1,
		},
		want: Result{
			Total: 18, NAT: NATCounts{None: 3, SNAT: 5, DNAT: 8, Both: 2},
			Unreplied: 1, Evictable: 3,
		},
	}, {
		name: "unreplied and evictable",
		flows: map[ctnl.Flow]int{
			withStatus(tcp("10.0.0.1", 9, ctnl.TCPStateSynSent, 100), ctnl.StatusConfirmed, ""): 4,
			withStatus(udp("10.0.0.2", 53), replied, ""):                                        6,
			withStatus(tcp("10.0.0.3", 80, ctnl.TCPStateTimeWait, 100), assured, ""):            2,
		},
		want: Result{Total: 12, NAT: NATCounts{None: 12}, Unreplied: 4, Evictable: 10},
	}, {
		name: "helpers",
		flows: map[ctnl.Flow]int{
			withStatus(tcp("10.0.0.1", 21, ctnl.TCPStateEstablished, 100), assured, "ftp"):     3,
			withStatus(udp("10.0.0.2", 5060), replied, "sip"):                                  2,
			withStatus(udp("10.0.0.3", 69), replied, "tftp"):                                   1,
			withStatus(tcp("10.0.0.4", 80, ctnl.TCPStateEstablished, 100), assured, ""):        4,
			withStatus(tcp("10.0.0.5", 1720, ctnl.TCPStateEstablished, 100), assured, "Q.931"): 1,
		},
		want: Result{
			Total: 11, NAT: NATCounts{None: 11}, Evictable: 3,
			Helpers: []HelperCount{{"Q.931", 1}, {"ftp", 3}, {"sip", 2}, {"tftp", 1}},
		},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := NewAggregator(Options{})
			a.Reset(defaultTimeouts)
			for f, n := range c.flows {
				for range n {
					if err := a.AddMessage(message(f)); err != nil {
						t.Fatal(err)
					}
				}
			}
			r := a.Result()
			got := Result{Total: r.Total, NAT: r.NAT, Unreplied: r.Unreplied, Evictable: r.Evictable, Helpers: r.Helpers}
			if r.Malformed != 0 || !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %+v (malformed %d)\nwant %+v", got, r.Malformed, c.want)
			}
			var sum uint64
			for _, k := range r.NAT.Kinds() {
				sum += k.Entries
			}
			if sum != r.Total {
				t.Fatalf("NAT kinds add up to %d, total %d", sum, r.Total)
			}
		})
	}
	if got := (NATCounts{None: 1, SNAT: 2, DNAT: 3, Both: 4}).Kinds(); !reflect.DeepEqual(got, []NATCount{{"none", 1}, {"snat", 2}, {"dnat", 3}, {"both", 4}}) {
		t.Fatalf("kinds %+v", got)
	}
}

func TestAggregatorHelpersBounded(t *testing.T) {
	a := NewAggregator(Options{})
	a.Reset(defaultTimeouts)
	// MaxHelpers+4 names, name i seen i+1 times, in order: the first
	// MaxHelpers names are counted by name, the rest under other.
	var other uint64
	for i := range MaxHelpers + 4 {
		for range i + 1 {
			f := withStatus(udp("10.0.0.1", 53), ctnl.StatusConfirmed, fmt.Sprintf("h%02d", i))
			a.Add(&f)
		}
		if i >= MaxHelpers {
			other += uint64(i + 1)
		}
	}
	r := a.Result()
	if len(r.Helpers) != MaxHelpers+1 || r.Helpers[MaxHelpers] != (HelperCount{OtherHelper, other}) {
		t.Fatalf("helpers %+v", r.Helpers)
	}
	for i, h := range r.Helpers[:MaxHelpers] {
		if h != (HelperCount{fmt.Sprintf("h%02d", i), uint64(i + 1)}) {
			t.Fatalf("helper %d: %+v", i, h)
		}
	}
	a.Reset(defaultTimeouts)
	if r := a.Result(); r.Helpers != nil || r.NAT != (NATCounts{}) || r.Unreplied != 0 || r.Evictable != 0 {
		t.Fatalf("after reset: %+v", r)
	}
	// An entry whose CTA_HELP does not decode is skipped and counted as
	// malformed, like any other malformed attribute.
	good := message(withStatus(udp("10.0.0.1", 53), ctnl.StatusConfirmed, ""))
	bad := append(good[:len(good):len(good)], attrs(nil).nest(5, attrs(nil).put(1, []byte{0}))...)
	for _, m := range [][]byte{good, bad} {
		if err := a.AddMessage(m); err != nil {
			t.Fatal(err)
		}
	}
	if r := a.Result(); r.Malformed != 1 || r.Total != 1 || r.Helpers != nil {
		t.Fatalf("malformed helper: %+v", r)
	}
}

func TestAggregatorTopKDisabled(t *testing.T) {
	a := NewAggregator(Options{TopK: 0})
	a.Reset(defaultTimeouts)
	a.Add(new(tcp("10.0.0.1", 443, ctnl.TCPStateEstablished, 10)))
	r := a.Result()
	if r.Sources != nil || r.Ports != nil || r.Zones != nil || r.Marks != nil || r.Total != 1 || r.Shortened != 1 {
		t.Fatalf("result %+v", r)
	}
}

func TestShortenedNeedsLargerEstablishedTimeout(t *testing.T) {
	a := NewAggregator(Options{})
	a.Reset(Timeouts{Established: 300, MaxRetrans: 300, Unacknowledged: 300})
	a.Add(new(tcp("10.0.0.1", 443, ctnl.TCPStateEstablished, 100)))
	if r := a.Result(); r.Shortened != 0 {
		t.Fatalf("shortened %d with established timeout 300", r.Shortened)
	}
	// The threshold is the larger of the two.
	if th, ok := (Timeouts{Established: 1000, MaxRetrans: 120, Unacknowledged: 600}).ShortenedThreshold(); th != 600 || !ok {
		t.Fatalf("threshold %d %v", th, ok)
	}
	// An entry without a timeout attribute is not counted.
	a.Reset(defaultTimeouts)
	f := tcp("10.0.0.1", 443, ctnl.TCPStateEstablished, 0)
	f.Present &^= ctnl.HasTimeout
	a.Add(&f)
	if r := a.Result(); r.Shortened != 0 {
		t.Fatal("entry without timeout counted as shortened")
	}
}

func TestAggregatorAddMessageDoesNotAllocate(t *testing.T) {
	a := NewAggregator(Options{TopK: 10, ByZoneMark: true})
	msgs := [][]byte{
		message(tcp("10.0.0.1", 443, ctnl.TCPStateEstablished, 100)),
		message(withStatus(tcp("10.0.0.2", 21, ctnl.TCPStateEstablished, 100), ctnl.StatusAssured|ctnl.StatusSrcNAT, "ftp")),
		message(udp("2001:db8::1", 53)),
		message(icmp("10.0.0.9")),
	}
	run := func() {
		a.Reset(defaultTimeouts)
		for range 100 {
			for _, m := range msgs {
				_ = a.AddMessage(m)
			}
		}
	}
	run()
	if n := testing.AllocsPerRun(10, run); n > 1 {
		// Reset allocates one small slice per scan, never per entry.
		t.Fatalf("%v allocations per 400 entries", n)
	}
}

func BenchmarkAggregatorAddMessage(b *testing.B) {
	a := NewAggregator(Options{TopK: 10})
	a.Reset(defaultTimeouts)
	m := message(tcp("10.0.0.1", 443, ctnl.TCPStateEstablished, 100))
	b.ReportAllocs()
	b.SetBytes(int64(len(m)))
	for b.Loop() {
		_ = a.AddMessage(m)
	}
}

// FuzzAggregatorAddMessage feeds arbitrary entry bodies to the aggregator:
// it never fails or panics, every message is counted once, as an entry or
// as malformed, and every breakdown adds up to the entries counted.
func FuzzAggregatorAddMessage(f *testing.F) {
	f.Add(message(tcp("10.0.0.1", 443, ctnl.TCPStateEstablished, 100)))
	f.Add(message(udp("2001:db8::1", 53)))
	f.Add(message(icmp("10.0.0.9")))
	f.Add([]byte{2, 0, 0, 0})
	f.Add(message(withStatus(tcp("10.0.0.2", 21, ctnl.TCPStateEstablished, 100), ctnl.StatusAssured|ctnl.StatusDstNAT, "ftp")))
	a := NewAggregator(Options{TopK: 2, ByZoneMark: true, Capacity: 4})
	f.Fuzz(func(t *testing.T, b []byte) {
		a.Reset(defaultTimeouts)
		// The message twice, and a valid one between, to exercise
		// eviction in the small summaries.
		for _, m := range [][]byte{b, message(udp("10.9.9.9", 1)), b} {
			if err := a.AddMessage(m); err != nil {
				t.Fatal(err)
			}
		}
		r := a.Result()
		if r.Total+r.Malformed != 3 {
			t.Fatalf("total %d + malformed %d != 3", r.Total, r.Malformed)
		}
		var states uint64
		for _, s := range r.States {
			states += s.Entries
		}
		check := func(name string, top []uint64, other uint64) {
			sum := other
			for _, n := range top {
				sum += n
			}
			if sum != r.Total {
				t.Fatalf("%s adds up to %d, total %d", name, sum, r.Total)
			}
		}
		check("states", []uint64{states}, 0)
		check("nat", []uint64{r.NAT.None, r.NAT.SNAT, r.NAT.DNAT}, r.NAT.Both)
		if r.Unreplied > r.Total || r.Evictable > r.Total {
			t.Fatalf("unreplied %d, evictable %d of %d", r.Unreplied, r.Evictable, r.Total)
		}
		var helpers uint64
		for _, h := range r.Helpers {
			helpers += h.Entries
			if h.Helper == "" || h.Entries == 0 {
				t.Fatalf("helper %+v", h)
			}
		}
		if helpers > r.Total {
			t.Fatalf("%d helper entries of %d", helpers, r.Total)
		}
		counts := func(n int, at func(int) uint64) []uint64 {
			out := make([]uint64, n)
			for i := range out {
				out[i] = at(i)
			}
			return out
		}
		check("sources", counts(len(r.Sources.Top), func(i int) uint64 { return r.Sources.Top[i].Entries }), r.Sources.Other)
		check("ports", counts(len(r.Ports.Top), func(i int) uint64 { return r.Ports.Top[i].Entries }), r.Ports.Other)
		check("zones", counts(len(r.Zones.Top), func(i int) uint64 { return r.Zones.Top[i].Entries }), r.Zones.Other)
		check("marks", counts(len(r.Marks.Top), func(i int) uint64 { return r.Marks.Top[i].Entries }), r.Marks.Other)
	})
}
