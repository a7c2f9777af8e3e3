package topk

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func src(i int) Key { return AddrKey(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})) }

func TestWindowOptions(t *testing.T) {
	cases := []struct {
		opts      WindowOptions
		ok        bool
		window    time.Duration
		step      time.Duration
		summaries int
	}{
		{WindowOptions{}, true, 5 * time.Minute, time.Minute, 5},
		{WindowOptions{Window: time.Minute}, true, time.Minute, 12 * time.Second, 5},
		{WindowOptions{Window: time.Hour}, true, time.Hour, time.Minute, 60},
		{WindowOptions{Window: 7 * time.Minute}, true, 7 * time.Minute, time.Minute, 7},
		{WindowOptions{Window: 10 * time.Second, Step: time.Second}, true, 10 * time.Second, time.Second, 10},
		{WindowOptions{Window: 61 * time.Minute}, false, 0, 0, 0},
		{WindowOptions{Window: 90 * time.Minute}, false, 0, 0, 0},
		{WindowOptions{Window: 2 * time.Minute, Step: 2 * time.Minute}, false, 0, 0, 0},
		{WindowOptions{Window: 5 * time.Minute, Step: 7 * time.Second}, false, 0, 0, 0},
		{WindowOptions{Window: -time.Minute}, false, 0, 0, 0},
		{WindowOptions{Window: 3}, false, 0, 0, 0},
		{WindowOptions{Capacity: -1}, false, 0, 0, 0},
	}
	for _, c := range cases {
		w, err := NewWindow(c.opts)
		if !c.ok {
			if !errors.Is(err, ErrOptions) || w != nil || !errors.Is(c.opts.Validate(), ErrOptions) {
				t.Errorf("%+v: accepted (%v)", c.opts, err)
			}
			continue
		}
		if err != nil || c.opts.Validate() != nil {
			t.Errorf("%+v: %v", c.opts, err)
			continue
		}
		o := w.Options()
		if o.Window != c.window || o.Step != c.step || len(w.steps) != c.summaries || o.Capacity != DefaultWindowCapacity {
			t.Errorf("%+v: options %+v, %d summaries", c.opts, o, len(w.steps))
		}
	}
}

func TestWindowTop(t *testing.T) {
	type add struct {
		at    time.Duration // since the start
		key   int
		count int
	}
	cases := []struct {
		name  string
		adds  []add
		read  time.Duration
		k     int
		items []Item
		other uint64
	}{
		{name: "empty", read: 0, k: 3},
		{
			name: "ranked with ties in key order",
			adds: []add{{0, 1, 5}, {time.Second, 2, 7}, {2 * time.Second, 3, 5}, {3 * time.Second, 4, 1}},
			read: 4 * time.Second, k: 3,
			items: []Item{{src(2), 7}, {src(1), 5}, {src(3), 5}}, other: 1,
		},
		{
			name: "counts merged across steps",
			adds: []add{{0, 1, 2}, {time.Minute, 1, 3}, {2 * time.Minute, 2, 4}, {4*time.Minute + 59*time.Second, 1, 1}},
			read: 4*time.Minute + 59*time.Second, k: 1,
			items: []Item{{src(1), 6}}, other: 4,
		},
		{
			name: "the oldest step expires",
			adds: []add{{0, 1, 2}, {time.Minute, 1, 3}, {2 * time.Minute, 2, 4}},
			read: 5 * time.Minute, k: 2,
			items: []Item{{src(2), 4}, {src(1), 3}},
		},
		{
			name: "everything expires",
			adds: []add{{0, 1, 2}, {time.Minute, 1, 3}},
			read: 6 * time.Minute, k: 2,
		},
		{
			name: "a step reused after a full turn starts empty",
			adds: []add{{0, 1, 9}, {5 * time.Minute, 2, 1}},
			read: 5 * time.Minute, k: 2,
			items: []Item{{src(2), 1}},
		},
		{
			name: "k 0 reports everything as other",
			adds: []add{{0, 1, 2}, {time.Second, 2, 3}},
			read: time.Second, k: 0, other: 5,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			clk := newClock()
			start := clk.now()
			w, err := NewWindow(WindowOptions{Now: clk.now})
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range c.adds {
				clk.t = start.Add(a.at)
				for range a.count {
					w.Add(src(a.key))
				}
			}
			clk.t = start.Add(c.read)
			got := w.Top(c.k)
			var total uint64
			for _, it := range c.items {
				total += it.Count
			}
			total += c.other
			if !slices.Equal(got.Items, c.items) || got.Other != c.other || got.Total != total || got.MaxError != 0 {
				t.Fatalf("got %+v\nwant items %v other %d total %d", got, c.items, c.other, total)
			}
		})
	}
}

// event is one key added at one time, for the property tests.
type event struct {
	at  time.Duration
	key Key
}

// randomStream returns n events over span, keys drawn from a Zipf law
// over distinct keys, times in order.
func randomStream(r *rand.Rand, n, distinct int, span time.Duration) []event {
	z := rand.NewZipf(r, 1.1, 1, uint64(distinct-1))
	out := make([]event, n)
	for i := range out {
		out[i] = event{at: time.Duration(r.Int64N(int64(span))), key: src(int(z.Uint64()))}
	}
	slices.SortFunc(out, func(a, b event) int { return int(a.at - b.at) })
	return out
}

// exactWindow counts the events in the window the read at now covers.
func exactWindow(events []event, now, window, step time.Duration) map[Key]uint64 {
	from := (now/step)*step - window + step
	m := map[Key]uint64{}
	for _, e := range events {
		if e.at >= from && e.at <= now {
			m[e.key]++
		}
	}
	return m
}

func TestWindowProperties(t *testing.T) {
	for seed := range uint64(20) {
		r := rand.New(rand.NewPCG(seed, 99))
		capacity := 8 + r.IntN(64)
		distinct := 2 + r.IntN(200)
		k := 1 + r.IntN(12)
		window := time.Duration(1+r.IntN(10)) * time.Minute
		events := randomStream(r, 500+r.IntN(5000), distinct, 3*window)
		clk := newClock()
		start := clk.now()
		w, err := NewWindow(WindowOptions{Window: window, Capacity: capacity, Now: clk.now})
		if err != nil {
			t.Fatal(err)
		}
		step := w.Options().Step
		perStep := map[time.Duration]map[Key]bool{} // distinct keys per step
		next := 0
		for _, now := range []time.Duration{window / 3, window, 2 * window, 3 * window} {
			for ; next < len(events) && events[next].at <= now; next++ {
				e := events[next]
				clk.t = start.Add(e.at)
				w.Add(e.key)
				s := e.at / step
				if perStep[s] == nil {
					perStep[s] = map[Key]bool{}
				}
				perStep[s][e.key] = true
			}
			clk.t = start.Add(now)
			got := w.Top(k)
			exact := exactWindow(events[:next], now, window, step)
			var total, sum uint64
			for _, n := range exact {
				total += n
			}
			for _, it := range got.Items {
				sum += it.Count
			}
			// The rows and other add up to the window's exact total.
			if got.Total != total || sum+got.Other != total {
				t.Fatalf("seed %d at %v: total %d (exact %d), rows %d + other %d", seed, now, got.Total, total, sum, got.Other)
			}
			// Exact counts and order while every step's keys fit.
			fits := true
			for s := (now/step)*step/step - time.Duration(window/step) + 1; s <= now/step; s++ {
				if len(perStep[s]) > capacity {
					fits = false
				}
			}
			if fits {
				want := make([]Item, 0, len(exact))
				for key, n := range exact {
					want = append(want, Item{key, n})
				}
				slices.SortFunc(want, byCount)
				want = want[:min(k, len(want))]
				if got.MaxError != 0 || !slices.Equal(got.Items, want) || got.Distinct != len(exact) {
					t.Fatalf("seed %d at %v: exact case\n got %+v\nwant %v", seed, now, got, want)
				}
				continue
			}
			// Otherwise every count is within MaxError of the truth.
			if got.MaxError == 0 {
				t.Fatalf("seed %d at %v: steps overflowed, error bound 0", seed, now)
			}
			for _, it := range got.Items {
				diff := int64(it.Count) - int64(exact[it.Key])
				if uint64(max(diff, -diff)) > got.MaxError {
					t.Fatalf("seed %d at %v: %v counted %d, true %d, bound %d", seed, now, it.Key.Addr(), it.Count, exact[it.Key], got.MaxError)
				}
			}
		}
	}
}

func TestWindowMemoryBounded(t *testing.T) {
	clk := newClock()
	w, err := NewWindow(WindowOptions{Window: time.Minute, Step: 10 * time.Second, Capacity: 100, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	// 1000 distinct keys a second for 200 s.
	for i := range 200000 {
		if i%1000 == 0 {
			clk.advance(time.Second)
		}
		w.Add(src(i))
	}
	for _, s := range w.steps {
		if s.Distinct() > 100 || cap(s.keys) > 128 {
			t.Fatalf("step summary holds %d keys, capacity %d", s.Distinct(), cap(s.keys))
		}
	}
	// The read at 200 s covers the steps from 150 s: five full steps and
	// one of 1 s. Each step's bound is at most its total / capacity.
	if got := w.Top(5); got.Distinct != 600 || got.Total != 51000 || got.MaxError == 0 || got.MaxError > got.Total/100 {
		t.Fatalf("read %+v", got)
	}
}

func TestWindowAddDoesNotAllocate(t *testing.T) {
	clk := newClock()
	w, err := NewWindow(WindowOptions{Capacity: 256, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	src6 := func(i int) Key {
		return AddrPortKey(netip.AddrFrom16([16]byte{0x20, 1, 0xd, 0xb8, 15: byte(i)}), uint16(i))
	}
	i := 0
	run := func() {
		for range 1000 {
			w.Add(src(i % 5000))
			w.Add(src6(i))
			i++
		}
		clk.advance(10 * time.Second)
	}
	// Warm up: every step's summary grows to its capacity once.
	for range 60 {
		run()
	}
	if n := testing.AllocsPerRun(100, run); n != 0 {
		t.Fatalf("%v allocations per 2000 adds", n)
	}
}

func TestWindowConcurrentReads(t *testing.T) {
	w, err := NewWindow(WindowOptions{Window: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 20000 {
			w.Add(src(i % 300))
		}
	}()
	for range 50 {
		got := w.Top(3)
		var sum uint64
		for _, it := range got.Items {
			sum += it.Count
		}
		if sum+got.Other != got.Total {
			t.Fatalf("read %+v does not add up", got)
		}
	}
	wg.Wait()
	if got := w.Top(1); got.Total != 20000 {
		t.Fatalf("total %d, want 20000", got.Total)
	}
}

func BenchmarkWindowAdd(b *testing.B) {
	w, err := NewWindow(WindowOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		w.Add(src(i % 50000))
	}
}

// TestWindowAddAllAt counts occurrences in the step of the time given, not
// of the clock's time: an occurrence added at a time that has left the
// window is not read.
func TestWindowAddAllAt(t *testing.T) {
	clk := newClock()
	w, err := NewWindow(WindowOptions{Window: time.Minute, Step: 10 * time.Second, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	if !w.Now().Equal(clk.now()) {
		t.Fatalf("Now %v, want the clock's %v", w.Now(), clk.now())
	}
	old := w.Now()
	clk.advance(2 * time.Minute)
	w.AddAllAt([]Key{src(1)}, old) // its step left the window long ago
	w.AddAllAt([]Key{src(2)}, w.Now())
	w.AddAllAt([]Key{src(2)}, w.Now().Add(-30*time.Second))
	got := w.Top(5)
	if got.Total != 2 || len(got.Items) != 1 || got.Items[0].Key != src(2) || got.Items[0].Count != 2 {
		t.Fatalf("read %+v, want 2 occurrences of %v only", got, src(2))
	}
}

// TestWindowAddAllAtCountsLikeAdd adds the same keys one by one to one
// window and in batches to another: every read agrees, and a batch at a
// time that has left the window is not read.
func TestWindowAddAllAtCountsLikeAdd(t *testing.T) {
	clk := newClock()
	opts := WindowOptions{Window: time.Minute, Step: 10 * time.Second, Capacity: 32, Now: clk.now}
	one, err := NewWindow(opts)
	if err != nil {
		t.Fatal(err)
	}
	batched, err := NewWindow(opts)
	if err != nil {
		t.Fatal(err)
	}
	old := clk.now()
	clk.advance(2 * time.Minute)
	var batch []Key
	for i := range 500 {
		k := src(i % 11 * (i % 3)) // skewed: 0 most often
		one.Add(k)
		batch = append(batch, k)
		if len(batch) == 7 || i == 499 {
			batched.AddAllAt(batch, clk.now())
			batch = batch[:0]
		}
		if i%50 == 49 {
			clk.advance(3 * time.Second)
		}
	}
	batched.AddAllAt(nil, clk.now())
	batched.AddAllAt([]Key{src(1), src(1)}, old) // its step left the window
	got, want := batched.Top(5), one.Top(5)
	if want.Total == 0 || !reflect.DeepEqual(got, want) {
		t.Fatalf("batched read %+v, one by one %+v", got, want)
	}
}
