package watch

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/tablescan"
)

// Defaults of TableScanOptions.
const (
	DefaultTableInterval = 60 * time.Second
	DefaultTableTimeout  = 50 * time.Second
)

// TableScanner scans the conntrack table of one namespace;
// *tablescan.Scanner is one.
type TableScanner interface {
	Scan(ctx context.Context, target netns.Target) (*tablescan.Scan, error)
}

// TableScanOptions configure TableScans.
type TableScanOptions struct {
	// Interval is the time between the starts of two scans of a
	// namespace; the first scan starts when the namespace is watched.
	// 0 means DefaultTableInterval.
	Interval time.Duration
	// Timeout bounds one scan, not counting the wait for the scan of
	// another namespace to finish; 0 means DefaultTableTimeout.
	Timeout time.Duration
	// Scanner scans the tables. nil means a tablescan.Scanner built from
	// Scan.
	Scanner TableScanner
	// Scan configures the default Scanner: top K (0 disables every top-K
	// breakdown), per-zone and per-mark counts.
	Scan tablescan.Options
	// Logger receives failed scans; nil logs nothing.
	Logger *zap.Logger
}

// TableScans is the Watcher that scans the conntrack table of every
// watched namespace in the background, at Watch and then every interval,
// and keeps the outcome of the last scan for readers, who never wait for
// a scan. Scans of different namespaces run one at a time, because each
// dump walks the kernel's global hash table, and after each scan the next
// one waits as long as that scan took, so scanning keeps at most half of
// one CPU busy. When the scans of all namespaces take longer than that
// allows within the interval, each namespace is scanned less often.
type TableScans struct {
	opts TableScanOptions

	// sem lets one scan run at a time across namespaces.
	sem chan struct{}

	jobs jobs[TableState]
}

// tableWatch is the background scanning of one namespace.
type tableWatch = job[TableState]

// TableState is what the last scan of a namespace left; never changed
// once returned.
type TableState struct {
	// Last is the last successful scan, nil before the first.
	Last *tablescan.Scan
	// Err is the error of the last scan, nil if it succeeded.
	Err error
}

// NewTableScans returns TableScans with opts.
func NewTableScans(opts TableScanOptions) *TableScans {
	if opts.Interval <= 0 {
		opts.Interval = DefaultTableInterval
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTableTimeout
	}
	if opts.Scanner == nil {
		opts.Scanner = tablescan.NewScanner(opts.Scan)
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	return &TableScans{opts: opts, sem: make(chan struct{}, 1)}
}

// Watch implements Watcher: it starts scanning the namespace of target in
// the background, first right away, then every interval, until ctx ends
// or Forget is called.
func (t *TableScans) Watch(ctx context.Context, target netns.Target) error {
	loop := func(ctx context.Context, w *tableWatch) { t.loop(ctx, target, w) }
	if err := t.jobs.start(ctx, target, nil, loop); err != nil {
		return fmt.Errorf("table: netns %s: %w", target, err)
	}
	return nil
}

// Forget implements Watcher: it stops the scans of target, waits for a
// scan in progress to end, and drops the outcome.
func (t *TableScans) Forget(target netns.Target) { t.jobs.forget(target) }

// Last returns the outcome of the last scan of target without waiting for
// a scan in progress: nil before the first scan finished. watched is false
// when target is not watched.
func (t *TableScans) Last(target netns.Target) (state *TableState, watched bool) {
	return t.jobs.last(target)
}

// loop scans target until ctx ends.
func (t *TableScans) loop(ctx context.Context, target netns.Target, w *tableWatch) {
	ticker := time.NewTicker(t.opts.Interval)
	defer ticker.Stop()
	for {
		t.scanOnce(ctx, target, w)
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// scanOnce waits for any scan of another namespace to finish, runs one
// scan within the timeout, and stores its outcome.
func (t *TableScans) scanOnce(ctx context.Context, target netns.Target, w *tableWatch) {
	select {
	case t.sem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-t.sem }()
	start := time.Now()
	sctx, cancel := context.WithTimeout(ctx, t.opts.Timeout)
	defer cancel()
	s, err := t.opts.Scanner.Scan(sctx, target)
	if ctx.Err() != nil {
		return // the namespace is no longer watched
	}
	// The next scan of any namespace waits as long as this one took, so
	// scans keep at most half of one CPU busy however many namespaces
	// there are.
	defer func() {
		pause := time.NewTimer(time.Since(start))
		defer pause.Stop()
		select {
		case <-pause.C:
		case <-ctx.Done():
		}
	}()
	next := &TableState{Last: s}
	if err != nil {
		next = &TableState{Err: err}
		if prev := w.last.Load(); prev != nil {
			next.Last = prev.Last
		}
		t.opts.Logger.Warn("table scan failed", zap.String("netns", target.Name), zap.Error(err))
	} else {
		t.opts.Logger.Debug("table scan finished", zap.String("netns", target.Name),
			zap.Uint64("entries", s.Total), zap.Uint64("malformed", s.Malformed),
			zap.Duration("duration", s.Duration()))
	}
	w.last.Store(next)
}
