package ctnl

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Header is a decoded netlink message header.
type Header struct {
	Length   uint32
	Type     uint16
	Flags    uint16
	Sequence uint32
	PID      uint32
}

const nlmsgHeaderLen = 16

// netlink message types and flags used by the raw reader.
const (
	nlmsgError   = 2       // NLMSG_ERROR
	nlmsgDone    = 3       // NLMSG_DONE
	nlmFMulti    = 0x2     // NLM_F_MULTI
	nlmFDumpIn   = 0x10    // NLM_F_DUMP_INTR
	nlmsgAlign   = 4 - 1   // NLMSG_ALIGNTO - 1
	statsRecvBuf = 1 << 12 // one datagram of the global-stats reply and its ack (72 bytes)
)

// ForEachMessage calls fn for every netlink message in one received
// datagram. It stops at the first error, from fn or from a truncated or
// malformed header, and never reads past b.
func ForEachMessage(b []byte, fn func(h Header, data []byte) error) error {
	for len(b) >= nlmsgHeaderLen {
		h := Header{
			Length:   binary.NativeEndian.Uint32(b[0:4]),
			Type:     binary.NativeEndian.Uint16(b[4:6]),
			Flags:    binary.NativeEndian.Uint16(b[6:8]),
			Sequence: binary.NativeEndian.Uint32(b[8:12]),
			PID:      binary.NativeEndian.Uint32(b[12:16]),
		}
		if h.Length < nlmsgHeaderLen || int(h.Length) > len(b) {
			return fmt.Errorf("netlink header length %d with %d bytes left: %w", h.Length, len(b), ErrMalformed)
		}
		if err := fn(h, b[nlmsgHeaderLen:h.Length]); err != nil {
			return err
		}
		next := (int(h.Length) + nlmsgAlign) &^ nlmsgAlign
		if next >= len(b) {
			return nil
		}
		b = b[next:]
	}
	if len(b) != 0 {
		return fmt.Errorf("%d trailing bytes: %w", len(b), ErrMalformed)
	}
	return nil
}

// ErrnoFromError decodes the errno of an NLMSG_ERROR body; 0 is an
// acknowledgement.
func ErrnoFromError(data []byte) (unix.Errno, error) {
	if len(data) < 4 {
		return 0, fmt.Errorf("netlink error message of %d bytes: %w", len(data), ErrMalformed)
	}
	code := int32(binary.NativeEndian.Uint32(data[0:4]))
	if code > 0 {
		return 0, fmt.Errorf("netlink error code %d: %w", code, ErrMalformed)
	}
	return unix.Errno(-code), nil
}

// doneErrno decodes the status the kernel puts in the body of a dump's
// NLMSG_DONE: 0 when the dump ended well (or the body holds none).
func doneErrno(data []byte) unix.Errno {
	if len(data) < 4 {
		return 0
	}
	if code := int32(binary.NativeEndian.Uint32(data[0:4])); code < 0 {
		return unix.Errno(-code)
	}
	return 0
}

// recvOnce reads one datagram from the socket into buf, honouring the
// socket deadline.
func (c *Conn) recvOnce(buf []byte) (int, error) {
	rc, err := c.nl.SyscallConn()
	if err != nil {
		return 0, err
	}
	var (
		n    int
		rerr error
	)
	err = rc.Read(func(fd uintptr) bool {
		n, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
		return !errors.Is(rerr, unix.EAGAIN) && !errors.Is(rerr, unix.EWOULDBLOCK)
	})
	if err != nil {
		return 0, err
	}
	return n, rerr
}
