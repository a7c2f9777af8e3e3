package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/ct-exporter/ct-exporter/deploy/validate/alerts"
	"github.com/ct-exporter/ct-exporter/deploy/validate/grafana"
	"github.com/ct-exporter/ct-exporter/internal/lab"
	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

// scrapeInterval is Prometheus' scrape and rule evaluation interval in the
// end-to-end run.
const scrapeInterval = time.Second

// promJob is the scrape job of the exporter; ConntrackExporterDown selects
// jobs whose name contains "ct-exporter".
const promJob = "ct-exporter"

// ruleScale is how the production rules are shortened for the run: every
// range and every "for:" divided by 60 ([5m] -> [5s], [10m] -> [10s],
// [30m] -> [30s]; for: 5m -> 5s, 10m -> 10s), and no range shorter than
// four scrapes, so that rate() always has samples to work with.
func ruleScale() alerts.Scale {
	return alerts.Scale{Divisor: 60, MinRange: 4 * scrapeInterval, MinFor: 2 * scrapeInterval}
}

// Time-scaled lifetime buckets. In production the collapse rules read the
// lifetime window 250..350 s around the kernel's 300 s
// tcp_timeout_max_retrans / tcp_timeout_unacknowledged cut. A test cannot
// wait 300 s per flow, so the lifetime drill sets the namespace's
// established timeout to lifetimeTimeout (3 s) instead, and the recording
// rules Prometheus loads read the window 1..5 s that brackets it, as
// 250..350 s brackets 300 s: the same rule text and arithmetic on a
// shorter time axis. Only the window's bounds differ from the production
// rules (besides the windows and "for:" durations alerts.Scaled
// shortens): the le matchers le=~"250(\\.0)?" and le=~"350(\\.0)?" of
// the classic form, and the bounds of histogram_fraction(250, 350, ...) of
// the native form.
const lifetimeTimeout = 3 // seconds, nf_conntrack_tcp_timeout_established in the drill

// testWindow maps each production bound of the collapse window to its
// time-scaled bound.
var testWindow = map[string]string{"250": "1", "350": "5"}

// leBoundRE matches an le regex matcher's value for a bound written as an
// integer, with or without the ".0" that Prometheus 3 and protobuf scrapes
// add: 250(\.0)?.
var leBoundRE = regexp.MustCompile(`^([0-9]+)\(\\\.0\)\?$`)

// testRules returns the rules Prometheus loads in the end-to-end run: the
// production rules scaled by ruleScale, with the collapse window's bounds
// replaced by the time-scaled ones in the syntax tree of every expression.
// It fails the test if the production rules no longer contain exactly one
// le matcher for each bound, so a change to the rules cannot silently
// turn the drill into a no-op.
func testRules(t *testing.T) []byte {
	t.Helper()
	prod, err := alerts.Rules()
	if err != nil {
		t.Fatal(err)
	}
	scaled, err := alerts.Scaled(prod, ruleScale())
	if err != nil {
		t.Fatal(err)
	}
	replaced := map[string]int{}
	scaled, err = alerts.RewriteExprs(scaled, func(e parser.Expr) error {
		var err error
		parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
			if call, ok := n.(*parser.Call); ok && call.Func.Name == "histogram_fraction" {
				for _, arg := range call.Args[:2] {
					num, ok := arg.(*parser.NumberLiteral)
					if !ok {
						continue
					}
					from := strconv.FormatFloat(num.Val, 'f', -1, 64)
					if to, ok := testWindow[from]; ok {
						num.Val, _ = strconv.ParseFloat(to, 64)
						replaced["histogram_fraction "+from]++
					}
				}
				return nil
			}
			vs, ok := n.(*parser.VectorSelector)
			if !ok {
				return nil
			}
			for i, m := range vs.LabelMatchers {
				sub := leBoundRE.FindStringSubmatch(m.Value)
				if m.Name != "le" || m.Type != labels.MatchRegexp || sub == nil {
					continue
				}
				to, ok := testWindow[sub[1]]
				if !ok {
					continue
				}
				nm, nerr := labels.NewMatcher(m.Type, m.Name, to+`(\.0)?`)
				if nerr != nil {
					err = nerr
					return err
				}
				vs.LabelMatchers[i] = nm
				replaced["le "+sub[1]]++
			}
			return nil
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for from := range testWindow {
		if n := replaced["le "+from]; n != 1 {
			t.Fatalf("rules contain le=~%q %d times, want once", from+`(\.0)?`, n)
		}
		if n := replaced["histogram_fraction "+from]; n != 1 {
			t.Fatalf("rules bound a histogram_fraction at %s %d times, want once", from, n)
		}
	}
	if _, err := alerts.Parse(scaled); err != nil {
		t.Fatal(err)
	}
	return scaled
}

// ingestion is how Prometheus ingests the exporter's histograms in one
// run of the end-to-end test.
type ingestion struct {
	name string
	// native starts Prometheus with native histograms on: it then keeps
	// conntrack_flow_lifetime_seconds as a native histogram only, without
	// _bucket, _count and _sum series.
	native bool
	// kubeStateMetrics adds a scrape job that serves kube-state-metrics'
	// pod series naming the drills' addresses (kubernetes_test.go); without
	// it, the run is a cluster without kube-state-metrics, or no cluster.
	kubeStateMetrics bool
}

// ingestions are the runs of the end-to-end test: the shipped rules and
// dashboard must give the same answers in both. The Kubernetes joins are
// checked with kube-state-metrics in the classic run and without it in
// the native run; the histogram ingestion does not change them.
var ingestions = []ingestion{{name: "classic", kubeStateMetrics: true}, {name: "native", native: true}}

// stack is one exporter scraped by one Prometheus that sends to one
// Alertmanager whose webhook receiver is in the test.
type stack struct {
	start    time.Time
	exporter *lab.Exporter
	prom     *Prometheus
	am       *Alertmanager
	hook     *Webhook

	mu       sync.Mutex
	arrivals []arrival
}

// arrival is an alert that reached the webhook, and how long after the
// start of its drill.
type arrival struct {
	drill, alert, netns string
	after               time.Duration
}

// startStack starts the webhook, Alertmanager, the exporter watching
// netns, and Prometheus with the shipped rules and Kubernetes rules, and
// waits until Prometheus has scraped every namespace. With pods, it also
// serves them as kube-state-metrics does, scraped as job ksmJob, and waits
// until Prometheus has them.
func startStack(t *testing.T, netns []*nstest.Namespace, mode ingestion, pods []ksmPod) *stack {
	t.Helper()
	s := &stack{start: time.Now(), hook: startWebhook(t)}
	s.am = startAlertmanager(t, s.hook.URL)
	// A table scan every 10 s instead of 60 s, so that the breakdown
	// panels show the filled table during the run.
	args := []string{"--table.interval=10s"}
	for _, ns := range netns {
		args = append(args, "--conntrack.netns="+ns.Path)
	}
	s.exporter = nstest.StartExporter(t, binary, args...)
	var more []ScrapeJob
	if len(pods) > 0 {
		more = append(more, ScrapeJob{Job: ksmJob, Targets: []string{startKubeStateMetrics(t, ksmExposition(pods))}})
	}
	s.prom = startPrometheus(t, PrometheusConfig{
		ScrapeInterval: scrapeInterval,
		Job:            promJob,
		Targets:        []string{s.exporter.Addr},
		MoreJobs:       more,
		Rules:          [][]byte{testRules(t), kubernetesTestRules(t)},
		Alertmanager:   s.am.Addr,

		NativeHistograms: mode.native,
	})
	if len(pods) > 0 {
		expr := fmt.Sprintf(`kube_pod_info{job=%q}`, ksmJob)
		if v := s.prom.WaitVector(t, expr, 30*time.Second); len(v) != len(pods) {
			t.Fatalf("Prometheus has %d series %s after 30s, want %d", len(v), expr, len(pods))
		}
	}
	for _, ns := range netns {
		expr := fmt.Sprintf(`conntrack_entries{job=%q, netns=%q}`, promJob, ns.Name)
		if v := s.prom.WaitVector(t, expr, 30*time.Second); len(v) == 0 {
			t.Fatalf("Prometheus has no %s after 30s", expr)
		}
	}
	t.Logf("exporter %s, Prometheus %s, Alertmanager %s, webhook %s ready after %v",
		s.exporter.Addr, s.prom.Addr, s.am.Addr, s.hook.URL, time.Since(s.start).Round(time.Millisecond))
	return s
}

// waitAlerts waits for each alert to reach the webhook, firing for netns,
// and records how long after drillStart it arrived.
func (s *stack) waitAlerts(t *testing.T, drill string, drillStart time.Time, netns string, timeout time.Duration, names ...string) {
	t.Helper()
	ctx, cancel := context.WithDeadline(context.Background(), drillStart.Add(timeout))
	defer cancel()
	for _, name := range names {
		a, ok := s.hook.WaitFiring(ctx, name, netns)
		if !ok {
			t.Errorf("%s for netns %s did not reach the webhook within %v of the start of the %s drill", name, netns, timeout, drill)
			continue
		}
		after := a.Received.Sub(drillStart)
		t.Logf("%s{netns=%q} reached the webhook %v after the start of the %s drill (fired in Prometheus at +%v); %s",
			name, netns, after.Round(time.Millisecond), drill, a.StartsAt.Sub(drillStart).Round(time.Millisecond), a.Annotations["description"])
		if a.Labels["instance"] != s.exporter.Addr || a.Labels["job"] != promJob || a.Labels["severity"] == "" {
			t.Errorf("%s: labels %v, want instance %s, job %s and a severity", name, a.Labels, s.exporter.Addr, promJob)
		}
		if a.Annotations["summary"] == "" || a.Annotations["runbook_url"] == "" {
			t.Errorf("%s: annotations %v lack a summary or runbook_url", name, a.Annotations)
		}
		s.mu.Lock()
		s.arrivals = append(s.arrivals, arrival{drill: drill, alert: name, netns: netns, after: after})
		s.mu.Unlock()
	}
}

// TestAlertsEndToEnd runs the exporter, the Debian Prometheus and
// Alertmanager on loopback with the shipped rules (time-scaled, see
// testRules) and the shipped dashboard, against namespaces that go
// through drills:
//   - fill: a namespace filled to nf_conntrack_max with ASSURED entries
//     while new connections knock: ConntrackTableNearlyFull and
//     ConntrackTableFull must reach the webhook;
//   - lifetime: idle established flows in a namespace with a 3 s
//     established timeout expire while still ESTABLISHED:
//     ConntrackEstablishedLifetimeCollapse must reach the webhook;
//   - healthy: two namespaces with open idle connections and a stream of
//     short ones must fire nothing, not even a pending alert.
//
// Afterwards every dashboard query must parse and return data from the
// same Prometheus, and every rule must evaluate without error. It logs
// which alerts arrived and how long after the start of their drill.
//
// It runs once per ingestion mode (see ingestions), one after the other:
// with classic histogram series and with native histograms only. The
// classic run also scrapes a kube-state-metrics stand-in that names the
// lifetime drill's client and server as pods (kubernetes_test.go): the
// Kubernetes rules must join them, never a host-network pod's address, and
// the dashboard's Kubernetes panels must name the pods; the native run,
// without kube-state-metrics, must get no joined series and the addresses
// in those panels.
func TestAlertsEndToEnd(t *testing.T) {
	nstest.RequireRoot(t, "conntrack", "prometheus", "prometheus-alertmanager", "promtool")
	t.Parallel()
	for _, mode := range ingestions {
		t.Run(mode.name, func(t *testing.T) {
			alertsEndToEnd(t, mode)
		})
	}
}

// alertsEndToEnd is one run of TestAlertsEndToEnd with Prometheus
// ingesting histograms as mode says.
func alertsEndToEnd(t *testing.T, mode ingestion) {
	fill := nstest.NewPair(t)
	healthy := nstest.NewPair(t)
	healthy.Connect(t, 8)
	// The lifetime drill's pair has addresses of its own, so that the
	// kube-state-metrics stand-in can name its client and server as pods
	// while the other pairs' client address (198.18.0.1) is the node
	// address of host-network pods.
	life := &nstest.Pair{A: nstest.NewNamespace(t), B: nstest.NewNamespace(t), AAddr: "198.18.1.1", BAddr: "198.18.1.2"}
	nstest.Link(t, life.A, life.AAddr+"/24", life.B, life.BAddr+"/24")
	for _, kv := range [][2]string{
		{"net.netfilter.nf_conntrack_timestamp", "1"},
		{"net.netfilter.nf_conntrack_events", "1"},
		{"net.netfilter.nf_conntrack_tcp_timeout_established", fmt.Sprint(lifetimeTimeout)},
	} {
		life.B.Sysctl(t, kv[0], kv[1])
	}
	t.Logf("namespaces: fill %s, healthy %s and %s, lifetime %s", fill.B.Name, healthy.A.Name, healthy.B.Name, life.B.Name)

	var pods []ksmPod
	if mode.kubeStateMetrics {
		pods = drillPods(life.AAddr, life.BAddr, healthy.AAddr)
	}
	s := startStack(t, []*nstest.Namespace{fill.B, healthy.A, healthy.B, life.B}, mode, pods)

	t.Run("drills", func(t *testing.T) {
		// Short connections in the healthy namespaces for as long as the
		// drills run; not a parallel subtest, so that both drills start
		// at once even with -parallel 2.
		l := healthy.B.Listen(t, net.JoinHostPort(healthy.BAddr, "8082"))
		stopChurn := make(chan struct{})
		churned := make(chan struct{})
		go func() {
			defer close(churned)
			churn(t, healthy.A, l, stopChurn)
		}()
		t.Cleanup(func() { close(stopChurn); <-churned })
		t.Run("fill", func(t *testing.T) {
			t.Parallel()
			fillDrill(t, s, fill)
		})
		t.Run("lifetime", func(t *testing.T) {
			t.Parallel()
			lifetimeDrill(t, s, life)
		})
	})
	end := time.Now()

	limit, _ := nstest.ParseMetrics(t, nstest.Scrape(t, s.exporter)).Value("conntrack_entries_limit", map[string]string{"netns": fill.B.Name})
	t.Run("dashboard", func(t *testing.T) {
		checkDashboard(t, s, end, []panelShows{
			{"Fill ratio", "A", fill.B.Name, 0.9},
			{"Entries and limit", "A", fill.B.Name, 0.9 * limit},
			{"Drops, early drops, insert failures", "A", fill.B.Name, 0},
			// The table breakdown comes from a scan every 10 s, whose
			// last run may have started before the fill was complete.
			{"Entries by protocol and state", "A", fill.B.Name, 0},
			{"Top sources", "A", fill.B.Name, 0},
			{"Top destination ports", "A", fill.B.Name, 0},
			{"Lifetime of flows that died ESTABLISHED", "A", life.B.Name, 0},
			{"Lifetime of all flows", "A", life.B.Name, 0},
			{"Share of ESTABLISHED deaths aged 250..350 s", "A", life.B.Name, 0.5},
			{"Flow ends by end state", "A", life.B.Name, 0},
			{"Events", "A", life.B.Name, 0},
			// The lifetime drill's idle flows die ESTABLISHED: each is a
			// flow end of its source and a silent end of its destination.
			{"Top churning sources", "A", life.B.Name, 0},
			{"Top silent-end destinations", "A", life.B.Name, 0},
			{"Entries by NAT kind", "A", fill.B.Name, 0},
			// Pods where kube-state-metrics names them, addresses
			// otherwise: data in both runs.
			{"Pods by connection churn (address if no pod)", "A", life.B.Name, 0},
			{"Pods whose connections die silently (address if no pod)", "A", life.B.Name, 0},
			{"Pods by table entries (address if no pod)", "A", healthy.B.Name, 0},
			// The fleet row ignores the namespace selection: the fill
			// drill's node is the fleet's fullest, and it drops.
			{"Fleet: nodes nearest to full", "A", fill.B.Name, 0.9},
			{"Fleet: nodes dropping packets", "A", fill.B.Name, 0},
			{"Fleet: nodes with the most silent ends", "A", life.B.Name, 0},
		})
	})
	t.Run("kubernetes", func(t *testing.T) {
		// The lifetime drill dials from life.A to life.B port 8081 and its
		// flows die ESTABLISHED: life.A's address is the top source of
		// flow ends in life.B, life.B's the top silent-end destination.
		// The healthy pair's 8 idle connections from 198.18.0.1 make it a
		// top source of healthy.B's table.
		if !mode.kubeStateMetrics {
			checkNoPodJoins(t, s, end)
			checkPanelNames(t, s, end, "Pods by connection churn (address if no pod)", life.B.Name, life.AAddr)
			checkPanelNames(t, s, end, "Pods whose connections die silently (address if no pod)", life.B.Name, life.BAddr)
			checkPanelNames(t, s, end, "Pods by table entries (address if no pod)", healthy.B.Name, healthy.AAddr)
			return
		}
		checkPodJoins(t, s, end, []wantJoin{
			{rule: "netns:conntrack_flow_ends_top_source:pod", addrLabel: "source", addr: life.AAddr, netns: life.B.Name, namespace: "drill", pod: "client"},
			{rule: "netns:conntrack_flow_silent_ends_top_destination:pod", addrLabel: "destination", addr: life.BAddr, port: "8081", netns: life.B.Name, namespace: "drill", pod: "server"},
		}, healthy.AAddr, healthy.B.Name)
		checkPanelNames(t, s, end, "Pods by connection churn (address if no pod)", life.B.Name, "drill/client "+life.AAddr)
		checkPanelNames(t, s, end, "Pods whose connections die silently (address if no pod)", life.B.Name, "drill/server "+life.BAddr)
		checkPanelNames(t, s, end, "Pods by table entries (address if no pod)", healthy.B.Name, healthy.AAddr)
	})
	t.Run("rules", func(t *testing.T) {
		checkRuleHealth(t, s)
	})
	t.Run("ingestion", func(t *testing.T) {
		checkIngestion(t, s, end, mode, life.B.Name)
	})
	t.Run("scrapes", func(t *testing.T) {
		checkScrapes(t, s, end)
	})
	t.Run("healthy", func(t *testing.T) {
		checkQuiet(t, s, end, healthy.A, healthy.B)
	})
	t.Run("only expected alerts", func(t *testing.T) {
		checkOnlyExpected(t, s, map[string][]string{
			fill.B.Name: {"ConntrackTableNearlyFull", "ConntrackTableFull"},
			life.B.Name: {"ConntrackEstablishedLifetimeCollapse"},
		}, map[string]map[string]string{
			fill.B.Name: {"ConntrackEventsLost": "the fill creates nf_conntrack_max entries in a few seconds; " +
				"without timestamps the exporter subscribes to their NEW events too, and on a loaded " +
				"machine that burst can overrun its socket: the alert then says so correctly"},
		})
	})

	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for _, a := range s.arrivals {
		fmt.Fprintf(&b, "\n  %-8s %-38s %-13s %v", a.drill, a.alert, a.netns, a.after.Round(100*time.Millisecond))
	}
	t.Logf("%s ingestion: alerts that reached the webhook (drill, alert, netns, time from drill start; the lifetime drill is "+
		"time-scaled: %d s established timeout, window 1..5 s in place of 250..350 s):%s", mode.name, lifetimeTimeout, b.String())
}

// churn opens and closes short connections from netns a to l, two a
// second, until done is closed, so that the healthy namespaces see inserts
// and orderly ends beside their idle connections. It runs in its own
// goroutine, so it reports errors with t.Errorf only.
func churn(t *testing.T, a *nstest.Namespace, l net.Listener, done <-chan struct{}) {
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	n := 0
	for {
		err := a.Target().Do(func() error {
			c, err := net.DialTimeout("tcp", l.Addr().String(), 5*time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err != nil {
			t.Errorf("healthy connection %d: %v", n+1, err)
			return
		}
		n++
		select {
		case <-done:
			t.Logf("%d short connections in the healthy namespaces", n)
			return
		case <-tick.C:
		}
	}
}

// fillDrill fills p.B's table to the global nf_conntrack_max with ASSURED
// ESTABLISHED entries, which early_drop cannot evict, and keeps opening
// new connections from p.A into p.B, which the full table drops, until
// ConntrackTableNearlyFull and ConntrackTableFull have reached the webhook.
func fillDrill(t *testing.T, s *stack, p *nstest.Pair) {
	l := p.B.Listen(t, net.JoinHostPort(p.BAddr, "8080"))
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	// The entries outlive the test; the namespace goes with them. They
	// are created in chunks because CreateEntries marks them ASSURED only
	// after creating all it was given, and at >= 95 % of the limit the
	// kernel's GC may evict entries that are not ASSURED yet. The limit is
	// read again after each round, in case it changed meanwhile.
	start := time.Now()
	next, limit, count := 0, 0, 0
	for round := 0; ; round++ {
		limit, count = conntrackMax(t), p.B.CountEntries(t)
		if count >= limit {
			break
		}
		if round == 3 {
			t.Fatalf("table of %s holds %d entries after %d rounds, want the limit %d", p.B.Name, count, round, limit)
		}
		need := limit - count
		all := nstest.EstablishedEntries(next+need, 3600)[next:]
		next += need
		const chunk = 2048
		for i := 0; i < len(all); i += chunk {
			if n, err := p.B.CreateEntries(t, all[i:min(i+chunk, len(all))]); err != nil {
				t.Logf("chunk at %d: %d created: %v", i, n, err)
			}
		}
	}
	t.Logf("filled the table to %d ASSURED entries (limit %d) in %v",
		count, limit, time.Since(start).Round(time.Millisecond))

	// Knock: each attempt's SYNs (and their retransmissions) are dropped
	// because no entry can be allocated.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var attempts, connected int
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			attempts++
			if c, err := p.A.Dial(t, l.Addr().String(), time.Second); err == nil {
				c.Close()
				connected++
			}
		}
	}()
	s.waitAlerts(t, "fill", start, p.B.Name, time.Since(start)+2*time.Minute, "ConntrackTableNearlyFull", "ConntrackTableFull")
	cancel()
	wg.Wait()
	mfs := nstest.ParseMetrics(t, nstest.Scrape(t, s.exporter))
	drops, _ := mfs.Value("conntrack_stat_drop_total", map[string]string{"netns": p.B.Name})
	lost, _ := mfs.Value("conntrack_exporter_events_lost_total", map[string]string{"netns": p.B.Name})
	news, _ := mfs.Value("conntrack_events_total", map[string]string{"netns": p.B.Name, "type": "new"})
	t.Logf("%d connection attempts into the full table, %d connected; drop_total %v; %v NEW events received, %v lost",
		attempts, connected, drops, news, lost)
	if connected > 0 {
		t.Errorf("%d of %d connections into a full table succeeded", connected, attempts)
	}
}

// conntrackMax returns the global nf_conntrack_max.
func conntrackMax(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_max")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n < 1000 {
		t.Fatalf("nf_conntrack_max %q: %v", b, err)
	}
	return n
}

// lifetimeDrill is the time-scaled variant of the 300 s collapse: p.B's
// established timeout is lifetimeTimeout (3 s) and the rules read the
// buckets around it (see testRules). Every second it opens a batch of
// connections from p.A to p.B that then stay idle: no FIN, no RST, no
// keepalive, so p.B's entries expire while still ESTABLISHED, as flows a
// middlebox dropped do at the 300 s cut. It keeps doing so until
// ConntrackEstablishedLifetimeCollapse has reached the webhook.
func lifetimeDrill(t *testing.T, s *stack, p *nstest.Pair) {
	l := p.B.Listen(t, net.JoinHostPort(p.BAddr, "8081"))
	var mu sync.Mutex
	var held []net.Conn
	hold := func(c net.Conn) {
		mu.Lock()
		held = append(held, c)
		mu.Unlock()
	}
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	}()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			// No keepalive probe may revive the flow after it expired.
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetKeepAlive(false)
			}
			hold(c)
		}
	}()
	dialer := net.Dialer{Timeout: 5 * time.Second, KeepAlive: -1}
	start := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var opened int
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			for range 4 {
				var c net.Conn
				err := p.A.Target().Do(func() error {
					var err error
					c, err = dialer.Dial("tcp", l.Addr().String())
					return err
				})
				if err != nil {
					t.Errorf("connection %d: %v", opened+1, err)
					return
				}
				hold(c)
				opened++
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	s.waitAlerts(t, "lifetime", start, p.B.Name, 3*time.Minute, "ConntrackEstablishedLifetimeCollapse")
	cancel()
	wg.Wait()
	logLifetimeRules(t, s, p.B.Name, start)
	// When the first expiry reached Prometheus. The kernel reaps expired
	// idle entries in its GC pass, which it schedules at the average
	// remaining timeout of the entries it scanned, between 1 and 60 s: a
	// hash table (shared by every namespace) full of long-lived entries,
	// such as the fill drill's, delays reaping and DESTROY events.
	deaths, err := s.prom.QueryRange(context.Background(),
		fmt.Sprintf(`conntrack_flow_lifetime_seconds_count{netns=%q, end_state="established"} > 0`, p.B.Name),
		start, time.Now(), scrapeInterval)
	if err == nil && len(deaths) > 0 && len(deaths[0].Values) > 0 {
		t.Logf("first ESTABLISHED expiry scraped %v after the start of the drill",
			deaths[0].Values[0].Timestamp.Time().Sub(start).Round(time.Millisecond))
	}
	mfs := nstest.ParseMetrics(t, nstest.Scrape(t, s.exporter))
	for _, m := range mfs["conntrack_flow_lifetime_seconds"].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["netns"] != p.B.Name {
			continue
		}
		var b strings.Builder
		prev := uint64(0)
		for _, bk := range m.GetHistogram().GetBucket() {
			if c := bk.GetCumulativeCount(); c != prev {
				fmt.Fprintf(&b, " le=%g:%d", bk.GetUpperBound(), c)
				prev = c
			}
		}
		t.Logf("opened %d idle connections; %s %s ended %d flows, cumulative buckets where they change:%s",
			opened, labels["protocol"], labels["end_state"], m.GetHistogram().GetSampleCount(), b.String())
	}
}

// allowedEmptyPanels are the dashboard queries that may legitimately return
// no data in this run, keyed by "panel title/refId", with the reason.
//
// Only the helper panel may: the drills give every other panel something
// to show, and the panels of things that did not happen still return
// numbers, because the
// exporter exports every counter from the start, at 0 (event loss,
// overruns, flows without timestamp, insert failures, chain too long,
// ...), so their rate() is 0 rather than nothing. A panel that comes back
// empty therefore means a metric name, label or recording rule that does
// not match what the exporter and the rules produce. Add an entry here
// only with the reason it must be empty.
func allowedEmptyPanels() map[string]string {
	return map[string]string{
		"Entries with a conntrack helper/A": "no drill attaches a conntrack helper (no namespace of the run has a " +
			"ct helper rule), and the exporter exports a helper's series only while entries carry it; " +
			"e2e/attribution_test.go checks the family with an ftp helper",
	}
}

// panelShows says that a panel's query, run for one namespace, must reach
// a value above Above at some point of the run: the panel shows the drill.
type panelShows struct {
	Panel, RefID, Netns string
	Above               float64
}

// checkDashboard runs every query of the shipped dashboard against the
// run's Prometheus, as Grafana would with "All" namespaces of the
// exporter's instance selected, over the whole run: each must parse, and
// each must return at least one sample that is a number unless
// allowedEmptyPanels says why it may not. The variables' label_values
// queries must return values. Then each of shows is run with its
// namespace selected and must reach its value.
func checkDashboard(t *testing.T, s *stack, end time.Time, shows []panelShows) {
	path, err := grafana.DashboardFile()
	if err != nil {
		t.Fatal(err)
	}
	d, err := grafana.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	step := 2 * time.Second
	vars := map[string]string{
		// Grafana escapes a selected value's regex metacharacters, and
		// the backslashes again for the PromQL string.
		"instance":        strings.ReplaceAll(regexp.QuoteMeta(s.exporter.Addr), `\`, `\\`),
		"netns":           ".*",
		"__rate_interval": grafana.RateInterval(scrapeInterval, step),
	}
	ctx := context.Background()

	labelValuesRE := regexp.MustCompile(`^\s*label_values\((.+),\s*([A-Za-z_][A-Za-z0-9_]*)\)\s*$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		m := labelValuesRE.FindStringSubmatch(v.Query)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(selector, label)", v.Name, v.Query)
			continue
		}
		sel, err := grafana.Expand(m[1], vars)
		if err != nil {
			t.Errorf("variable %s: %v", v.Name, err)
			continue
		}
		vals, err := s.prom.LabelValues(ctx, m[2], sel)
		t.Logf("variable %s: label_values(%s, %s) = %v", v.Name, sel, m[2], vals)
		if err != nil || len(vals) == 0 {
			t.Errorf("variable %s: label_values(%s, %s) = %v, %v", v.Name, sel, m[2], vals, err)
		}
	}

	// run runs one panel query as Grafana would: instant queries at the
	// end of the run, range queries over the run.
	run := func(q grafana.PanelQuery, vars map[string]string) (model.Value, string, error) {
		expr, err := grafana.Expand(q.Expr, vars)
		if err != nil {
			return nil, q.Expr, err
		}
		if q.Instant {
			v, err := s.prom.Query(ctx, expr, end)
			return v, expr, err
		}
		m, err := s.prom.QueryRange(ctx, expr, s.start, end, step)
		return m, expr, err
	}

	allowed := allowedEmptyPanels()
	var empty []string
	queries := d.Queries()
	for _, q := range queries {
		key := q.PanelTitle + "/" + q.RefID
		v, expr, err := run(q, vars)
		if err != nil {
			t.Errorf("panel %d %s: %s: %v", q.PanelID, key, expr, err)
			continue
		}
		numbers, nans := countSamples(v)
		t.Logf("panel %d %s: %d samples, %d NaN", q.PanelID, key, numbers, nans)
		if numbers > 0 {
			if reason, ok := allowed[key]; ok {
				t.Logf("panel %d %s is allowed to be empty (%s) but has data", q.PanelID, key, reason)
			}
			continue
		}
		if reason, ok := allowed[key]; ok {
			t.Logf("panel %d %s is empty, as allowed: %s", q.PanelID, key, reason)
			continue
		}
		empty = append(empty, fmt.Sprintf("panel %d %q query %s: %s", q.PanelID, q.PanelTitle, q.RefID, expr))
	}
	if len(empty) > 0 {
		t.Errorf("dashboard queries that returned no data:\n  %s", strings.Join(empty, "\n  "))
	}

	for _, sh := range shows {
		i := slices.IndexFunc(queries, func(q grafana.PanelQuery) bool {
			return q.PanelTitle == sh.Panel && q.RefID == sh.RefID
		})
		if i < 0 {
			t.Errorf("dashboard has no panel %q with query %s", sh.Panel, sh.RefID)
			continue
		}
		one := maps.Clone(vars)
		one["netns"] = regexp.QuoteMeta(sh.Netns)
		v, expr, err := run(queries[i], one)
		if err != nil {
			t.Errorf("panel %q %s: %s: %v", sh.Panel, sh.RefID, expr, err)
			continue
		}
		top, ok := maxValue(v)
		t.Logf("panel %q %s for netns %s: highest value %v", sh.Panel, sh.RefID, sh.Netns, top)
		if !ok || top <= sh.Above {
			t.Errorf("panel %q %s for netns %s: highest value %v (any: %v), want above %v during the drill: %s",
				sh.Panel, sh.RefID, sh.Netns, top, ok, sh.Above, expr)
		}
	}
}

// ruleState is a rule as /api/v1/rules reports it.
type ruleState struct {
	Name      string `json:"name"`
	Type      string `json:"type"`
	Health    string `json:"health"`
	LastError string `json:"lastError"`
}

// checkRuleHealth fails for every rule whose last evaluation failed, for
// example on a many-to-many match or a wrong type, and for a rule count
// that differs from the rule files' (the shipped rules and the Kubernetes
// and fleet rules).
func checkRuleHealth(t *testing.T, s *stack) {
	raw, err := s.prom.get(context.Background(), "/api/v1/rules", nil)
	if err != nil {
		t.Fatal(err)
	}
	var data struct {
		Groups []struct {
			Name  string      `json:"name"`
			Rules []ruleState `json:"rules"`
		} `json:"groups"`
	}
	if err := json.Unmarshal(raw, &data); err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, read := range []func() ([]byte, error){alerts.Rules, alerts.KubernetesRules} {
		prod, err := read()
		if err != nil {
			t.Fatal(err)
		}
		f, err := alerts.Parse(prod)
		if err != nil {
			t.Fatal(err)
		}
		want += len(f.AlertingRules()) + len(f.RecordingRules())
	}
	got := 0
	for _, g := range data.Groups {
		for _, r := range g.Rules {
			got++
			if r.Health != "ok" || r.LastError != "" {
				t.Errorf("rule %s (%s) in %s: health %q: %s", r.Name, r.Type, g.Name, r.Health, r.LastError)
			}
		}
	}
	if got != want {
		t.Errorf("Prometheus evaluates %d rules, the rule file has %d", got, want)
	}
}

// checkQuiet fails if any alert fired, or reached the webhook, for one of
// the namespaces during the run, and checks that Prometheus did scrape
// them, so that silence means health and not missing data.
func checkQuiet(t *testing.T, s *stack, end time.Time, netns ...*nstest.Namespace) {
	names := make([]string, len(netns))
	for i, ns := range netns {
		names[i] = ns.Name
	}
	re := strings.Join(names, "|")
	ctx := context.Background()
	for _, ns := range names {
		m, err := s.prom.QueryRange(ctx, fmt.Sprintf(`conntrack_entries{netns=%q} > 0`, ns), s.start, end, scrapeInterval)
		if n, _ := countSamples(m); err != nil || n == 0 {
			t.Errorf("netns %s: no conntrack_entries > 0 in Prometheus during the run (%v)", ns, err)
		}
	}
	m, err := s.prom.QueryRange(ctx, fmt.Sprintf(`ALERTS{netns=~%q}`, re), s.start, end, scrapeInterval)
	if err != nil {
		t.Fatal(err)
	}
	for _, ss := range m {
		t.Errorf("alert in a healthy namespace: %v (%d evaluations)", ss.Metric, len(ss.Values))
	}
	received, _ := s.hook.Alerts()
	for _, a := range received {
		if slices.Contains(names, a.Labels["netns"]) {
			t.Errorf("webhook received %s %s for healthy netns %s", a.Status, a.Labels["alertname"], a.Labels["netns"])
		}
	}
}

// checkOnlyExpected fails for every alert that reached the webhook and is
// not one of the alerts expected for its netns label, and for notifications
// the webhook could not decode. Alerts in tolerated (netns, alertname,
// reason) may arrive and are logged with the reason.
func checkOnlyExpected(t *testing.T, s *stack, expected map[string][]string, tolerated map[string]map[string]string) {
	received, bad := s.hook.Alerts()
	for _, b := range bad {
		t.Errorf("undecodable webhook notification: %s", b)
	}
	seen := map[string]bool{}
	for _, a := range received {
		key := a.Labels["alertname"] + " " + a.Status + " " + a.Labels["netns"]
		if seen[key] {
			continue
		}
		seen[key] = true
		reason, ok := tolerated[a.Labels["netns"]][a.Labels["alertname"]]
		switch {
		case slices.Contains(expected[a.Labels["netns"]], a.Labels["alertname"]):
		case ok:
			t.Logf("tolerated alert at the webhook: %s %v: %s", a.Status, a.Labels, reason)
		default:
			t.Errorf("unexpected alert at the webhook: %s %v", a.Status, a.Labels)
		}
	}
	keys := make([]string, 0, len(seen))
	for k := range seen {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	t.Logf("webhook notifications (alertname status netns): %v", keys)
}

// checkScrapes logs how many scrapes of the exporter failed during the run
// and how long scrapes and collectors took. Single failed scrapes are not
// an error: on a loaded CI machine a scrape can exceed the 1 s timeout.
// Scrapes failing for the scaled "for:" of ConntrackExporterDown fire that
// alert, which checkOnlyExpected rejects.
func checkScrapes(t *testing.T, s *stack, end time.Time) {
	ctx := context.Background()
	sel := fmt.Sprintf(`{job=%q, instance=%q}`, promJob, s.exporter.Addr)
	run := model.Duration(end.Sub(s.start)).String()
	for _, q := range []struct{ what, expr string }{
		{"failed scrapes", fmt.Sprintf("count_over_time((up%s == 0)[%s:%s]) or vector(0)", sel, run, model.Duration(scrapeInterval))},
		{"scrapes", fmt.Sprintf("count_over_time(up%s[%s])", sel, run)},
		{"median scrape seconds", fmt.Sprintf("quantile_over_time(0.5, scrape_duration_seconds%s[%s])", sel, run)},
		{"slowest scrape seconds", fmt.Sprintf("max_over_time(scrape_duration_seconds%s[%s])", sel, run)},
		{"slowest collector seconds", fmt.Sprintf("max by (collector) (max_over_time(conntrack_exporter_collector_duration_seconds%s[%s]))", sel, run)},
	} {
		v, err := s.prom.Query(ctx, q.expr, end)
		if err != nil {
			t.Errorf("%s: %v", q.expr, err)
			continue
		}
		t.Logf("%s: %v", q.what, v)
	}
}

// lifetimeRules are the recording rules built on the lifetime histogram.
var lifetimeRules = []string{
	"netns:conntrack_flow_lifetime_established:rate30m",
	"netns:conntrack_flow_lifetime_established_250_350:rate30m",
	"netns:conntrack_flow_lifetime_established_250_350:ratio_rate30m",
}

// logLifetimeRules logs, for netns, the value of each lifetime recording
// rule now and its highest value since start: the figures of the drill.
func logLifetimeRules(t *testing.T, s *stack, netns string, start time.Time) {
	ctx := context.Background()
	now := time.Now()
	for _, r := range lifetimeRules {
		sel := fmt.Sprintf(`%s{netns=%q}`, r, netns)
		v, err := s.prom.Query(ctx, sel, now)
		if err != nil {
			t.Errorf("%s: %v", sel, err)
			continue
		}
		m, err := s.prom.QueryRange(ctx, sel, start, now, scrapeInterval)
		if err != nil {
			t.Errorf("%s: %v", sel, err)
			continue
		}
		top, _ := maxValue(m)
		t.Logf("%s at +%v: %v (highest during the drill %.4g)", sel, now.Sub(start).Round(time.Millisecond), v, top)
	}
}

// checkIngestion checks that Prometheus ingested the lifetime histogram
// as mode says (classic series only, or the native histogram only), so that
// each run tests the form of the rules it claims to, and that the lifetime
// recording rules have values for netns.
func checkIngestion(t *testing.T, s *stack, end time.Time, mode ingestion, netns string) {
	ctx := context.Background()
	count := func(expr string) int {
		v, err := s.prom.Query(ctx, expr, end)
		if err != nil {
			t.Errorf("%s: %v", expr, err)
			return 0
		}
		n, _ := countSamples(v)
		return n
	}
	classic := count(fmt.Sprintf(`conntrack_flow_lifetime_seconds_count{netns=%q}`, netns))
	native := count(fmt.Sprintf(`histogram_count(conntrack_flow_lifetime_seconds{netns=%q})`, netns))
	t.Logf("%s ingestion: %d classic _count series, %d native histogram series for netns %s", mode.name, classic, native, netns)
	if mode.native && (classic != 0 || native == 0) || !mode.native && (classic == 0 || native != 0) {
		t.Errorf("%s ingestion: %d classic _count series and %d native histogram series, want only %s",
			mode.name, classic, native, mode.name)
	}
	for _, r := range lifetimeRules {
		if n := count(fmt.Sprintf(`%s{netns=%q}`, r, netns)); n == 0 {
			t.Errorf("%s ingestion: no value of %s for netns %s", mode.name, r, netns)
		}
	}
}
