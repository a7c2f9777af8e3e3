package events

import (
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ct-exporter/ct-exporter/internal/ctnl"
)

// netlink header flags that mark a NEW event (NLM_F_CREATE, NLM_F_EXCL).
const newEventFlags = 0x400 | 0x200

// nlmsgMinType is the first netlink message type that is not a control
// message (NLMSG_MIN_TYPE).
const nlmsgMinType = 0x10

// counters are the Subscriber's counters, written by the receive loop and
// read by Stats.
type counters struct {
	events           [NumEventTypes]atomic.Uint64
	overruns         atomic.Uint64
	malformed        atomic.Uint64
	observed         atomic.Uint64
	withoutTimestamp atomic.Uint64
	evictions        atomic.Uint64
	tableLen         atomic.Int64
	mode             atomic.Int32
}

// clock returns the monotonic and the wall-clock time in nanoseconds.
type clock func() (mono, wall int64)

// handler turns received datagrams into counts and observations. It is
// used by the receive loop only; its table persists across sockets.
type handler struct {
	c     *counters
	sink  Sink
	table *flowTable
	// attr counts every DESTROY event by source and silent end; nil
	// counts nothing.
	attr *Attribution
	// attrNow is the receive time of the current batch of datagrams, for
	// the attribution; zero outside a batch.
	attrNow time.Time
	// pending are the attribution keys of the current batch, counted by
	// endBatch.
	pending pendingKeys
	now     clock
	flow    ctnl.Flow // scratch space, reused for every message
}

func newHandler(c *counters, sink Sink, tableSize int, now clock) *handler {
	return &handler{c: c, sink: sink, table: newFlowTable(tableSize), now: now}
}

// systemClock reads the monotonic clock relative to base, and the wall
// clock.
func systemClock(base time.Time) clock {
	return func() (int64, int64) {
		t := time.Now()
		return int64(t.Sub(base)), t.UnixNano()
	}
}

// beginBatch reads the clock for a batch of datagrams received together.
func (h *handler) beginBatch() {
	if h.attr != nil {
		h.attrNow = h.attr.now()
	}
}

// endBatch counts the attribution of the batch's DESTROY events: until
// then a read of the attribution does not see them.
func (h *handler) endBatch() {
	if h.attr != nil {
		h.attr.flush(&h.pending, h.attrNow)
	}
}

// datagram handles every message of one received datagram. A datagram
// whose framing is broken counts once as malformed.
func (h *handler) datagram(b []byte) {
	if err := ctnl.ForEachMessage(b, h.message); err != nil {
		h.c.malformed.Add(1)
	}
}

// message handles one netlink message; its error return is always nil so
// that one bad message does not hide the rest of the datagram.
func (h *handler) message(hdr ctnl.Header, data []byte) error {
	var typ EventType
	switch hdr.Type {
	case ctnl.MsgTypeCTNew:
		typ = EventUpdate
		if hdr.Flags&newEventFlags != 0 {
			typ = EventNew
		}
	case ctnl.MsgTypeCTDelete:
		typ = EventDestroy
	default:
		if hdr.Type >= nlmsgMinType {
			h.c.malformed.Add(1)
		}
		return nil
	}
	h.c.events[typ].Add(1)
	f := &h.flow
	if err := ctnl.DecodeFlow(data, f); err != nil {
		h.c.malformed.Add(1)
		return nil
	}
	switch typ {
	case EventNew:
		if f.Has(ctnl.HasID) && Mode(h.c.mode.Load()) == ModeFlowTable {
			mono, _ := h.now()
			h.table.Insert(f.ID, mono)
			h.syncTable()
		}
	case EventDestroy:
		h.destroy(f)
	}
	return nil
}

// destroy attributes an ended flow and observes its lifetime.
func (h *handler) destroy(f *ctnl.Flow) {
	var (
		tableStart int64
		inTable    bool
	)
	if f.Has(ctnl.HasID) && h.table.Len() > 0 {
		tableStart, inTable = h.table.Remove(f.ID)
		h.syncTable()
	}
	if h.attr != nil && h.pending.collect(f) {
		h.attr.flush(&h.pending, h.attrNow)
	}
	if !f.Assured() {
		return
	}
	var seconds float64
	switch {
	case f.Has(ctnl.HasStart) && f.Start != 0:
		stop := f.Stop
		if !f.Has(ctnl.HasStop) {
			_, stop64 := h.now()
			stop = uint64(max(stop64, 0))
		}
		if stop < f.Start {
			stop = f.Start
		}
		seconds = float64(stop-f.Start) / 1e9
	case inTable:
		mono, _ := h.now()
		seconds = float64(max(mono-tableStart, 0)) / 1e9
	default:
		h.c.withoutTimestamp.Add(1)
		return
	}
	l := Lifetime{Protocol: f.Protocol, Seconds: seconds}
	if f.Protocol == unix.IPPROTO_TCP && f.Has(ctnl.HasTCPState) {
		l.TCPState = f.TCPState
	}
	h.sink.Observe(l)
	h.c.observed.Add(1)
}

// syncTable publishes the flow table's size and evictions.
func (h *handler) syncTable() {
	h.c.tableLen.Store(int64(h.table.Len()))
	h.c.evictions.Store(h.table.evictions)
}
