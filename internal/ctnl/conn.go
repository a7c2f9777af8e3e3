package ctnl

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/ct-exporter/ct-exporter/internal/netns"
)

// ErrPermission reports that the kernel refused a ctnetlink request because
// the process lacks CAP_NET_ADMIN in the namespace.
var ErrPermission = errors.New("ctnetlink needs CAP_NET_ADMIN")

// Conn is a ctnetlink socket opened inside one network namespace.
type Conn struct {
	nl     *netlink.Conn
	target netns.Target
	// stats is Snapshot's memory, allocated by the first one.
	stats *statsIO
}

// Dial opens a ctnetlink socket inside the namespace of target. For a
// namespace other than the exporter's own this needs CAP_SYS_ADMIN.
func Dial(target netns.Target) (*Conn, error) {
	cfg := &netlink.Config{Strict: false}
	if !target.IsSelf() {
		f, err := target.Open()
		if err != nil {
			return nil, err
		}
		defer f.Close()
		cfg.NetNS = int(f.Fd())
	}
	nl, err := netlink.Dial(unix.NETLINK_NETFILTER, cfg)
	if err != nil {
		return nil, fmt.Errorf("netns %s: open netlink socket: %w", target, WrapPermission(err))
	}
	return &Conn{nl: nl, target: target}, nil
}

// Close closes the socket.
func (c *Conn) Close() error { return c.nl.Close() }

// Netlink returns the underlying netlink connection.
func (c *Conn) Netlink() *netlink.Conn { return c.nl }

// Target returns the namespace the socket lives in.
func (c *Conn) Target() netns.Target { return c.target }

// setDeadline applies the context's deadline to the socket.
func (c *Conn) setDeadline(ctx context.Context) error {
	d, ok := ctx.Deadline()
	if !ok {
		d = time.Time{}
	}
	return c.nl.SetDeadline(d)
}

// WrapPermission marks EPERM/EACCES as ErrPermission, keeping the cause.
func WrapPermission(err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) || errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("%w: %w", ErrPermission, err)
	}
	return err
}

// CPUStats returns the per-CPU counters of the namespace.
func (c *Conn) CPUStats(ctx context.Context) ([]CPUStats, error) {
	if err := c.setDeadline(ctx); err != nil {
		return nil, fmt.Errorf("netns %s: %w", c.target, err)
	}
	req := netlink.Message{
		Header: netlink.Header{Type: msgType(msgGetStatsCPU), Flags: netlink.Request | netlink.Dump},
		Data:   nfgenmsgRequest(),
	}
	msgs, err := c.nl.Execute(req)
	if err != nil {
		return nil, fmt.Errorf("netns %s: per-CPU stats: %w", c.target, WrapPermission(err))
	}
	out := make([]CPUStats, 0, len(msgs))
	for _, m := range msgs {
		s, err := DecodeCPUStats(m.Data)
		if err != nil {
			return nil, fmt.Errorf("netns %s: %w", c.target, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// GlobalStats returns the namespace's entry count and the table limit.
func (c *Conn) GlobalStats(ctx context.Context) (GlobalStats, error) {
	if err := c.setDeadline(ctx); err != nil {
		return GlobalStats{}, fmt.Errorf("netns %s: %w", c.target, err)
	}
	// The kernel marks its single reply NLM_F_MULTI but sends no
	// NLMSG_DONE, so the generic receive path would wait for more. Ask for
	// an acknowledgement and read datagrams until it arrives.
	req := netlink.Message{
		Header: netlink.Header{Type: msgType(msgGetStats), Flags: netlink.Request | netlink.Acknowledge},
		Data:   nfgenmsgRequest(),
	}
	sent, err := c.nl.Send(req)
	if err != nil {
		return GlobalStats{}, fmt.Errorf("netns %s: global stats: %w", c.target, WrapPermission(err))
	}
	var (
		g     GlobalStats
		have  bool
		acked bool
		buf   = make([]byte, statsRecvBuf)
	)
	for !acked {
		n, err := c.recvOnce(buf)
		if err != nil {
			return GlobalStats{}, fmt.Errorf("netns %s: global stats: %w", c.target, err)
		}
		err = ForEachMessage(buf[:n], func(h Header, data []byte) error {
			if h.Sequence != sent.Header.Sequence {
				return nil
			}
			switch h.Type {
			case nlmsgError:
				errno, err := ErrnoFromError(data)
				if err != nil {
					return err
				}
				if errno != 0 {
					return WrapPermission(errno)
				}
				acked = true
			case uint16(msgType(msgGetStats)):
				g, err = DecodeGlobalStats(data)
				if err != nil {
					return err
				}
				have = true
			}
			return nil
		})
		if err != nil {
			return GlobalStats{}, fmt.Errorf("netns %s: global stats: %w", c.target, err)
		}
	}
	if !have {
		return GlobalStats{}, fmt.Errorf("netns %s: global stats: acknowledged without a reply: %w", c.target, ErrMalformed)
	}
	return g, nil
}

// Snapshot is one reading of a namespace's conntrack statistics.
type Snapshot struct {
	// Inode identifies the namespace; counters restart when it changes.
	Inode uint64
	// Global holds the entry count and the table limit.
	Global GlobalStats
	// CPUs holds the raw 32-bit per-CPU counters.
	CPUs []CPUStats
}

// ReadSnapshot opens a ctnetlink socket in the namespace of target, asks
// for the global and per-CPU statistics, and closes it.
func ReadSnapshot(ctx context.Context, target netns.Target) (Snapshot, error) {
	ino, err := target.Inode()
	if err != nil {
		return Snapshot{}, err
	}
	c, err := Dial(target)
	if err != nil {
		return Snapshot{}, err
	}
	defer c.Close()
	return c.Snapshot(ctx, ino)
}

// Snapshot asks for the global and per-CPU statistics of the socket's
// namespace, whose inode the caller gives; a socket keeps the namespace
// it was opened in, so a long-lived socket reads without entering it.
//
// Both requests go to the kernel in one datagram and their replies are
// read with one recvmmsg into memory the Conn keeps: two system calls,
// where asking one request after the other took eight (a send, and a
// peek and a read per reply), and neither is announced to the Go
// scheduler (see Datagrams.Recv). The kernel answers inside the send, so
// the context's deadline is set on the socket only in the rare case that
// the socket makes Snapshot wait. Snapshot is called by one goroutine at
// a time per Conn.
func (c *Conn) Snapshot(ctx context.Context, inode uint64) (Snapshot, error) {
	rc, err := c.nl.SyscallConn()
	if err != nil {
		return Snapshot{}, fmt.Errorf("netns %s: statistics: %w", c.target, err)
	}
	if c.stats == nil {
		c.stats = newStatsIO()
	}
	st := c.stats
	p := st.next()
	// The kernel answers both requests inside the send, so the send and
	// the first receive find the socket ready: they run without the
	// poller or a deadline, which only a socket that is not ready needs.
	var (
		n          int
		sent       bool
		serr, rerr error
	)
	err = rc.Control(func(fd uintptr) {
		if serr = sendRaw(fd, st.req[:]); serr == nil {
			sent = true
			n, rerr = st.in.Recv(fd)
		}
	})
	if err != nil {
		return Snapshot{}, fmt.Errorf("netns %s: statistics: %w", c.target, err)
	}
	if !sent {
		if !errors.Is(serr, unix.EAGAIN) {
			return Snapshot{}, fmt.Errorf("netns %s: statistics request: %w", c.target, WrapPermission(serr))
		}
		if err := c.sendWaiting(ctx, rc, st.req[:]); err != nil {
			return Snapshot{}, fmt.Errorf("netns %s: statistics request: %w", c.target, WrapPermission(err))
		}
		rerr = unix.EAGAIN
	}
	for {
		if errors.Is(rerr, unix.EAGAIN) {
			n, rerr = c.recvWaiting(ctx, rc, st.in)
		}
		if rerr != nil {
			return Snapshot{}, fmt.Errorf("netns %s: statistics: %w", c.target, WrapPermission(rerr))
		}
		for i := range n {
			d, cut := st.in.Datagram(i)
			if cut {
				return Snapshot{}, fmt.Errorf("netns %s: statistics: datagram over %d bytes: %w", c.target, st.in.SlotSize(), ErrTruncated)
			}
			if err := p.feed(d); err != nil {
				return Snapshot{}, fmt.Errorf("netns %s: statistics: %w", c.target, err)
			}
		}
		if p.done() {
			st.cpus = len(p.cpus)
			return Snapshot{Inode: inode, Global: p.global, CPUs: p.cpus}, nil
		}
		// More replies than slots (many CPUs): they are queued already.
		if err := rc.Control(func(fd uintptr) { n, rerr = st.in.Recv(fd) }); err != nil {
			return Snapshot{}, fmt.Errorf("netns %s: statistics: %w", c.target, err)
		}
	}
}

// sendWaiting sends b on the socket once it can take it, waiting in the
// runtime's poller until the context's deadline.
func (c *Conn) sendWaiting(ctx context.Context, rc syscall.RawConn, b []byte) error {
	if err := c.setDeadline(ctx); err != nil {
		return err
	}
	var serr error
	err := rc.Write(func(fd uintptr) bool {
		serr = sendRaw(fd, b)
		return !errors.Is(serr, unix.EAGAIN)
	})
	if err != nil {
		return err
	}
	return serr
}

// recvWaiting reads datagrams into in once some are queued, waiting in
// the runtime's poller until the context's deadline.
func (c *Conn) recvWaiting(ctx context.Context, rc syscall.RawConn, in *Datagrams) (int, error) {
	if err := c.setDeadline(ctx); err != nil {
		return 0, err
	}
	return readPolled(rc, in.Recv)
}

// Snapshot's requests and receive slots. The kernel sizes a dump
// datagram to the larger of NLMSG_GOODSIZE (the page size, at most 8 KiB,
// less the skb's overhead) and the largest read the socket has seen, so
// on a socket read only through slots of that size every datagram fits
// one. Three slots take the replies of a machine with up to about 30
// CPUs (4 KiB pages) in one receive: the global reply, the per-CPU
// replies and the end of the dump, which the kernel queues while the
// receive reads the replies before it; more CPUs take more receives.
const (
	statsSlots       = 3
	statsMaxSlotSize = 8 << 10
	statsRequestLen  = nlmsgHeaderLen + nfgenmsgLen
)

// statsSlotSize is the size of one of Snapshot's receive slots: the page
// size, at most 8 KiB.
func statsSlotSize() int { return min(os.Getpagesize(), statsMaxSlotSize) }

// statsIO is the memory a Conn keeps for Snapshot: the datagram of its two
// requests, the slots their replies are read into, and their parser.
type statsIO struct {
	req    [2 * statsRequestLen]byte
	seq    uint32
	in     *Datagrams
	parser statsParser
	// cpus is how many per-CPU replies the last snapshot had: the next
	// one's are allocated at once.
	cpus int
}

func newStatsIO() *statsIO {
	// Sequence numbers far from those package netlink counts from on the
	// same socket; replies are matched by sequence.
	return &statsIO{seq: 1 << 31, in: NewDatagrams(make([]byte, statsSlots*statsSlotSize()), statsSlots)}
}

// next writes the next pair of requests into st.req and returns the
// parser of their replies. The global request asks for no
// acknowledgement: its reply is one message (or an error), and the parser
// knows when it has it.
func (st *statsIO) next() *statsParser {
	st.seq += 2
	st.parser = statsParser{globalSeq: st.seq - 1, cpuSeq: st.seq, cpus: make([]CPUStats, 0, max(st.cpus, 1))}
	p := &st.parser
	putRequest(st.req[:statsRequestLen], uint16(msgType(msgGetStats)), uint16(netlink.Request), p.globalSeq)
	putRequest(st.req[statsRequestLen:], uint16(msgType(msgGetStatsCPU)), uint16(netlink.Request|netlink.Dump), p.cpuSeq)
	return p
}

// putRequest writes one ctnetlink request with an empty nfgenmsg
// (AF_UNSPEC, NFNETLINK_V0, res_id 0) into b.
func putRequest(b []byte, typ, flags uint16, seq uint32) {
	binary.NativeEndian.PutUint32(b[0:4], statsRequestLen)
	binary.NativeEndian.PutUint16(b[4:6], typ)
	binary.NativeEndian.PutUint16(b[6:8], flags)
	binary.NativeEndian.PutUint32(b[8:12], seq)
	binary.NativeEndian.PutUint32(b[12:16], 0)
	clear(b[nlmsgHeaderLen:statsRequestLen])
}

// statsParser follows the replies of Snapshot's two requests across
// datagrams. It is a pure function of the bytes it is fed, so it can be
// fuzzed.
type statsParser struct {
	globalSeq, cpuSeq uint32

	global     GlobalStats
	haveGlobal bool
	cpus       []CPUStats
	dumpDone   bool
}

// done reports whether both replies are complete.
func (p *statsParser) done() bool { return p.haveGlobal && p.dumpDone }

// feed handles one datagram. Messages of other requests are skipped; an
// error the kernel reported for either request, a reply that does not
// decode, or broken framing is an error.
func (p *statsParser) feed(b []byte) error {
	return ForEachMessage(b, func(h Header, data []byte) error {
		switch {
		case h.Sequence == p.globalSeq && !p.haveGlobal:
			switch h.Type {
			case nlmsgError:
				return errnoError("global stats", data)
			case uint16(msgType(msgGetStats)):
				g, err := DecodeGlobalStats(data)
				if err != nil {
					return err
				}
				p.global, p.haveGlobal = g, true
			}
		case h.Sequence == p.cpuSeq && !p.dumpDone:
			switch h.Type {
			case nlmsgError:
				return errnoError("per-CPU stats", data)
			case nlmsgDone:
				if errno := doneErrno(data); errno != 0 {
					return fmt.Errorf("per-CPU stats: %w", WrapPermission(errno))
				}
				p.dumpDone = true
			case uint16(msgType(msgGetStatsCPU)):
				s, err := DecodeCPUStats(data)
				if err != nil {
					return err
				}
				p.cpus = append(p.cpus, s)
			}
		}
		return nil
	})
}

// errnoError returns the error an NLMSG_ERROR body reports for the named
// request; an acknowledgement (errno 0) where a reply was due is
// malformed.
func errnoError(what string, data []byte) error {
	errno, err := ErrnoFromError(data)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if errno == 0 {
		return fmt.Errorf("%s: acknowledged without a reply: %w", what, ErrMalformed)
	}
	return fmt.Errorf("%s: %w", what, WrapPermission(errno))
}
