package diagnose

import (
	"context"
	"fmt"
	"time"

	"github.com/ct-exporter/ct-exporter/events"
	"github.com/ct-exporter/ct-exporter/internal/netns"
)

// EventSource is the LifetimeSource of the running kernel: one
// events.Subscriber for the length of a sample, counting into a
// LifetimeCounter. With nf_conntrack_timestamp=1 every flow that dies has
// a lifetime; without it only the flows created during the sample have
// one (from their NEW event), and the others count as without timestamp.
type EventSource struct {
	// Config configures the subscriber; the zero value uses the defaults
	// of package events.
	Config events.Config
}

// Watch implements LifetimeSource.
func (e EventSource) Watch(ctx context.Context, target netns.Target) (LifetimeWatch, error) {
	counter := NewLifetimeCounter()
	sub := events.New(target, e.Config, counter)
	if err := sub.Start(ctx); err != nil {
		return nil, fmt.Errorf("event subscriber: %w", err)
	}
	return &eventWatch{sub: sub, counter: counter}, nil
}

// eventWatch is one running subscription.
type eventWatch struct {
	sub     *events.Subscriber
	counter *LifetimeCounter
}

// Settling: before stopping, the events the kernel already queued (the
// table dump at the end of a sample reaps expired entries, whose DESTROY
// events follow at once) are read until no new one arrived for
// settleQuiet, for at most settleMax.
const (
	settlePoll  = 50 * time.Millisecond
	settleQuiet = 2
	settleMax   = 2 * time.Second
)

// Stop implements LifetimeWatch.
func (w *eventWatch) Stop() (*LifetimeSample, error) {
	received := func() uint64 {
		var n uint64
		for _, c := range w.sub.Stats().Events {
			n += c
		}
		return n
	}
	last, quiet := received(), 0
	for deadline := time.Now().Add(settleMax); quiet < settleQuiet && time.Now().Before(deadline); {
		time.Sleep(settlePoll)
		if n := received(); n != last {
			last, quiet = n, 0
		} else {
			quiet++
		}
	}
	w.sub.Stop()
	st := w.sub.Stats()
	s := w.counter.Sample()
	s.Lost = st.Lost
	s.WithoutTimestamp = st.WithoutTimestamp
	return s, nil
}
