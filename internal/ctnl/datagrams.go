package ctnl

import (
	"errors"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Datagrams reads several netlink datagrams with one recvmmsg call, each
// into its own slot of one buffer. The buffer must not move while it is
// in use: Go heap memory and mapped memory both qualify.
type Datagrams struct {
	buf      []byte
	slotSize int
	iovs     []unix.Iovec
	msgs     []unix.Mmsghdr
}

// NewDatagrams divides buf into slots of len(buf)/slots bytes.
func NewDatagrams(buf []byte, slots int) *Datagrams {
	d := &Datagrams{
		buf:      buf,
		slotSize: len(buf) / slots,
		iovs:     make([]unix.Iovec, slots),
		msgs:     make([]unix.Mmsghdr, slots),
	}
	for i := range d.msgs {
		d.iovs[i].Base = &buf[i*d.slotSize]
		d.iovs[i].SetLen(d.slotSize)
		d.msgs[i].Hdr.Iov = &d.iovs[i]
		d.msgs[i].Hdr.SetIovlen(1)
	}
	return d
}

// Recv reads up to one datagram per slot from fd without blocking and
// returns how many it read, or the error of the first read (EAGAIN when
// none was queued).
//
// It is a raw system call: it never blocks, so the Go scheduler need not
// know about it, and telling it would cost more than the call. Since Go
// 1.26 every scheduler-aware system call made while all other threads
// sleep wakes the runtime's monitor thread (sysmon) and sets it polling
// every 20 us again.
func (d *Datagrams) Recv(fd uintptr) (int, error) {
	return d.recv(fd, unix.RawSyscall6)
}

// recvWorking is Recv for reads during which the kernel works: each read
// of a dump makes the kernel fill the next datagram. It tells the Go
// scheduler, which may then run other goroutines on its processor.
func (d *Datagrams) recvWorking(fd uintptr) (int, error) {
	return d.recv(fd, unix.Syscall6)
}

func (d *Datagrams) recv(fd uintptr, syscall6 func(trap, a1, a2, a3, a4, a5, a6 uintptr) (r1, r2 uintptr, err unix.Errno)) (int, error) {
	for i := range d.msgs {
		d.msgs[i].Len = 0
		d.msgs[i].Hdr.Flags = 0
	}
	n, _, e := syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&d.msgs[0])), uintptr(len(d.msgs)),
		unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// Datagram returns the i-th datagram of the last Recv and whether it was
// cut short by its slot (MSG_TRUNC).
func (d *Datagrams) Datagram(i int) (b []byte, truncated bool) {
	off := i * d.slotSize
	return d.buf[off : off+int(d.msgs[i].Len)], d.msgs[i].Hdr.Flags&unix.MSG_TRUNC != 0
}

// readPolled calls recv (Datagrams.Recv or recvWorking) until it finds
// datagrams or fails otherwise than with EAGAIN, waiting in the runtime's
// poller, and so until the socket's read deadline, while none is queued.
func readPolled(rc syscall.RawConn, recv func(fd uintptr) (int, error)) (int, error) {
	var (
		n    int
		rerr error
	)
	err := rc.Read(func(fd uintptr) bool {
		n, rerr = recv(fd)
		return !errors.Is(rerr, unix.EAGAIN)
	})
	if err != nil {
		return 0, err
	}
	return n, rerr
}

// SlotSize returns the size of one slot.
func (d *Datagrams) SlotSize() int { return d.slotSize }

// sendRaw sends b on fd without blocking, as a raw system call for the
// reason given at Datagrams.Recv. On an unconnected netlink socket with
// no address the datagram goes to the kernel.
func sendRaw(fd uintptr, b []byte) error {
	_, _, e := unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}
