package events

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ct-exporter/ct-exporter/internal/ctnl"
	"github.com/ct-exporter/ct-exporter/internal/topk"
)

// observation is one lifetime handed to a sink.
type observation = Lifetime

// Protocol numbers and TCP conntrack states the tests expect.
const (
	protoTCP  = 6
	protoUDP  = 17
	protoSCTP = 132

	stateNone        = 0
	stateEstablished = 3
	stateTimeWait    = 7
	stateClose       = 8
)

// recordSink keeps every observation.
type recordSink struct {
	mu  sync.Mutex
	obs []observation
}

func (r *recordSink) Observe(l Lifetime) {
	r.mu.Lock()
	r.obs = append(r.obs, l)
	r.mu.Unlock()
}

func (r *recordSink) all() []observation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]observation(nil), r.obs...)
}

// nopSink drops observations.
type nopSink struct{}

func (nopSink) Observe(Lifetime) {}

// frame puts a netlink header in front of a ctnetlink body.
func frame(typ, flags uint16, body []byte) []byte {
	b := make([]byte, 16, 16+len(body)+3)
	binary.NativeEndian.PutUint32(b[0:], uint32(16+len(body)))
	binary.NativeEndian.PutUint16(b[4:], typ)
	binary.NativeEndian.PutUint16(b[6:], flags)
	b = append(b, body...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// capturedDatagrams returns the kernel-captured event messages of
// internal/ctnl/testdata/events.hex, each framed as one datagram.
func capturedDatagrams(tb testing.TB) [][]byte {
	tb.Helper()
	f, err := os.Open("../internal/ctnl/testdata/events.hex")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var out [][]byte
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		fs := strings.Fields(line)
		typ, _ := strconv.ParseUint(fs[0], 16, 16)
		flags, _ := strconv.ParseUint(fs[1], 16, 16)
		body, err := hex.DecodeString(fs[2])
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, frame(uint16(typ), uint16(flags), body))
	}
	return out
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

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// synth builds an event body: protocol, CTA_ID, status, TCP state (if
// tcpState >= 0), and timestamps when start != 0.
func synth(proto uint8, id, status uint32, tcpState int, start, stop uint64) []byte {
	b := []byte{2, 0, 0, 0}
	b = append(b, attr(1|0x8000, attr(2|0x8000, attr(1, []byte{proto})))...)
	b = append(b, attr(3, be32(status))...)
	b = append(b, attr(12, be32(id))...)
	if tcpState >= 0 {
		b = append(b, attr(4|0x8000, attr(1|0x8000, attr(1, []byte{byte(tcpState)})))...)
	}
	if start != 0 {
		ts := attr(1, binary.BigEndian.AppendUint64(nil, start))
		if stop != 0 {
			ts = append(ts, attr(2, binary.BigEndian.AppendUint64(nil, stop))...)
		}
		b = append(b, attr(20|0x8000, ts)...)
	}
	return b
}

const assured = ctnl.StatusAssured | ctnl.StatusSeenReply | ctnl.StatusConfirmed

// fakeClock is a settable clock.
type fakeClock struct{ mono, wall int64 }

func (c *fakeClock) now() (int64, int64) { return c.mono, c.wall }

func TestHandlerCapturedEvents(t *testing.T) {
	var c counters
	sink := &recordSink{}
	h := newHandler(&c, sink, 16, (&fakeClock{}).now)
	for _, d := range capturedDatagrams(t) {
		h.datagram(d)
	}
	if c.malformed.Load() != 0 {
		t.Fatalf("%d malformed", c.malformed.Load())
	}
	got := [NumEventTypes]uint64{c.events[0].Load(), c.events[1].Load(), c.events[2].Load()}
	if got != [NumEventTypes]uint64{6, 15, 6} {
		t.Fatalf("events new/update/destroy = %v", got)
	}
	// Of the 6 DESTROY events, 3 are ASSURED TCP flows: an idle one that
	// expired ESTABLISHED and two closed in order (IPv4 and IPv6).
	obs := sink.all()
	ends := map[uint8]int{}
	for _, o := range obs {
		if o.Protocol != protoTCP || o.Seconds <= 0 || o.Seconds > 60 {
			t.Errorf("observation %+v", o)
		}
		ends[o.TCPState]++
	}
	if len(obs) != 3 || ends[stateEstablished] != 1 || ends[stateTimeWait] != 2 {
		t.Fatalf("observations %+v", obs)
	}
	if c.withoutTimestamp.Load() != 0 || c.observed.Load() != 3 {
		t.Fatalf("without timestamp %d, observed %d", c.withoutTimestamp.Load(), c.observed.Load())
	}
}

func TestHandlerTimestampLifetimes(t *testing.T) {
	var c counters
	sink := &recordSink{}
	clk := &fakeClock{wall: 50e9}
	h := newHandler(&c, sink, 16, clk.now)
	h.datagram(frame(ctnl.MsgTypeCTDelete, 0, synth(6, 1, assured, 3, 10e9, 310e9)))
	h.datagram(frame(ctnl.MsgTypeCTDelete, 0, synth(17, 2, assured, -1, 10e9, 12e9)))
	h.datagram(frame(ctnl.MsgTypeCTDelete, 0, synth(132, 3, assured, -1, 20e9, 0))) // no stop: now
	h.datagram(frame(ctnl.MsgTypeCTDelete, 0, synth(6, 4, assured, 3, 60e9, 0)))    // start after now
	h.datagram(frame(ctnl.MsgTypeCTDelete, 0, synth(6, 5, assured, 7, 0, 0)))       // no timestamp
	h.datagram(frame(ctnl.MsgTypeCTDelete, 0, synth(6, 6, ctnl.StatusConfirmed, 2, 1e9, 2e9)))
	want := []observation{
		{protoTCP, stateEstablished, 300},
		{protoUDP, stateNone, 2},
		{protoSCTP, stateNone, 30},
		{protoTCP, stateEstablished, 0},
	}
	got := sink.all()
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("observation %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if c.withoutTimestamp.Load() != 1 || c.events[EventDestroy].Load() != 6 {
		t.Fatalf("without timestamp %d, destroys %d", c.withoutTimestamp.Load(), c.events[EventDestroy].Load())
	}
}

func TestHandlerFlowTableLifetimes(t *testing.T) {
	var c counters
	c.mode.Store(int32(ModeFlowTable))
	sink := &recordSink{}
	clk := &fakeClock{mono: 1e9}
	h := newHandler(&c, sink, 2, clk.now)
	newFlow := func(id uint32) {
		h.datagram(frame(ctnl.MsgTypeCTNew, 0x600, synth(6, id, ctnl.StatusConfirmed, 1, 0, 0)))
	}
	destroy := func(id uint32) {
		h.datagram(frame(ctnl.MsgTypeCTDelete, 0, synth(6, id, assured, 3, 0, 0)))
	}
	newFlow(1)
	clk.mono = 2e9
	newFlow(2)
	clk.mono = 3e9
	newFlow(3) // evicts flow 1
	// An UPDATE event does not touch the table.
	h.datagram(frame(ctnl.MsgTypeCTNew, 0, synth(6, 3, assured, 3, 0, 0)))
	clk.mono = 7e9
	destroy(2)
	destroy(1) // evicted: no start
	destroy(3)
	got := sink.all()
	want := []observation{
		{protoTCP, stateEstablished, 5},
		{protoTCP, stateEstablished, 4},
	}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if c.evictions.Load() != 1 || c.withoutTimestamp.Load() != 1 || c.tableLen.Load() != 0 {
		t.Fatalf("evictions %d, without timestamp %d, table %d", c.evictions.Load(), c.withoutTimestamp.Load(), c.tableLen.Load())
	}
	if c.events[EventNew].Load() != 3 || c.events[EventUpdate].Load() != 1 {
		t.Fatalf("new %d, update %d", c.events[EventNew].Load(), c.events[EventUpdate].Load())
	}
	// In the timestamp mode NEW events do not fill the table.
	c.mode.Store(int32(ModeTimestamp))
	newFlow(9)
	if h.table.Len() != 0 {
		t.Fatal("timestamp mode filled the flow table")
	}
}

func TestHandlerMalformed(t *testing.T) {
	var c counters
	sink := &recordSink{}
	h := newHandler(&c, sink, 2, (&fakeClock{}).now)
	h.datagram([]byte{1, 2, 3})                                          // broken framing
	h.datagram(frame(ctnl.MsgTypeCTDelete, 0, []byte{2, 0, 0, 0, 9, 0})) // broken body
	h.datagram(frame(0x0199, 0, []byte{2, 0, 0, 0}))                     // unknown type
	h.datagram(frame(3, 0, []byte{0, 0, 0, 0}))                          // NLMSG_DONE: ignored
	if c.malformed.Load() != 3 || c.events[EventDestroy].Load() != 1 || len(sink.all()) != 0 {
		t.Fatalf("malformed %d, destroys %d, observations %d", c.malformed.Load(), c.events[EventDestroy].Load(), len(sink.all()))
	}
	// A datagram with two messages, the first broken, still yields the
	// second.
	d := append(frame(ctnl.MsgTypeCTDelete, 0, []byte{2, 0, 0, 0, 9, 0}), frame(ctnl.MsgTypeCTDelete, 0, synth(6, 1, assured, 3, 1e9, 2e9))...)
	h.datagram(d)
	if len(sink.all()) != 1 || c.malformed.Load() != 4 {
		t.Fatalf("multi-message datagram: %d observations, %d malformed", len(sink.all()), c.malformed.Load())
	}
}

// newAttributedHandler returns a handler that also attributes DESTROY
// events, as a Subscriber's does.
func newAttributedHandler(t testing.TB, c *counters, sink Sink, tableSize int, now clock, opts topk.WindowOptions) *handler {
	t.Helper()
	attr, err := NewAttribution(opts)
	if err != nil {
		t.Fatal(err)
	}
	h := newHandler(c, sink, tableSize, now)
	h.attr = attr
	return h
}

// synthAddrs is a DESTROY event of a TCP flow between src and dst:dport
// that ended in tcpState with the given status.
func synthAddrs(src, dst [4]byte, sport, dport uint16, status uint32, tcpState byte) []byte {
	be16 := func(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
	ip := append(attr(1, src[:]), attr(2, dst[:])...)
	proto := append(append(attr(1, []byte{protoTCP}), attr(2, be16(sport))...), attr(3, be16(dport))...)
	b := []byte{2, 0, 0, 0}
	b = append(b, attr(1|0x8000, append(attr(1|0x8000, ip), attr(2|0x8000, proto)...))...)
	b = append(b, attr(3, be32(status))...)
	b = append(b, attr(4|0x8000, attr(1|0x8000, attr(1, []byte{tcpState})))...)
	return frame(ctnl.MsgTypeCTDelete, 0, b)
}

func TestHandlerAttribution(t *testing.T) {
	var c counters
	now := time.Unix(1000, 0)
	h := newAttributedHandler(t, &c, nopSink{}, 16, (&fakeClock{}).now,
		topk.WindowOptions{Window: 5 * time.Minute, Now: func() time.Time { return now }})
	churner, quiet := [4]byte{10, 0, 0, 1}, [4]byte{10, 0, 0, 2}
	server := [4]byte{10, 0, 1, 1}
	// The churner ends 10 flows in order; the quiet client 2 that die
	// silently on port 5432 and 1 that never got a reply (not ASSURED).
	for i := range 10 {
		h.datagram(synthAddrs(churner, server, uint16(40000+i), 80, assured, stateTimeWait))
	}
	h.datagram(synthAddrs(quiet, server, 50000, 5432, assured, stateEstablished))
	h.datagram(synthAddrs(quiet, server, 50001, 5432, assured, stateEstablished))
	h.datagram(synthAddrs(quiet, server, 50002, 5432, ctnl.StatusConfirmed, stateEstablished))
	if m := c.malformed.Load(); m != 0 {
		t.Fatalf("%d malformed", m)
	}
	if ends, silent := h.attr.Top(1); ends.Total != 0 || silent.Total != 0 {
		t.Fatalf("counted before the batch ended: ends %+v, silent %+v", ends, silent)
	}
	h.endBatch()
	ends, silent := h.attr.Top(1)
	if len(ends.Items) != 1 || ends.Items[0].Key.Addr() != netip.AddrFrom4(churner) || ends.Items[0].Count != 10 ||
		ends.Other != 3 || ends.Total != 13 || ends.MaxError != 0 {
		t.Fatalf("ends = %+v", ends)
	}
	if len(silent.Items) != 1 || silent.Items[0].Key.Addr() != netip.AddrFrom4(server) || silent.Items[0].Key.Port() != 5432 ||
		silent.Items[0].Count != 2 || silent.Other != 0 || silent.Total != 2 {
		t.Fatalf("silent = %+v", silent)
	}
	// Five minutes later the window has moved past all of it.
	now = now.Add(5 * time.Minute)
	if ends, silent := h.attr.Top(1); ends.Total != 0 || silent.Total != 0 {
		t.Fatalf("after the window: ends %+v, silent %+v", ends, silent)
	}
}

// TestHandlerFlushesAFullBatch: the attribution keys of a batch are held
// for at most maxPendingKeys events; beyond that they are counted at once.
func TestHandlerFlushesAFullBatch(t *testing.T) {
	var c counters
	h := newAttributedHandler(t, &c, nopSink{}, 16, (&fakeClock{}).now, topk.WindowOptions{})
	h.beginBatch()
	for i := range maxPendingKeys + 10 {
		h.datagram(synthAddrs([4]byte{10, 0, 0, 1}, [4]byte{10, 0, 1, 1}, uint16(40000+i), 80, assured, stateEstablished))
	}
	if ends, silent := h.attr.Top(1); ends.Total != maxPendingKeys || silent.Total != maxPendingKeys {
		t.Fatalf("mid-batch: %d ends, %d silent counted, want %d each", ends.Total, silent.Total, maxPendingKeys)
	}
	h.endBatch()
	if ends, silent := h.attr.Top(1); ends.Total != maxPendingKeys+10 || silent.Total != maxPendingKeys+10 {
		t.Fatalf("after the batch: %d ends, %d silent counted, want %d each", ends.Total, silent.Total, maxPendingKeys+10)
	}
}

func TestHandlerDoesNotAllocate(t *testing.T) {
	var c counters
	h := newAttributedHandler(t, &c, nopSink{}, 16, systemClock(time.Now()), topk.WindowOptions{})
	ds := capturedDatagrams(t)
	for _, d := range ds {
		h.datagram(d) // fills the flow table
	}
	allocs := testing.AllocsPerRun(100, func() {
		for _, d := range ds {
			h.datagram(d)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per %d datagrams", allocs, len(ds))
	}
}

// BenchmarkHandleDestroy measures decoding one captured DESTROY event,
// attributing it and handing its lifetime to a sink (the histogram's cost
// is measured in package histogram).
func BenchmarkHandleDestroy(b *testing.B) {
	var c counters
	h := newAttributedHandler(b, &c, nopSink{}, 16, systemClock(time.Now()), topk.WindowOptions{})
	var ds [][]byte
	for _, d := range capturedDatagrams(b) {
		if binary.NativeEndian.Uint16(d[4:6]) == ctnl.MsgTypeCTDelete {
			ds = append(ds, d)
		}
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if i%recvSlots == 0 { // as the receive loop: the clock and the windows once per batch
			h.endBatch()
			h.beginBatch()
		}
		h.datagram(ds[i%len(ds)])
	}
}

// FuzzHandlerDatagram feeds arbitrary datagrams to the handler, in both
// modes: it must never panic, and every observation must be a finite,
// non-negative lifetime, with a TCP state only for TCP.
func FuzzHandlerDatagram(f *testing.F) {
	for _, d := range capturedDatagrams(f) {
		f.Add(d, false)
	}
	f.Add(frame(ctnl.MsgTypeCTNew, 0x600, synth(6, 1, ctnl.StatusConfirmed, 1, 0, 0)), true)
	f.Fuzz(func(t *testing.T, b []byte, flowTable bool) {
		var c counters
		if flowTable {
			c.mode.Store(int32(ModeFlowTable))
		}
		sink := &recordSink{}
		h := newAttributedHandler(t, &c, sink, 4, (&fakeClock{mono: 5e9, wall: 7e9}).now, topk.WindowOptions{})
		h.datagram(b)
		h.datagram(b)
		h.endBatch()
		if ends, silent := h.attr.Top(3); ends.Total > c.events[EventDestroy].Load() || silent.Total > ends.Total {
			t.Fatalf("attributed %d ends, %d silent, of %d DESTROY events", ends.Total, silent.Total, c.events[EventDestroy].Load())
		}
		for _, o := range sink.all() {
			if (o.TCPState != stateNone && o.Protocol != protoTCP) || !(o.Seconds >= 0) || o.Seconds > 1<<63/1e9 {
				t.Fatalf("observation %+v", o)
			}
		}
		if h.table.Len() > 4 {
			t.Fatalf("flow table holds %d of at most 4", h.table.Len())
		}
	})
}
