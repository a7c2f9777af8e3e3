package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ct-exporter/ct-exporter/internal/ctnl"
	"github.com/ct-exporter/ct-exporter/internal/lab"
)

// Churn opens and closes real TCP connections at a target rate, from a
// client namespace through a router namespace that tracks them to a
// server namespace, for a duration. The exporter and conntrack -E watch
// the router.
type Churn struct{}

// Name implements Drill.
func (Churn) Name() string { return "churn" }

// Summary implements Drill.
func (Churn) Summary() string {
	return "open and close TCP connections at --rate per second for --duration through a tracking router namespace; exporter vs conntrack -E and the floor (a process that only receives the events)"
}

// Defaults implements Drill.
func (Churn) Defaults() Params {
	return Params{Rate: 1000, Duration: Duration(10 * time.Second)}
}

// Smoke implements Drill.
func (Churn) Smoke() Params { return Params{Rate: 50, Duration: Duration(time.Second)} }

// Plot implements Drill.
func (Churn) Plot() PlotSpec {
	return PlotSpec{X: "rate", XLabel: "target connections per second", Metrics: []string{"DESTROY events received, share", "CPU per 1000 events"}}
}

// Addresses of the churn topology: client -- router -- server.
const (
	churnClient       = "198.18.1.1"
	churnRouterClient = "198.18.1.254"
	churnRouterServer = "198.18.2.254"
	churnServer       = "198.18.2.1"
	churnServerPorts  = 8
	// churnTimeWait is the router's TIME_WAIT timeout: connections end
	// within the drill instead of two minutes later, so their DESTROY
	// events come at the connection rate.
	churnTimeWait = "1"
)

// churnTopology is the three namespaces of the churn drill.
type churnTopology struct {
	client, router, server *lab.Namespace
}

// newChurnTopology builds client -- router -- server. Only the router
// tracks connections; it forwards between its two links.
func newChurnTopology(l *Lab) (*churnTopology, error) {
	var t churnTopology
	var err error
	if t.client, err = l.Namespace(false); err != nil {
		return nil, err
	}
	if t.router, err = l.Namespace(true); err != nil {
		return nil, err
	}
	if t.server, err = l.Namespace(false); err != nil {
		return nil, err
	}
	if err := lab.LinkPair(t.client, churnClient+"/24", t.router, churnRouterClient+"/24"); err != nil {
		return nil, err
	}
	if err := lab.LinkPair(t.router, churnRouterServer+"/24", t.server, churnServer+"/24"); err != nil {
		return nil, err
	}
	steps := []struct {
		ns   *lab.Namespace
		args []string
	}{
		{t.client, []string{"ip", "route", "add", "default", "via", churnRouterClient}},
		{t.server, []string{"ip", "route", "add", "default", "via", churnRouterServer}},
	}
	for _, s := range steps {
		if _, err := s.ns.Output(s.args[0], s.args[1:]...); err != nil {
			return nil, err
		}
	}
	sysctls := []struct {
		ns         *lab.Namespace
		key, value string
	}{
		{t.router, "net.ipv4.ip_forward", "1"},
		{t.router, "net.netfilter.nf_conntrack_tcp_timeout_time_wait", churnTimeWait},
		// The client closes first and keeps TIME_WAIT sockets: let it
		// reuse them and use every port.
		{t.client, "net.ipv4.tcp_tw_reuse", "1"},
		{t.client, "net.ipv4.ip_local_port_range", "1024 65000"},
		{t.server, "net.core.somaxconn", "4096"},
		{t.server, "net.ipv4.tcp_max_syn_backlog", "4096"},
	}
	for _, s := range sysctls {
		if err := s.ns.SetSysctl(s.key, s.value); err != nil {
			return nil, err
		}
	}
	return &t, nil
}

// churnServerListen listens on churnServerPorts ports of the server
// namespace; every accepted connection is read to its end and closed.
func churnServerListen(ns *lab.Namespace) (addrs []string, closeAll func(), err error) {
	var ls []net.Listener
	closeAll = func() {
		for _, l := range ls {
			l.Close()
		}
	}
	err = ns.Target().Do(func() error {
		for i := range churnServerPorts {
			l, err := net.Listen("tcp", net.JoinHostPort(churnServer, strconv.Itoa(8000+i)))
			if err != nil {
				return fmt.Errorf("churn server: %w", err)
			}
			ls = append(ls, l)
		}
		return nil
	})
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	for _, l := range ls {
		addrs = append(addrs, l.Addr().String())
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() {
					var b [64]byte
					for {
						if _, err := c.Read(b[:]); err != nil {
							break
						}
					}
					c.Close()
				}()
			}
		}()
	}
	return addrs, closeAll, nil
}

// churnWarmUp opens and closes one connection to each address from the
// client namespace.
func churnWarmUp(client *lab.Namespace, addrs []string) error {
	return client.Target().Do(func() error {
		for _, a := range addrs {
			c, err := net.DialTimeout("tcp", a, 5*time.Second)
			if err != nil {
				return fmt.Errorf("churn warm-up: %w", err)
			}
			c.Close()
		}
		return nil
	})
}

// churnStats counts the client's connections.
type churnStats struct {
	opened, failed atomic.Int64
	// firstErr is the first dial error.
	firstErr atomic.Pointer[error]
}

// churnLoad opens and closes connections from the client namespace at
// rate per second until ctx ends or duration passed. Workers run on
// threads inside the client namespace; a pacer hands out one token per
// connection.
func churnLoad(ctx context.Context, client *lab.Namespace, addrs []string, rate float64, duration time.Duration) (*churnStats, time.Duration, error) {
	st := &churnStats{}
	workers := max(8, min(256, int(rate/100)))
	tokens := make(chan struct{}, 4*workers)
	ctx, cancel := context.WithTimeout(ctx, duration)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := client.Target().Do(func() error {
				d := net.Dialer{Timeout: 2 * time.Second}
				i := w
				for range tokens {
					if ctx.Err() != nil {
						continue // the load is over: drain the tokens left
					}
					c, err := d.DialContext(ctx, "tcp", addrs[i%len(addrs)])
					i++
					if err != nil {
						if ctx.Err() == nil {
							st.failed.Add(1)
							st.firstErr.CompareAndSwap(nil, &err)
						}
						continue
					}
					c.Close()
					st.opened.Add(1)
				}
				return nil
			})
			if err != nil {
				errc <- err
			}
		}()
	}
	start := time.Now()
	const tick = 5 * time.Millisecond
	t := time.NewTicker(tick)
	var issued float64
pace:
	for {
		select {
		case <-ctx.Done():
			break pace
		case now := <-t.C:
			due := math.Floor(rate*now.Sub(start).Seconds()) - issued
			for ; due > 0; due-- {
				select {
				case tokens <- struct{}{}:
					issued++
				default:
					// Workers are behind: drop the token rather than
					// queue an unbounded backlog; the achieved rate
					// shows it.
					issued++
				}
			}
		}
	}
	t.Stop()
	close(tokens)
	wg.Wait()
	took := time.Since(start)
	close(errc)
	if err := <-errc; err != nil {
		return st, took, err
	}
	return st, took, nil
}

// Run implements Drill.
func (Churn) Run(ctx context.Context, env *Env, p Params) (*Result, error) {
	if p.Rate <= 0 || p.Duration <= 0 {
		return nil, errors.New("churn needs a positive --rate and --duration")
	}
	topo, err := newChurnTopology(env.Lab)
	if err != nil {
		return nil, err
	}
	addrs, closeServer, err := churnServerListen(topo.server)
	if err != nil {
		return nil, err
	}
	defer closeServer()
	watchEnv := env
	if env.CPUProfile != "" {
		e := *env
		e.ExporterArgs = append(slices.Clone(env.ExporterArgs), "--web.enable-pprof")
		watchEnv = &e
	}
	exp, anchor, err := startWatched(ctx, watchEnv, topo.router, nil)
	if err != nil {
		return nil, err
	}
	defer exp.Stop()
	defer anchor.Stop() //nolint:errcheck // stopped again below on success
	floor, err := StartEventFloor(env, topo.router)
	if err != nil {
		return nil, err
	}
	defer floor.Stop() //nolint:errcheck // stopped again below on success

	// One connection to each server port first, so that neighbours are
	// resolved before the measured load; their entries are gone before
	// the baseline is read.
	if err := churnWarmUp(topo.client, addrs); err != nil {
		return nil, err
	}
	waitEmpty(ctx, topo.router, 30*time.Second)
	anchor.WaitQuiet(500*time.Millisecond, 5*time.Second)
	ev0, err := anchor.Snapshot()
	if err != nil {
		return nil, err
	}

	sel := map[string]string{"netns": topo.router.Name}
	m0, _, err := exp.Scrape(ctx)
	if err != nil {
		return nil, err
	}
	c0, err := readEventCounters(m0, topo.router.Name)
	if err != nil {
		return nil, err
	}
	sums0, err := topo.router.CounterSums()
	if err != nil {
		return nil, err
	}
	// The baseline scrape's own tail (the garbage collection its
	// allocations trigger) ends before the exporter's CPU clock is read.
	time.Sleep(settleAfterScrape)
	u0, err := exp.Usage()
	if err != nil {
		return nil, err
	}
	t0, err := lab.ProcessCPU(exp.PID())
	if err != nil {
		return nil, err
	}
	f0, err := floor.CPU()
	if err != nil {
		return nil, err
	}

	// Scrape once a second (Env.ScrapeInterval) while the load runs, as
	// a busy Prometheus would.
	scrapeCtx, stopScrapes := context.WithCancel(ctx)
	var scrapeTimes []time.Duration
	var scrapeCPU time.Duration // exporter CPU while a scrape was served
	var scrapeErr error
	scrapesDone := make(chan struct{})
	every := env.ScrapeInterval
	if every == 0 {
		every = time.Second
	}
	go func() {
		defer close(scrapesDone)
		if every < 0 {
			return
		}
		tk := time.NewTicker(every)
		defer tk.Stop()
		for {
			select {
			case <-scrapeCtx.Done():
				return
			case <-tk.C:
				before, err := lab.ProcessCPU(exp.PID())
				if err != nil {
					scrapeErr = err
					return
				}
				_, took, err := exp.Scrape(scrapeCtx)
				if err != nil {
					if scrapeCtx.Err() == nil {
						scrapeErr = err
					}
					return
				}
				after, err := lab.ProcessCPU(exp.PID())
				if err != nil {
					scrapeErr = err
					return
				}
				scrapeTimes = append(scrapeTimes, took)
				scrapeCPU += after - before
			}
		}
	}()

	env.Logf("churn: %g connections/s for %s through %s", p.Rate, time.Duration(p.Duration), topo.router.Name)
	profiled := make(chan error, 1)
	profilePath := ""
	if env.CPUProfile != "" {
		profilePath = fmt.Sprintf("%s-rate=%g.pprof", env.CPUProfile, p.Rate)
		go func() { profiled <- cpuProfile(ctx, exp, time.Duration(p.Duration), profilePath) }()
	} else {
		profiled <- nil
	}
	st, took, err := churnLoad(ctx, topo.client, addrs, p.Rate, time.Duration(p.Duration))
	if err != nil {
		stopScrapes()
		<-scrapesDone
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		stopScrapes()
		<-scrapesDone
		return nil, err
	}
	// Let the router's TIME_WAIT entries expire, so every connection has
	// sent its DESTROY event.
	waitEmpty(ctx, topo.router, 30*time.Second)
	anchor.WaitQuiet(time.Second, 10*time.Second)
	stopScrapes()
	<-scrapesDone
	// Every event was sent and read: the exporter's CPU clock stops
	// here, before the scrapes that read its counters.
	t1, err := lab.ProcessCPU(exp.PID())
	if err != nil {
		return nil, err
	}
	f1, err := floor.CPU()
	if err != nil {
		return nil, err
	}
	if scrapeErr != nil {
		return nil, scrapeErr
	}

	if err := <-profiled; err != nil {
		return nil, err
	}
	opened := float64(st.opened.Load())
	c1, m1, err := waitEvents(ctx, exp, topo.router.Name, c0, opened, 30*time.Second)
	if err != nil {
		return nil, err
	}
	sums1, err := topo.router.CounterSums()
	if err != nil {
		return nil, err
	}
	u1, err := exp.Usage()
	if err != nil {
		return nil, err
	}
	ev, err := anchor.Stop()
	if err != nil {
		return nil, err
	}
	floorDrops, err := floor.Drops()
	if err != nil {
		return nil, err
	}
	floorDestroys, err := floor.Stop()
	if err != nil {
		return nil, err
	}
	ev = ev.Sub(ev0)
	left, err := topo.router.EntryCount()
	if err != nil {
		return nil, err
	}

	r := &Result{}
	r.AddFact("connections opened and closed", opened, "connections")
	r.AddFact("connections that failed", float64(st.failed.Load()), "connections")
	if e := st.firstErr.Load(); e != nil {
		r.Notes = append(r.Notes, "first failed connection: "+(*e).Error())
	}
	r.AddFact("load time", took.Seconds(), "s")
	r.AddFact("achieved rate", opened/took.Seconds(), "connections/s")
	r.AddFact("entries left in the router", float64(left), "entries")

	for _, k := range []string{"insert_failed", "drop", "early_drop"} {
		name := "conntrack_stat_" + k + "_total"
		v0, err := m0.Sum(name, sel)
		if err != nil {
			return nil, err
		}
		v1, err := m1.Sum(name, sel)
		if err != nil {
			return nil, err
		}
		r.Rows = append(r.Rows, NewRow(k+"_total", "events", v1-v0, AnchorStats, float64(sums1[k]-sums0[k])))
	}
	// Dials cut short when the load ends leave entries too: the events
	// the kernel sent are what the exporter received or lost, exactly.
	d := c1.sub(c0)
	r.AddFact("DESTROY events sent (exporter received + lost)", d.destroy+d.lost, "events")
	r.Rows = append(r.Rows, eventRows(d, ev, d.destroy+d.lost)...)
	used := u1.Sub(u0)
	r.Rows = append(r.Rows,
		NewRow("CPU during the drill", "s", used.CPU.Seconds(), AnchorEvents, ev.Usage.CPU.Seconds()),
		NewRow("CPU per 1000 events", "s", perThousand(used.CPU, c1.sub(c0).destroy), AnchorEvents, perThousand(ev.Usage.CPU, float64(ev.Destroy))),
		NewRow("peak RSS", "bytes", float64(used.PeakRSS), AnchorEvents, float64(ev.Usage.PeakRSS)),
	)
	// The same from the process CPU clock, in nanoseconds. The CPU
	// spent while scrapes were served is shown apart but not subtracted:
	// each scrape first has the exporter read the events queued since the
	// one before, so it holds much of the event path.
	destroys := c1.sub(c0).destroy
	anchorPer := perEvent(ev.Usage.CPU, float64(ev.Destroy))
	exporterPer := perEvent(t1-t0, destroys)
	// The floor received every event of the run (the exporter's
	// counters since it started: no event came before the floor
	// subscribed) or counted it dropped; its CPU per event is over the
	// same window and events as the exporter's.
	r.Rows = append(r.Rows,
		NewRow("DESTROY events received + lost, whole run", "events", c1.destroy+c1.lost, AnchorEventFloor, float64(floorDestroys+floorDrops)),
		NewRow("CPU per DESTROY event", "us", exporterPer, AnchorEvents, anchorPer),
		NewRow("CPU per DESTROY event", "us", exporterPer, AnchorEventFloor, perEvent(f1-f0, d.destroy+d.lost)),
		ExporterRow("CPU while serving scrapes", "s", scrapeCPU.Seconds()),
	)
	if len(scrapeTimes) > 0 {
		r.Rows = append(r.Rows, ExporterRow("scrape duration under load (median)", "s", median(scrapeTimes).Seconds()))
	}
	if profilePath != "" {
		r.Notes = append(r.Notes, "exporter CPU profile of the load: "+profilePath)
	}
	scraped := "every " + every.String()
	if every < 0 {
		scraped = "never"
	}
	r.Notes = append(r.Notes,
		fmt.Sprintf("router: TIME_WAIT timeout %s s so that connections end within the drill, nf_conntrack_timestamp=1; the exporter is scraped %s during the load, and its CPU clock is read 1 s after the scrape before the load.", churnTimeWait, scraped),
		"every connection is one conntrack entry in the router and ends with one DESTROY event; CPU per 1000 events divides each listener's CPU by the events it received, the exporter's including its scrapes.",
		"the exporter's table collector scans the router's table at start and every --table.interval (60 s by default): a 30-s load falls between the first two scans, a longer one holds scans, and each scan also reaps the expired TIME_WAIT entries it meets, their DESTROY events delivered from the exporter's thread (--exporter.arg=--table.interval=0 leaves scans out).",
		fmt.Sprintf("the floor is a process that only receives the DESTROY events, on the exporter's schedule (recvmmsg of %d datagrams, a drain every %s), and counts them undecoded: what the kernel's delivery and the Go runtime cost; its CPU per event is over the exporter's window and events.", lab.FloorSlots, EventFloorInterval),
		"CPU per DESTROY event reads the exporter's CPU clock (its scheduler clock, in nanoseconds), scrapes included; CPU while serving scrapes is the exporter CPU between the start and the end of each scrape, which includes reading the events queued since the scrape before (--scrape-interval=0 measures the event path alone).")
	return r, nil
}

// settleAfterScrape is how long churn waits after its baseline scrape
// before it reads the exporter's CPU clock.
const settleAfterScrape = time.Second

// perEvent returns microseconds of CPU per event.
func perEvent(cpu time.Duration, n float64) float64 {
	if n == 0 {
		return math.NaN()
	}
	return float64(cpu) / 1e3 / n
}

// cpuProfile takes a CPU profile of the exporter (run with
// --web.enable-pprof) for d, rounded up to whole seconds, into path.
func cpuProfile(ctx context.Context, exp *Exporter, d time.Duration, path string) error {
	secs := max(1, int((d+time.Second-1)/time.Second))
	url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", exp.Addr, secs)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	resp, err := (&http.Client{Timeout: d + time.Minute}).Do(req)
	if err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("cpu profile: %s: %s (is --web.enable-pprof supported by this ct-exporter?)", url, resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	return nil
}

// perThousand returns seconds of CPU per 1000 units of work.
func perThousand(cpu time.Duration, n float64) float64 {
	if n == 0 {
		return math.NaN()
	}
	return cpu.Seconds() / n * 1000
}

// waitEmpty waits until the namespace's table is empty, or max passed.
// It dumps the table to count it: the kernel reaps the expired entries a
// dump walks past (and sends their DESTROY events) instead of leaving
// them to the garbage collector's next pass.
func waitEmpty(ctx context.Context, ns *lab.Namespace, max time.Duration) {
	end := time.Now().Add(max)
	for time.Now().Before(end) && ctx.Err() == nil {
		if n, err := dumpCount(ctx, ns); err == nil && n == 0 {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// dumpCount dumps the namespace's table and returns how many entries the
// kernel sent.
func dumpCount(ctx context.Context, ns *lab.Namespace) (uint64, error) {
	c, err := ctnl.Dial(ns.Target())
	if err != nil {
		return 0, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	info, err := c.Dump(ctx, func([]byte) error { return nil })
	return info.Entries, err
}
