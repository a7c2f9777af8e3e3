package bench

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/ct-exporter/ct-exporter/internal/lab"
)

// IdleExpiry opens --size real TCP connections from a client namespace to
// a server namespace whose established timeout is --timeout, and leaves
// them idle: the server's conntrack entries expire while ESTABLISHED, and
// the kernel's garbage collector reaps them some time later; what it has
// not reaped --duration after the expiry, a table dump reaps. The drill
// compares the lifetimes the exporter records with conntrack -E's
// delta-time of the same DESTROY events.
type IdleExpiry struct{}

// Name implements Drill.
func (IdleExpiry) Name() string { return "idle-expiry" }

// Summary implements Drill.
func (IdleExpiry) Summary() string {
	return "hold --size idle TCP connections in a namespace whose established timeout is --timeout, wait up to --duration for the GC; lifetimes: exporter vs conntrack -E"
}

// Defaults implements Drill.
func (IdleExpiry) Defaults() Params {
	return Params{Size: 100, Timeout: Duration(5 * time.Second), Duration: Duration(30 * time.Second)}
}

// Smoke implements Drill.
func (IdleExpiry) Smoke() Params {
	return Params{Size: 10, Timeout: Duration(2 * time.Second), Duration: Duration(3 * time.Second)}
}

// Plot implements Drill.
func (IdleExpiry) Plot() PlotSpec {
	return PlotSpec{X: "size", XLabel: "idle connections", Metrics: []string{"mean lifetime"}}
}

// Addresses of the idle-expiry pair.
const (
	idleClient = "198.18.3.1"
	idleServer = "198.18.3.2"
)

// destroyLine is what the drill reads from one conntrack -E line.
type destroyLine struct {
	at          time.Time
	established bool
	delta       float64
	hasDelta    bool
}

// parseDestroyLine reads a line of conntrack -E -o timestamp with kernel
// timestamps on:
//
//	[1795541831.432783]	[DESTROY] tcp 6 ESTABLISHED src=... [ASSURED] delta-time=2
func parseDestroyLine(line []byte) (destroyLine, bool) {
	var d destroyLine
	if !bytes.Contains(line, []byte("[DESTROY]")) {
		return d, false
	}
	if len(line) > 0 && line[0] == '[' {
		if end := bytes.IndexByte(line, ']'); end > 0 {
			if ts, err := strconv.ParseFloat(string(line[1:end]), 64); err == nil {
				d.at = time.Unix(0, int64(ts*1e9))
			}
		}
	}
	d.established = bytes.Contains(line, []byte(" ESTABLISHED "))
	if i := bytes.Index(line, []byte("delta-time=")); i >= 0 {
		f := bytes.Fields(line[i+len("delta-time="):])
		if len(f) > 0 {
			if v, err := strconv.ParseFloat(string(f[0]), 64); err == nil {
				d.delta, d.hasDelta = v, true
			}
		}
	}
	return d, true
}

// Run implements Drill.
func (IdleExpiry) Run(ctx context.Context, env *Env, p Params) (*Result, error) {
	timeout, gcWait := time.Duration(p.Timeout), time.Duration(p.Duration)
	if p.Size <= 0 || timeout < time.Second || gcWait <= 0 {
		return nil, fmt.Errorf("idle-expiry needs a positive --size and --duration and a --timeout of at least 1s")
	}
	client, err := env.Lab.Namespace(false)
	if err != nil {
		return nil, err
	}
	server, err := env.Lab.Namespace(true)
	if err != nil {
		return nil, err
	}
	if err := lab.LinkPair(client, idleClient+"/24", server, idleServer+"/24"); err != nil {
		return nil, err
	}
	secs := strconv.Itoa(int(timeout.Seconds()))
	if err := server.SetSysctl("net.netfilter.nf_conntrack_tcp_timeout_established", secs); err != nil {
		return nil, err
	}
	var (
		mu    sync.Mutex
		lines []destroyLine
	)
	exp, anchor, err := startWatched(ctx, env, server, func(line []byte) {
		if d, ok := parseDestroyLine(line); ok {
			mu.Lock()
			lines = append(lines, d)
			mu.Unlock()
		}
	}, "-o", "timestamp")
	if err != nil {
		return nil, err
	}
	defer exp.Stop()
	defer anchor.Stop() //nolint:errcheck // stopped below on success

	m0, _, err := exp.Scrape(ctx)
	if err != nil {
		return nil, err
	}
	c0, err := readEventCounters(m0, server.Name)
	if err != nil {
		return nil, err
	}
	sel := map[string]string{"netns": server.Name, "end_state": "established"}

	conns, err := openConnections(server, client, idleServer, p.Size)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if err != nil {
		return nil, err
	}
	idleSince := time.Now()
	env.Logf("idle-expiry: %d connections idle, established timeout %s", p.Size, timeout)

	// The garbage collector's pass may come long after the expiry. Give
	// it gcWait; then a table dump makes the kernel reap what is left (it
	// backdates the stop time the same way).
	c1, m1, err := waitEvents(ctx, exp, server.Name, c0, float64(p.Size), timeout+gcWait)
	if err != nil {
		return nil, err
	}
	var forcedAt time.Time
	if d := c1.sub(c0); d.destroy+d.lost < float64(p.Size) {
		forcedAt = time.Now()
		env.Logf("idle-expiry: %v of %d flows reaped %s after the expiry; dumping the table", d.destroy+d.lost, p.Size, gcWait)
		if _, err := dumpCount(ctx, server); err != nil {
			return nil, err
		}
		if c1, m1, err = waitEvents(ctx, exp, server.Name, c0, float64(p.Size), time.Minute); err != nil {
			return nil, err
		}
	}
	anchor.WaitQuiet(time.Second, 10*time.Second)
	ev, err := anchor.Stop()
	if err != nil {
		return nil, err
	}

	n1, s1, err := m1.Histogram("conntrack_flow_lifetime_seconds", sel)
	if err != nil {
		return nil, err
	}
	var n0 uint64
	var s0 float64
	if _, ok := m0["conntrack_flow_lifetime_seconds"]; ok {
		n0, s0, _ = m0.Histogram("conntrack_flow_lifetime_seconds", sel)
	}
	expired := float64(n1 - n0)

	mu.Lock()
	var estab, withDelta, byGC int
	var deltaSum, lagSum, lagMax float64
	expiry := idleSince.Add(timeout)
	for _, l := range lines {
		if !l.established {
			continue
		}
		estab++
		if l.hasDelta {
			withDelta++
			deltaSum += l.delta
		}
		if !l.at.IsZero() && (forcedAt.IsZero() || l.at.Before(forcedAt)) {
			byGC++
			lag := l.at.Sub(expiry).Seconds()
			lagSum += lag
			lagMax = max(lagMax, lag)
		}
	}
	mu.Unlock()

	r := &Result{}
	r.AddFact("established timeout", timeout.Seconds(), "s")
	r.AddFact("idle connections", float64(p.Size), "connections")
	r.AddFact("flows the garbage collector reaped", float64(byGC), "connections")
	if byGC > 0 {
		r.AddFact("DESTROY after the expiry, mean (garbage collector delay)", lagSum/float64(byGC), "s")
		r.AddFact("DESTROY after the expiry, last", lagMax, "s")
	}
	if !forcedAt.IsZero() {
		r.AddFact("flows reaped by a table dump "+gcWait.String()+" after the expiry", float64(estab-byGC), "connections")
	}
	d := c1.sub(c0)
	r.Rows = append(r.Rows,
		NewRow("flows expired while ESTABLISHED", "events", expired, AnchorEvents, float64(estab)),
		NewRow("DESTROY events received", "events", d.destroy, AnchorEvents, float64(ev.Destroy)),
	)
	exporterMean := (s1 - s0) / expired
	anchorMean := deltaSum / float64(withDelta)
	r.Rows = append(r.Rows,
		NewRow("mean lifetime", "s", exporterMean, AnchorEvents+" delta-time", anchorMean),
		NewRow("mean lifetime against the timeout", "ratio", exporterMean/timeout.Seconds(), AnchorEvents+" delta-time", anchorMean/timeout.Seconds()),
	)
	r.Notes = append(r.Notes,
		"nf_conntrack_timestamp=1 in the server namespace: the kernel backdates a reaped entry's stop to its expiry, whether the garbage collector or a dump reaps it, so both lifetimes are the timeout, not the time until the entry was reaped.",
		"conntrack -E prints delta-time in whole seconds; the exporter's mean is its histogram's sum over count for end_state=\"established\".")
	return r, nil
}

// openConnections opens n TCP connections from client to a listener on
// host in server (the same namespace for loopback) with keepalives off,
// and returns both ends once every one is established.
func openConnections(server, client *lab.Namespace, host string, n int) ([]net.Conn, error) {
	var l net.Listener
	lc := net.ListenConfig{KeepAlive: -1}
	err := server.Target().Do(func() error {
		var err error
		l, err = lc.Listen(context.Background(), "tcp", net.JoinHostPort(host, "0"))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listener in %s: %w", server.Name, err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, n)
	go func() {
		for range n {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	var conns []net.Conn
	err = client.Target().Do(func() error {
		d := net.Dialer{Timeout: 5 * time.Second, KeepAlive: -1}
		for range n {
			c, err := d.Dial("tcp", l.Addr().String())
			if err != nil {
				return err
			}
			conns = append(conns, c)
		}
		return nil
	})
	if err != nil {
		return conns, fmt.Errorf("connections from %s: %w", client.Name, err)
	}
	for range n {
		select {
		case c := <-accepted:
			conns = append(conns, c)
		case <-time.After(10 * time.Second):
			return conns, fmt.Errorf("%s accepted %d of %d connections", server.Name, len(conns)-n, n)
		}
	}
	return conns, nil
}
