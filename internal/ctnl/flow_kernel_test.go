package ctnl_test

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ct-exporter/ct-exporter/internal/ctnl"
	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

// captured is one ctnetlink event message as the kernel sent it.
type captured struct {
	name string
	typ  uint16
	hdr  uint16 // netlink header flags
	body []byte
}

// icmpEcho sends one ICMP echo request from inside the namespace to dst and
// waits for the reply.
func icmpEcho(t *testing.T, ns *nstest.Namespace, dst string) {
	t.Helper()
	err := ns.Target().Do(func() error {
		c, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
		if err != nil {
			return err
		}
		defer c.Close()
		msg := []byte{8, 0, 0, 0, 0x12, 0x34, 0, 1, 'c', 't'}
		var sum uint32
		for i := 0; i < len(msg); i += 2 {
			sum += uint32(msg[i])<<8 | uint32(msg[i+1])
		}
		sum = (sum >> 16) + sum&0xffff
		sum += sum >> 16
		msg[2], msg[3] = byte(^sum>>8), byte(^sum)
		if _, err := c.WriteTo(msg, &net.IPAddr{IP: net.ParseIP(dst)}); err != nil {
			return err
		}
		if err := c.SetReadDeadline(time.Now().Add(3 * time.Second)); err != nil {
			return err
		}
		buf := make([]byte, 1500)
		_, _, err = c.ReadFrom(buf)
		return err
	})
	if err != nil {
		t.Fatalf("icmp echo to %s: %v", dst, err)
	}
}

// udpExchange sends one datagram from a to b and one back.
func udpExchange(t *testing.T, a, b *nstest.Namespace, bAddr string) {
	t.Helper()
	var srv net.PacketConn
	err := b.Target().Do(func() error {
		var err error
		srv, err = net.ListenPacket("udp", net.JoinHostPort(bAddr, "0"))
		return err
	})
	if err != nil {
		t.Fatalf("udp listen: %v", err)
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 64)
		n, from, err := srv.ReadFrom(buf)
		if err == nil {
			srv.WriteTo(buf[:n], from)
		}
	}()
	err = a.Target().Do(func() error {
		c, err := net.Dial("udp", srv.LocalAddr().String())
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		if err := c.SetReadDeadline(time.Now().Add(3 * time.Second)); err != nil {
			return err
		}
		_, err = c.Read(make([]byte, 64))
		return err
	})
	if err != nil {
		t.Fatalf("udp exchange: %v", err)
	}
}

// TestDecodeFlowKernelEvents decodes the NEW, UPDATE and DESTROY events the
// kernel sends for TCP (IPv4 and IPv6), UDP, ICMP and ctnetlink-created
// flows, with timestamps on. With CTNL_WRITE_SEEDS=1 it also writes them to
// testdata/events.hex, the seeds of the unit and fuzz tests.
func TestDecodeFlowKernelEvents(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	t.Parallel()
	p := nstest.NewPair(t)
	for _, ns := range []*nstest.Namespace{p.A, p.B} {
		ns.Sysctl(t, "net.ipv6.conf.default.accept_dad", "0")
		ns.Sysctl(t, "net.ipv6.conf.all.accept_dad", "0")
	}
	nstest.Link(t, p.A, "fd00:c7::1/64", p.B, "fd00:c7::2/64")
	a := p.A
	a.Sysctl(t, "net.netfilter.nf_conntrack_timestamp", "1")
	a.Sysctl(t, "net.netfilter.nf_conntrack_tcp_timeout_established", "2")
	for _, k := range []string{"time_wait", "close_wait", "fin_wait", "last_ack", "close"} {
		a.Sysctl(t, "net.netfilter.nf_conntrack_tcp_timeout_"+k, "1")
	}
	a.Sysctl(t, "net.netfilter.nf_conntrack_udp_timeout", "1")
	a.Sysctl(t, "net.netfilter.nf_conntrack_udp_timeout_stream", "1")
	a.Sysctl(t, "net.netfilter.nf_conntrack_icmp_timeout", "1")

	conn, err := ctnl.Dial(a.Target())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for g := uint32(1); g <= 3; g++ {
		if err := conn.Netlink().JoinGroup(g); err != nil {
			t.Fatalf("join group %d: %v", g, err)
		}
	}

	// Traffic: an idle TCP connection that expires ESTABLISHED, one closed
	// in order, the same over IPv6, a UDP exchange, an ICMP echo, and an
	// entry created over ctnetlink with a mark.
	clients, servers := p.Connect(t, 2)
	for _, c := range append(clients, servers...) {
		c.(*net.TCPConn).SetKeepAlive(false)
	}
	clients[1].Close()
	servers[1].Close()
	l6 := p.B.Listen(t, "[fd00:c7::2]:0")
	go func() {
		if c, err := l6.Accept(); err == nil {
			time.Sleep(200 * time.Millisecond)
			c.Close()
		}
	}()
	c6, err := a.Dial(t, l6.Addr().String(), 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	c6.Close()
	udpExchange(t, p.A, p.B, p.BAddr)
	icmpEcho(t, a, p.BAddr)
	created, err := a.CreateEntries(t, []nstest.Entry{{
		Proto: unix.IPPROTO_UDP, Src: netip.MustParseAddr("198.51.100.7"), Dst: netip.MustParseAddr("203.0.113.9"),
		SPort: 5353, DPort: 53, Timeout: 1, Mark: 0x2a,
	}})
	if created != 1 || err != nil {
		t.Fatalf("create entry: %d, %v", created, err)
	}

	var msgs []captured
	destroys := map[uint8]int{}
	// Destroys expected: TCP x2, TCP6, UDP x2, ICMP. The garbage collector
	// may reap expired entries late; a dump (conntrack -L) reaps them now.
	deadline := time.Now().Add(30 * time.Second)
	for destroys[unix.IPPROTO_TCP] < 3 || destroys[unix.IPPROTO_UDP] < 2 || destroys[unix.IPPROTO_ICMP] < 1 {
		if err := conn.Netlink().SetReadDeadline(time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		nm, err := conn.Netlink().Receive()
		if errors.Is(err, os.ErrDeadlineExceeded) && time.Now().Before(deadline) {
			a.Conntrack(t, "-L")
			continue
		}
		if err != nil {
			t.Fatalf("receive: %v (destroys so far %v)", err, destroys)
		}
		for _, m := range nm {
			var f ctnl.Flow
			if err := ctnl.DecodeFlow(m.Data, &f); err != nil {
				t.Fatalf("decode %x: %v", m.Data, err)
			}
			c := captured{typ: uint16(m.Header.Type), hdr: uint16(m.Header.Flags), body: m.Data}
			kind := "update"
			switch {
			case c.typ == ctnl.MsgTypeCTDelete:
				kind = "destroy"
				destroys[f.Protocol]++
			case c.hdr&(unix.NLM_F_CREATE|unix.NLM_F_EXCL) != 0:
				kind = "new"
			}
			c.name = fmt.Sprintf("%s proto=%d family=%d tcpstate=%d status=%#x present=%#x", kind, f.Protocol, f.Family, f.TCPState, f.Status, f.Present)
			msgs = append(msgs, c)
		}
	}
	checkCaptured(t, msgs)
	if os.Getenv("CTNL_WRITE_SEEDS") != "" {
		var b strings.Builder
		b.WriteString("# ctnetlink event messages captured from kernel " + kernelRelease() + " by TestDecodeFlowKernelEvents.\n")
		b.WriteString("# One message per line: header type, header flags, body (nfgenmsg and attributes) in hex.\n")
		for _, m := range msgs {
			fmt.Fprintf(&b, "# %s\n%04x %04x %s\n", m.name, m.typ, m.hdr, hex.EncodeToString(m.body))
		}
		if err := os.WriteFile(filepath.Join("testdata", "events.hex"), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// checkCaptured checks what the kernel's DESTROY events say.
func checkCaptured(t *testing.T, msgs []captured) {
	t.Helper()
	var sawEstablished, sawOrderly, sawV6, sawICMP, sawMark bool
	for _, m := range msgs {
		if m.typ != ctnl.MsgTypeCTDelete {
			continue
		}
		var f ctnl.Flow
		if err := ctnl.DecodeFlow(m.body, &f); err != nil {
			t.Fatal(err)
		}
		if !f.Has(ctnl.HasProtocol | ctnl.HasAddrs | ctnl.HasStatus | ctnl.HasID | ctnl.HasStart | ctnl.HasStop) {
			t.Errorf("destroy event lacks fields: %s", m.name)
		}
		if f.Has(ctnl.HasTimeout) {
			t.Errorf("destroy event of an expired entry has a timeout: %s", m.name)
		}
		life, ok := f.Lifetime()
		if !ok || life <= 0 || life > time.Minute {
			t.Errorf("lifetime %v %v: %s", life, ok, m.name)
		}
		switch f.Protocol {
		case unix.IPPROTO_TCP:
			if !f.Has(ctnl.HasTCPState | ctnl.HasPorts) {
				t.Errorf("tcp destroy without state or ports: %s", m.name)
			}
			if f.Family == unix.AF_INET6 {
				sawV6 = f.Src == netip.MustParseAddr("fd00:c7::1")
			} else if f.TCPState == ctnl.TCPStateEstablished && f.Assured() {
				sawEstablished = true
			} else if f.TCPState == ctnl.TCPStateTimeWait || f.TCPState == ctnl.TCPStateClose {
				sawOrderly = true
			}
		case unix.IPPROTO_ICMP:
			sawICMP = f.Has(ctnl.HasICMP) && f.ICMPType == 8 && f.ICMPID == 0x1234
		case unix.IPPROTO_UDP:
			if f.Has(ctnl.HasMark) && f.Mark == 0x2a {
				sawMark = f.SrcPort == 5353 && f.DstPort == 53
			}
		}
	}
	if !sawEstablished || !sawOrderly || !sawV6 || !sawICMP || !sawMark {
		t.Errorf("established %v, orderly %v, ipv6 %v, icmp %v, mark %v", sawEstablished, sawOrderly, sawV6, sawICMP, sawMark)
		for _, m := range msgs {
			t.Logf("%s", m.name)
		}
	}
}
