package events

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ct-exporter/ct-exporter/internal/ctnl"
	"github.com/ct-exporter/ct-exporter/internal/netns"
)

// ctnetlink multicast groups (enum nfnetlink_groups).
const (
	groupNew     = 1 // NFNLGRP_CONNTRACK_NEW
	groupDestroy = 3 // NFNLGRP_CONNTRACK_DESTROY
)

// socket options and SO_MEMINFO layout (include/uapi/linux/sock_diag.h).
const (
	skMeminfoRmemAlloc = 0 // SK_MEMINFO_RMEM_ALLOC
	skMeminfoDrops     = 8 // SK_MEMINFO_DROPS
	skMeminfoVars      = 9 // SK_MEMINFO_VARS
)

// A receive reads up to recvSlots datagrams with one recvmmsg call, each
// into its own recvSlotSize bytes of one reused buffer. A ctnetlink event
// is one message of a few hundred bytes (its attributes are bounded: two
// tuples, status, timeouts, counters, timestamps, helper and security
// context names), so a slot holds any; a datagram cut short by its slot
// (MSG_TRUNC) is counted as malformed.
const (
	recvSlots    = 64
	recvSlotSize = 4096
)

// eventSocketCost is about how much receive-buffer accounting one queued
// DESTROY event takes (the kernel charges the skb's truesize, not the
// message length); see DefaultBufferSize.
const eventSocketCost = 1280

// recvBatch is the reused memory of the receives of one Subscriber: 256
// KiB mapped outside the Go heap, so that only the pages a receive writes
// are resident, and release gives them back when the socket goes quiet.
// A quiet namespace thus keeps one page of it, whatever bursts it had.
type recvBatch struct {
	*ctnl.Datagrams
	buf []byte
	// used is the number of slots written since the last release.
	used int
}

// newRecvBatch maps the receive memory: recvSlots*recvSlotSize bytes,
// untouched until written. free unmaps it.
func newRecvBatch() (*recvBatch, error) {
	buf, err := unix.Mmap(-1, 0, recvSlots*recvSlotSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("map %d bytes of receive memory: %w", recvSlots*recvSlotSize, err)
	}
	return &recvBatch{Datagrams: ctnl.NewDatagrams(buf, recvSlots), buf: buf}, nil
}

// release returns the pages of every slot but the first written since
// the last release to the kernel (MADV_DONTNEED: they read as zero and
// take no memory until written again).
func (b *recvBatch) release() error {
	if b.used <= 1 {
		return nil
	}
	rest := b.buf[recvSlotSize : b.used*recvSlotSize]
	b.used = 1
	if err := unix.Madvise(rest, unix.MADV_DONTNEED); err != nil {
		return fmt.Errorf("release receive memory: %w", err)
	}
	return nil
}

// free unmaps the receive memory; b is unusable afterwards.
func (b *recvBatch) free() error {
	if err := unix.Munmap(b.buf); err != nil {
		return fmt.Errorf("unmap receive memory: %w", err)
	}
	return nil
}

// recv reads up to recvSlots datagrams from fd without blocking (see
// ctnl.Datagrams.Recv) and returns how many it read, or the error of the
// first read.
func (b *recvBatch) recv(fd uintptr) (int, error) {
	n, err := b.Recv(fd)
	b.used = max(b.used, n)
	return n, err
}

// receiver is what the receive loop hands its datagrams and conditions
// to; the handler implements it.
type receiver interface {
	// batch starts a batch of datagrams received by one call.
	batch()
	// endBatch ends the batch, once its datagrams were handled.
	endBatch()
	// datagram handles one received datagram.
	datagram(b []byte)
	// truncated counts a datagram cut short by its slot.
	truncated()
	// overrun handles an ENOBUFS: events were dropped.
	overrun()
	// caughtUp is called when a drain after an overrun left the socket
	// empty: the kernel drops no more events of that overrun (it drops
	// every event while the queue is full, and fails one receive per
	// overrun), so the drop count read now is complete.
	caughtUp()
}

// eventSocket is one ctnetlink socket subscribed to conntrack events. It
// is a plain non-blocking descriptor, kept out of the Go runtime's poller
// and waited on through a oneShotWait.
type eventSocket struct {
	fd     int
	waiter *oneShotWait
	ino    uint64 // inode of the namespace when the socket was opened
	rcvbuf int
	forced bool
	joined bool // member of the NEW group
	// stop is closed by interrupt; the receive loop checks it between
	// reads (stopped) and wakes from its sleep on it.
	stop     chan struct{}
	stopOnce sync.Once
	// cause is why the socket was interrupted, if not by its context.
	cause atomic.Pointer[error]
}

// openSocket opens a socket in the namespace of target, forces its receive
// buffer to size bytes and joins the DESTROY group, and the NEW group when
// withNew is set.
func openSocket(target netns.Target, size int, withNew bool) (*eventSocket, error) {
	ino, err := target.Inode()
	if err != nil {
		return nil, err
	}
	fd := -1
	err = target.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_NETFILTER)
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
	})
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("netns %s: open netlink socket: %w", target, ctnl.WrapPermission(err))
	}
	s := &eventSocket{fd: fd, ino: ino, stop: make(chan struct{})}
	fail := func(err error) (*eventSocket, error) {
		s.close()
		return nil, fmt.Errorf("netns %s: %w", target, err)
	}
	if err := s.setReceiveBuffer(size); err != nil {
		return fail(err)
	}
	if err := s.membership(unix.NETLINK_ADD_MEMBERSHIP, groupDestroy); err != nil {
		return fail(fmt.Errorf("join conntrack DESTROY group: %w", ctnl.WrapPermission(err)))
	}
	if withNew {
		if err := s.setNew(true); err != nil {
			return fail(err)
		}
	}
	if s.waiter, err = newOneShotWait(fd); err != nil {
		return fail(err)
	}
	return s, nil
}

// setReceiveBuffer sets SO_RCVBUFFORCE, or SO_RCVBUF without
// CAP_NET_ADMIN, and reads back the size the kernel applied.
func (s *eventSocket) setReceiveBuffer(size int) error {
	forceErr := unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size)
	var err error
	if forceErr != nil {
		err = unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, size)
	}
	if err == nil {
		s.rcvbuf, err = unix.GetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_RCVBUF)
	}
	if err != nil {
		return fmt.Errorf("set receive buffer to %d bytes: %w", size, err)
	}
	s.forced = forceErr == nil
	return nil
}

// membership joins (NETLINK_ADD_MEMBERSHIP) or leaves
// (NETLINK_DROP_MEMBERSHIP) a multicast group.
func (s *eventSocket) membership(op, group int) error {
	return unix.SetsockoptInt(s.fd, unix.SOL_NETLINK, op, group)
}

// setNew joins or leaves the NEW group.
func (s *eventSocket) setNew(join bool) error {
	if join == s.joined {
		return nil
	}
	op := unix.NETLINK_DROP_MEMBERSHIP
	if join {
		op = unix.NETLINK_ADD_MEMBERSHIP
	}
	if err := s.membership(op, groupNew); err != nil {
		return fmt.Errorf("join or leave conntrack NEW group: %w", ctnl.WrapPermission(err))
	}
	s.joined = join
	return nil
}

// meminfo returns the socket's SO_MEMINFO counters. Every scrape reads
// them: a raw system call, which never blocks (see ctnl.Datagrams.Recv).
func (s *eventSocket) meminfo() ([skMeminfoVars]uint32, error) {
	var info [skMeminfoVars]uint32
	l := uint32(unsafe.Sizeof(info))
	_, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(s.fd), unix.SOL_SOCKET, unix.SO_MEMINFO,
		uintptr(unsafe.Pointer(&info[0])), uintptr(unsafe.Pointer(&l)), 0)
	switch {
	case e != 0:
		return info, fmt.Errorf("read socket memory counters: %w", e)
	case l < (skMeminfoDrops+1)*4:
		return info, fmt.Errorf("read socket memory counters: SO_MEMINFO returned %d bytes", l)
	}
	return info, nil
}

// drops returns SK_MEMINFO_DROPS: the events the kernel could not queue
// on this socket (a 32-bit counter that wraps).
func (s *eventSocket) drops() (uint32, error) {
	info, err := s.meminfo()
	return info[skMeminfoDrops], err
}

// interrupt makes the receive loop return: at once if it waits or
// sleeps, else after its current read.
func (s *eventSocket) interrupt() {
	s.stopOnce.Do(func() { close(s.stop) })
	s.waiter.interrupt()
}

// stopped reports whether interrupt was called.
func (s *eventSocket) stopped() bool {
	select {
	case <-s.stop:
		return true
	default:
		return false
	}
}

// fail makes the receive loop return cause.
func (s *eventSocket) fail(cause error) {
	s.cause.CompareAndSwap(nil, &cause)
	s.interrupt()
}

// close closes the socket and its epoll instance.
func (s *eventSocket) close() error {
	var err error
	if s.waiter != nil {
		err = s.waiter.close()
	}
	return errors.Join(err, unix.Close(s.fd))
}

// errInterrupted is what receive returns after interrupt without a cause.
var errInterrupted = errors.New("event socket interrupted")

// minCoalesce is the shortest sleep between two reads of a busy socket,
// and probeCoalesce the longest sleep after the first read that follows a
// wait: the round after it measures the rate that the next sleeps adapt
// to.
const (
	minCoalesce   = time.Millisecond
	probeCoalesce = 10 * time.Millisecond
)

// receive reads and handles datagrams until the socket fails or is
// interrupted. Each round drains the socket with non-blocking recvmmsg
// calls. When a round read something, the loop then sleeps before the
// next, so that the events of that time queue in the kernel buffer and
// are read in a few calls instead of one wake-up each; when a round finds
// the socket empty, the loop waits until it is readable (see oneShotWait:
// datagrams queued meanwhile wake nothing). The first sleep after a wait
// is short (probeCoalesce) and measures the rate; the next ones are
// coalesce(), read every round, cut short at high rates so that what
// queues meanwhile stays under a quarter of the receive buffer (see
// coalesceFor). coalesce() <= 0 reads again at once. A request received
// from syncs ends the sleep; it is closed after the next drain.
// r.overrun is called after every ENOBUFS; the loop then goes on, and
// calls r.caughtUp once a drain has emptied the socket again. Once
// interrupted without a cause (stopped), it reads what is queued and
// returns errInterrupted.
func (s *eventSocket) receive(b *recvBatch, r receiver, coalesce func() time.Duration, syncs <-chan chan struct{}) error {
	sleep := time.NewTimer(time.Hour)
	sleep.Stop()
	defer sleep.Stop()
	// synced are the Sync requests that cut the last sleep short; they
	// are answered after the next drain.
	var synced []chan struct{}
	defer func() {
		for _, c := range synced {
			close(c)
		}
	}()
	var roundStart time.Time // zero after a wait: the next sleep probes the rate
	overran := false         // an ENOBUFS since the socket was last empty
	for {
		n, err := s.drain(b, r)
		for _, c := range synced {
			close(c)
		}
		synced = synced[:0]
		if c := s.cause.Load(); c != nil {
			return *c
		}
		if s.stopped() {
			return errInterrupted
		}
		if err == nil && overran {
			r.caughtUp()
			overran = false
		}
		c := coalesce()
		switch {
		case err == unix.ENOBUFS:
			r.overrun()
			overran = true
			continue
		case err != nil:
			return fmt.Errorf("receive events: %w", err)
		case n == 0:
		case c > 0:
			now := time.Now()
			d := min(c, probeCoalesce)
			if !roundStart.IsZero() {
				d = coalesceFor(c, n, now.Sub(roundStart), s.rcvbuf/4/eventSocketCost)
			}
			sleep.Reset(d)
			select {
			case <-sleep.C:
			case <-s.stop:
				sleep.Stop()
			case req := <-syncs:
				sleep.Stop()
				synced = append(synced, req)
			}
			roundStart = now
			continue
		default:
			continue
		}
		// Quiet: the receive memory of the last rounds goes back to
		// the kernel while the loop waits. A failure costs memory only.
		_ = b.release()
		if err := s.waiter.wait(); err != nil {
			if c := s.cause.Load(); c != nil {
				return *c
			}
			if !s.stopped() {
				return fmt.Errorf("wait for events: %w", err)
			}
			// Stopped: the next round reads what came meanwhile.
		}
		roundStart = time.Time{}
	}
}

// coalesceFor returns how long to let events queue after a round that
// read n datagrams in elapsed (the time since the round before it began):
// coalesce, or less if at that rate more than budget datagrams would
// queue meanwhile, but never less than minCoalesce.
func coalesceFor(coalesce time.Duration, n int, elapsed time.Duration, budget int) time.Duration {
	if n <= 0 || elapsed <= 0 {
		return coalesce
	}
	// budget datagrams at n per elapsed take budget*elapsed/n.
	d := time.Duration(float64(elapsed) * float64(budget) / float64(n))
	return min(max(d, minCoalesce), coalesce)
}

// drain reads and handles datagrams until the socket is empty, and
// returns how many it read. It returns at the first error other than
// EAGAIN and EINTR; ENOBUFS is returned as is.
func (s *eventSocket) drain(b *recvBatch, r receiver) (read int, err error) {
	for {
		n, err := b.recv(uintptr(s.fd))
		switch {
		case err == nil && n > 0:
			read += n
			r.batch()
			for i := range n {
				d, cut := b.Datagram(i)
				if cut {
					r.truncated()
					continue
				}
				r.datagram(d)
			}
			r.endBatch()
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			return read, nil
		case err == nil:
			return read, errors.New("netlink socket returned no datagram")
		default:
			return read, err
		}
	}
}
