package events

import (
	"context"
	"testing"
	"time"

	"github.com/ct-exporter/ct-exporter/bench"
	"github.com/ct-exporter/ct-exporter/internal/lab"
	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

// drillEntries is the size of the burst drill.
const drillEntries = 200_000

// sendBurst creates n entries in ns and removes them at rate per second
// (0: one flush), so that the kernel sends n DESTROY events
// (bench.DestroyBurst).
func sendBurst(t *testing.T, ns *nstest.Namespace, n int, rate float64) {
	t.Helper()
	burst := bench.NewDestroyBurst(n, rate)
	if err := burst.Create(ns.Namespace); err != nil {
		t.Fatal(err)
	}
	if _, err := burst.Remove(context.Background(), ns.Namespace); err != nil {
		t.Fatal(err)
	}
}

// TestBurstDrill drives the load of the burst drill (bench.DestroyBurst:
// 200,000 entries created over ctnetlink, then one flush) into a
// namespace the Subscriber watches, and checks that every DESTROY event
// is either received or counted as lost: received + lost == 200,000.
// What it costs, beside conntrack -E, is measured by ct-drill burst.
func TestBurstDrill(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	t.Parallel()
	ns := nstest.NewNamespace(t)
	ns.Sysctl(t, "net.netfilter.nf_conntrack_timestamp", "1")
	s, sink := startSubscriber(t, ns, Config{})

	sendBurst(t, ns, drillEntries, 0)
	waitFor(t, 60*time.Second, "received + lost to reach the drill size", func() bool {
		st := s.Stats()
		return st.Events[EventDestroy]+st.Lost >= drillEntries
	})
	st := s.Stats()
	received, lost := st.Events[EventDestroy], st.Lost
	t.Logf("%d entries flushed: received %d DESTROY events, lost %d (overruns %d)", drillEntries, received, lost, st.Overruns)
	if received+lost != drillEntries {
		t.Errorf("received %d + lost %d = %d, want %d", received, lost, received+lost, drillEntries)
	}
	if lost > 0 && st.Overruns == 0 {
		t.Errorf("%d events lost without an overrun", lost)
	}
	if st.Malformed != 0 {
		t.Errorf("%d malformed", st.Malformed)
	}
	// Every received DESTROY is of an ASSURED flow with timestamps.
	if got := uint64(len(sink.all())); got != received || st.WithoutTimestamp != 0 {
		t.Errorf("%d observations of %d received, %d without timestamp", got, received, st.WithoutTimestamp)
	}
}

// TestOverrunIsCountedAndSurvived: with a receive buffer far too small for
// the burst, the kernel drops events; the Subscriber counts every one of
// them, sees the overruns, and keeps receiving afterwards.
func TestOverrunIsCountedAndSurvived(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	t.Parallel()
	const n = 20_000
	ns := nstest.NewNamespace(t)
	ns.Sysctl(t, "net.netfilter.nf_conntrack_timestamp", "1")
	s, sink := startSubscriber(t, ns, Config{BufferSize: 4096})
	sendBurst(t, ns, n, 0)
	waitFor(t, 30*time.Second, "received + lost to reach the burst size", func() bool {
		st := s.Stats()
		return st.Events[EventDestroy]+st.Lost >= n
	})
	st := s.Stats()
	if st.Lost == 0 || st.Overruns == 0 || st.Events[EventDestroy]+st.Lost != n || !st.Running || st.Restarts != 0 {
		t.Fatalf("stats %+v", st)
	}
	t.Logf("%d-byte receive buffer (as reported): received %d, lost %d, overruns %d",
		st.ReceiveBuffer, st.Events[EventDestroy], st.Lost, st.Overruns)
	// The loop is still receiving. The buffer holds only a few events, so
	// some of the next ten may be dropped too, but each is received or
	// counted.
	before := st.Events[EventDestroy]
	sendBurst(t, ns, 10, 0)
	waitFor(t, 10*time.Second, "events after the overrun", func() bool {
		st := s.Stats()
		return st.Events[EventDestroy]+st.Lost == n+10
	})
	if st := s.Stats(); st.Events[EventDestroy] == before || uint64(len(sink.all())) != st.Events[EventDestroy] {
		t.Fatalf("after the overrun: %d received before, stats %+v, %d observations", before, st, len(sink.all()))
	}
}

// TestStopReadsQueuedEvents: with a coalescing sleep far longer than the
// test, the events removed one by one after the loop went to sleep stay
// queued, and Stop counts them in full, returning at once instead of
// finishing the sleep.
func TestStopReadsQueuedEvents(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	t.Parallel()
	const n = 300
	ns := nstest.NewNamespace(t)
	ns.Sysctl(t, "net.netfilter.nf_conntrack_timestamp", "1")
	s, _ := startSubscriber(t, ns, Config{Coalesce: time.Hour})

	// Removed at 1,000 per second over 0.3 s: the loop reads the first
	// events at once, sleeps 10 ms to measure the rate, reads what came
	// meanwhile and then sleeps the hour.
	sendBurst(t, ns, n, 1000)
	time.Sleep(100 * time.Millisecond)
	if got := s.Stats().Events[EventDestroy]; got == 0 || got >= n {
		t.Fatalf("%d of %d DESTROY events read before Stop; want some, not all (the loop should be sleeping)", got, n)
	}
	stopped := make(chan struct{})
	go func() { s.Stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Stop did not end the coalescing sleep")
	}
	st := s.Stats()
	if got := st.Events[EventDestroy] + st.Lost; got != n {
		t.Fatalf("after Stop: received %d + lost %d, want %d", st.Events[EventDestroy], st.Lost, n)
	}
}

// TestSyncCountsQueuedEvents: while the loop sleeps (Coalesce an hour),
// events queue uncounted; Sync has them all counted before it returns,
// and the loop goes on receiving afterwards.
func TestSyncCountsQueuedEvents(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	t.Parallel()
	const n = 300
	ctx := context.Background()
	ns := nstest.NewNamespace(t)
	ns.Sysctl(t, "net.netfilter.nf_conntrack_timestamp", "1")
	s, _ := startSubscriber(t, ns, Config{Coalesce: time.Hour})

	sendBurst(t, ns, n, 1000) // over 0.3 s: the loop is asleep for most of it
	time.Sleep(100 * time.Millisecond)
	if got := s.Stats().Events[EventDestroy]; got >= n {
		t.Fatalf("%d of %d DESTROY events counted before Sync; the loop should be sleeping", got, n)
	}
	syncCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.Sync(syncCtx); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if got := st.Events[EventDestroy] + st.Lost; got != n {
		t.Fatalf("after Sync: received %d + lost %d, want %d", st.Events[EventDestroy], st.Lost, n)
	}
	// A Sync while nothing is held back returns at once.
	if err := s.Sync(syncCtx); err != nil {
		t.Fatal(err)
	}
	// Still receiving: the next events are read (the first at once).
	sendBurst(t, ns, 5, 0)
	waitFor(t, 10*time.Second, "events after the Sync", func() bool {
		if err := s.Sync(syncCtx); err != nil {
			t.Fatal(err)
		}
		st := s.Stats()
		return st.Events[EventDestroy]+st.Lost == n+5
	})
}

// TestEventFloorKeepsTheExportersSchedule: the floor that ct-drill churn
// measures the event path against drains its socket as often as the
// receive loop does by default, into as large a receive buffer, with
// receive batches of the same shape; a floor on another schedule, buffer
// or batch would not be the same work.
func TestEventFloorKeepsTheExportersSchedule(t *testing.T) {
	if bench.EventFloorInterval != DefaultCoalesce {
		t.Errorf("bench.EventFloorInterval = %v, DefaultCoalesce = %v", bench.EventFloorInterval, DefaultCoalesce)
	}
	if lab.FloorEventBuffer != DefaultBufferSize {
		t.Errorf("lab.FloorEventBuffer = %d, DefaultBufferSize = %d", lab.FloorEventBuffer, DefaultBufferSize)
	}
	if lab.FloorSlots != recvSlots || lab.FloorSlotSize != recvSlotSize {
		t.Errorf("lab.FloorSlots x FloorSlotSize = %d x %d, the receive loop's %d x %d", lab.FloorSlots, lab.FloorSlotSize, recvSlots, recvSlotSize)
	}
}
