package ctnl_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ct-exporter/ct-exporter/internal/ctnl"
	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

// TestDecodeFlowKernelHelper attaches the kernel's ftp helper to TCP port
// 21 with an nftables ct helper object and decodes the NEW event and the
// dump reply of a real connection to port 21: both carry helper ftp, a
// connection to another port none. With CTNL_WRITE_SEEDS=1 it also writes
// the messages with a helper to testdata/helper.hex, seeds of the unit and
// fuzz tests.
func TestDecodeFlowKernelHelper(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	t.Parallel()
	p := nstest.NewPair(t)
	b := p.B
	b.Nft(t, `table inet ftplab {
	ct helper ftp-standard { type "ftp" protocol tcp; }
	chain pre { type filter hook prerouting priority filter; policy accept;
		tcp dport 21 ct helper set "ftp-standard"
	}
}`)
	conn, err := ctnl.Dial(b.Target())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Netlink().JoinGroup(1); err != nil { // NFNLGRP_CONNTRACK_NEW
		t.Fatal(err)
	}
	ftp := b.Listen(t, net.JoinHostPort(p.BAddr, "21"))
	other := b.Listen(t, net.JoinHostPort(p.BAddr, "0"))
	for _, l := range []net.Listener{ftp, other} {
		go func() {
			if c, err := l.Accept(); err == nil {
				t.Cleanup(func() { c.Close() })
			}
		}()
		if _, err := p.A.Dial(t, l.Addr().String(), 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}

	var withHelper []captured
	// The NEW events of both connections.
	news := 0
	for news < 2 {
		if err := conn.Netlink().SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		msgs, err := conn.Netlink().Receive()
		if err != nil {
			t.Fatalf("receive: %v (NEW events so far %d)", err, news)
		}
		for _, m := range msgs {
			var f ctnl.Flow
			if err := ctnl.DecodeFlow(m.Data, &f); err != nil {
				t.Fatalf("decode %x: %v", m.Data, err)
			}
			if f.Protocol != unix.IPPROTO_TCP {
				continue
			}
			news++
			checkHelper(t, "NEW event", &f)
			if f.Has(ctnl.HasHelper) {
				withHelper = append(withHelper, captured{name: "new event helper=" + string(f.Helper()),
					typ: uint16(m.Header.Type), hdr: uint16(m.Header.Flags), body: m.Data})
			}
		}
	}
	if err := conn.Netlink().LeaveGroup(1); err != nil {
		t.Fatal(err)
	}

	dump, err := ctnl.Dial(b.Target())
	if err != nil {
		t.Fatal(err)
	}
	defer dump.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dumped := 0
	_, err = dump.Dump(ctx, func(data []byte) error {
		var f ctnl.Flow
		if err := ctnl.DecodeFlow(data, &f); err != nil {
			return fmt.Errorf("decode %x: %w", data, err)
		}
		dumped++
		checkHelper(t, "dump", &f)
		if f.Has(ctnl.HasHelper) {
			withHelper = append(withHelper, captured{name: "dump helper=" + string(f.Helper()),
				typ: ctnl.MsgTypeCTNew, hdr: unix.NLM_F_MULTI, body: append([]byte(nil), data...)})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if dumped != 2 || len(withHelper) != 2 {
		t.Fatalf("%d entries dumped, %d messages with a helper; want 2 and 2", dumped, len(withHelper))
	}
	if os.Getenv("CTNL_WRITE_SEEDS") != "" {
		var sb strings.Builder
		sb.WriteString("# ctnetlink messages with a conntrack helper captured from kernel " + kernelRelease() + " by TestDecodeFlowKernelHelper.\n")
		sb.WriteString("# One message per line: header type, header flags, body (nfgenmsg and attributes) in hex.\n")
		for _, m := range withHelper {
			fmt.Fprintf(&sb, "# %s\n%04x %04x %s\n", m.name, m.typ, m.hdr, hex.EncodeToString(m.body))
		}
		if err := os.WriteFile(filepath.Join("testdata", "helper.hex"), []byte(sb.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// checkHelper checks that a TCP entry to port 21 carries helper ftp and
// any other none.
func checkHelper(t *testing.T, what string, f *ctnl.Flow) {
	t.Helper()
	if !f.Has(ctnl.HasPorts) {
		t.Errorf("%s: no ports: %+v", what, f)
		return
	}
	want := ""
	if f.DstPort == 21 {
		want = "ftp"
	}
	if string(f.Helper()) != want || f.Has(ctnl.HasHelper) != (want != "") {
		t.Errorf("%s to port %d: helper %q (present %v), want %q", what, f.DstPort, f.Helper(), f.Has(ctnl.HasHelper), want)
	}
}
