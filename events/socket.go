package events

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
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
	recvSlots    = 16
	recvSlotSize = 4096
)

// recvBatch is the reused memory of the receives of one socket.
type recvBatch struct {
	buf  []byte
	iovs [recvSlots]unix.Iovec
	msgs [recvSlots]unix.Mmsghdr
}

// newRecvBatch returns the receive memory: recvSlots*recvSlotSize bytes.
func newRecvBatch() *recvBatch {
	b := &recvBatch{buf: make([]byte, recvSlots*recvSlotSize)}
	for i := range b.msgs {
		b.iovs[i].Base = &b.buf[i*recvSlotSize]
		b.iovs[i].SetLen(recvSlotSize)
		b.msgs[i].Hdr.Iov = &b.iovs[i]
		b.msgs[i].Hdr.SetIovlen(1)
	}
	return b
}

// recv reads up to recvSlots datagrams from fd without blocking and
// returns how many it read, or the error of the first read.
func (b *recvBatch) recv(fd uintptr) (int, error) {
	for i := range b.msgs {
		b.msgs[i].Len = 0
		b.msgs[i].Hdr.Flags = 0
	}
	n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.msgs[0])), recvSlots,
		unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// datagram returns the i-th datagram of the last recv and whether it was
// cut short.
func (b *recvBatch) datagram(i int) (d []byte, truncated bool) {
	off := i * recvSlotSize
	return b.buf[off : off+int(b.msgs[i].Len)], b.msgs[i].Hdr.Flags&unix.MSG_TRUNC != 0
}

// receiver is what the receive loop hands its datagrams and conditions
// to; the handler implements it.
type receiver interface {
	// datagram handles one received datagram.
	datagram(b []byte)
	// truncated counts a datagram cut short by its slot.
	truncated()
	// overrun handles an ENOBUFS: events were dropped.
	overrun()
}

// eventSocket is one ctnetlink socket subscribed to conntrack events.
type eventSocket struct {
	conn   *ctnl.Conn
	raw    syscall.RawConn
	ino    uint64 // inode of the namespace when the socket was opened
	rcvbuf int
	forced bool
	joined bool // member of the NEW group
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
	conn, err := ctnl.Dial(target)
	if err != nil {
		return nil, err
	}
	s := &eventSocket{conn: conn, ino: ino}
	fail := func(err error) (*eventSocket, error) {
		conn.Close()
		return nil, fmt.Errorf("netns %s: %w", target, err)
	}
	s.raw, err = conn.Netlink().SyscallConn()
	if err != nil {
		return fail(err)
	}
	if err := s.setReceiveBuffer(size); err != nil {
		return fail(err)
	}
	if err := conn.Netlink().JoinGroup(groupDestroy); err != nil {
		return fail(fmt.Errorf("join conntrack DESTROY group: %w", err))
	}
	if withNew {
		if err := s.setNew(true); err != nil {
			return fail(err)
		}
	}
	return s, nil
}

// setReceiveBuffer sets SO_RCVBUFFORCE, or SO_RCVBUF without
// CAP_NET_ADMIN, and reads back the size the kernel applied.
func (s *eventSocket) setReceiveBuffer(size int) error {
	var forceErr, err error
	cerr := s.raw.Control(func(fd uintptr) {
		forceErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size)
		if forceErr != nil {
			err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, size)
		}
		if err == nil {
			s.rcvbuf, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		}
	})
	if err = errors.Join(cerr, err); err != nil {
		return fmt.Errorf("set receive buffer to %d bytes: %w", size, err)
	}
	s.forced = forceErr == nil
	return nil
}

// setNew joins or leaves the NEW group.
func (s *eventSocket) setNew(join bool) error {
	if join == s.joined {
		return nil
	}
	var err error
	if join {
		err = s.conn.Netlink().JoinGroup(groupNew)
	} else {
		err = s.conn.Netlink().LeaveGroup(groupNew)
	}
	if err != nil {
		return fmt.Errorf("join or leave conntrack NEW group: %w", err)
	}
	s.joined = join
	return nil
}

// meminfo returns the socket's SO_MEMINFO counters.
func (s *eventSocket) meminfo() ([skMeminfoVars]uint32, error) {
	var (
		info [skMeminfoVars]uint32
		serr error
	)
	err := s.raw.Control(func(fd uintptr) {
		l := uint32(unsafe.Sizeof(info))
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_MEMINFO,
			uintptr(unsafe.Pointer(&info[0])), uintptr(unsafe.Pointer(&l)), 0)
		if e != 0 {
			serr = e
		} else if l < (skMeminfoDrops+1)*4 {
			serr = fmt.Errorf("SO_MEMINFO returned %d bytes", l)
		}
	})
	if err = errors.Join(err, serr); err != nil {
		return info, fmt.Errorf("read socket memory counters: %w", err)
	}
	return info, nil
}

// drops returns SK_MEMINFO_DROPS: the events the kernel could not queue
// on this socket (a 32-bit counter that wraps).
func (s *eventSocket) drops() (uint32, error) {
	info, err := s.meminfo()
	return info[skMeminfoDrops], err
}

// interrupt makes a blocked receive return.
func (s *eventSocket) interrupt() {
	_ = s.conn.Netlink().SetReadDeadline(time.Unix(1, 0))
}

// fail makes a blocked receive return cause.
func (s *eventSocket) fail(cause error) {
	s.cause.CompareAndSwap(nil, &cause)
	s.interrupt()
}

// close closes the socket.
func (s *eventSocket) close() error { return s.conn.Close() }

// receive reads and handles datagrams until the socket fails or is
// interrupted. Each wake-up drains the socket with non-blocking recvmmsg
// calls. When a wake-up read something, the loop then sleeps for
// coalesce before it reads again, so that the events of that time queue
// in the kernel buffer and are read in a few calls instead of one wake-up
// each; when a read finds the socket empty, the loop waits until it is
// readable. coalesce <= 0 reads again at once. r.overrun is called after
// every ENOBUFS; the loop then goes on.
func (s *eventSocket) receive(b *recvBatch, r receiver, coalesce time.Duration) error {
	for {
		var (
			rerr error
			read bool // something was read since the loop last waited
		)
		err := s.raw.Read(func(fd uintptr) bool {
			for {
				n, err := b.recv(fd)
				switch {
				case err == nil && n > 0:
					read = true
					for i := range n {
						d, cut := b.datagram(i)
						if cut {
							r.truncated()
							continue
						}
						r.datagram(d)
					}
				case err == unix.EINTR:
				case err == unix.EAGAIN:
					if read && coalesce > 0 {
						return true // sleep, then read again
					}
					return false // wait until readable
				case err == unix.ENOBUFS:
					rerr = err
					return true
				case err == nil:
					rerr = errors.New("netlink socket returned no datagram")
					return true
				default:
					rerr = err
					return true
				}
			}
		})
		if c := s.cause.Load(); c != nil {
			return *c
		}
		if err != nil {
			return fmt.Errorf("receive events: %w", err)
		}
		switch rerr {
		case nil:
			time.Sleep(coalesce)
		case unix.ENOBUFS:
			r.overrun()
		default:
			return fmt.Errorf("receive events: %w", rerr)
		}
	}
}
