package lab

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ct-exporter/ct-exporter/internal/ctnl"
	"github.com/ct-exporter/ct-exporter/internal/netns"
)

// groupDestroy is NFNLGRP_CONNTRACK_DESTROY.
const groupDestroy = 3

// The receive batch of ReceiveDestroys: as many slots of the same size as
// the exporter's receive loop reads with one recvmmsg call (a test of
// package events checks that they agree).
const (
	FloorSlots    = 64
	FloorSlotSize = 4096
)

// FloorEventBuffer is the receive buffer ReceiveDestroys forces on its
// socket: the exporter's default, so both hold the same backlog.
const FloorEventBuffer = 128 << 20

// ReceiveDestroys receives the conntrack DESTROY events of the namespace
// the way nothing can receive them for less: one socket subscribed to the
// DESTROY group with a FloorEventBuffer receive buffer, drained every
// interval with recvmmsg calls of FloorSlots datagrams into one reused buffer,
// each datagram's messages counted by type and not decoded; what the
// kernel drops is the socket's drop count, not counted here. It is the
// floor the exporter's event path is measured against. ready is called
// once the socket is subscribed. When ctx ends it drains the socket once
// more and returns the DESTROY messages it counted.
func ReceiveDestroys(ctx context.Context, target netns.Target, interval time.Duration, ready func()) (uint64, error) {
	fd, err := ctnetlinkSocket(target)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, FloorEventBuffer); err != nil {
		return 0, fmt.Errorf("netns %s: force the receive buffer: %w", target, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, groupDestroy); err != nil {
		return 0, fmt.Errorf("netns %s: join the DESTROY group: %w", target, err)
	}
	ready()
	batch := ctnl.NewDatagrams(make([]byte, FloorSlots*FloorSlotSize), FloorSlots)
	var destroys uint64
	countDestroys := func(h ctnl.Header, _ []byte) error {
		if h.Type == ctnl.MsgTypeCTDelete {
			destroys++
		}
		return nil
	}
	t := time.NewTimer(interval)
	defer t.Stop()
	for {
		for {
			n, err := batch.Recv(uintptr(fd))
			if err == unix.EAGAIN {
				break
			}
			// ENOBUFS: the kernel dropped events, which the socket's
			// drop count in /proc/net/netlink tells.
			if err != nil && err != unix.EINTR && err != unix.ENOBUFS {
				return destroys, fmt.Errorf("netns %s: receive after %d DESTROY events: %w", target, destroys, err)
			}
			for i := range n {
				d, _ := batch.Datagram(i)
				if err := ctnl.ForEachMessage(d, countDestroys); err != nil {
					return destroys, fmt.Errorf("netns %s: DESTROY event: %w", target, err)
				}
			}
		}
		if ctx.Err() != nil {
			return destroys, nil
		}
		select {
		case <-ctx.Done():
		case <-t.C:
			t.Reset(interval)
		}
	}
}
