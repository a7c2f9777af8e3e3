package events

import (
	"errors"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// readable reports whether fd is readable now, without waiting.
func readable(t *testing.T, fd int) bool {
	t.Helper()
	p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(p, 0)
	if err != nil {
		t.Fatal(err)
	}
	return n > 0
}

// pairWait returns a non-blocking datagram socket pair and a
// oneShotWait on its second end.
func pairWait(t *testing.T) ([2]int, *oneShotWait) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	w, err := newOneShotWait(fds[1])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.close() })
	return fds, w
}

// TestOneShotWaitStaysQuietWhileDisarmed checks what keeps the receive
// loop's sleeps free of wake-ups: after a wait returned, datagrams that
// queue on the socket do not make the epoll instance (the descriptor the
// Go runtime polls) readable, until the next wait arms it again, and that
// wait returns at once because data is queued.
func TestOneShotWaitStaysQuietWhileDisarmed(t *testing.T) {
	fds, w := pairWait(t)

	if _, err := unix.Write(fds[0], []byte("first")); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("wait with a datagram queued: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("wait did not return with a datagram queued")
	}

	// Disarmed: more datagrams, and the instance stays unreadable.
	for range 10 {
		if _, err := unix.Write(fds[0], []byte("more")); err != nil {
			t.Fatal(err)
		}
	}
	if readable(t, w.epfd) {
		t.Fatal("epoll instance readable while the socket is disarmed: every datagram would wake the runtime's poller")
	}
	if !readable(t, fds[1]) {
		t.Fatal("socket not readable with 11 datagrams queued")
	}
	// Armed again with data queued: returns at once.
	if err := w.wait(); err != nil {
		t.Fatalf("wait after arming with data queued: %v", err)
	}
}

// TestOneShotWaitInterrupt: interrupt ends a wait on an empty socket with
// os.ErrDeadlineExceeded, and a later wait too.
func TestOneShotWaitInterrupt(t *testing.T) {
	_, w := pairWait(t)
	done := make(chan error, 1)
	go func() { done <- w.wait() }()
	select {
	case err := <-done:
		t.Fatalf("wait on an empty socket returned %v before the interrupt", err)
	case <-time.After(50 * time.Millisecond):
	}
	w.interrupt()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("interrupted wait: %v, want os.ErrDeadlineExceeded", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("interrupt did not end the wait")
	}
	if err := w.wait(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("wait after interrupt: %v, want os.ErrDeadlineExceeded", err)
	}
}

func TestCoalesceFor(t *testing.T) {
	const second = time.Second
	tests := []struct {
		name     string
		n        int
		elapsed  time.Duration
		budget   int
		coalesce time.Duration
		want     time.Duration
	}{
		{"nothing read", 0, second, 1000, second, second},
		{"no elapsed time", 10, 0, 1000, second, second},
		{"slow: the whole coalesce", 500, second, 50_000, second, second},
		{"fast: budget reached sooner", 200_000, second, 50_000, second, 250 * time.Millisecond},
		{"very fast: floor", 10_000_000, second, 1000, second, minCoalesce},
		{"no budget: floor", 100, second, 0, second, minCoalesce},
		{"coalesce below the floor stays", 10_000_000, second, 1, 100 * time.Microsecond, 100 * time.Microsecond},
	}
	for _, tt := range tests {
		if got := coalesceFor(tt.coalesce, tt.n, tt.elapsed, tt.budget); got != tt.want {
			t.Errorf("%s: coalesceFor(%v, %d, %v, %d) = %v, want %v",
				tt.name, tt.coalesce, tt.n, tt.elapsed, tt.budget, got, tt.want)
		}
	}
}
