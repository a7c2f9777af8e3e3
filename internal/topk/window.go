package topk

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// Defaults and limits of a Window.
const (
	// DefaultWindow is the default length of the sliding window.
	DefaultWindow = 5 * time.Minute
	// MaxStep is the coarsest time step: a window moves on at least once a
	// minute.
	MaxStep = time.Minute
	// MaxSteps is the most steps (summaries) a window keeps.
	MaxSteps = 60
	// DefaultK is the default number of keys a read reports by name.
	DefaultK = 10
	// DefaultWindowCapacity is the default number of counters per step.
	DefaultWindowCapacity = 1024
)

// ErrOptions is wrapped by the error of invalid WindowOptions.
var ErrOptions = errors.New("invalid top-k window options")

// WindowOptions configure a Window.
type WindowOptions struct {
	// Window is the length of the sliding window; 0 means DefaultWindow.
	Window time.Duration
	// Step is how often the window moves on; 0 means Window/5, at most
	// MaxStep. Window must be a whole number of steps, at most MaxSteps.
	Step time.Duration
	// Capacity is the number of counters of each step's summary; 0 means
	// DefaultWindowCapacity. Counts are exact while each step sees at most
	// this many distinct keys. A counter costs about 60 bytes once used.
	Capacity int
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// withDefaults returns o with its zero fields set to the defaults.
func (o WindowOptions) withDefaults() WindowOptions {
	if o.Window == 0 {
		o.Window = DefaultWindow
	}
	if o.Step == 0 {
		o.Step = min(o.Window/5, MaxStep)
	}
	if o.Capacity == 0 {
		o.Capacity = DefaultWindowCapacity
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Validate reports whether the options, defaults applied, describe a
// window NewWindow accepts; the error wraps ErrOptions.
func (o WindowOptions) Validate() error {
	o = o.withDefaults()
	switch {
	case o.Window < 0 || o.Step <= 0:
		return fmt.Errorf("%w: window %v, step %v: both must be positive", ErrOptions, o.Window, o.Step)
	case o.Step > MaxStep:
		return fmt.Errorf("%w: step %v is longer than %v", ErrOptions, o.Step, MaxStep)
	case o.Window%o.Step != 0:
		return fmt.Errorf("%w: window %v is not a whole number of %v steps", ErrOptions, o.Window, o.Step)
	case o.Window/o.Step > MaxSteps:
		return fmt.Errorf("%w: window %v holds more than %d steps of %v", ErrOptions, o.Window, MaxSteps, o.Step)
	case o.Capacity < 0:
		return fmt.Errorf("%w: capacity %d is negative", ErrOptions, o.Capacity)
	}
	return nil
}

// Window counts keys over a sliding time window in bounded memory: one
// Summary per time step in a ring, merged when read. Add allocates nothing
// once every step's summary has grown to its capacity. It is safe for
// concurrent use: one goroutine may add while another reads.
type Window struct {
	opts WindowOptions
	base time.Time // time of step 0

	mu      sync.Mutex
	steps   []*Summary
	stepNo  []int64 // step number each summary counts; -1 when unused
	scratch *Summary
}

// NewWindow returns an empty Window, or an error wrapping ErrOptions.
func NewWindow(opts WindowOptions) (*Window, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	n := int(opts.Window / opts.Step)
	w := &Window{opts: opts, base: opts.Now(), steps: make([]*Summary, n), stepNo: make([]int64, n)}
	for i := range w.steps {
		w.steps[i] = NewSummary(opts.Capacity, rand.Uint64())
		w.stepNo[i] = -1
	}
	w.scratch = NewSummary(n*w.steps[0].Capacity(), rand.Uint64())
	return w, nil
}

// Options returns the options in effect, defaults applied.
func (w *Window) Options() WindowOptions { return w.opts }

// step returns the number of the step that t falls in.
func (w *Window) step(t time.Time) int64 {
	d := t.Sub(w.base)
	if d < 0 {
		return 0
	}
	return int64(d / w.opts.Step)
}

// Add counts one occurrence of k now.
func (w *Window) Add(k Key) {
	t := w.opts.Now()
	w.mu.Lock()
	if s := w.current(t); s != nil {
		s.Add(k)
	}
	w.mu.Unlock()
}

// Now returns the current time of the window's clock (WindowOptions.Now).
func (w *Window) Now() time.Time { return w.opts.Now() }

// AddAllAt counts one occurrence of each key of ks at t, a time read from
// the window's clock, under one lock: a caller that receives keys in
// batches locks the window once per batch, not once per key.
func (w *Window) AddAllAt(ks []Key, t time.Time) {
	if len(ks) == 0 {
		return
	}
	w.mu.Lock()
	if s := w.current(t); s != nil {
		for _, k := range ks {
			s.Add(k)
		}
	}
	w.mu.Unlock()
}

// current returns the summary of the step that t falls in, emptied first
// if it last counted an older step, or nil if its ring slot already
// counts a newer step: t's step has left the window, and what it would
// count is not read. w.mu must be held.
func (w *Window) current(t time.Time) *Summary {
	now := w.step(t)
	i := int(now % int64(len(w.steps)))
	if n := w.stepNo[i]; n != now {
		if n > now {
			return nil
		}
		w.steps[i].Reset()
		w.stepNo[i] = now
	}
	return w.steps[i]
}

// WindowTop is one read of a Window.
type WindowTop struct {
	// Items holds at most K keys with their counts in the window, highest
	// first, ties in key order.
	Items []Item
	// Other is the count of every other key; Other and the counts of Items
	// add up to Total.
	Other uint64
	// Total is the exact number of occurrences counted in the window.
	Total uint64
	// MaxError is how far any count in Items may be from the key's true
	// count in the window, either way: 0 while every step saw no more
	// distinct keys than its capacity. It is the sum of the steps'
	// Summary.Bound.
	MaxError uint64
	// Distinct is the number of distinct keys held by the window's
	// counters: the number of distinct keys in the window while MaxError
	// is 0.
	Distinct int
}

// Top returns the k keys counted most often in the window that ends now:
// the current step and the steps before it, Window in all, so the oldest
// occurrences counted are between Window - Step and Window old.
func (w *Window) Top(k int) WindowTop {
	now := w.step(w.opts.Now())
	oldest := now - int64(len(w.steps)) + 1
	w.mu.Lock()
	defer w.mu.Unlock()
	var bound uint64
	w.scratch.Reset()
	for i, s := range w.steps {
		if n := w.stepNo[i]; n < oldest || n > now {
			continue
		}
		// The merge holds every step's counters (its capacity is their
		// sum), so it adds no error of its own.
		s.each(w.scratch.AddCount)
		bound += s.Bound()
	}
	items, other, _ := w.scratch.Top(k)
	return WindowTop{Items: items, Other: other, Total: w.scratch.Total(), MaxError: bound, Distinct: w.scratch.Distinct()}
}
