package watch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/sysctl"
)

// countingSysctls serves fixed values, counts its reads and fails with
// err while it is set.
type countingSysctls struct {
	mu        sync.Mutex
	conntrack sysctl.Values
	ipv4      sysctl.Values
	reads     int
	err       error
	read      chan int // receives the number of each read, if not nil
}

func (c *countingSysctls) Read(_ context.Context, _ netns.Target, names ...string) (sysctl.Values, error) {
	c.mu.Lock()
	c.reads++
	n, err, ch := c.reads, c.err, c.read
	out := pick(c.conntrack, nil, names)
	c.mu.Unlock()
	if ch != nil {
		select {
		case ch <- n:
		default:
		}
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (c *countingSysctls) ReadIPv4(_ context.Context, _ netns.Target, names ...string) (sysctl.Values, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return nil, c.err
	}
	return pick(c.ipv4, nil, names), nil
}

func (c *countingSysctls) setErr(err error) {
	c.mu.Lock()
	c.err = err
	c.mu.Unlock()
}

func (c *countingSysctls) readCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reads
}

func TestSettingsServeTheReadingTakenAtWatch(t *testing.T) {
	src := &countingSysctls{
		conntrack: sysctl.Values{sysctl.Events: 1, sysctl.Timestamp: 0},
		ipv4:      sysctl.Values{sysctl.KeepaliveTime: 7200},
	}
	s := NewSettings(SettingsOptions{Source: src, Interval: time.Hour})
	target := netns.Self()
	if _, err := s.Read(context.Background(), target, sysctl.Events); !errors.Is(err, ErrNotWatched) {
		t.Fatalf("Read before Watch = %v, want ErrNotWatched", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.Watch(ctx, target); err != nil {
		t.Fatal(err)
	}
	defer s.Forget(target)
	if err := s.Watch(ctx, target); !errors.Is(err, ErrAlreadyWatched) {
		t.Fatalf("second Watch = %v, want ErrAlreadyWatched", err)
	}
	// Many scrapes, one reading: the one taken when the namespace was
	// watched.
	for range 10 {
		got, err := s.Read(context.Background(), target, sysctl.Events, "nf_conntrack_absent")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[sysctl.Events] != 1 {
			t.Fatalf("Read = %v, want only %s=1", got, sysctl.Events)
		}
		ipv4, err := s.ReadIPv4(context.Background(), target, sysctl.Keepalive()...)
		if err != nil || len(ipv4) != 1 || ipv4[sysctl.KeepaliveTime] != 7200 {
			t.Fatalf("ReadIPv4 = %v, %v; want %s=7200", ipv4, err, sysctl.KeepaliveTime)
		}
	}
	if n := src.readCount(); n != 1 {
		t.Fatalf("%d readings for 10 scrapes, want the one at Watch", n)
	}
	age, ok := s.Age(target)
	if !ok || age < 0 || age > time.Hour {
		t.Fatalf("Age = %v, %v", age, ok)
	}
	s.Forget(target)
	if _, watched := s.Last(target); watched {
		t.Fatal("still watched after Forget")
	}
	if _, ok := s.Age(target); ok {
		t.Fatal("an age after Forget")
	}
}

func TestSettingsRereadOnTheIntervalAndReportFailures(t *testing.T) {
	src := &countingSysctls{conntrack: sysctl.Values{sysctl.Events: 1}, read: make(chan int)}
	s := NewSettings(SettingsOptions{Source: src, Interval: time.Millisecond})
	target := netns.Self()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.Watch(ctx, target); err != nil {
		t.Fatal(err)
	}
	defer s.Forget(target)
	waitReads(t, src, 3)

	gone := errors.New("namespace gone")
	src.setErr(gone)
	// Wait for a reading that started after the failure was set.
	n := src.readCount()
	waitReads(t, src, n+2)
	if _, err := s.Read(context.Background(), target, sysctl.Events); !errors.Is(err, gone) {
		t.Fatalf("Read after a failed reading = %v, want it", err)
	}
	last, _ := s.Last(target)
	if last == nil || !errors.Is(last.Err, gone) || last.Conntrack[sysctl.Events] != 1 || last.At.IsZero() {
		t.Fatalf("Last = %+v, want the failure with the values of the reading before", last)
	}
	if _, ok := s.Age(target); ok {
		t.Fatal("an age while the reading fails")
	}
	src.setErr(nil)
	n = src.readCount()
	waitReads(t, src, n+2)
	if got, err := s.Read(context.Background(), target, sysctl.Events); err != nil || got[sysctl.Events] != 1 {
		t.Fatalf("Read after recovery = %v, %v", got, err)
	}
}

func TestSettingsContextEndsReadings(t *testing.T) {
	src := &countingSysctls{conntrack: sysctl.Values{sysctl.Events: 1}, read: make(chan int)}
	s := NewSettings(SettingsOptions{Source: src, Interval: time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	target := netns.Self()
	if err := s.Watch(ctx, target); err != nil {
		t.Fatal(err)
	}
	waitReads(t, src, 2)
	cancel()
	s.Forget(target) // waits for the loop to end
	n := src.readCount()
	time.Sleep(10 * time.Millisecond)
	if got := src.readCount(); got != n {
		t.Fatalf("%d readings after the context ended", got-n)
	}
}

// waitReads waits until the source has begun reading n times.
func waitReads(t *testing.T, src *countingSysctls, n int) {
	t.Helper()
	for got := range src.read {
		if got >= n {
			return
		}
	}
}

// TestPhaseSpreadsNamespaces checks that the readings of many namespaces
// fall all over the interval, each namespace always at the same place.
func TestPhaseSpreadsNamespaces(t *testing.T) {
	const interval = time.Minute
	var tenths [10]int
	for i := range 500 {
		target := netns.Target{Name: fmt.Sprintf("cni-%d", i), Path: fmt.Sprintf("/run/netns/cni-%d", i)}
		p := phase(target, interval)
		if p < 0 || p >= interval {
			t.Fatalf("phase of %s is %s, outside [0, %s)", target.Path, p, interval)
		}
		if again := phase(target, interval); again != p {
			t.Fatalf("phase of %s is %s, then %s", target.Path, p, again)
		}
		tenths[p*10/interval]++
	}
	for i, n := range tenths {
		if n < 25 { // 50 expected in each tenth
			t.Errorf("%d of 500 namespaces read in tenth %d of the interval: %v", n, i, tenths)
		}
	}
	if p := phase(netns.Self(), 0); p != 0 {
		t.Errorf("phase with no interval = %s", p)
	}
}
