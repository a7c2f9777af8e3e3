package events

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

// exporterProcess is a ct-exporter binary started by a test.
type exporterProcess struct {
	cmd  *exec.Cmd
	addr string
	log  strings.Builder
}

// buildExporter builds ./cmd/ct-exporter into dir.
func buildExporter(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "ct-exporter")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/ct-exporter")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startExporter starts bin watching the namespace and waits until it
// serves its first scrape.
func startExporter(t *testing.T, bin string, ns *nstest.Namespace, extra ...string) *exporterProcess {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	p := &exporterProcess{addr: addr}
	args := append([]string{"--web.listen-address=" + addr, "--conntrack.netns=" + ns.Path, "--table.interval=0", "--log.level=warn"}, extra...)
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stderr = &p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(os.Interrupt)
		_ = p.cmd.Wait()
		if t.Failed() {
			t.Logf("ct-exporter log:\n%s", p.log.String())
		}
	})
	waitFor(t, 10*time.Second, "the exporter to serve", func() bool {
		_, err := p.scrape(ns.Name)
		return err == nil
	})
	return p
}

// scrape returns the event counters of the namespace.
func (p *exporterProcess) scrape(netns string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.addr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	label := `netns="` + netns + `"`
	for _, line := range strings.Split(string(b), "\n") {
		name, value, ok := strings.Cut(line, " ")
		if !ok || !strings.Contains(name, label) {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			continue
		}
		switch {
		case strings.HasPrefix(name, "conntrack_events_total{") && strings.Contains(name, `type="destroy"`):
			out["destroy"] = v
		case strings.HasPrefix(name, "conntrack_exporter_events_lost_total{"):
			out["lost"] = v
		case strings.HasPrefix(name, "conntrack_exporter_event_overruns_total{"):
			out["overruns"] = v
		case strings.HasPrefix(name, "conntrack_flow_lifetime_seconds_count{"):
			out["observed"] += v
		}
	}
	if _, ok := out["destroy"]; !ok {
		return nil, fmt.Errorf("no events metrics for %s yet", netns)
	}
	return out, nil
}

// procUsage is a process's CPU time and memory.
type procUsage struct {
	cpu       time.Duration // user + system
	rss, peak int64         // VmRSS, VmHWM in bytes
}

func (p *exporterProcess) usage(t *testing.T) procUsage {
	t.Helper()
	pid := p.cmd.Process.Pid
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	u := procUsage{cpu: time.Duration(utime+stime) * 10 * time.Millisecond} // USER_HZ = 100
	status, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer status.Close()
	sc := bufio.NewScanner(status)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			u.rss = kb << 10
		case "VmHWM":
			u.peak = kb << 10
		}
	}
	return u
}

// TestBurstDrillExporterProcess runs the burst drill against the real
// ct-exporter binary, at 20,000 and 200,000 entries, beside conntrack -E:
// DESTROY events received and lost, the exporter's CPU time during the
// flush, its RSS with every flow alive and its peak RSS. It builds the
// binary and takes about a minute, so it runs only with
// CT_EXPORTER_DRILL=1:
//
//	CT_EXPORTER_DRILL=1 go test ./events -run TestBurstDrillExporterProcess -v -timeout 10m
func TestBurstDrillExporterProcess(t *testing.T) {
	if os.Getenv("CT_EXPORTER_DRILL") == "" {
		t.Skip("set CT_EXPORTER_DRILL=1 to run the burst drill against the ct-exporter binary")
	}
	nstest.RequireRoot(t, "conntrack")
	bin := buildExporter(t, t.TempDir())
	for _, n := range []int{20_000, drillEntries} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			ns := nstest.NewNamespace(t)
			ns.Sysctl(t, "net.netfilter.nf_conntrack_timestamp", "1")
			exp := startExporter(t, bin, ns)
			ec := startEventCounter(t, ns)
			time.Sleep(200 * time.Millisecond)
			idle := exp.usage(t)
			if created, err := ns.CreateEntries(t, nstest.EstablishedEntries(n, 600)); created != n {
				t.Fatalf("created %d of %d: %v", created, n, err)
			}
			live := exp.usage(t)
			start := time.Now()
			ns.Conntrack(t, "-F")
			flush := time.Since(start)
			var m map[string]float64
			waitFor(t, 60*time.Second, "received + lost to reach the drill size", func() bool {
				var err error
				m, err = exp.scrape(ns.Name)
				return err == nil && m["destroy"]+m["lost"] >= float64(n)
			})
			drained := time.Since(start)
			after := exp.usage(t)
			ctE := ec.settle(time.Second, 30*time.Second)
			ec.stop()
			t.Logf("%d entries flushed in %v, drained after %v: ct-exporter received %.0f DESTROY events (%.2f %%), lost %.0f, overruns %.0f, observed %.0f lifetimes; conntrack -E -e DESTROY received %d (%.2f %%)",
				n, flush.Round(time.Millisecond), drained.Round(time.Millisecond), m["destroy"], 100*m["destroy"]/float64(n), m["lost"], m["overruns"], m["observed"],
				ctE, 100*float64(ctE)/float64(n))
			t.Logf("ct-exporter CPU during the flush %v; RSS idle %.1f MiB, with %d live flows %.1f MiB, after the flush %.1f MiB, peak %.1f MiB",
				(after.cpu - live.cpu).Round(10*time.Millisecond), mib(idle.rss), n, mib(live.rss), mib(after.rss), mib(after.peak))
			if m["destroy"]+m["lost"] != float64(n) {
				t.Errorf("received %.0f + lost %.0f != %d", m["destroy"], m["lost"], n)
			}
		})
	}
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
