package ctnl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
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

// dumpBufSize is the receive buffer of a dump. The kernel sizes each dump
// datagram to the largest read the socket has seen, capped just below
// 32 KiB, so 64 KiB always holds one whole datagram.
const dumpBufSize = 64 << 10

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
// arrive. data aliases a receive buffer that is reused for the whole dump:
// it is valid only during the call and fn must not keep it. Nothing is
// allocated per entry.
//
// The kernel produces the next datagram only when the previous one has
// been read, so a dump of any size needs one 64 KiB buffer, allocated once
// per dump, and no large socket buffer. When fn returns an error the dump stops and Dump returns
// that error. After any error the rest of the dump may still be queued on
// the socket: close the Conn. The context's deadline, or its cancellation,
// ends a dump in progress with an error wrapping the context's error.
func (c *Conn) Dump(ctx context.Context, fn func(data []byte) error) (DumpInfo, error) {
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
	buf := make([]byte, dumpBufSize)
	p := dumpParser{seq: sent.Header.Sequence}
	for !p.done {
		n, err := recvDatagram(c, buf)
		if err != nil {
			if ctx.Err() != nil && errors.Is(err, os.ErrDeadlineExceeded) {
				err = fmt.Errorf("%w (%w)", ctx.Err(), err)
			}
			return p.info, fmt.Errorf("netns %s: table dump after %d entries: %w", c.target, p.info.Entries, err)
		}
		if err := p.feed(buf[:n], fn); err != nil {
			return p.info, fmt.Errorf("netns %s: table dump after %d entries: %w", c.target, p.info.Entries, err)
		}
	}
	return p.info, nil
}

// recvDatagram reads one datagram into buf, honouring the socket deadline,
// and fails with ErrTruncated if it did not fit.
func recvDatagram(c *Conn, buf []byte) (int, error) {
	rc, err := c.nl.SyscallConn()
	if err != nil {
		return 0, err
	}
	var (
		n    int
		rerr error
	)
	err = rc.Read(func(fd uintptr) bool {
		// MSG_TRUNC makes netlink return the datagram's full length.
		n, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT|unix.MSG_TRUNC)
		return !errors.Is(rerr, unix.EAGAIN) && !errors.Is(rerr, unix.EWOULDBLOCK)
	})
	if err != nil {
		return 0, err
	}
	if rerr != nil {
		return 0, WrapPermission(rerr)
	}
	if n > len(buf) {
		return 0, fmt.Errorf("%d-byte datagram, %d-byte buffer: %w", n, len(buf), ErrTruncated)
	}
	return n, nil
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
