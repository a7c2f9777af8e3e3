package bench

import (
	"bytes"
	"context"
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ct-exporter/ct-exporter/internal/lab"
	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

func TestMain(m *testing.M) {
	// The ti-mo/conntrack anchor runs in a child process: this test
	// binary started again with ChildEnv set.
	if IsChild() {
		os.Exit(RunChild())
	}
	os.Exit(m.Run())
}

// testLog is an io.Writer onto t.Log.
type testLog struct {
	mu sync.Mutex
	t  testing.TB
}

func (w *testLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestDrillsSmoke runs every drill once at its small smoke size against
// a freshly built ct-exporter, checks that its rows are sane and
// consistent, that the results go through JSON, the tables and the plot,
// and that the drill left no namespace behind.
func TestDrillsSmoke(t *testing.T) {
	nstest.RequireRoot(t, "conntrack", GNUTime)
	// A budget for every drill together, generous for a loaded machine.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	binary, err := lab.BuildExporter(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var results []*Result
	for _, d := range Drills() {
		t.Run(d.Name(), func(t *testing.T) {
			lab := NewLab(&testLog{t: t})
			env := &Env{Lab: lab, Exporter: binary, Self: self, Log: &testLog{t: t}}
			p := d.Smoke()
			if d.Name() == "fill" {
				// Filling to the limit takes a few seconds at the default
				// 262144; on a machine whose limit is much higher, fill a
				// part of it.
				if limit, err := ConntrackMax(); err == nil && limit > 300000 {
					p.Size = 20000
				}
			}
			r, runErr := Run(ctx, env, d, p)
			if err := lab.Close(); err != nil {
				t.Errorf("clean-up: %v", err)
			}
			created := lab.Created()
			if len(created) == 0 && runErr == nil {
				t.Error("the drill created no namespace")
			}
			for _, path := range created {
				if _, err := os.Stat(path); !os.IsNotExist(err) {
					t.Errorf("namespace %s left behind: %v", path, err)
				}
			}
			if runErr != nil {
				t.Fatal(runErr)
			}
			var buf bytes.Buffer
			if err := WriteTable(&buf, ThisMachine(), []*Result{r}); err != nil {
				t.Fatal(err)
			}
			t.Logf("\n%s", buf.String())
			check, ok := smokeChecks[d.Name()]
			if !ok {
				t.Fatalf("no smoke check for drill %s", d.Name())
			}
			check(t, r)
			results = append(results, r)
		})
	}
	if len(results) == 0 {
		return
	}

	// The results survive JSON and draw.
	path := filepath.Join(t.TempDir(), "smoke.json")
	rep := &Report{Machine: ThisMachine(), Command: "smoke", Results: results}
	if err := rep.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	back, err := ReadReport(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Results) != len(results) || back.Results[0].Drill != results[0].Drill || len(back.Results[0].Rows) != len(results[0].Rows) {
		t.Fatalf("JSON round trip lost results: %+v", back.Results)
	}
	var svg bytes.Buffer
	if err := WriteSVG(&svg, "smoke", back.Results); err != nil {
		t.Fatal(err)
	}
	checkXML(t, svg.Bytes())
	if err := WriteMarkdown(io.Discard, back); err != nil {
		t.Fatal(err)
	}
}

// checkXML fails the test if b is not well-formed XML.
func checkXML(t *testing.T, b []byte) {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(b))
	for {
		_, err := dec.Token()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed: %v\n%s", err, b)
		}
	}
}

// row returns a row or fails the test.
func row(t *testing.T, r *Result, metric, anchor string) Row {
	t.Helper()
	got, ok := r.Row(metric, anchor)
	if !ok {
		t.Fatalf("no row %q against %q", metric, anchor)
	}
	return got
}

// fact returns a fact or fails the test.
func fact(t *testing.T, r *Result, name string) float64 {
	t.Helper()
	v, ok := r.Fact(name)
	if !ok {
		t.Fatalf("no fact %q", name)
	}
	return v
}

// same checks that a row's two values are equal.
func same(t *testing.T, r *Result, metric, anchor string) Row {
	t.Helper()
	got := row(t, r, metric, anchor)
	if got.Exporter == nil || got.AnchorValue == nil || *got.Exporter != *got.AnchorValue {
		t.Errorf("%s: exporter %v, %s %v: want equal", metric, deref(got.Exporter), anchor, deref(got.AnchorValue))
	}
	return got
}

// positive checks that both sides of a row are above zero.
func positive(t *testing.T, r *Result, metric, anchor string) {
	t.Helper()
	got := row(t, r, metric, anchor)
	if got.Exporter != nil && *got.Exporter <= 0 {
		t.Errorf("%s: exporter %v, want > 0", metric, *got.Exporter)
	}
	if got.AnchorValue != nil && *got.AnchorValue <= 0 {
		t.Errorf("%s: %s %v, want > 0", metric, anchor, *got.AnchorValue)
	}
}

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

// smokeChecks are the consistency checks of each drill's smoke result.
var smokeChecks = map[string]func(t *testing.T, r *Result){
	"fill": func(t *testing.T, r *Result) {
		limit := fact(t, r, "nf_conntrack_max")
		created := fact(t, r, "entries created over ctnetlink")
		entries := same(t, r, "entries", AnchorCount)
		same(t, r, "limit", AnchorSysctl)
		same(t, r, "drop_total", AnchorStats)
		same(t, r, "early_drop_total", AnchorStats)
		if *entries.Exporter < created {
			t.Errorf("exporter sees %v entries, %v were created", *entries.Exporter, created)
		}
		if created == limit {
			// A full table of ASSURED entries drops every new connection.
			if got := fact(t, r, "connections that timed out"); got != probeConnections {
				t.Errorf("%v of %d connections timed out on a full table", got, probeConnections)
			}
			if d := row(t, r, "drop_total", AnchorStats); *d.Exporter < probeConnections {
				t.Errorf("drop_total = %v on a full table, want >= %d", *d.Exporter, probeConnections)
			}
		}
		positive(t, r, "scrape duration", AnchorStats+" wall time")
	},
	"churn": func(t *testing.T, r *Result) {
		opened := fact(t, r, "connections opened and closed")
		p := r.Params
		if want := 0.8 * p.Rate * time.Duration(p.Duration).Seconds(); opened < want {
			t.Errorf("%v connections opened, want at least %v", opened, want)
		}
		// A dial may fail now and then on a loaded machine (the notes
		// say why); what is checked is that every entry's end is seen.
		if failed := fact(t, r, "connections that failed"); failed > 0.05*(opened+failed) {
			t.Errorf("%v connections failed: %v", failed, r.Notes)
		} else if failed > 0 {
			t.Logf("%v connections failed: %v", failed, r.Notes)
		}
		// A low rate: neither listener loses anything.
		// (A dial cut short at the end leaves an entry too.)
		same(t, r, "received + lost", AnchorEvents)
		d := row(t, r, "DESTROY events received", AnchorEvents)
		if *d.Exporter < opened || *d.AnchorValue < opened {
			t.Errorf("DESTROY events: exporter %v, conntrack -E %v, for %v connections", *d.Exporter, *d.AnchorValue, opened)
		}
		if l := row(t, r, "flow lifetimes observed", ""); *l.Exporter != *d.Exporter {
			t.Errorf("%v lifetimes observed for %v DESTROY events", *l.Exporter, *d.Exporter)
		}
		for _, k := range []string{"insert_failed_total", "drop_total"} {
			same(t, r, k, AnchorStats)
		}
		positive(t, r, "CPU during the drill", AnchorEvents)
		// The floor heard every event the exporter heard.
		same(t, r, "DESTROY events received + lost, whole run", AnchorEventFloor)
		positive(t, r, "CPU per DESTROY event", AnchorEventFloor)
	},
	"burst": func(t *testing.T, r *Result) {
		n := float64(r.Params.Size)
		// Every event is either received or counted as lost, by the
		// exporter and, from its socket's drop count, for conntrack -E.
		sum := same(t, r, "received + lost", AnchorEvents)
		if *sum.Exporter != n {
			t.Errorf("received + lost = %v, want %v", *sum.Exporter, n)
		}
		got := row(t, r, "DESTROY events received", AnchorEvents)
		if l := row(t, r, "flow lifetimes observed", ""); *l.Exporter != *got.Exporter {
			t.Errorf("%v lifetimes observed for %v DESTROY events received", *l.Exporter, *got.Exporter)
		}
		if c := row(t, r, "CPU while the events came", ""); *c.Exporter <= 0 || *c.AnchorValue <= 0 {
			t.Errorf("CPU: exporter %v, conntrack -E %v", *c.Exporter, *c.AnchorValue)
		}
	},
	"idle-expiry": func(t *testing.T, r *Result) {
		n := float64(r.Params.Size)
		expired := same(t, r, "flows expired while ESTABLISHED", AnchorEvents)
		if *expired.Exporter != n {
			t.Errorf("%v flows expired while ESTABLISHED, want %v", *expired.Exporter, n)
		}
		// The lifetime is the timeout, however late the garbage
		// collector reaped the entry; the kernel backdates the stop
		// time in jiffies (a few ms), and conntrack -E rounds to
		// seconds.
		timeout := time.Duration(r.Params.Timeout).Seconds()
		life := row(t, r, "mean lifetime", AnchorEvents+" delta-time")
		if *life.Exporter < timeout-0.05 || *life.Exporter > timeout+1 {
			t.Errorf("exporter mean lifetime %v s, timeout %v s", *life.Exporter, timeout)
		}
		if *life.AnchorValue < timeout-1 || *life.AnchorValue > timeout+1 {
			t.Errorf("conntrack -E mean delta-time %v s, timeout %v s", *life.AnchorValue, timeout)
		}
	},
	"namespaces": func(t *testing.T, r *Result) {
		watched := row(t, r, "watched namespaces", AnchorOwnOnly)
		if want := float64(r.Params.Size + 1); *watched.Exporter != want || *watched.AnchorValue != 1 {
			t.Errorf("watched namespaces: %v, own only %v; want %v and 1", *watched.Exporter, *watched.AnchorValue, want)
		}
		for _, m := range []string{"scrape p50", "scrape p99", "RSS", "goroutines", "open fds"} {
			positive(t, r, m, AnchorOwnOnly)
		}
		// More namespaces, more series: each namespace has its own.
		if s := row(t, r, "series per scrape", AnchorOwnOnly); *s.Exporter <= *s.AnchorValue {
			t.Errorf("series: %v watching %v namespaces, %v watching one", *s.Exporter, *watched.Exporter, *s.AnchorValue)
		}
	},
	"soak": func(t *testing.T, r *Result) {
		// Every DESTROY event sent was received or counted as lost.
		same(t, r, "DESTROY events received + lost, connections", AnchorEvents+" received + socket drops")
		if b := same(t, r, "DESTROY events received + lost, bursts", "entries removed"); *b.AnchorValue == 0 {
			t.Error("no burst in the soak")
		}
		for _, m := range []string{"counters that went backwards", "failed scrapes"} {
			if got := row(t, r, m, ""); *got.Exporter != 0 {
				t.Errorf("%s: %v (%v)", m, *got.Exporter, r.Notes)
			}
		}
		if got := fact(t, r, "namespaces that appeared"); got < 1 {
			t.Errorf("%v namespaces appeared", got)
		}
		if got := fact(t, r, "scrapes"); got < 1 {
			t.Errorf("%v scrapes", got)
		}
		if len(r.Series) == 0 || len(r.Series[0].Values) < 2 {
			t.Errorf("series: %+v", r.Series)
		}
	},
	"scan": func(t *testing.T, r *Result) {
		size := float64(r.Params.Size)
		for _, a := range []string{AnchorList, AnchorTiMo, AnchorFloor} {
			if got := same(t, r, "entries seen", a); *got.Exporter != size {
				t.Errorf("entries seen = %v, want %v", *got.Exporter, size)
			}
			positive(t, r, "scan wall time", a)
		}
		if got := same(t, r, "entries seen, alone in a process", AnchorFloor); *got.Exporter != size {
			t.Errorf("entries seen by the scan alone = %v, want %v", *got.Exporter, size)
		}
		for _, a := range []string{AnchorList, AnchorTiMo} {
			positive(t, r, "peak RSS", a)
		}
		positive(t, r, "peak RSS, alone in a process", AnchorFloor)
		positive(t, r, "scan wall time, alone in a process", AnchorFloor)
		if got := row(t, r, "scrape p99 between scans", ""); *got.Exporter <= 0 {
			t.Errorf("scrape p99 between scans = %v", *got.Exporter)
		}
	},
}
