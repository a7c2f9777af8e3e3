package lab

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ct-exporter/ct-exporter/internal/ctnl"
	"github.com/ct-exporter/ct-exporter/internal/netns"
)

// FloorBufferSize is the receive buffer of CountDump: 1 MiB, far more
// than the largest dump datagram (just under 32 KiB), so the reads never
// truncate and the buffer size never limits the dump.
const FloorBufferSize = 1 << 20

// msgCTGet is NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET.
const msgCTGet = 1<<8 | 1

// msgCTNewEntry is the message type of every dumped entry
// (IPCTNL_MSG_CT_NEW).
const msgCTNewEntry = 1<<8 | 0

// CountDump reads the conntrack table of the namespace the way nothing
// can read it faster: one ctnetlink dump, IPv4 and IPv6, every datagram
// read into buf (reused for the whole dump; FloorBufferSize bytes is
// enough), its entry messages counted and not decoded. It returns the
// number of entries. It is the floor the table scan is measured against.
func CountDump(target netns.Target, buf []byte) (uint64, error) {
	fd, err := ctnetlinkSocket(target)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	const seq = 1
	req := request(msgCTGet, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, seq, unix.AF_UNSPEC, nil)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("netns %s: dump request: %w", target, err)
	}
	var entries uint64
	for done := false; !done; {
		n, _, err := unix.Recvfrom(fd, buf, unix.MSG_TRUNC)
		if err != nil {
			return entries, fmt.Errorf("netns %s: dump after %d entries: %w", target, entries, err)
		}
		if n > len(buf) {
			return entries, fmt.Errorf("netns %s: %d-byte datagram, %d-byte buffer: %w", target, n, len(buf), ctnl.ErrTruncated)
		}
		err = ctnl.ForEachMessage(buf[:n], func(h ctnl.Header, data []byte) error {
			if h.Sequence != seq || done {
				return nil
			}
			switch h.Type {
			case msgCTNewEntry:
				entries++
			case unix.NLMSG_DONE:
				done = true
			case unix.NLMSG_ERROR:
				errno, err := ctnl.ErrnoFromError(data)
				if err != nil {
					return err
				}
				if errno != 0 {
					return errno
				}
			case unix.NLMSG_OVERRUN:
				return errors.New("netlink overrun")
			}
			return nil
		})
		if err != nil {
			return entries, fmt.Errorf("netns %s: dump after %d entries: %w", target, entries, err)
		}
	}
	return entries, nil
}
