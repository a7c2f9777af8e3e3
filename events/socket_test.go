package events

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ct-exporter/ct-exporter/internal/netns"
)

// TestRecvBatchReadsSeveralDatagramsPerCall reads datagrams from a Unix
// datagram socket pair: one call returns up to recvSlots of them, each
// whole in its slot, and a datagram larger than a slot is flagged.
func TestRecvBatchReadsSeveralDatagramsPerCall(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	if err := unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_SNDBUF, 1<<20); err != nil {
		t.Fatal(err)
	}
	var sent [][]byte
	for i := range recvSlots + 3 {
		d := bytes.Repeat([]byte{byte(i + 1)}, 100+i)
		if i == recvSlots+1 {
			d = bytes.Repeat([]byte{0xee}, recvSlotSize+10)
		}
		if _, err := unix.Write(fds[0], d); err != nil {
			t.Fatal(err)
		}
		sent = append(sent, d)
	}
	b, err := newRecvBatch()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.free() })
	n, err := b.recv(uintptr(fds[1]))
	if err != nil || n != recvSlots {
		t.Fatalf("first recv: %d datagrams, %v; want %d", n, err, recvSlots)
	}
	for i := range n {
		d, cut := b.Datagram(i)
		if cut || !bytes.Equal(d, sent[i]) {
			t.Fatalf("datagram %d: %d bytes (cut %v), want %d bytes", i, len(d), cut, len(sent[i]))
		}
	}
	n, err = b.recv(uintptr(fds[1]))
	if err != nil || n != 3 {
		t.Fatalf("second recv: %d datagrams, %v; want 3", n, err)
	}
	for i := range n {
		d, cut := b.Datagram(i)
		want := sent[recvSlots+i]
		if big := len(want) > recvSlotSize; cut != big || (!big && !bytes.Equal(d, want)) {
			t.Fatalf("datagram %d: %d bytes, cut %v; sent %d bytes", recvSlots+i, len(d), cut, len(want))
		}
	}
	if _, err := b.recv(uintptr(fds[1])); !errors.Is(err, unix.EAGAIN) {
		t.Fatalf("recv of an empty socket: %v, want EAGAIN", err)
	}
}

func TestConfigCoalesceDefault(t *testing.T) {
	if got := (Config{}).withDefaults().Coalesce; got != DefaultCoalesce {
		t.Errorf("zero Coalesce became %v, want %v", got, DefaultCoalesce)
	}
	if got := (Config{Coalesce: -1}).withDefaults().Coalesce; got >= 0 {
		t.Errorf("negative Coalesce became %v, want it kept (no waiting)", got)
	}
}

// TestCoalesceFlowTableMode: the flow_table mode, whose lifetimes are
// receive times, sleeps at most flowTableCoalesce; the timestamp mode
// sleeps Config.Coalesce.
func TestCoalesceFlowTableMode(t *testing.T) {
	s := New(netns.Self(), Config{Coalesce: time.Minute}, nil)
	if got := s.coalesce(); got != time.Minute {
		t.Errorf("timestamp mode: %v, want 1m", got)
	}
	s.c.mode.Store(int32(ModeFlowTable))
	if got := s.coalesce(); got != flowTableCoalesce {
		t.Errorf("flow_table mode: %v, want %v", got, flowTableCoalesce)
	}
	s = New(netns.Self(), Config{Coalesce: -1}, nil)
	s.c.mode.Store(int32(ModeFlowTable))
	if got := s.coalesce(); got >= 0 {
		t.Errorf("flow_table mode with Coalesce -1: %v, want it kept (no sleep)", got)
	}
}

// residentPages returns how many pages of b are resident (mincore).
func residentPages(t *testing.T, b []byte) int {
	t.Helper()
	vec := make([]byte, (len(b)+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatal(e)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n
}

// TestRecvBatchReleasesMemory: the receive memory is resident only where
// a receive wrote, and release gives back all but the first slot.
func TestRecvBatchReleasesMemory(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	if err := unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20); err != nil {
		t.Fatal(err)
	}
	b, err := newRecvBatch()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.free() })
	if n := residentPages(t, b.buf); n != 0 {
		t.Fatalf("%d pages resident before any receive, want 0", n)
	}
	for range recvSlots {
		if _, err := unix.Write(fds[0], bytes.Repeat([]byte{1}, recvSlotSize)); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := b.recv(uintptr(fds[1])); err != nil || n != recvSlots {
		t.Fatalf("recv: %d, %v; want %d", n, err, recvSlots)
	}
	full := residentPages(t, b.buf)
	if full < recvSlots*recvSlotSize/os.Getpagesize() {
		t.Fatalf("%d pages resident after filling every slot, want all %d", full, recvSlots*recvSlotSize/os.Getpagesize())
	}
	if err := b.release(); err != nil {
		t.Fatal(err)
	}
	if n, want := residentPages(t, b.buf), recvSlotSize/os.Getpagesize(); n != want {
		t.Fatalf("%d pages resident after release, want %d (the first slot)", n, want)
	}
	// Written again after the release: the slots read as written.
	if _, err := unix.Write(fds[0], []byte("again")); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Write(fds[0], []byte("twice")); err != nil {
		t.Fatal(err)
	}
	if n, err := b.recv(uintptr(fds[1])); err != nil || n != 2 {
		t.Fatalf("recv after release: %d, %v; want 2", n, err)
	}
	if d, _ := b.Datagram(1); string(d) != "twice" {
		t.Fatalf("second datagram after release: %q", d)
	}
}
