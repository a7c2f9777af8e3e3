package watch

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/sysctl"
)

// DefaultSettingsInterval is the default time between two readings of a
// namespace's settings.
const DefaultSettingsInterval = 60 * time.Second

// ErrNotWatched reports a read of a namespace that is not watched.
var ErrNotWatched = errors.New("namespace not watched")

// ErrNoReading reports a read of a namespace whose settings have not been
// read yet.
var ErrNoReading = errors.New("no settings reading yet")

// SysctlSource reads the sysctls of a namespace; sysctl.Reader is one.
type SysctlSource interface {
	// Read reads conntrack sysctls (under /proc/sys/net/netfilter).
	Read(ctx context.Context, target netns.Target, names ...string) (sysctl.Values, error)
	// ReadIPv4 reads IPv4 sysctls (under /proc/sys/net/ipv4).
	ReadIPv4(ctx context.Context, target netns.Target, names ...string) (sysctl.Values, error)
}

// bothReader is a SysctlSource that reads the conntrack and the IPv4
// sysctls entering the namespace once; sysctl.Reader is one. Each entry
// costs a thread of its own, thrown away afterwards.
type bothReader interface {
	ReadBoth(ctx context.Context, target netns.Target, conntrack, ipv4 []string) (sysctl.Values, sysctl.Values, error)
}

// SettingsOptions configure Settings.
type SettingsOptions struct {
	// Interval is the time between two readings of a namespace; the
	// first is taken when the namespace is watched. 0 means
	// DefaultSettingsInterval.
	Interval time.Duration
	// Timeout bounds one reading; 0 means no bound.
	Timeout time.Duration
	// Source reads the sysctls; nil means sysctl.Reader{}.
	Source SysctlSource
	// Conntrack and IPv4 are the names read under each directory; nil
	// means sysctl.Conntrack() and sysctl.Keepalive().
	Conntrack, IPv4 []string
	// Logger receives failed readings; nil logs nothing.
	Logger *zap.Logger
}

// SettingsReading is one reading of a namespace's settings; never
// changed once returned.
type SettingsReading struct {
	// Conntrack holds the conntrack sysctls read, IPv4 the IPv4 ones.
	Conntrack, IPv4 sysctl.Values
	// Err is the error of the last reading; Conntrack and IPv4 are then
	// those of the last reading that succeeded, nil if none did.
	Err error
	// At is when the values were read; zero if no reading succeeded.
	At time.Time
}

// Settings is the Watcher that reads the sysctls of every watched
// namespace in the background, when the namespace is watched and then
// every interval, and keeps the last reading for scrapes: reading a
// namespace's sysctls means entering it on a thread of its own, a cost a
// scrape should not pay for values that rarely change. It also serves
// the readings as a SysctlSource, so a reader of sysctls can use it in
// place of sysctl.Reader.
type Settings struct {
	opts SettingsOptions

	jobs jobs[SettingsReading]
}

// settingsWatch is the background reading of one namespace.
type settingsWatch = job[SettingsReading]

// NewSettings returns Settings with opts.
func NewSettings(opts SettingsOptions) *Settings {
	if opts.Interval <= 0 {
		opts.Interval = DefaultSettingsInterval
	}
	if opts.Source == nil {
		opts.Source = sysctl.Reader{}
	}
	if opts.Conntrack == nil {
		opts.Conntrack = sysctl.Conntrack()
	}
	if opts.IPv4 == nil {
		opts.IPv4 = sysctl.Keepalive()
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	return &Settings{opts: opts}
}

// Watch implements Watcher: it reads the settings of target once before
// it returns (a failed reading is kept as the reading's error, not
// returned), then again every interval until ctx ends or Forget is
// called.
func (s *Settings) Watch(ctx context.Context, target netns.Target) error {
	read := func(ctx context.Context, w *settingsWatch) { s.readOnce(ctx, target, w) }
	loop := func(ctx context.Context, w *settingsWatch) { s.loop(ctx, target, w) }
	if err := s.jobs.start(ctx, target, read, loop); err != nil {
		return fmt.Errorf("settings: netns %s: %w", target, err)
	}
	return nil
}

// Forget implements Watcher: it stops the readings of target, waits for a
// reading in progress to end, and drops the last one.
func (s *Settings) Forget(target netns.Target) { s.jobs.forget(target) }

// Last returns the last reading of target without waiting for one in
// progress; watched is false when target is not watched.
func (s *Settings) Last(target netns.Target) (reading *SettingsReading, watched bool) {
	return s.jobs.last(target)
}

// Read implements SysctlSource from the last reading: the conntrack
// sysctls among names that it found. It fails when target is not watched
// (ErrNotWatched), and with the last reading's error when that failed.
// When names are those the readings take (every scrape asks for them),
// the reading's own values are returned, not a copy: the caller must not
// change them.
func (s *Settings) Read(_ context.Context, target netns.Target, names ...string) (sysctl.Values, error) {
	r, err := s.lastValues(target)
	if err != nil {
		return nil, err
	}
	return pick(r.Conntrack, s.opts.Conntrack, names), nil
}

// ReadIPv4 implements SysctlSource from the last reading, as Read does.
func (s *Settings) ReadIPv4(_ context.Context, target netns.Target, names ...string) (sysctl.Values, error) {
	r, err := s.lastValues(target)
	if err != nil {
		return nil, err
	}
	return pick(r.IPv4, s.opts.IPv4, names), nil
}

// Age returns how old the values Read serves for target are; ok is false
// when Read fails.
func (s *Settings) Age(target netns.Target) (age time.Duration, ok bool) {
	r, err := s.lastValues(target)
	if err != nil {
		return 0, false
	}
	return time.Since(r.At), true
}

// lastValues returns the last reading of target that has values.
func (s *Settings) lastValues(target netns.Target) (*SettingsReading, error) {
	r, watched := s.Last(target)
	switch {
	case !watched:
		return nil, fmt.Errorf("netns %s: %w", target, ErrNotWatched)
	case r == nil:
		return nil, fmt.Errorf("netns %s: %w", target, ErrNoReading)
	case r.Err != nil:
		return nil, r.Err
	}
	return r, nil
}

// pick returns the values of names that v, a reading of the sysctls
// read, holds: v itself when names are those read, else a copy.
func pick(v sysctl.Values, read, names []string) sysctl.Values {
	if slices.Equal(read, names) {
		return v
	}
	out := make(sysctl.Values, len(names))
	for _, name := range names {
		if x, ok := v[name]; ok {
			out[name] = x
		}
	}
	return out
}

// loop reads target every interval until ctx ends. The first reading of
// the loop waits a part of the interval that depends on the namespace's
// path (phase), so that the readings of namespaces watched at the same
// time spread over the interval instead of all coming at once: each
// enters its namespace on a fresh thread, and a burst of hundreds of
// them stood in the way of scrapes.
func (s *Settings) loop(ctx context.Context, target netns.Target, w *settingsWatch) {
	wait := time.NewTimer(phase(target, s.opts.Interval))
	select {
	case <-ctx.Done():
		wait.Stop()
		return
	case <-wait.C:
	}
	s.readOnce(ctx, target, w)
	ticker := time.NewTicker(s.opts.Interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		s.readOnce(ctx, target, w)
	}
}

// phase returns where in interval the readings of target fall: a hash of
// its path, so the same namespace keeps its place and different ones
// spread evenly.
func phase(target netns.Target, interval time.Duration) time.Duration {
	if interval <= 0 {
		return 0
	}
	h := fnv.New64a()
	h.Write([]byte(target.Path))
	return time.Duration(h.Sum64() % uint64(interval))
}

// readOnce reads the settings of target and stores the reading; a failed
// reading keeps the values of the last one that succeeded.
func (s *Settings) readOnce(ctx context.Context, target netns.Target, w *settingsWatch) {
	if s.opts.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.opts.Timeout)
		defer cancel()
	}
	at := time.Now()
	next := &SettingsReading{At: at}
	var err error
	if both, ok := s.opts.Source.(bothReader); ok {
		next.Conntrack, next.IPv4, err = both.ReadBoth(ctx, target, s.opts.Conntrack, s.opts.IPv4)
	} else {
		next.Conntrack, err = s.opts.Source.Read(ctx, target, s.opts.Conntrack...)
		if err == nil {
			next.IPv4, err = s.opts.Source.ReadIPv4(ctx, target, s.opts.IPv4...)
			if err != nil {
				err = fmt.Errorf("keepalive: %w", err)
			}
		}
	}
	if err != nil {
		next = &SettingsReading{Err: err}
		if prev := w.last.Load(); prev != nil {
			next.Conntrack, next.IPv4, next.At = prev.Conntrack, prev.IPv4, prev.At
		}
		s.opts.Logger.Warn("settings reading failed", zap.String("netns", target.Name), zap.Error(err))
	}
	w.last.Store(next)
}
