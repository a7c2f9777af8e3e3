package tablescan

import (
	"cmp"
	"slices"
)

// key identifies one counted item: an address (hi, lo and the family in
// kind) or a small number in lo (a protocol and port, a zone, a mark).
type key struct {
	hi, lo uint64
	kind   uint8
}

// compare orders keys: by kind, then numerically.
func (k key) compare(o key) int {
	if c := cmp.Compare(k.kind, o.kind); c != 0 {
		return c
	}
	if c := cmp.Compare(k.hi, o.hi); c != 0 {
		return c
	}
	return cmp.Compare(k.lo, o.lo)
}

// mix64 is the murmur3 64-bit finaliser.
func mix64(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// hash hashes k with a per-summary random seed, so that no set of
// addresses collides on every exporter.
func (k key) hash(seed uint64) uint64 {
	return mix64(mix64(seed^k.hi) ^ k.lo ^ uint64(k.kind)<<56)
}

// summary counts items in one pass with at most capacity counters, using
// the Space-Saving algorithm (Metwally, Agrawal, El Abbadi, 2005).
//
// While no more than capacity distinct items have been seen every count is
// exact. Beyond that, a new item takes over the counter of the item with
// the smallest count c and starts at c+1, remembering c as its possible
// overcount. Then every reported count is at most c too high, c <= N /
// capacity for N items counted, and any item counted more than N /
// capacity times is certain to hold a counter. The counts always sum to N.
//
// Memory grows with the number of distinct items up to capacity and is kept
// by reset, so a summary reused across scans stops allocating. Lookups use
// an open-addressing hash table with linear probing; the min-heap that
// finds the smallest counter is built only when the summary first fills.
type summary struct {
	capacity int
	seed     uint64

	keys   []key
	counts []uint64
	errs   []uint64 // possible overcount of each counter
	pos    []int32  // heap position of each counter, once heaped
	heap   []int32  // counter indices, a min-heap by count
	heaped bool

	index []int32 // counter index + 1; 0 is an empty slot
	total uint64
}

// newSummary returns an empty summary of at most capacity counters.
func newSummary(capacity int, seed uint64) *summary {
	return &summary{capacity: max(capacity, 1), seed: seed}
}

// reset empties the summary and keeps its memory.
func (s *summary) reset() {
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
func (s *summary) slot(k key) (uint64, bool) {
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
func (s *summary) grow() {
	n := max(len(s.index)*2, 1024)
	s.index = make([]int32, n)
	for c, k := range s.keys {
		i, _ := s.slot(k)
		s.index[i] = int32(c + 1)
	}
}

// remove empties slot i, shifting back the entries of the probe run after
// it so that every key stays reachable from its home slot.
func (s *summary) remove(i uint64) {
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

// add counts one occurrence of k.
func (s *summary) add(k key) {
	s.total++
	if len(s.index) == 0 {
		s.grow()
	}
	i, found := s.slot(k)
	if found {
		c := s.index[i] - 1
		s.counts[c]++
		if s.heaped {
			s.down(int(s.pos[c]))
		}
		return
	}
	if len(s.keys) < s.capacity {
		c := int32(len(s.keys))
		s.keys = append(s.keys, k)
		s.counts = append(s.counts, 1)
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
	s.counts[c] = minCount + 1
	i, _ = s.slot(k)
	s.index[i] = c + 1
	s.down(0)
}

// buildHeap arranges every counter in a min-heap by count.
func (s *summary) buildHeap() {
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
func (s *summary) down(p int) {
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

// counted is one item of a top-K list.
type counted struct {
	key   key
	count uint64
}

// top returns the k items with the highest counts, highest first, ties in
// key order; the sum of the other counts, so that the returned counts and
// other add up to the number of items added; and the largest possible
// overcount among the returned items (0 when they are exact).
func (s *summary) top(k int) (items []counted, other, maxErr uint64) {
	if k <= 0 {
		return nil, s.total, 0
	}
	order := make([]int32, len(s.keys))
	for c := range order {
		order[c] = int32(c)
	}
	slices.SortFunc(order, func(a, b int32) int {
		if c := cmp.Compare(s.counts[b], s.counts[a]); c != 0 {
			return c
		}
		return s.keys[a].compare(s.keys[b])
	})
	order = order[:min(k, len(order))]
	items = make([]counted, len(order))
	var sum uint64
	for i, c := range order {
		items[i] = counted{key: s.keys[c], count: s.counts[c]}
		sum += s.counts[c]
		maxErr = max(maxErr, s.errs[c])
	}
	return items, s.total - sum, maxErr
}

// distinct returns the number of counters in use: the number of distinct
// items while the summary has not filled.
func (s *summary) distinct() int { return len(s.keys) }

// evicting reports whether the summary has filled and counts approximately.
func (s *summary) evicting() bool { return s.heaped }
