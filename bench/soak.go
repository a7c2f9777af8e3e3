package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/ct-exporter/ct-exporter/internal/lab"
)

// Soak runs one exporter for --duration under everything at once:
// connections through a router namespace at --rate per second, bursts of
// DESTROY events in a second namespace, --size discovered namespaces
// appearing and vanishing, and concurrent scrapes. It samples the
// exporter's memory, goroutines and open files over time, and checks
// that every DESTROY event the kernel sent was received or counted as
// lost and that no counter went backwards.
type Soak struct{}

// Name implements Drill.
func (Soak) Name() string { return "soak" }

// Summary implements Drill.
func (Soak) Summary() string {
	return "run for --duration: --rate connections/s, DESTROY bursts, --size namespaces coming and going, concurrent scrapes; RSS, goroutines, fds over time; events and counters checked"
}

// Defaults implements Drill.
func (Soak) Defaults() Params {
	return Params{Size: 16, Rate: 100, Duration: Duration(30 * time.Minute)}
}

// Smoke implements Drill.
func (Soak) Smoke() Params { return Params{Size: 2, Rate: 50, Duration: Duration(10 * time.Second)} }

// Plot implements Drill: the soak's plot is its sampled series over time
// (Result.Series), not a row against a parameter.
func (Soak) Plot() PlotSpec { return PlotSpec{X: "size", XLabel: "namespaces coming and going"} }

// Soak drill knobs.
const (
	// soakScrapers scrape the exporter at the same time, each about once
	// a second.
	soakScrapers = 4
	// soakSamples is about how many samples each series gets.
	soakSamples = 120
	// soakRescan is the exporter's discovery interval in the soak.
	soakRescan = 2 * time.Second
	// soakTableInterval is the exporter's table scan interval in the soak.
	soakTableInterval = 15 * time.Second
	// soakBurst and soakSmallBurst are the entries of one burst: the
	// small one for runs shorter than a minute.
	soakBurst      = 20000
	soakSmallBurst = 1000
)

// soakScraper is one of the concurrent scrapers: it remembers the last
// value of every counter it saw, so that one going backwards shows.
type soakScraper struct {
	last      map[string]float64
	scrapes   int
	failed    int
	firstErr  error
	backwards []string
	latencies []float64
}

// check compares the counters of a scrape with those of this scraper's
// previous scrapes. Histograms count as counters (count and sum).
func (s *soakScraper) check(m lab.Metrics) {
	for name, mf := range m {
		for _, metric := range mf.GetMetric() {
			key := seriesKey(name, metric)
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				s.see(key, metric.GetCounter().GetValue())
			case dto.MetricType_HISTOGRAM:
				s.see(key+"_count", float64(metric.GetHistogram().GetSampleCount()))
				s.see(key+"_sum", metric.GetHistogram().GetSampleSum())
			}
		}
	}
}

// see records one counter value, and a decrease.
func (s *soakScraper) see(key string, v float64) {
	if prev, ok := s.last[key]; ok && v < prev && len(s.backwards) < 20 {
		s.backwards = append(s.backwards, fmt.Sprintf("%s went from %v to %v", key, prev, v))
	}
	s.last[key] = v
}

// seriesKey names a series by its metric name and sorted labels.
func seriesKey(name string, m *dto.Metric) string {
	labels := make([]string, 0, len(m.GetLabel()))
	for _, l := range m.GetLabel() {
		labels = append(labels, l.GetName()+"="+strconv.Quote(l.GetValue()))
	}
	sort.Strings(labels)
	return name + "{" + strings.Join(labels, ",") + "}"
}

// soakCome is a namespace of the soak that comes and goes.
type soakCome struct {
	ns    *lab.Namespace
	since time.Time
}

// Run implements Drill.
func (Soak) Run(ctx context.Context, env *Env, p Params) (*Result, error) {
	duration := time.Duration(p.Duration)
	if p.Size < 0 || p.Rate <= 0 || duration <= 0 {
		return nil, errors.New("soak needs a positive --rate and --duration and a non-negative --size")
	}
	burstSize, burstEvery := soakBurst, max(time.Minute, duration/10)
	if duration < time.Minute {
		burstSize, burstEvery = soakSmallBurst, duration/2
	}
	dir, err := env.Lab.NetnsDir()
	if err != nil {
		return nil, err
	}
	topo, err := newChurnTopology(env.Lab)
	if err != nil {
		return nil, err
	}
	burstNS, err := env.Lab.Namespace(true)
	if err != nil {
		return nil, err
	}
	for _, ns := range []*lab.Namespace{topo.router, burstNS} {
		if err := ns.SetSysctl("net.netfilter.nf_conntrack_timestamp", "1"); err != nil {
			return nil, err
		}
		if err := env.Lab.Expose(dir, ns); err != nil {
			return nil, err
		}
	}
	addrs, closeServer, err := churnServerListen(topo.server)
	if err != nil {
		return nil, err
	}
	defer closeServer()

	args := append([]string{
		"--conntrack.netns-discover=" + dir,
		"--conntrack.netns-discover-interval=" + soakRescan.String(),
		"--conntrack.netns-max=" + strconv.Itoa(p.Size+8),
		"--table.interval=" + soakTableInterval.String(),
	}, env.ExporterArgs...)
	exp, err := StartExporter(ctx, env.Lab, env.Exporter, nil, args...)
	if err != nil {
		return nil, err
	}
	defer exp.Stop()
	for _, ns := range []*lab.Namespace{topo.router, burstNS} {
		if err := waitSubscribed(ctx, ns, time.Minute); err != nil {
			return nil, err
		}
	}
	anchor, err := StartEventAnchor(env.Lab, topo.router, nil, "-e", "DESTROY")
	if err != nil {
		return nil, err
	}
	defer anchor.Stop() //nolint:errcheck // stopped again below on success
	m0, _, err := exp.Scrape(ctx)
	if err != nil {
		return nil, err
	}
	router0, err := readEventCounters(m0, topo.router.Name)
	if err != nil {
		return nil, err
	}
	burst0, err := readEventCounters(m0, burstNS.Name)
	if err != nil {
		return nil, err
	}
	if err := churnWarmUp(topo.client, addrs); err != nil {
		return nil, err
	}
	u0, err := exp.Usage()
	if err != nil {
		return nil, err
	}

	start := time.Now()
	runCtx, stopRun := context.WithTimeout(ctx, duration)
	defer stopRun()
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var runErrs []error
	fail := func(err error) {
		if err == nil || runCtx.Err() != nil && errors.Is(err, context.Canceled) {
			return
		}
		errMu.Lock()
		runErrs = append(runErrs, err)
		errMu.Unlock()
		stopRun()
	}

	// Connections through the router.
	var churn *churnStats
	wg.Add(1)
	go func() {
		defer wg.Done()
		st, _, err := churnLoad(runCtx, topo.client, addrs, p.Rate, duration)
		churn = st
		if err != nil && runCtx.Err() == nil {
			fail(fmt.Errorf("soak: connections: %w", err))
		}
	}()

	// Bursts of DESTROY events.
	bursts := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		tk := time.NewTicker(burstEvery)
		defer tk.Stop()
		for {
			select {
			case <-runCtx.Done():
				return
			case <-tk.C:
			}
			b := NewDestroyBurst(burstSize, 0)
			if err := b.Create(burstNS); err != nil {
				fail(fmt.Errorf("soak: burst: %w", err))
				return
			}
			if _, err := b.Remove(ctx, burstNS); err != nil {
				fail(fmt.Errorf("soak: burst: %w", err))
				return
			}
			bursts++
		}
	}()

	// Namespaces appearing and vanishing: every step one more appears
	// and, once --size are there, the oldest vanishes.
	var comes, goes int
	var come []soakCome
	wg.Add(1)
	go func() {
		defer wg.Done()
		step := max(soakRescan, duration/time.Duration(max(1, 6*p.Size)))
		if p.Size == 0 {
			return
		}
		tk := time.NewTicker(step)
		defer tk.Stop()
		for {
			if len(come) >= p.Size {
				old := come[0]
				come = come[1:]
				if err := env.Lab.Unexpose(dir, old.ns); err != nil {
					fail(err)
					return
				}
				if err := env.Lab.RemoveNamespace(old.ns); err != nil {
					fail(err)
					return
				}
				goes++
			}
			ns, err := env.Lab.Namespace(true)
			if err != nil {
				fail(err)
				return
			}
			if err := env.Lab.Expose(dir, ns); err != nil {
				fail(err)
				return
			}
			come = append(come, soakCome{ns: ns, since: time.Now()})
			comes++
			select {
			case <-runCtx.Done():
				return
			case <-tk.C:
			}
		}
	}()

	// Concurrent scrapers.
	scrapers := make([]*soakScraper, soakScrapers)
	for i := range scrapers {
		s := &soakScraper{last: map[string]float64{}}
		scrapers[i] = s
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Spread the scrapers over the second.
			pause := time.Duration(i) * time.Second / soakScrapers
			for {
				select {
				case <-runCtx.Done():
					return
				case <-time.After(pause):
				}
				pause = time.Second
				m, took, err := exp.Scrape(runCtx)
				if runCtx.Err() != nil {
					return
				}
				s.scrapes++
				if err != nil {
					s.failed++
					if s.firstErr == nil {
						s.firstErr = err
					}
					continue
				}
				s.latencies = append(s.latencies, took.Seconds())
				s.check(m)
			}
		}()
	}

	// Samples of the exporter's resources.
	rss := TimeSeries{Name: "RSS", Unit: "bytes"}
	goroutines := TimeSeries{Name: "goroutines", Unit: "goroutines"}
	fds := TimeSeries{Name: "open fds", Unit: "fds"}
	threads := TimeSeries{Name: "threads", Unit: "threads"}
	watched := TimeSeries{Name: "watched namespaces", Unit: "namespaces"}
	sample := func() error {
		at := time.Since(start)
		u, err := exp.Usage()
		if err != nil {
			return err
		}
		m, _, err := exp.Scrape(ctx)
		if err != nil {
			return err
		}
		g, err := m.Sum("go_goroutines", nil)
		if err != nil {
			return err
		}
		f, err := m.Sum("process_open_fds", nil)
		if err != nil {
			return err
		}
		w, err := m.Sum("conntrack_exporter_watched_namespaces", nil)
		if err != nil {
			return err
		}
		rss.Add(at, float64(u.RSS))
		threads.Add(at, float64(u.Threads))
		goroutines.Add(at, g)
		fds.Add(at, f)
		watched.Add(at, w)
		return nil
	}
	every := max(time.Second, duration/soakSamples)
	env.Logf("soak: %s: %g connections/s through %s, a %d-entry burst every %s, %d namespaces coming and going, %d scrapers",
		duration, p.Rate, topo.router.Name, burstSize, burstEvery, p.Size, soakScrapers)
	if err := sample(); err != nil {
		return nil, err
	}
	tk := time.NewTicker(every)
sampling:
	for {
		select {
		case <-runCtx.Done():
			break sampling
		case <-tk.C:
			if err := sample(); err != nil {
				fail(fmt.Errorf("soak: sample: %w", err))
				break sampling
			}
			if n := len(rss.Values); n%10 == 0 {
				env.Logf("soak: %s: RSS %s, %v goroutines, %v fds, %v namespaces", time.Since(start).Round(time.Second),
					FormatValue(rss.Values[n-1], "bytes"), goroutines.Values[n-1], fds.Values[n-1], watched.Values[n-1])
			}
		}
	}
	tk.Stop()
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(runErrs) > 0 {
		return nil, errors.Join(runErrs...)
	}
	took := time.Since(start)

	// Every connection's entry ends, so every DESTROY event is sent;
	// then the exporter must have received or counted each.
	waitEmpty(ctx, topo.router, time.Minute)
	anchor.WaitQuiet(time.Second, 10*time.Second)
	ev, err := anchor.Snapshot()
	if err != nil {
		return nil, err
	}
	routerSent := float64(ev.Destroy + ev.Drops)
	router1, _, err := waitEvents(ctx, exp, topo.router.Name, router0, routerSent, time.Minute)
	if err != nil {
		return nil, err
	}
	burstSent := float64(bursts * burstSize)
	burst1, _, err := waitEvents(ctx, exp, burstNS.Name, burst0, burstSent, time.Minute)
	if err != nil {
		return nil, err
	}
	if err := sample(); err != nil {
		return nil, err
	}
	u1, err := exp.Usage()
	if err != nil {
		return nil, err
	}

	r := &Result{Series: []TimeSeries{rss, goroutines, fds, threads, watched}}
	r.AddFact("soak time", took.Seconds(), "s")
	r.AddFact("connections opened and closed", float64(churn.opened.Load()), "connections")
	r.AddFact("connections that failed", float64(churn.failed.Load()), "connections")
	r.AddFact("bursts", float64(bursts), "bursts")
	r.AddFact("entries per burst", float64(burstSize), "entries")
	r.AddFact("namespaces that appeared", float64(comes), "namespaces")
	r.AddFact("namespaces that vanished", float64(goes), "namespaces")
	var scrapes, failed int
	var lat []float64
	var backwards []string
	for _, s := range scrapers {
		scrapes += s.scrapes
		failed += s.failed
		lat = append(lat, s.latencies...)
		backwards = append(backwards, s.backwards...)
		if s.firstErr != nil {
			r.Notes = append(r.Notes, "first failed scrape: "+s.firstErr.Error())
		}
	}
	r.AddFact("scrapes", float64(scrapes), "scrapes")
	slices.Sort(lat)
	dr, db := router1.sub(router0), burst1.sub(burst0)
	r.Rows = append(r.Rows,
		NewRow("DESTROY events received + lost, connections", "events", dr.destroy+dr.lost, AnchorEvents+" received + socket drops", routerSent),
		NewRow("DESTROY events received + lost, bursts", "events", db.destroy+db.lost, "entries removed", burstSent),
		ExporterRow("DESTROY events lost (counted)", "events", dr.lost+db.lost),
		ExporterRow("counters that went backwards", "series", float64(len(backwards))),
		ExporterRow("failed scrapes", "scrapes", float64(failed)),
	)
	if len(lat) > 0 {
		r.Rows = append(r.Rows,
			ExporterRow("scrape p50", "s", quantile(lat, 0.5)),
			ExporterRow("scrape p99", "s", quantile(lat, 0.99)),
		)
	}
	first := func(ts TimeSeries) float64 { return ts.Values[0] }
	last := func(ts TimeSeries) float64 { return ts.Values[len(ts.Values)-1] }
	peak := func(ts TimeSeries) float64 { return slices.Max(ts.Values) }
	r.Rows = append(r.Rows,
		ExporterRow("RSS at the start", "bytes", first(rss)),
		ExporterRow("RSS at the end", "bytes", last(rss)),
		ExporterRow("RSS, highest sample", "bytes", peak(rss)),
		ExporterRow("goroutines at the start", "goroutines", first(goroutines)),
		ExporterRow("goroutines at the end", "goroutines", last(goroutines)),
		ExporterRow("goroutines, highest sample", "goroutines", peak(goroutines)),
		ExporterRow("open fds at the start", "fds", first(fds)),
		ExporterRow("open fds at the end", "fds", last(fds)),
		ExporterRow("open fds, highest sample", "fds", peak(fds)),
		ExporterRow("CPU, share of a core", "%", 100*u1.Sub(u0).CPU.Seconds()/time.Since(start).Seconds()),
	)
	for _, b := range backwards {
		r.Notes = append(r.Notes, "counter went backwards: "+b)
	}
	r.Notes = append(r.Notes,
		fmt.Sprintf("One exporter: --conntrack.netns-discover on a directory where namespaces appear and vanish (rescan every %s), --table.interval=%s, default collectors otherwise.", soakRescan, soakTableInterval),
		fmt.Sprintf("%d scrapers, each about once a second; each checks that no counter (histogram counts and sums included) it saw went backwards. Samples every %s: RSS and threads from /proc/PID/status, goroutines and open fds from the exporter's own metrics.", soakScrapers, every),
		"Connections: the churn drill's client -- router -- server, only the router tracking; conntrack -E -e DESTROY in the router counts the events sent (received + its socket's drops). Bursts: entries created over ctnetlink in a second namespace and flushed at once, one DESTROY each.",
	)
	return r, nil
}
