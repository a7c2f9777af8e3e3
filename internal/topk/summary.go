package topk

import (
	"cmp"
	"slices"
)

// Summary counts items in one pass with at most a fixed number of
// counters, using the Space-Saving algorithm (Metwally, Agrawal, El Abbadi,
// 2005).
//
// While no more than capacity distinct items have been seen every count is
// exact. Beyond that, a new item takes over the counter of the item with
// the smallest count c and starts at c+1 (c+n for AddCount), remembering c
// as its possible overcount. Then every reported count is at most Bound()
// too high, Bound() <= N / capacity for N items counted, an item without a
// counter was seen at most Bound() times, and any item counted more than
// N / capacity times is certain to hold a counter. The counts always sum
// to N.
//
// Memory grows with the number of distinct items up to capacity and is kept
// by Reset, so a summary reused across scans stops allocating. Lookups use
// an open-addressing hash table with linear probing; the min-heap that
// finds the smallest counter is built only when the summary first fills.
// A Summary is not safe for concurrent use.
type Summary struct {
	capacity int
	seed     uint64

	keys   []Key
	counts []uint64
	errs   []uint64 // possible overcount of each counter
	pos    []int32  // heap position of each counter, once heaped
	heap   []int32  // counter indices, a min-heap by count
	heaped bool

	index []int32 // counter index + 1; 0 is an empty slot
	total uint64
}

// NewSummary returns an empty Summary of at most capacity counters (at
// least 1) whose hash table is keyed with seed; pass a random seed
// (math/rand/v2.Uint64) outside tests.
func NewSummary(capacity int, seed uint64) *Summary {
	return &Summary{capacity: max(capacity, 1), seed: seed}
}

// Capacity returns the number of counters.
func (s *Summary) Capacity() int { return s.capacity }

// Reset empties the summary and keeps its memory.
func (s *Summary) Reset() {
	s.keys = s.keys[:0]
	s.counts = s.counts[:0]
	s.errs = s.errs[:0]
	s.pos = s.pos[:0]
	s.heap = s.heap[:0]
	s.heaped = false
	clear(s.index)
	s.total = 0
}

// slot returns the index-table slot that holds k, or the empty slot where
// k belongs, and whether k was found.
func (s *Summary) slot(k Key) (uint64, bool) {
	mask := uint64(len(s.index) - 1)
	i := k.hash(s.seed) & mask
	for {
		c := s.index[i]
		if c == 0 {
			return i, false
		}
		if s.keys[c-1] == k {
			return i, true
		}
		i = (i + 1) & mask
	}
}

// grow doubles the index table (or creates it) and re-inserts every key.
func (s *Summary) grow() {
	n := max(len(s.index)*2, 1024)
	s.index = make([]int32, n)
	for c, k := range s.keys {
		i, _ := s.slot(k)
		s.index[i] = int32(c + 1)
	}
}

// remove empties slot i, shifting back the entries of the probe run after
// it so that every key stays reachable from its home slot.
func (s *Summary) remove(i uint64) {
	mask := uint64(len(s.index) - 1)
	j := i
	for {
		j = (j + 1) & mask
		c := s.index[j]
		if c == 0 {
			break
		}
		home := s.keys[c-1].hash(s.seed) & mask
		// Move the entry at j into the hole at i unless its home lies
		// cyclically in (i, j].
		if (j > i && (home <= i || home > j)) || (j < i && home <= i && home > j) {
			s.index[i] = c
			i = j
		}
	}
	s.index[i] = 0
}

// Add counts one occurrence of k.
func (s *Summary) Add(k Key) { s.AddCount(k, 1) }

// AddCount counts n occurrences of k at once (weighted Space-Saving: the
// guarantees above hold with N the sum of the counts added).
func (s *Summary) AddCount(k Key, n uint64) {
	if n == 0 {
		return
	}
	s.total += n
	if len(s.index) == 0 {
		s.grow()
	}
	i, found := s.slot(k)
	if found {
		c := s.index[i] - 1
		s.counts[c] += n
		if s.heaped {
			s.down(int(s.pos[c]))
		}
		return
	}
	if len(s.keys) < s.capacity {
		c := int32(len(s.keys))
		s.keys = append(s.keys, k)
		s.counts = append(s.counts, n)
		s.errs = append(s.errs, 0)
		if 2*len(s.keys) > len(s.index) {
			s.grow()
		} else {
			s.index[i] = c + 1
		}
		return
	}
	// Full: the counter with the smallest count goes to k.
	if !s.heaped {
		s.buildHeap()
	}
	c := s.heap[0]
	old, _ := s.slot(s.keys[c])
	s.remove(old)
	minCount := s.counts[c]
	s.keys[c] = k
	s.errs[c] = minCount
	s.counts[c] = minCount + n
	i, _ = s.slot(k)
	s.index[i] = c + 1
	s.down(0)
}

// buildHeap arranges every counter in a min-heap by count.
func (s *Summary) buildHeap() {
	n := len(s.keys)
	s.heap = s.heap[:0]
	s.pos = s.pos[:0]
	for c := range n {
		s.heap = append(s.heap, int32(c))
		s.pos = append(s.pos, int32(c))
	}
	for p := n/2 - 1; p >= 0; p-- {
		s.down(p)
	}
	s.heaped = true
}

// down restores the heap below position p after its count grew.
func (s *Summary) down(p int) {
	h := s.heap
	n := len(h)
	for {
		l := 2*p + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && s.counts[h[r]] < s.counts[h[l]] {
			m = r
		}
		if s.counts[h[m]] >= s.counts[h[p]] {
			return
		}
		h[p], h[m] = h[m], h[p]
		s.pos[h[p]] = int32(p)
		s.pos[h[m]] = int32(m)
		p = m
	}
}

// Item is one key of a top-K list with its count.
type Item struct {
	Key   Key
	Count uint64
}

// byCount orders items by count, highest first, ties in key order.
func byCount(a, b Item) int {
	if c := cmp.Compare(b.Count, a.Count); c != 0 {
		return c
	}
	return a.Key.Compare(b.Key)
}

// Top returns the k items with the highest counts, highest first, ties in
// key order; the sum of the other counts, so that the returned counts and
// other add up to Total; and the largest possible overcount among the
// returned items (0 when they are exact).
func (s *Summary) Top(k int) (items []Item, other, maxErr uint64) {
	if k <= 0 {
		return nil, s.total, 0
	}
	order := make([]int32, len(s.keys))
	for c := range order {
		order[c] = int32(c)
	}
	slices.SortFunc(order, func(a, b int32) int {
		return byCount(Item{s.keys[a], s.counts[a]}, Item{s.keys[b], s.counts[b]})
	})
	order = order[:min(k, len(order))]
	items = make([]Item, len(order))
	var sum uint64
	for i, c := range order {
		items[i] = Item{Key: s.keys[c], Count: s.counts[c]}
		sum += s.counts[c]
		maxErr = max(maxErr, s.errs[c])
	}
	return items, s.total - sum, maxErr
}

// each calls fn with every counter's key and count.
func (s *Summary) each(fn func(Key, uint64)) {
	for c, k := range s.keys {
		fn(k, s.counts[c])
	}
}

// Distinct returns the number of counters in use: the number of distinct
// items while the summary has not filled, its capacity once it has.
func (s *Summary) Distinct() int { return len(s.keys) }

// Total returns the sum of the counts added since the last Reset.
func (s *Summary) Total() uint64 { return s.total }

// Bound returns how much any count may exceed the true count of its key,
// which is also the most an item without a counter may have been seen:
// the smallest count once the summary has filled and started to evict
// (at most Total / capacity), 0 before.
func (s *Summary) Bound() uint64 {
	if !s.heaped {
		return 0
	}
	return s.counts[s.heap[0]]
}
