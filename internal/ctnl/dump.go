package ctnl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"
)

// ErrTruncated reports a datagram larger than the receive buffer: the
// entries in its tail could not be read, so the dump cannot be counted.
var ErrTruncated = errors.New("netlink datagram truncated")

// ctnetlink message types of the conntrack table (enum cntl_msg_types).
const (
	msgCTNew = 0 // IPCTNL_MSG_CT_NEW: the type of every dumped entry
	msgCTGet = 1 // IPCTNL_MSG_CT_GET
)

// nlmsgOverrun is NLMSG_OVERRUN.
const nlmsgOverrun = 4

// A dump is read in batches of dumpSlots datagrams, one recvmmsg call
// each, into slots of dumpSlotSize bytes; dumpBatches batches take turns.
// The kernel sizes each dump datagram to the largest read the socket has
// seen, capped just below 32 KiB (SKB_WITH_OVERHEAD(32768)), so a 32 KiB
// slot always holds one whole datagram.
const (
	dumpSlotSize = 32 << 10
	dumpSlots    = 4
	dumpBatches  = 2
)

// DumpInfo describes one table dump.
type DumpInfo struct {
	// Entries is the number of entry messages the kernel sent, including
	// any the callback could not decode.
	Entries uint64
	// Datagrams is the number of datagrams read.
	Datagrams uint64
	// Interrupted reports that a reply carried NLM_F_DUMP_INTR: the kernel
	// saw the table change in a way that may have made it skip or repeat
	// entries. ctnetlink in current kernels never sets it (it walks the
	// hash table bucket by bucket without a generation check), so a dump
	// is never an atomic snapshot either way.
	Interrupted bool
}

// Dump streams the conntrack table of the namespace, IPv4 and IPv6, one
// entry at a time: fn is called with the body of every entry message
// (the nfgenmsg header followed by the CTA_* attributes) as the datagrams
// arrive. data aliases a receive buffer that is reused during the dump:
// it is valid only during the call and fn must not keep it. Nothing is
// allocated per entry.
//
// The kernel fills the next datagram of a dump inside the read of the
// previous one, so the reads are the kernel's work. Dump reads on a
// goroutine of its own, dumpSlots datagrams per system call, while fn
// decodes the batch before: the decoding overlaps the kernel's walk of
// its table instead of adding to it, and the two goroutines hand over
// once per batch. The batches' 256 KiB are allocated once per dump,
// whatever the table's size (DumpWith reuses them); no large socket
// buffer is needed.
//
// When fn returns an error the dump stops and Dump returns that error.
// After any error the rest of the dump may still be queued on the socket:
// close the Conn. The context's deadline, or its cancellation, ends a dump
// in progress with an error wrapping the context's error.
func (c *Conn) Dump(ctx context.Context, fn func(data []byte) error) (DumpInfo, error) {
	return c.DumpWith(ctx, nil, fn)
}

// DumpMemory is the receive memory of a dump (256 KiB), kept by a caller
// that dumps again and again so that each dump need not allocate it. One
// dump at a time may use it.
type DumpMemory struct {
	batches [dumpBatches]*Datagrams
}

// NewDumpMemory allocates the receive memory of a dump.
func NewDumpMemory() *DumpMemory {
	m := &DumpMemory{}
	for i := range m.batches {
		m.batches[i] = NewDatagrams(make([]byte, dumpSlots*dumpSlotSize), dumpSlots)
	}
	return m
}

// DumpWith is Dump reading into mem, which a nil mem allocates for this
// dump alone.
func (c *Conn) DumpWith(ctx context.Context, mem *DumpMemory, fn func(data []byte) error) (DumpInfo, error) {
	if mem == nil {
		mem = NewDumpMemory()
	}
	if err := c.setDeadline(ctx); err != nil {
		return DumpInfo{}, fmt.Errorf("netns %s: table dump: %w", c.target, err)
	}
	// Cancellation without a deadline must also end a blocked read.
	stop := context.AfterFunc(ctx, func() { _ = c.nl.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	req := netlink.Message{
		Header: netlink.Header{Type: msgType(msgCTGet), Flags: netlink.Request | netlink.Dump},
		Data:   nfgenmsgRequest(),
	}
	sent, err := c.nl.Send(req)
	if err != nil {
		return DumpInfo{}, fmt.Errorf("netns %s: table dump request: %w", c.target, WrapPermission(err))
	}
	r, err := startDumpReader(c, mem)
	if err != nil {
		return DumpInfo{}, fmt.Errorf("netns %s: table dump: %w", c.target, err)
	}
	defer r.stop()
	p := dumpParser{seq: sent.Header.Sequence}
	for !p.done {
		b := <-r.full
		err := b.err
		for i := 0; err == nil && i < b.n && !p.done; i++ {
			// Datagrams read ahead must not outlive a cancellation.
			if err = ctx.Err(); err != nil {
				break
			}
			dg, truncated := b.d.Datagram(i)
			if truncated {
				err = fmt.Errorf("datagram larger than its %d-byte slot: %w", dumpSlotSize, ErrTruncated)
				break
			}
			err = p.feed(dg, fn)
		}
		r.free <- b.d
		if err != nil {
			if ctx.Err() != nil && !errors.Is(err, ctx.Err()) && errors.Is(err, os.ErrDeadlineExceeded) {
				err = fmt.Errorf("%w (%w)", ctx.Err(), err)
			}
			return p.info, fmt.Errorf("netns %s: table dump after %d entries: %w", c.target, p.info.Entries, err)
		}
	}
	return p.info, nil
}

// dumpBatch is one batch of datagrams read by a dumpReader, or the error
// that ended its reading.
type dumpBatch struct {
	d   *Datagrams
	n   int
	err error
}

// dumpReader reads the datagrams of a dump on a goroutine of its own. It
// takes empty batches from free and hands them over, filled, on full; its
// last value on full carries the error that stopped it.
type dumpReader struct {
	rc   syscall.RawConn
	nl   *netlink.Conn
	free chan *Datagrams
	full chan dumpBatch
	quit chan struct{}
	done chan struct{}
}

// startDumpReader starts reading the datagrams of the dump requested on
// c into mem.
func startDumpReader(c *Conn, mem *DumpMemory) (*dumpReader, error) {
	rc, err := c.nl.SyscallConn()
	if err != nil {
		return nil, err
	}
	r := &dumpReader{
		rc:   rc,
		nl:   c.nl,
		free: make(chan *Datagrams, dumpBatches),
		full: make(chan dumpBatch, dumpBatches),
		quit: make(chan struct{}),
		done: make(chan struct{}),
	}
	for _, b := range mem.batches {
		r.free <- b
	}
	go r.run()
	return r, nil
}

func (r *dumpReader) run() {
	defer close(r.done)
	for {
		var d *Datagrams
		select {
		case d = <-r.free:
		case <-r.quit:
			return
		}
		n, err := readPolled(r.rc, d.recvWorking)
		err = WrapPermission(err)
		// full has room for every batch: this never blocks.
		r.full <- dumpBatch{d: d, n: n, err: err}
		if err != nil {
			return
		}
	}
}

// stop ends the reading and waits for the goroutine. A reader that went on
// past the end of the dump waits for a datagram that will not come: the
// expired read deadline wakes it, and the next request on the Conn sets
// its own.
func (r *dumpReader) stop() {
	close(r.quit)
	_ = r.nl.SetReadDeadline(time.Unix(1, 0))
	<-r.done
}

// dumpParser follows the reply of one dump request across datagrams. It
// is a pure function of the bytes it is fed, so it can be fuzzed.
type dumpParser struct {
	seq  uint32
	info DumpInfo
	done bool
}

// feed handles one datagram: it calls fn for every entry message of the
// dump, skips messages of other requests, and records the end of the dump
// or the error the kernel reported. A datagram whose netlink framing is
// broken is an error wrapping ErrMalformed: the entries in it could not be
// counted.
func (p *dumpParser) feed(b []byte, fn func(data []byte) error) error {
	p.info.Datagrams++
	return ForEachMessage(b, func(h Header, data []byte) error {
		if p.done || h.Sequence != p.seq {
			return nil
		}
		if h.Flags&nlmFDumpIn != 0 {
			p.info.Interrupted = true
		}
		switch h.Type {
		case uint16(msgType(msgCTNew)):
			p.info.Entries++
			return fn(data)
		case nlmsgDone:
			p.done = true
			if errno := doneErrno(data); errno != 0 {
				return fmt.Errorf("kernel ended the dump: %w", WrapPermission(errno))
			}
			return nil
		case nlmsgError:
			errno, err := ErrnoFromError(data)
			if err != nil {
				return err
			}
			if errno != 0 {
				p.done = true
				return WrapPermission(errno)
			}
			// An acknowledgement: the dump goes on until NLMSG_DONE.
			return nil
		case nlmsgOverrun:
			p.done = true
			return fmt.Errorf("netlink overrun during the dump: %w", ErrMalformed)
		default:
			// NLMSG_NOOP, or a message type a newer kernel may add.
			return nil
		}
	})
}
