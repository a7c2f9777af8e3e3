package diagnose

import (
	"sort"
	"sync"

	"github.com/ct-exporter/ct-exporter/events"
	"github.com/ct-exporter/ct-exporter/histogram"
)

// LifetimeCounter counts the lifetimes of TCP flows per TCP state at
// death, in the classic buckets of the exporter's lifetime histogram
// (histogram.Buckets). Its Observe method makes it an events.Sink. It is
// safe for concurrent use.
type LifetimeCounter struct {
	mu     sync.Mutex
	bounds []float64
	counts map[string][]uint64
}

// NewLifetimeCounter returns an empty LifetimeCounter.
func NewLifetimeCounter() *LifetimeCounter {
	return &LifetimeCounter{bounds: histogram.Buckets(), counts: map[string][]uint64{}}
}

// Observe implements events.Sink: it records one flow that ended. Flows of
// other protocols than TCP are not counted.
func (c *LifetimeCounter) Observe(l events.Lifetime) {
	if histogram.ProtocolFromNumber(l.Protocol) != histogram.ProtocolTCP {
		return
	}
	// The bucket holding the lifetime: the first upper bound >= it.
	i := sort.SearchFloat64s(c.bounds, l.Seconds)
	name := histogram.EndStateFromTCP(l.TCPState).String()
	c.mu.Lock()
	defer c.mu.Unlock()
	counts, ok := c.counts[name]
	if !ok {
		counts = make([]uint64, len(c.bounds)+1)
		c.counts[name] = counts
	}
	counts[i]++
}

// Sample returns a copy of the counts; Lost and WithoutTimestamp are left
// to the caller.
func (c *LifetimeCounter) Sample() *LifetimeSample {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := &LifetimeSample{Bounds: append([]float64(nil), c.bounds...), Counts: make(map[string][]uint64, len(c.counts))}
	for k, v := range c.counts {
		out.Counts[k] = append([]uint64(nil), v...)
	}
	return out
}

// cumulative turns per-bucket counts into the cumulative buckets of the
// histogram package, and returns the total.
func cumulative(bounds []float64, counts []uint64) ([]histogram.Bucket, uint64) {
	out := make([]histogram.Bucket, 0, len(bounds))
	var total uint64
	for i, n := range counts {
		total += n
		if i < len(bounds) {
			out = append(out, histogram.Bucket{UpperBound: bounds[i], CumulativeCount: total})
		}
	}
	return out, total
}
