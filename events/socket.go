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

// recvBufferSize is the user-space buffer of one receive. One event is a
// few hundred bytes; a datagram never exceeds 64 KiB.
const recvBufferSize = 1 << 16

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
// interrupted. Each wake-up drains the socket in a tight loop of
// non-blocking reads into buf. onOverrun is called after every ENOBUFS;
// the loop then goes on.
func (s *eventSocket) receive(buf []byte, handle func([]byte), onOverrun func()) error {
	for {
		var rerr error
		err := s.raw.Read(func(fd uintptr) bool {
			for {
				n, err := unix.Read(int(fd), buf)
				switch {
				case err == nil && n > 0:
					handle(buf[:n])
				case err == unix.EINTR:
				case err == unix.EAGAIN:
					return false // wait until readable
				case err == unix.ENOBUFS:
					rerr = err
					return true
				case err == nil:
					rerr = errors.New("netlink socket returned 0 bytes")
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
		if rerr == unix.ENOBUFS {
			onOverrun()
			continue
		}
		return fmt.Errorf("receive events: %w", rerr)
	}
}
