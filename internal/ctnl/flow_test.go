package ctnl

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
)

// capturedMessage is one line of testdata/events.hex.
type capturedMessage struct {
	comment string
	typ     uint16
	flags   uint16
	body    []byte
}

// loadCaptured reads the event messages captured from a real kernel.
func loadCaptured(tb testing.TB) []capturedMessage {
	tb.Helper()
	f, err := os.Open("testdata/events.hex")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var (
		out     []capturedMessage
		comment string
	)
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			comment = strings.TrimSpace(strings.TrimPrefix(line, "#"))
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 3 {
			tb.Fatalf("bad line %q", line)
		}
		typ, err1 := strconv.ParseUint(fields[0], 16, 16)
		flags, err2 := strconv.ParseUint(fields[1], 16, 16)
		body, err3 := hex.DecodeString(fields[2])
		if err := errors.Join(err1, err2, err3); err != nil {
			tb.Fatalf("bad line %q: %v", line, err)
		}
		out = append(out, capturedMessage{comment: comment, typ: uint16(typ), flags: uint16(flags), body: body})
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	if len(out) == 0 {
		tb.Fatal("no captured messages")
	}
	return out
}

// destroyMessages returns the captured DESTROY events.
func destroyMessages(tb testing.TB) []capturedMessage {
	var out []capturedMessage
	for _, m := range loadCaptured(tb) {
		if m.typ == MsgTypeCTDelete {
			out = append(out, m)
		}
	}
	return out
}

func TestDecodeFlowCaptured(t *testing.T) {
	for _, m := range loadCaptured(t) {
		var f Flow
		if err := DecodeFlow(m.body, &f); err != nil {
			t.Fatalf("%s: %v", m.comment, err)
		}
		// The comment was written from the same fields when the message
		// was captured.
		for _, kv := range strings.Fields(m.comment)[1:] {
			k, v, _ := strings.Cut(kv, "=")
			want, err := strconv.ParseUint(v, 0, 32)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]uint64{
				"proto": uint64(f.Protocol), "family": uint64(f.Family), "tcpstate": uint64(f.TCPState),
				"status": uint64(f.Status), "present": uint64(f.Present),
			}[k]
			if got != want {
				t.Errorf("%s: %s = %#x, want %#x", m.comment, k, got, want)
			}
		}
	}
}

func TestDecodeFlowDestroyFields(t *testing.T) {
	var sawTCP, sawICMP, sawV6 bool
	for _, m := range destroyMessages(t) {
		var f Flow
		if err := DecodeFlow(m.body, &f); err != nil {
			t.Fatal(err)
		}
		if f.Has(HasTimeout) {
			t.Errorf("%s: expired entry with a timeout", m.comment)
		}
		life, ok := f.Lifetime()
		if !ok || life <= 0 || life > time.Minute {
			t.Errorf("%s: lifetime %v, %v", m.comment, life, ok)
		}
		switch {
		case f.Protocol == 6 && f.Family == 2 && f.TCPState == TCPStateEstablished:
			sawTCP = true
			if f.Src != netip.MustParseAddr("198.18.0.1") || f.Dst != netip.MustParseAddr("198.18.0.2") {
				t.Errorf("%s: addresses %v -> %v", m.comment, f.Src, f.Dst)
			}
			if !f.Assured() || f.Status&StatusDying == 0 || f.SrcPort == 0 || f.DstPort == 0 || !f.Has(HasPorts|HasID) {
				t.Errorf("%s: %+v", m.comment, f)
			}
		case f.Protocol == 1:
			sawICMP = f.Has(HasICMP) && !f.Has(HasPorts) && f.ICMPType == 8 && f.ICMPCode == 0 && f.ICMPID == 0x1234
		case f.Family == 10:
			sawV6 = f.Src == netip.MustParseAddr("fd00:c7::1") && f.TCPState == TCPStateTimeWait
		}
	}
	if !sawTCP || !sawICMP || !sawV6 {
		t.Errorf("tcp %v icmp %v ipv6 %v", sawTCP, sawICMP, sawV6)
	}
}

// attr encodes one netlink attribute.
func attr(typ uint16, data []byte) []byte {
	b := binary.NativeEndian.AppendUint16(nil, uint16(4+len(data)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func TestDecodeFlowMalformed(t *testing.T) {
	hdr := []byte{2, 0, 0, 0}
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	cases := map[string][]byte{
		"empty":                  nil,
		"short nfgenmsg":         {2, 0},
		"short attribute header": cat(hdr, []byte{8, 0}),
		"attribute length < 4":   cat(hdr, []byte{2, 0, 3, 0}),
		"attribute past the end": cat(hdr, []byte{12, 0, 3, 0, 0, 0, 0, 4}),
		"status of 2 bytes":      cat(hdr, attr(flStatus, []byte{0, 4})),
		"id of 8 bytes":          cat(hdr, attr(flID, make([]byte, 8))),
		"zone of 4 bytes":        cat(hdr, attr(flZone, make([]byte, 4))),
		"ipv4 of 16 bytes": cat(hdr, attr(flTupleOrig|0x8000,
			attr(flTupleIP|0x8000, attr(flIPv4Src, make([]byte, 16))))),
		"bad nested header": cat(hdr, attr(flTupleOrig|0x8000, []byte{9, 0, 1, 0})),
		"port of 4 bytes": cat(hdr, attr(flTupleOrig|0x8000,
			attr(flTupleProto|0x8000, attr(flProtoSrcPort, make([]byte, 4))))),
		"tcp state of 2 bytes": cat(hdr, attr(flProtoinfo|0x8000,
			attr(flProtoinfoTCP|0x8000, attr(flTCPState, []byte{3, 0})))),
		"timestamp of 4 bytes": cat(hdr, attr(flTimestamp|0x8000, attr(flTimestampStart, make([]byte, 4)))),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			var f Flow
			err := DecodeFlow(b, &f)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("DecodeFlow(%x) = %v, want ErrMalformed", b, err)
			}
		})
	}
}

func TestDecodeFlowResetsAndIgnoresUnknown(t *testing.T) {
	f := Flow{Protocol: 6, Present: HasProtocol | HasStart, Start: 7}
	b := append([]byte{10, 0, 0, 0}, attr(99, []byte{1, 2, 3})...)
	b = append(b, attr(flMark, []byte{0, 0, 1, 0})...)
	if err := DecodeFlow(b, &f); err != nil {
		t.Fatal(err)
	}
	want := Flow{Family: 10, Present: HasMark, Mark: 256}
	if f != want {
		t.Fatalf("got %+v, want %+v", f, want)
	}
	// The last attribute may end without padding.
	unpadded := func(typ uint16, data []byte) []byte { return attr(typ, data)[:4+len(data)] }
	b = append([]byte{2, 0, 0, 0}, unpadded(flTupleOrig|0x8000, unpadded(flTupleProto|0x8000, unpadded(flProtoNum, []byte{17})))...)
	if err := DecodeFlow(b, &f); err != nil || f.Protocol != 17 || !f.Has(HasProtocol) {
		t.Fatalf("unpadded end: %+v, %v", f, err)
	}
}

func TestFlowLifetime(t *testing.T) {
	cases := []struct {
		f    Flow
		want time.Duration
		ok   bool
	}{
		{Flow{Present: HasStart | HasStop, Start: 1e9, Stop: 4e9}, 3 * time.Second, true},
		{Flow{Present: HasStart, Start: 1e9}, 0, false},
		{Flow{Present: HasStart | HasStop, Start: 5e9, Stop: 4e9}, 0, false},
		{Flow{Present: HasStart | HasStop, Start: 0, Stop: 4e9}, 0, false},
		{Flow{Present: HasStart | HasStop, Start: 1, Stop: 1<<64 - 1}, 0, false},
	}
	for _, c := range cases {
		got, ok := c.f.Lifetime()
		if got != c.want || ok != c.ok {
			t.Errorf("%+v: got %v %v, want %v %v", c.f, got, ok, c.want, c.ok)
		}
	}
}

func TestDecodeFlowTruncationsNeverPanic(t *testing.T) {
	for _, m := range loadCaptured(t) {
		for n := 0; n < len(m.body); n++ {
			var f Flow
			_ = DecodeFlow(m.body[:n], &f)
		}
	}
}

func TestDecodeFlowAllocs(t *testing.T) {
	msgs := loadCaptured(t)
	var f Flow
	allocs := testing.AllocsPerRun(100, func() {
		for _, m := range msgs {
			if err := DecodeFlow(m.body, &f); err != nil {
				t.Fatal(err)
			}
		}
	})
	if allocs != 0 {
		t.Fatalf("DecodeFlow allocates %v times per run, want 0", allocs)
	}
}

// FuzzDecodeFlow checks that DecodeFlow never panics, that it reports every
// failure as ErrMalformed, and that what it decodes agrees with
// ti-mo/conntrack where both accept a message.
func FuzzDecodeFlow(f *testing.F) {
	for _, m := range loadCaptured(f) {
		f.Add(m.body)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var fl Flow
		err := DecodeFlow(b, &fl)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if fl.Family != b[0] {
			t.Fatalf("family %d, first byte %d", fl.Family, b[0])
		}
		if _, ok := fl.Lifetime(); ok && !fl.Has(HasStart|HasStop) {
			t.Fatal("lifetime without timestamps")
		}
		if !smallTypes(b[nfgenmsgLen:], 0) {
			// ti-mo/conntrack truncates attribute types to 8 bits.
			return
		}
		var ev conntrack.Event
		msg := netlink.Message{Header: netlink.Header{Type: netlink.HeaderType(MsgTypeCTDelete), Length: uint32(16 + len(b))}, Data: b}
		if ev.Unmarshal(msg) != nil || ev.Flow == nil {
			return
		}
		o := ev.Flow
		if fl.Has(HasStatus) && uint32(o.Status) != fl.Status {
			t.Fatalf("status %#x, ti-mo %#x", fl.Status, o.Status)
		}
		if fl.Has(HasID) && o.ID != fl.ID {
			t.Fatalf("id %d, ti-mo %d", fl.ID, o.ID)
		}
		if fl.Has(HasProtocol) && o.TupleOrig.Proto.Protocol != fl.Protocol {
			t.Fatalf("protocol %d, ti-mo %d", fl.Protocol, o.TupleOrig.Proto.Protocol)
		}
		if fl.Has(HasPorts) && (o.TupleOrig.Proto.SourcePort != fl.SrcPort || o.TupleOrig.Proto.DestinationPort != fl.DstPort) {
			t.Fatalf("ports %d %d, ti-mo %d %d", fl.SrcPort, fl.DstPort, o.TupleOrig.Proto.SourcePort, o.TupleOrig.Proto.DestinationPort)
		}
	})
}

// smallTypes reports whether every attribute type in b, and in whatever
// parses as attributes inside them, fits in 8 bits.
func smallTypes(b []byte, depth int) bool {
	it := attrIter{rest: b}
	for it.next() {
		if it.typ > 0xff {
			return false
		}
		if depth < 3 && !smallTypes(it.data, depth+1) {
			return false
		}
	}
	return true
}

// BenchmarkDecodeFlow decodes the captured DESTROY events.
func BenchmarkDecodeFlow(b *testing.B) {
	msgs := destroyMessages(b)
	var f Flow
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		m := msgs[i%len(msgs)]
		if err := DecodeFlow(m.body, &f); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTiMoEventUnmarshal decodes the same messages with
// ti-mo/conntrack's Event.Unmarshal, for comparison.
func BenchmarkTiMoEventUnmarshal(b *testing.B) {
	var msgs []netlink.Message
	for _, m := range destroyMessages(b) {
		msgs = append(msgs, netlink.Message{
			Header: netlink.Header{Type: netlink.HeaderType(m.typ), Flags: netlink.HeaderFlags(m.flags), Length: uint32(16 + len(m.body))},
			Data:   m.body,
		})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		var ev conntrack.Event
		if err := ev.Unmarshal(msgs[i%len(msgs)]); err != nil {
			b.Fatal(err)
		}
	}
}
