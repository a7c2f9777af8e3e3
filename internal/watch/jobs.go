package watch

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/ct-exporter/ct-exporter/internal/netns"
)

// jobs is the background work of a Watcher: one job per watched
// namespace, each keeping the last outcome of type T.
type jobs[T any] struct {
	mu  sync.Mutex
	all map[netns.Target]*job[T]
}

// job is the background work of one namespace.
type job[T any] struct {
	cancel context.CancelFunc
	// done is closed when the job's goroutine returns.
	done chan struct{}
	last atomic.Pointer[T]
}

// start registers a job for target, with a context that Forget cancels,
// runs first (when not nil) before it returns, and then run on a
// goroutine of its own; done closes when run returns. It fails with
// ErrAlreadyWatched when target has a job.
func (j *jobs[T]) start(ctx context.Context, target netns.Target, first, run func(ctx context.Context, w *job[T])) error {
	j.mu.Lock()
	if _, ok := j.all[target]; ok {
		j.mu.Unlock()
		return ErrAlreadyWatched
	}
	if j.all == nil {
		j.all = map[netns.Target]*job[T]{}
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &job[T]{cancel: cancel, done: make(chan struct{})}
	j.all[target] = w
	j.mu.Unlock()
	if first != nil {
		first(ctx, w)
	}
	go func() {
		defer close(w.done)
		run(ctx, w)
	}()
	return nil
}

// forget stops the job of target and waits for it to end; forgetting a
// namespace without a job is a no-op.
func (j *jobs[T]) forget(target netns.Target) {
	j.mu.Lock()
	w, ok := j.all[target]
	delete(j.all, target)
	j.mu.Unlock()
	if !ok {
		return
	}
	w.cancel()
	<-w.done
}

// get returns the job of target, nil when it has none.
func (j *jobs[T]) get(target netns.Target) *job[T] {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.all[target]
}

// last returns the last outcome of target's job without waiting for one
// in progress (nil before the first); watched is false when target has no
// job.
func (j *jobs[T]) last(target netns.Target) (outcome *T, watched bool) {
	w := j.get(target)
	if w == nil {
		return nil, false
	}
	return w.last.Load(), true
}
