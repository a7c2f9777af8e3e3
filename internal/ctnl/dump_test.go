package ctnl

import (
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// nlmsg encodes one netlink message with the given body, padded to 4 bytes.
func nlmsg(typ, flags uint16, seq uint32, body []byte) []byte {
	b := make([]byte, nlmsgHeaderLen, nlmsgHeaderLen+len(body)+3)
	binary.NativeEndian.PutUint32(b[0:], uint32(nlmsgHeaderLen+len(body)))
	binary.NativeEndian.PutUint16(b[4:], typ)
	binary.NativeEndian.PutUint16(b[6:], flags)
	binary.NativeEndian.PutUint32(b[8:], seq)
	b = append(b, body...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func errBody(code int32) []byte {
	return binary.NativeEndian.AppendUint32(nil, uint32(code))
}

var entryType = uint16(msgType(msgCTNew))

func TestDumpParserCountsEntriesUntilDone(t *testing.T) {
	p := dumpParser{seq: 7}
	var got [][]byte
	fn := func(data []byte) error {
		got = append(got, append([]byte(nil), data...))
		return nil
	}
	d1 := append(nlmsg(entryType, nlmFMulti, 7, []byte{2, 0, 0, 0, 0xaa}),
		nlmsg(entryType, nlmFMulti, 7, []byte{10, 0, 0, 0})...)
	// A message of another request and a NOOP are skipped.
	d1 = append(d1, nlmsg(entryType, nlmFMulti, 99, []byte{2, 0, 0, 0})...)
	d1 = append(d1, nlmsg(1, 0, 7, nil)...)
	if err := p.feed(d1, fn); err != nil {
		t.Fatal(err)
	}
	if p.done {
		t.Fatal("done before NLMSG_DONE")
	}
	d2 := append(nlmsg(entryType, nlmFMulti, 7, []byte{2, 0, 0, 0}), nlmsg(nlmsgDone, nlmFMulti, 7, errBody(0))...)
	// Anything after NLMSG_DONE is ignored.
	d2 = append(d2, nlmsg(entryType, nlmFMulti, 7, []byte{2, 0, 0, 0})...)
	if err := p.feed(d2, fn); err != nil {
		t.Fatal(err)
	}
	if !p.done || p.info.Entries != 3 || p.info.Datagrams != 2 || p.info.Interrupted {
		t.Fatalf("info %+v done %v, want 3 entries in 2 datagrams, done", p.info, p.done)
	}
	if len(got) != 3 || len(got[0]) != 5 || got[0][4] != 0xaa || got[1][0] != 10 {
		t.Fatalf("bodies %x", got)
	}
}

func TestDumpParserInterrupted(t *testing.T) {
	p := dumpParser{seq: 1}
	b := append(nlmsg(entryType, nlmFMulti|nlmFDumpIn, 1, []byte{2, 0, 0, 0}), nlmsg(nlmsgDone, nlmFMulti|nlmFDumpIn, 1, errBody(0))...)
	if err := p.feed(b, func([]byte) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if !p.info.Interrupted || !p.done || p.info.Entries != 1 {
		t.Fatalf("info %+v done %v", p.info, p.done)
	}
}

func TestDumpParserErrors(t *testing.T) {
	stop := errors.New("stop")
	tests := []struct {
		name string
		b    []byte
		fn   func([]byte) error
		want error
	}{
		{"netlink error", nlmsg(nlmsgError, 0, 1, errBody(-int32(unix.EPERM))), nil, ErrPermission},
		{"error in done", nlmsg(nlmsgDone, nlmFMulti, 1, errBody(-int32(unix.ENOMEM))), nil, unix.ENOMEM},
		{"overrun", nlmsg(nlmsgOverrun, 0, 1, nil), nil, ErrMalformed},
		{"short error", nlmsg(nlmsgError, 0, 1, []byte{1}), nil, ErrMalformed},
		{"broken framing", append(nlmsg(entryType, nlmFMulti, 1, []byte{2, 0, 0, 0}), 1, 2, 3), nil, ErrMalformed},
		{"callback error", nlmsg(entryType, nlmFMulti, 1, []byte{2, 0, 0, 0}), func([]byte) error { return stop }, stop},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fn := tt.fn
			if fn == nil {
				fn = func([]byte) error { return nil }
			}
			p := dumpParser{seq: 1}
			if err := p.feed(tt.b, fn); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestDumpParserAckIsNotTheEnd(t *testing.T) {
	p := dumpParser{seq: 1}
	if err := p.feed(nlmsg(nlmsgError, 0, 1, errBody(0)), func([]byte) error { return nil }); err != nil || p.done {
		t.Fatalf("ack: err %v done %v", err, p.done)
	}
}

// FuzzDumpParser feeds arbitrary datagrams to the dump reader and the flow
// decoder behind it: neither may panic, every entry is counted, and every
// body handed out lies inside the datagram.
func FuzzDumpParser(f *testing.F) {
	f.Add(append(nlmsg(entryType, nlmFMulti, 1, []byte{2, 0, 0, 0}), nlmsg(nlmsgDone, nlmFMulti, 1, errBody(0))...))
	f.Add(nlmsg(nlmsgError, 0, 1, errBody(-1)))
	f.Add(nlmsg(entryType, nlmFMulti|nlmFDumpIn, 1, []byte{10, 0, 0, 0, 8, 0, 7, 0, 0, 0, 1, 44}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		p := dumpParser{seq: 1}
		var (
			calls uint64
			flow  Flow
		)
		_ = p.feed(b, func(data []byte) error {
			calls++
			if len(data) > len(b) {
				t.Fatalf("body of %d bytes from a %d-byte datagram", len(data), len(b))
			}
			if err := DecodeFlow(data, &flow); err != nil && !errors.Is(err, ErrMalformed) {
				t.Fatalf("DecodeFlow error %v does not wrap ErrMalformed", err)
			}
			return nil
		})
		if calls != p.info.Entries {
			t.Fatalf("%d callbacks, %d entries counted", calls, p.info.Entries)
		}
	})
}
