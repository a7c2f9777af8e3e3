package events

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// oneShotWait waits until a socket is readable without waking anything
// for the datagrams that arrive while nobody waits.
//
// The socket is not given to the Go runtime's poller. The runtime watches
// every descriptor it polls edge-triggered for as long as it is open, and
// each datagram queued on a watched socket wakes a thread blocked in
// epoll_wait, whether or not a goroutine waits on that socket: at a few
// thousand events per second that cost ten times more CPU than reading
// and handling them. Instead the socket sits in a private epoll instance
// with EPOLLONESHOT, and only that instance is given to the runtime. The
// instance becomes readable once after each arming, so while the receive
// loop reads or lets events queue, arriving datagrams wake no thread; the
// loop arms it again only when it finds the socket empty. No thread is
// spent on the wait either: the runtime's poller waits on the instance
// like on any other descriptor.
type oneShotWait struct {
	fd   int      // the watched socket
	epfd int      // the private epoll instance
	ep   *os.File // epfd in the runtime's poller; its Fd method is never called (it would make epfd blocking)
	raw  syscall.RawConn
}

// newOneShotWait puts fd in a new private epoll instance, armed.
func newOneShotWait(fd int) (*oneShotWait, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLONESHOT, Fd: int32(fd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("epoll_ctl add: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("epoll instance non-blocking: %w", err)
	}
	// A non-blocking descriptor given to os.NewFile joins the runtime's
	// poller, so reads of it park the goroutine, not a thread.
	ep := os.NewFile(uintptr(epfd), "epoll")
	raw, err := ep.SyscallConn()
	if err != nil {
		ep.Close()
		return nil, fmt.Errorf("epoll instance: %w", err)
	}
	return &oneShotWait{fd: fd, epfd: epfd, ep: ep, raw: raw}, nil
}

// wait arms the socket and returns once it is readable, or with
// os.ErrDeadlineExceeded after interrupt. The readiness it returns is
// used up: the socket stays disarmed until the next wait.
func (w *oneShotWait) wait() error {
	// Both calls below never block: they are raw system calls, for the
	// reason given at recvBatch.recv.
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLONESHOT, Fd: int32(w.fd)}
	if _, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(w.epfd), unix.EPOLL_CTL_MOD, uintptr(w.fd),
		uintptr(unsafe.Pointer(&ev)), 0, 0); e != 0 {
		return fmt.Errorf("epoll_ctl mod: %w", e)
	}
	var (
		got  unix.EpollEvent
		werr error
	)
	err := w.raw.Read(func(epfd uintptr) bool {
		for {
			// epoll_pwait with no signal mask: epoll_wait, on every
			// architecture; timeout 0.
			n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, epfd, uintptr(unsafe.Pointer(&got)), 1, 0, 0, 0)
			switch {
			case e == unix.EINTR:
				continue
			case e != 0:
				werr = fmt.Errorf("epoll_wait: %w", e)
				return true
			}
			return n > 0 // not yet readable: park until the instance is
		}
	})
	return errors.Join(err, werr)
}

// interrupt makes a current or later wait return os.ErrDeadlineExceeded.
func (w *oneShotWait) interrupt() { _ = w.ep.SetReadDeadline(time.Unix(1, 0)) }

// close closes the epoll instance, not the socket.
func (w *oneShotWait) close() error { return w.ep.Close() }
