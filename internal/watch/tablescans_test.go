package watch

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/tablescan"
)

// countingScanner counts its scans, remembers the deadline of the last
// and returns err after the first.
type countingScanner struct {
	mu       sync.Mutex
	calls    int
	deadline time.Time
	err      error
	called   chan int // receives the number of each call
}

func (c *countingScanner) Scan(ctx context.Context, _ netns.Target) (*tablescan.Scan, error) {
	c.mu.Lock()
	c.calls++
	n := c.calls
	c.deadline, _ = ctx.Deadline()
	err := c.err
	c.mu.Unlock()
	select {
	case c.called <- n:
	default:
	}
	if n > 1 && err != nil {
		return nil, err
	}
	return &tablescan.Scan{Result: &tablescan.Result{Total: uint64(n)}}, nil
}

// waitCall waits until call n has begun.
func (c *countingScanner) waitCall(t *testing.T, n int) {
	t.Helper()
	for got := range c.called {
		if got >= n {
			return
		}
	}
}

func TestTableScansContextEndsScans(t *testing.T) {
	sc := &countingScanner{called: make(chan int)}
	scans := NewTableScans(TableScanOptions{Scanner: sc, Interval: time.Millisecond, Timeout: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	target := netns.Self()
	if err := scans.Watch(ctx, target); err != nil {
		t.Fatal(err)
	}
	sc.waitCall(t, 3)
	sc.mu.Lock()
	if d := time.Until(sc.deadline); d > time.Second {
		t.Errorf("scan deadline in %v, want within the 1 s timeout", d)
	}
	sc.mu.Unlock()
	cancel()
	done := scans.jobs.get(target).done
	<-done // the loop ends with the Watch context
	scans.Forget(target)
	if _, watched := scans.Last(target); watched {
		t.Fatal("namespace still watched after Forget")
	}
}

func TestTableScansKeepTheLastScanAfterAFailure(t *testing.T) {
	boom := errors.New("netns gone")
	sc := &countingScanner{called: make(chan int), err: boom}
	scans := NewTableScans(TableScanOptions{Scanner: sc, Interval: time.Millisecond})
	target := netns.Self()
	if st, watched := scans.Last(target); st != nil || watched {
		t.Fatalf("before Watch: %v, %v", st, watched)
	}
	if err := scans.Watch(context.Background(), target); err != nil {
		t.Fatal(err)
	}
	defer scans.Forget(target)
	if err := scans.Watch(context.Background(), target); !errors.Is(err, ErrAlreadyWatched) {
		t.Fatalf("second Watch = %v, want ErrAlreadyWatched", err)
	}
	sc.waitCall(t, 3) // call 2 failed and its outcome is stored
	st, watched := scans.Last(target)
	if !watched || st == nil || !errors.Is(st.Err, boom) || st.Last == nil || st.Last.Total != 1 {
		t.Fatalf("Last = %+v, %v; want the failure with the first scan kept", st, watched)
	}
}
