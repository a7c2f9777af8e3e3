package bench

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/ct-exporter/ct-exporter/internal/lab"
)

// Burst creates --size ASSURED ESTABLISHED entries over ctnetlink in a
// namespace watched by the exporter and by conntrack -E -e DESTROY, then
// removes them all: with one flush (the default), or one by one at --rate
// per second. Both listeners count the DESTROY events they got; the
// exporter also counts exactly the ones it lost.
type Burst struct{}

// Name implements Drill.
func (Burst) Name() string { return "burst" }

// Summary implements Drill.
func (Burst) Summary() string {
	return "create --size entries over ctnetlink, then flush them (or delete them at --rate/s for --duration); exporter vs conntrack -E"
}

// Defaults implements Drill.
func (Burst) Defaults() Params { return Params{Size: 200000} }

// Smoke implements Drill.
func (Burst) Smoke() Params { return Params{Size: 2000} }

// Plot implements Drill.
func (Burst) Plot() PlotSpec {
	return PlotSpec{X: "auto", XLabel: "entries flushed at once", RateLabel: "DESTROY events per second", Metrics: []string{"DESTROY events received, share", "CPU per 1000 events"}}
}

// burstSize returns the entries of a run: --size, or --rate times
// --duration when both are set, capped below nf_conntrack_max.
func burstSize(p Params, limit int) int {
	n := p.Size
	if p.Rate > 0 && p.Duration > 0 {
		n = int(p.Rate * time.Duration(p.Duration).Seconds())
	}
	return min(n, limit-1024)
}

// Run implements Drill.
func (Burst) Run(ctx context.Context, env *Env, p Params) (*Result, error) {
	limit, err := ConntrackMax()
	if err != nil {
		return nil, err
	}
	n := burstSize(p, limit)
	if n <= 0 {
		return nil, fmt.Errorf("burst needs a positive --size, or --rate and --duration")
	}
	ns, err := env.Lab.Namespace(true)
	if err != nil {
		return nil, err
	}
	exp, anchor, err := startWatched(ctx, env, ns, nil)
	if err != nil {
		return nil, err
	}
	defer exp.Stop()
	defer anchor.Stop() //nolint:errcheck // stopped below on success

	r := &Result{Params: p}
	r.Params.Size = n
	idle, err := exp.Usage()
	if err != nil {
		return nil, err
	}
	load := NewDestroyBurst(n, p.Rate)
	start := time.Now()
	if err := load.Create(ns); err != nil {
		return nil, err
	}
	r.AddFact("entries created over ctnetlink", float64(n), "entries")
	r.AddFact("create time", time.Since(start).Seconds(), "s")

	m0, _, err := exp.Scrape(ctx)
	if err != nil {
		return nil, err
	}
	c0, err := readEventCounters(m0, ns.Name)
	if err != nil {
		return nil, err
	}
	u0, err := exp.Usage()
	if err != nil {
		return nil, err
	}

	if p.Rate > 0 {
		env.Logf("burst: deleting %d entries at %g/s", n, p.Rate)
	} else {
		env.Logf("burst: flushing %d entries", n)
	}
	start = time.Now()
	removal, err := load.Remove(ctx, ns)
	if err != nil {
		return nil, err
	}
	c1, _, err := waitEvents(ctx, exp, ns.Name, c0, float64(n), 2*time.Minute)
	if err != nil {
		return nil, err
	}
	drained := time.Since(start)
	u1, err := exp.Usage()
	if err != nil {
		return nil, err
	}
	anchor.WaitQuiet(time.Second, 30*time.Second)
	ev, err := anchor.Stop()
	if err != nil {
		return nil, err
	}

	how := "flush time"
	if p.Rate > 0 {
		how = "deletion time"
	}
	r.AddFact(how, removal.Seconds(), "s")
	r.AddFact("DESTROY events per second sent", float64(n)/removal.Seconds(), "events/s")
	r.AddFact("exporter drained after", drained.Seconds(), "s")

	d := c1.sub(c0)
	used := u1.Sub(u0)
	r.Rows = append(r.Rows, eventRows(d, ev, float64(n))...)
	r.Rows = append(r.Rows,
		NewRow("CPU while the events came", "s", used.CPU.Seconds(), AnchorEvents+" (whole run)", ev.Usage.CPU.Seconds()),
		NewRow("CPU per 1000 events", "s", perThousand(used.CPU, d.destroy), AnchorEvents+" (whole run)", perThousand(ev.Usage.CPU, float64(ev.Destroy))),
		NewRow("peak RSS", "bytes", float64(used.PeakRSS), AnchorEvents, float64(ev.Usage.PeakRSS)),
		ExporterRow("RSS before the entries were created", "bytes", float64(idle.RSS)),
		ExporterRow("RSS with every entry alive", "bytes", float64(u0.RSS)),
		ExporterRow("RSS after the events", "bytes", float64(u1.RSS)),
	)
	r.Notes = append(r.Notes,
		"nf_conntrack_timestamp=1 in the namespace; both listeners subscribe to DESTROY only; the exporter runs with its default flags (--events.buffer-size=128MiB), conntrack -E with its defaults.",
		"lost is the exporter's conntrack_exporter_events_lost_total and, for conntrack -E, the Drops column of its socket in /proc/net/netlink: both are the kernel's exact count.",
		"CPU per 1000 events divides by the events each listener received.")
	return r, nil
}

// DestroyBurst is the load of the burst drill: ASSURED ESTABLISHED
// entries created over ctnetlink, then removed all at once with one flush
// or one by one at a rate. With the event extension on (a ctnetlink event
// listener existed when they were created), every removal sends one
// DESTROY event, so the burst sends exactly len(Entries) events. Tests of
// the event subscriber drive the same load.
type DestroyBurst struct {
	// Entries are the entries created and removed.
	Entries []lab.Entry
	// Rate is the removals per second; 0 removes all with one flush.
	Rate float64
}

// NewDestroyBurst returns a burst of n entries, removed at rate per
// second (0: one flush).
func NewDestroyBurst(n int, rate float64) *DestroyBurst {
	return &DestroyBurst{Entries: lab.EstablishedEntries(n, 600), Rate: rate}
}

// Create creates the burst's entries in the namespace; the kernel must
// accept every one.
func (b *DestroyBurst) Create(ns *lab.Namespace) error {
	created, refused, err := ns.Insert(b.Entries)
	if err != nil {
		return err
	}
	if created != len(b.Entries) {
		return fmt.Errorf("created %d of %d entries: %v", created, len(b.Entries), refused)
	}
	return nil
}

// Remove removes the entries, with one flush of the namespace's table or
// at b.Rate per second, and returns how long the removal took.
func (b *DestroyBurst) Remove(ctx context.Context, ns *lab.Namespace) (time.Duration, error) {
	start := time.Now()
	if b.Rate <= 0 {
		if err := ns.Flush(); err != nil {
			return 0, err
		}
		return time.Since(start), nil
	}
	if err := deleteAtRate(ctx, ns, b.Entries, b.Rate); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// deleteAtRate deletes the entries over ctnetlink, rate per second, in
// chunks every 10 ms.
func deleteAtRate(ctx context.Context, ns *lab.Namespace, entries []lab.Entry, rate float64) error {
	const tick = 10 * time.Millisecond
	start := time.Now()
	done := 0
	t := time.NewTicker(tick)
	defer t.Stop()
	for done < len(entries) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case now := <-t.C:
			due := min(len(entries), int(math.Floor(rate*now.Sub(start).Seconds())))
			if due <= done {
				continue
			}
			deleted, refused, err := ns.RemoveEntries(entries[done:due])
			if err != nil {
				return err
			}
			if deleted != due-done {
				return fmt.Errorf("deleted %d of %d entries: %v", deleted, due-done, refused)
			}
			done = due
		}
	}
	return nil
}
