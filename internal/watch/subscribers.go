package watch

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/ct-exporter/ct-exporter/events"
	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/topk"
)

// EventSource is the background event subscriber of one namespace;
// *events.Subscriber is one.
type EventSource interface {
	// Sync has the subscriber count the events queued so far; call it
	// before the reads of a scrape (events.Subscriber.Sync).
	Sync(ctx context.Context) error
	// Stats returns the subscriber's counters.
	Stats() events.Stats
	// Top returns the k original-direction sources that ended the most
	// flows in the sliding window, and the k destinations (address and
	// port) with the most silent ends (events.Attribution.Top).
	Top(k int) (ends, silent topk.WindowTop)
	// Stop ends the subscriber and waits for it.
	Stop()
}

// StartEventSource starts a subscriber for target that hands lifetimes to
// sink.
type StartEventSource func(ctx context.Context, target netns.Target, sink events.Sink) (EventSource, error)

// SubscriberStarter returns a StartEventSource that starts an
// events.Subscriber with cfg.
func SubscriberStarter(cfg events.Config) StartEventSource {
	return func(ctx context.Context, target netns.Target, sink events.Sink) (EventSource, error) {
		s := events.New(target, cfg, sink)
		if err := s.Start(ctx); err != nil {
			return nil, err
		}
		return subscriberSource{s}, nil
	}
}

// subscriberSource is the EventSource of an events.Subscriber.
type subscriberSource struct{ *events.Subscriber }

// Top implements EventSource.
func (s subscriberSource) Top(k int) (ends, silent topk.WindowTop) {
	return s.Attribution().Top(k)
}

// ErrAlreadyWatched reports a Watch of a namespace a worker watches
// already.
var ErrAlreadyWatched = errors.New("namespace is watched already")

// Subscription is the event subscriber of one namespace and the sink it
// feeds.
type Subscription[S events.Sink] struct {
	Source EventSource
	Sink   S
}

// Subscribers is the Watcher that runs one event subscriber per
// namespace, each feeding a sink of its own made by newSink (a lifetime
// histogram, for example).
type Subscribers[S events.Sink] struct {
	start   StartEventSource
	newSink func(netns.Target) S

	mu   sync.Mutex
	subs map[netns.Target]Subscription[S]
}

// NewSubscribers returns Subscribers that start each namespace's
// subscriber with start, handing lifetimes to newSink(target).
func NewSubscribers[S events.Sink](start StartEventSource, newSink func(netns.Target) S) *Subscribers[S] {
	return &Subscribers[S]{start: start, newSink: newSink, subs: map[netns.Target]Subscription[S]{}}
}

// Watch implements Watcher: it starts the subscriber of target and returns
// the error of its first attempt to open the socket. Watching a namespace
// again is a no-op.
func (w *Subscribers[S]) Watch(ctx context.Context, target netns.Target) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.subs[target]; ok {
		return nil
	}
	sink := w.newSink(target)
	src, err := w.start(ctx, target, sink)
	if err != nil {
		return fmt.Errorf("events: %w", err)
	}
	w.subs[target] = Subscription[S]{Source: src, Sink: sink}
	return nil
}

// Forget implements Watcher: it stops the subscriber of target and drops
// its sink.
func (w *Subscribers[S]) Forget(target netns.Target) {
	w.mu.Lock()
	sub, ok := w.subs[target]
	delete(w.subs, target)
	w.mu.Unlock()
	if ok {
		sub.Source.Stop()
	}
}

// Get returns the subscription of target; ok is false when target is not
// watched.
func (w *Subscribers[S]) Get(target netns.Target) (sub Subscription[S], ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	sub, ok = w.subs[target]
	return sub, ok
}
