package ctnl

import (
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

var (
	globalType = uint16(msgType(msgGetStats))
	cpuType    = uint16(msgType(msgGetStatsCPU))
)

// globalStatsBody encodes an IPCTNL_MSG_CT_GET_STATS reply body.
func globalStatsBody(entries, maxEntries uint32) []byte {
	b := []byte{0, 0, 0, 0}
	for typ, v := range map[uint16]uint32{attrStatsGlobalE: entries, attrStatsGlobalM: maxEntries} {
		b = binary.NativeEndian.AppendUint16(b, 8)
		b = binary.NativeEndian.AppendUint16(b, typ)
		b = binary.BigEndian.AppendUint32(b, v)
	}
	return b
}

func TestStatsParserAcrossDatagrams(t *testing.T) {
	p := statsParser{globalSeq: 10, cpuSeq: 11}
	// The global reply, with a message of another request before it.
	d1 := append(nlmsg(globalType, nlmFMulti, 9, globalStatsBody(1, 2)), nlmsg(globalType, nlmFMulti, 10, globalStatsBody(25, 65536))...)
	d2 := append(nlmsg(cpuType, nlmFMulti, 11, cpuStatsBody(0)), nlmsg(cpuType, nlmFMulti, 11, cpuStatsBody(1))...)
	d3 := nlmsg(nlmsgDone, nlmFMulti, 11, errBody(0))
	for i, d := range [][]byte{d1, d2, d3} {
		if p.done() {
			t.Fatalf("done before datagram %d", i)
		}
		if err := p.feed(d); err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
	}
	if !p.done() {
		t.Fatal("not done after NLMSG_DONE")
	}
	if p.global != (GlobalStats{Entries: 25, MaxEntries: 65536}) {
		t.Errorf("global %+v", p.global)
	}
	if len(p.cpus) != 2 || p.cpus[1].CPU != 1 || p.cpus[1].Counters[Found] != 2001 || p.cpus[0].Counters[ChainTooLong] != 15000 {
		t.Errorf("cpus %+v", p.cpus)
	}
	// A second global reply of the same sequence changes nothing.
	if err := p.feed(nlmsg(globalType, nlmFMulti, 10, globalStatsBody(99, 99))); err != nil || p.global.Entries != 25 {
		t.Errorf("after a repeated reply: err %v, global %+v", err, p.global)
	}
}

func TestStatsParserDumpBeforeGlobal(t *testing.T) {
	p := statsParser{globalSeq: 1, cpuSeq: 2}
	b := append(nlmsg(cpuType, nlmFMulti, 2, cpuStatsBody(0)), nlmsg(nlmsgDone, nlmFMulti, 2, errBody(0))...)
	if err := p.feed(b); err != nil || p.done() {
		t.Fatalf("err %v, done %v without the global reply", err, p.done())
	}
	if err := p.feed(nlmsg(globalType, 0, 1, globalStatsBody(3, 4))); err != nil || !p.done() {
		t.Fatalf("err %v, done %v", err, p.done())
	}
}

func TestStatsParserErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		b    []byte
		want error
	}{
		{"global refused", nlmsg(nlmsgError, 0, 1, errBody(-int32(unix.EPERM))), ErrPermission},
		{"dump refused", nlmsg(nlmsgError, 0, 2, errBody(-int32(unix.EOPNOTSUPP))), unix.EOPNOTSUPP},
		{"ack instead of the global reply", nlmsg(nlmsgError, 0, 1, errBody(0)), ErrMalformed},
		{"error in done", nlmsg(nlmsgDone, nlmFMulti, 2, errBody(-int32(unix.ENOMEM))), unix.ENOMEM},
		{"short error", nlmsg(nlmsgError, 0, 2, []byte{1}), ErrMalformed},
		{"short global reply", nlmsg(globalType, 0, 1, []byte{0}), ErrMalformed},
		{"global reply without the limit", nlmsg(globalType, 0, 1, []byte{0, 0, 0, 0, 8, 0, 1, 0, 0, 0, 0, 5}), ErrMalformed},
		{"bad per-CPU attribute", nlmsg(cpuType, nlmFMulti, 2, []byte{0, 0, 0, 0, 6, 0, 2, 0, 1, 2, 0, 0}), ErrMalformed},
		{"per-CPU attribute longer than its reply", nlmsg(cpuType, nlmFMulti, 2, []byte{0, 0, 0, 0, 20, 0, 2, 0, 1, 2, 3, 4}), ErrMalformed},
		{"global attribute longer than its reply", nlmsg(globalType, 0, 1, []byte{0, 0, 0, 0, 8, 0, 1, 0, 0, 0, 0, 5, 9, 0, 2, 0}), ErrMalformed},
		{"broken framing", append(nlmsg(cpuType, nlmFMulti, 2, cpuStatsBody(0)), 1, 2, 3), ErrMalformed},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := statsParser{globalSeq: 1, cpuSeq: 2}
			if err := p.feed(tt.b); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	// Errors of other requests are not this one's.
	p := statsParser{globalSeq: 1, cpuSeq: 2}
	if err := p.feed(nlmsg(nlmsgError, 0, 3, errBody(-int32(unix.EPERM)))); err != nil {
		t.Errorf("error of sequence 3: %v", err)
	}
}

// FuzzStatsParser feeds arbitrary datagrams to Snapshot's reply reader:
// it may not panic, and every error it returns comes from the kernel or
// wraps ErrMalformed.
func FuzzStatsParser(f *testing.F) {
	f.Add(append(nlmsg(globalType, nlmFMulti, 1, globalStatsBody(25, 65536)), nlmsg(cpuType, nlmFMulti, 2, cpuStatsBody(1))...))
	f.Add(nlmsg(nlmsgDone, nlmFMulti, 2, errBody(-1)))
	f.Add(nlmsg(nlmsgError, 0, 1, errBody(-int32(unix.EPERM))))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		p := statsParser{globalSeq: 1, cpuSeq: 2}
		err := p.feed(b)
		var errno unix.Errno
		if err != nil && !errors.Is(err, ErrMalformed) && !errors.As(err, &errno) {
			t.Fatalf("error %v is neither malformed nor an errno", err)
		}
		if len(p.cpus)*(nlmsgHeaderLen+nfgenmsgLen) > len(b) {
			t.Fatalf("%d CPUs from %d bytes", len(p.cpus), len(b))
		}
	})
}
