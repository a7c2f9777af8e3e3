package topk_test

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/ct-exporter/ct-exporter/internal/ctnl"
	"github.com/ct-exporter/ct-exporter/internal/nstest"
	"github.com/ct-exporter/ct-exporter/internal/topk"
)

// TestWindowKernelFlowEnds feeds the DESTROY events of real loopback
// connections, decoded by ctnl.DecodeFlow, into a window of flow ends per
// source and a window of silent ends per destination: one client address
// opens ten times the connections of the others and is the top source
// with exactly the flows it opened; idle connections to one port that
// expire ESTABLISHED are the only silent ends, with the exact count,
// while connections to another port close in order.
func TestWindowKernelFlowEnds(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	ns := nstest.NewNamespace(t)
	ns.Sysctl(t, "net.netfilter.nf_conntrack_tcp_timeout_established", "2")
	for _, k := range []string{"time_wait", "close_wait", "fin_wait", "last_ack", "close"} {
		ns.Sysctl(t, "net.netfilter.nf_conntrack_tcp_timeout_"+k, "1")
	}
	conn, err := ctnl.Dial(ns.Target())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Netlink().JoinGroup(3); err != nil { // NFNLGRP_CONNTRACK_DESTROY
		t.Fatal(err)
	}
	ends, err := topk.NewWindow(topk.WindowOptions{})
	if err != nil {
		t.Fatal(err)
	}
	silent, err := topk.NewWindow(topk.WindowOptions{})
	if err != nil {
		t.Fatal(err)
	}

	orderly := ns.Listen(t, "127.0.0.1:0")
	idle := ns.Listen(t, "127.0.0.1:0")
	go nstest.CloseAfterPeer(orderly)
	go nstest.HoldIdle(t, idle)
	opened := map[string]int{"127.0.0.2": 20, "127.0.0.3": 2, "127.0.0.4": 2, "127.0.0.6": 2}
	for from, n := range opened {
		for range n {
			c := ns.DialFrom(t, from, orderly.Addr().String())
			c.Close()
		}
	}
	const idleConns = 3
	opened["127.0.0.5"] = idleConns
	for range idleConns {
		ns.DialFrom(t, "127.0.0.5", idle.Addr().String())
	}
	want := 0
	for _, n := range opened {
		want += n
	}

	// Receive until every flow has ended; a dump makes the kernel reap
	// expired entries now.
	got, malformed := 0, 0
	deadline := time.Now().Add(60 * time.Second)
	for got < want {
		if err := conn.Netlink().SetReadDeadline(time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		msgs, err := conn.Netlink().Receive()
		if errors.Is(err, os.ErrDeadlineExceeded) && time.Now().Before(deadline) {
			ns.Conntrack(t, "-L")
			continue
		}
		if err != nil {
			t.Fatalf("receive: %v (%d of %d flows ended)", err, got, want)
		}
		for _, m := range msgs {
			var f ctnl.Flow
			if err := ctnl.DecodeFlow(m.Data, &f); err != nil || !f.Has(ctnl.HasAddrs) {
				malformed++
				continue
			}
			got++
			ends.Add(topk.AddrKey(f.Src))
			if f.SilentEnd() {
				silent.Add(topk.AddrPortKey(f.Dst, f.DstPort))
			}
		}
	}
	if malformed != 0 || got != want {
		t.Fatalf("%d flow ends, %d malformed; want %d", got, malformed, want)
	}

	top := ends.Top(3)
	t.Logf("flow ends by source: %+v", readable(top))
	wantTop := []topk.Item{
		{Key: topk.AddrKey(netip.MustParseAddr("127.0.0.2")), Count: 20},
		{Key: topk.AddrKey(netip.MustParseAddr("127.0.0.5")), Count: idleConns},
		{Key: topk.AddrKey(netip.MustParseAddr("127.0.0.3")), Count: 2},
	}
	if !slices.Equal(top.Items, wantTop) || top.Other != 4 || top.Total != uint64(want) || top.MaxError != 0 || top.Distinct != 5 {
		t.Errorf("flow ends %+v, want %+v other 4 total %d", readable(top), wantTop, want)
	}
	_, idlePort, _ := net.SplitHostPort(idle.Addr().String())
	port, _ := strconv.ParseUint(idlePort, 10, 16)
	st := silent.Top(3)
	t.Logf("silent ends by destination: %+v", readable(st))
	wantSilent := []topk.Item{{Key: topk.AddrPortKey(netip.MustParseAddr("127.0.0.1"), uint16(port)), Count: idleConns}}
	if !slices.Equal(st.Items, wantSilent) || st.Other != 0 || st.Total != idleConns || st.MaxError != 0 {
		t.Errorf("silent ends %+v, want %+v", readable(st), wantSilent)
	}
}

// readable formats a read for a log line.
func readable(w topk.WindowTop) []string {
	var out []string
	for _, it := range w.Items {
		s := it.Key.Addr().String()
		if it.Key.Port() != 0 {
			s = net.JoinHostPort(s, strconv.Itoa(int(it.Key.Port())))
		}
		out = append(out, s+"="+strconv.FormatUint(it.Count, 10))
	}
	return append(out, "other="+strconv.FormatUint(w.Other, 10), "total="+strconv.FormatUint(w.Total, 10), "max_error="+strconv.FormatUint(w.MaxError, 10))
}
