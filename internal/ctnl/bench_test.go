package ctnl

import (
	"encoding/binary"
	"testing"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
)

// The benchmarks in this file decode the same bytes with this package and
// with ti-mo/conntrack, as sub-benchmarks impl=ctnl and impl=ti-mo, so that
//
//	go test -run '^$' -bench '^BenchmarkDecode$' -benchmem -count 10 ./internal/ctnl > decode.txt
//	benchstat -col /impl decode.txt
//
// prints the two side by side (docs/BENCHMARKS.md).

// capturedByType returns the captured messages of one header type, as
// bodies and as the netlink.Messages ti-mo/conntrack decodes.
func capturedByType(tb testing.TB, typ uint16, create bool) (bodies [][]byte, msgs []netlink.Message) {
	tb.Helper()
	for _, m := range loadCaptured(tb) {
		if m.typ != typ || (typ == MsgTypeCTNew && (m.flags&0x400 != 0) != create) {
			continue
		}
		bodies = append(bodies, m.body)
		msgs = append(msgs, netlink.Message{
			Header: netlink.Header{Type: netlink.HeaderType(m.typ), Flags: netlink.HeaderFlags(m.flags), Length: uint32(16 + len(m.body))},
			Data:   m.body,
		})
	}
	if len(bodies) == 0 {
		tb.Fatalf("no captured messages of type %#x", typ)
	}
	return bodies, msgs
}

// cpuStatsBody encodes an IPCTNL_MSG_CT_GET_STATS_CPU reply body as the
// kernel sends it: nfgenmsg with the CPU in res_id, then every
// CTA_STATS_* attribute (1..17) as a big-endian u32.
func cpuStatsBody(cpu uint16) []byte {
	b := []byte{0, 0, byte(cpu >> 8), byte(cpu)}
	for typ := uint16(1); typ <= 17; typ++ {
		b = binary.NativeEndian.AppendUint16(b, 8)
		b = binary.NativeEndian.AppendUint16(b, typ)
		b = binary.BigEndian.AppendUint32(b, 1000*uint32(typ)+uint32(cpu))
	}
	return b
}

func BenchmarkDecode(b *testing.B) {
	for _, tc := range []struct {
		name   string
		typ    uint16
		create bool
	}{
		{"msg=new", MsgTypeCTNew, true},
		{"msg=destroy", MsgTypeCTDelete, false},
	} {
		bodies, msgs := capturedByType(b, tc.typ, tc.create)
		b.Run(tc.name+"/impl=ctnl", func(b *testing.B) {
			var f Flow
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if err := DecodeFlow(bodies[i%len(bodies)], &f); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(tc.name+"/impl=ti-mo", func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				var ev conntrack.Event
				if err := ev.Unmarshal(msgs[i%len(msgs)]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}

	body := cpuStatsBody(1)
	msg := netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(subsysCTNetlink<<8 | msgGetStatsCPU), Length: uint32(16 + len(body))},
		Data:   body,
	}
	b.Run("msg=cpu-stats/impl=ctnl", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := DecodeCPUStats(body); err != nil {
				b.Fatal(err)
			}
		}
	})
	// ti-mo/conntrack decodes a stats reply with netfilter.UnmarshalNetlink
	// and then an unexported switch over the attributes, which allocates
	// nothing; the exported first step is what it costs.
	b.Run("msg=cpu-stats/impl=ti-mo", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := netfilter.UnmarshalNetlink(msg); err != nil {
				b.Fatal(err)
			}
		}
	})
}
