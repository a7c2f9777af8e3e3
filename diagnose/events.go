package diagnose

import (
	"context"
	"fmt"
	"time"

	"github.com/ct-exporter/ct-exporter/events"
	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/topk"
)

// EventSource is the LifetimeSource of the running kernel: one
// events.Subscriber for the length of a sample, counting into a
// LifetimeCounter. With nf_conntrack_timestamp=1 every flow that dies has
// a lifetime; without it only the flows created during the sample have
// one (from their NEW event), and the others count as without timestamp.
//
// The same subscriber counts who ends flows (events.Attribution): its
// window must cover the whole sample, see AttributionWindow.
type EventSource struct {
	// Config configures the subscriber; the zero value uses the defaults
	// of package events, except a Coalesce of 10 ms.
	Config events.Config
	// TopK is how many sources and silent-end destinations are read from
	// the attribution; 0 means DefaultTopK.
	TopK int
}

// Watch implements LifetimeSource.
func (e EventSource) Watch(ctx context.Context, target netns.Target) (LifetimeWatch, error) {
	counter := NewLifetimeCounter()
	cfg := e.Config
	if cfg.Coalesce == 0 {
		cfg.Coalesce = sampleCoalesce
	}
	sub := events.New(target, cfg, counter)
	if err := sub.Start(ctx); err != nil {
		return nil, fmt.Errorf("event subscriber: %w", err)
	}
	k := e.TopK
	if k <= 0 {
		k = DefaultTopK
	}
	return &eventWatch{sub: sub, counter: counter, topK: k}, nil
}

// AttributionWindow returns the window options of an events.Config whose
// Attribution counts every flow end of a sample of duration d: a window
// in one-minute steps that covers d, the table dump and the settling at
// the end, at least topk.DefaultWindow and at most topk.MaxSteps minutes.
// A longer sample counts the flow ends of its last hour.
func AttributionWindow(d time.Duration) topk.WindowOptions {
	const step = time.Minute
	need := (d + 3*time.Minute + step - 1) / step * step
	w := min(max(need, topk.DefaultWindow), topk.MaxSteps*step)
	return topk.WindowOptions{Window: w, Step: step}
}

// eventWatch is one running subscription.
type eventWatch struct {
	sub     *events.Subscriber
	counter *LifetimeCounter
	topK    int
}

// sampleCoalesce is the subscriber's Config.Coalesce unless the
// EventSource sets one: a sample is short, and its settling (below) reads
// the counts every settlePoll, so events are read within 10 ms rather
// than after up to the daemon's 5 s.
const sampleCoalesce = 10 * time.Millisecond

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
	ends, silent := w.sub.Attribution().Top(w.topK)
	s.Attribution = &AttributionSample{Ends: ends, Silent: silent}
	return s, nil
}
