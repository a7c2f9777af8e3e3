// Package caps raises CAP_NET_ADMIN from the permitted into the effective
// capability set of every thread of the process.
//
// A container image gives its non-root binary the file capability
// cap_net_admin=p (permitted, not effective). The kernel then starts the
// binary whether or not the runtime left NET_ADMIN in the bounding set, and
// the exporter decides: with the capability it raises it here; without it
// the start-up check prints one clear line instead of the kernel refusing
// to execute the binary.
package caps

import (
	"errors"
	"fmt"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrUnsupported reports that the capability could not be raised on every
// thread (a binary built with cgo cannot change all threads' capabilities).
var ErrUnsupported = errors.New("cannot change the capabilities of every thread in this build")

// RaiseNetAdmin makes CAP_NET_ADMIN effective on every thread when it is
// permitted but not effective. It does nothing when the capability is
// already effective or not permitted at all; raised reports whether it
// changed anything.
func RaiseNetAdmin() (raised bool, err error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false, fmt.Errorf("capget: %w", err)
	}
	idx, bit := unix.CAP_NET_ADMIN/32, uint32(1)<<(unix.CAP_NET_ADMIN%32)
	if data[idx].Effective&bit != 0 || data[idx].Permitted&bit == 0 {
		return false, nil
	}
	data[idx].Effective |= bit
	hdr = unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	_, _, errno := syscall.AllThreadsSyscall(unix.SYS_CAPSET,
		uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0)
	switch {
	case errno == syscall.ENOTSUP:
		return false, ErrUnsupported
	case errno != 0:
		return false, fmt.Errorf("capset: %w", errno)
	}
	return true, nil
}
