package ctnl

import (
	"context"
	"errors"
	"fmt"
	"os"
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
func (c *Conn) Snapshot(ctx context.Context, inode uint64) (Snapshot, error) {
	g, err := c.GlobalStats(ctx)
	if err != nil {
		return Snapshot{}, err
	}
	cpus, err := c.CPUStats(ctx)
	if err != nil {
		return Snapshot{}, err
	}
	return Snapshot{Inode: inode, Global: g, CPUs: cpus}, nil
}
