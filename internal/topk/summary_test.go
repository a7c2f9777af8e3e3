package topk

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// exactTop is the reference: exact counts, highest first, ties by key.
func exactTop(stream []Key, k int) (top []Item, other uint64, counts map[Key]uint64) {
	counts = map[Key]uint64{}
	for _, x := range stream {
		counts[x]++
	}
	for x, n := range counts {
		top = append(top, Item{x, n})
	}
	slices.SortFunc(top, byCount)
	top = top[:min(k, len(top))]
	other = uint64(len(stream))
	for _, c := range top {
		other -= c.Count
	}
	return top, other, counts
}

// checkIndex verifies that every counter's key is found in its own slot
// and that the index holds nothing else.
func checkIndex(t *testing.T, s *Summary) {
	t.Helper()
	used := 0
	for _, c := range s.index {
		if c != 0 {
			used++
		}
	}
	if used != len(s.keys) {
		t.Fatalf("index holds %d entries for %d counters", used, len(s.keys))
	}
	for c, k := range s.keys {
		i, ok := s.slot(k)
		if !ok || s.index[i] != int32(c+1) {
			t.Fatalf("key %v of counter %d not found", k, c)
		}
	}
}

func zipfStream(r *rand.Rand, n, distinct int) []Key {
	z := rand.NewZipf(r, 1.2, 1, uint64(distinct-1))
	out := make([]Key, n)
	for i := range out {
		out[i] = Key{lo: z.Uint64(), kind: kindV4}
	}
	return out
}

func TestSummaryExactBelowCapacity(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	stream := zipfStream(r, 50000, 3000)
	s := NewSummary(4096, 42)
	for _, x := range stream {
		s.Add(x)
	}
	checkIndex(t, s)
	if s.Bound() != 0 {
		t.Fatalf("bound %d below capacity", s.Bound())
	}
	got, other, maxErr := s.Top(10)
	want, wantOther, _ := exactTop(stream, 10)
	if !slices.Equal(got, want) || other != wantOther || maxErr != 0 {
		t.Fatalf("top = %v other %d err %d\nwant %v other %d", got, other, maxErr, want, wantOther)
	}
}

func TestSummaryBoundedAboveCapacity(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	// Heavy hitters in a sea of values seen once or twice.
	var stream []Key
	for i := range 20 {
		for range 2000 - 50*i {
			stream = append(stream, Key{lo: uint64(i), kind: kindV4})
		}
	}
	for i := range 100000 {
		stream = append(stream, Key{lo: uint64(1000 + i), kind: kindV4})
		if i%3 == 0 {
			stream = append(stream, Key{lo: uint64(1000 + i), kind: kindV4})
		}
	}
	r.Shuffle(len(stream), func(i, j int) { stream[i], stream[j] = stream[j], stream[i] })
	const capacity = 1024
	s := NewSummary(capacity, 7)
	for _, x := range stream {
		s.Add(x)
	}
	checkIndex(t, s)
	if s.Distinct() != capacity || s.Bound() == 0 || s.Bound() > uint64(len(stream))/capacity {
		t.Fatalf("bound %d distinct %d", s.Bound(), s.Distinct())
	}
	n := uint64(len(stream))
	var sum uint64
	for _, c := range s.counts {
		sum += c
	}
	if sum != n {
		t.Fatalf("counters sum to %d, want %d", sum, n)
	}
	got, other, maxErr := s.Top(10)
	want, _, exact := exactTop(stream, 10)
	if maxErr > s.Bound() {
		t.Fatalf("max error %d above the bound %d", maxErr, s.Bound())
	}
	// Every key without a counter was seen at most Bound() times.
	held := map[Key]bool{}
	for _, k := range s.keys {
		held[k] = true
	}
	for k, n := range exact {
		if !held[k] && n > s.Bound() {
			t.Fatalf("%v seen %d times has no counter, bound %d", k, n, s.Bound())
		}
	}
	var gotSum uint64
	for i, c := range got {
		gotSum += c.Count
		if c.Count < exact[c.Key] || c.Count > exact[c.Key]+maxErr {
			t.Fatalf("%v counted %d, true %d, max error %d", c.Key, c.Count, exact[c.Key], maxErr)
		}
		// The heavy hitters are far apart, so the order is exact.
		if c.Key != want[i].Key {
			t.Fatalf("rank %d: %v, want %v", i, c.Key, want[i].Key)
		}
	}
	if gotSum+other != n {
		t.Fatalf("top %d + other %d != %d", gotSum, other, n)
	}
}

func TestSummaryEvictionKeepsIndexConsistent(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	s := NewSummary(37, 9)
	for i := range 20000 {
		s.Add(Key{hi: r.Uint64N(3), lo: r.Uint64N(200), kind: uint8(i % 2)})
		if i%997 == 0 {
			checkIndex(t, s)
		}
	}
	checkIndex(t, s)
	for p := 1; p < len(s.heap); p++ {
		if s.counts[s.heap[(p-1)/2]] > s.counts[s.heap[p]] {
			t.Fatalf("heap order broken at %d", p)
		}
		if s.pos[s.heap[p]] != int32(p) {
			t.Fatalf("position of heap entry %d is %d", p, s.pos[s.heap[p]])
		}
	}
}

func TestSummaryTopKZeroAndReset(t *testing.T) {
	s := NewSummary(8, 1)
	for i := range 100 {
		s.Add(Key{lo: uint64(i % 20)})
	}
	if top, other, _ := s.Top(0); top != nil || other != 100 {
		t.Fatalf("top(0) = %v, %d", top, other)
	}
	s.Reset()
	s.Add(Key{lo: 5})
	s.Add(Key{lo: 5})
	s.Add(Key{lo: 6})
	top, other, maxErr := s.Top(5)
	want := []Item{{NumberKey(5), 2}, {NumberKey(6), 1}}
	if !slices.Equal(top, want) || other != 0 || maxErr != 0 || s.Bound() != 0 || s.Total() != 3 {
		t.Fatalf("after reset: %v other %d err %d", top, other, maxErr)
	}
	checkIndex(t, s)
}

func TestSummaryReuseDoesNotAllocate(t *testing.T) {
	s := NewSummary(512, 3)
	keys := make([]Key, 5000)
	for i := range keys {
		keys[i] = Key{lo: uint64(i * 7919 % 3000), kind: kindV4}
	}
	fill := func() {
		s.Reset()
		for _, k := range keys {
			s.Add(k)
		}
	}
	fill()
	if n := testing.AllocsPerRun(5, fill); n != 0 {
		t.Fatalf("%v allocations per reused scan", n)
	}
}

func BenchmarkSummaryAddDistinct(b *testing.B) {
	s := NewSummary(1<<16, 1)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		s.Add(Key{lo: uint64(i), kind: kindV4})
	}
}

func BenchmarkSummaryAddFew(b *testing.B) {
	s := NewSummary(1<<16, 1)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		s.Add(Key{lo: uint64(i % 1000), kind: kindV4})
	}
}
