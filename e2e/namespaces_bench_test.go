package e2e

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

// Environment of TestBenchManyNamespaces: how many namespaces it watches
// (without it the test skips, as it takes minutes), and more daemon flags.
const (
	benchNetnsEnv = "CT_EXPORTER_BENCH_NETNS"
	benchArgsEnv  = "CT_EXPORTER_BENCH_ARGS"
)

// procStatus returns the fields of /proc/PID/status in kB or counts.
func procStatus(t *testing.T, pid int) map[string]float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		if n, err := strconv.ParseFloat(f[0], 64); err == nil {
			out[k] = n
		}
	}
	return out
}

// globalEntries sums nf_conntrack_count over the exporter's own namespace
// and every namespace in /run/netns: every table dump walks the one global
// hash table, so what other namespaces hold shapes the figures.
func globalEntries(t *testing.T) int {
	t.Helper()
	targets := []netns.Target{netns.Self()}
	files, _ := os.ReadDir("/run/netns")
	for _, f := range files {
		targets = append(targets, netns.Target{Name: f.Name(), Path: filepath.Join("/run/netns", f.Name())})
	}
	total := 0
	for _, tg := range targets {
		tg.Do(func() error {
			b, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_count")
			if err == nil {
				n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
				total += n
			}
			return nil
		})
	}
	return total
}

// benchFigures are what one daemon measured.
type benchFigures struct {
	namespaces                float64
	p50, p90, p99, max        time.Duration
	scrapeBytes, series       int
	rssMiB, peakRSSMiB        float64
	goroutines, fds, threads  float64
	cpuPerScrape, idleCPUFrac float64
	loadBefore, loadAfter     string
	slowest                   string
}

// measureDaemon scrapes d n times one after the other and reads its
// resources, then leaves it idle for idle to measure its background CPU.
func measureDaemon(t *testing.T, d *Daemon, n int, idle time.Duration) benchFigures {
	t.Helper()
	client := &http.Client{Timeout: 60 * time.Second}
	scrape := func() (time.Duration, string) {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.Addr+"/metrics", nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("scrape: %v", err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("scrape: status %d: %v", resp.StatusCode, err)
		}
		return time.Since(start), string(b)
	}
	for range 5 { // warm-up: first sockets, first table scans
		scrape()
	}
	var f benchFigures
	f.loadBefore = loadAverage(t)
	cpu := func(mfs map[string]*dto.MetricFamily) float64 {
		v, _ := Value(mfs, "process_cpu_seconds_total", nil)
		return v
	}
	_, text := scrape()
	cpuStart := cpu(Families(t, text))
	var lat []time.Duration
	slowest := time.Duration(0)
	for range n {
		took, text := scrape()
		lat = append(lat, took)
		if took > slowest && took > time.Second {
			slowest = took
			f.slowest = slowCollectors(t, text, took)
		}
	}
	_, text = scrape()
	mfs := Families(t, text)
	cpuEnd := cpu(mfs)
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	f.p50, f.p90, f.p99, f.max, f.scrapeBytes = pct(0.50), pct(0.90), pct(0.99), lat[len(lat)-1], len(text)
	f.namespaces, _ = Value(mfs, "conntrack_exporter_watched_namespaces", nil)
	for _, mf := range mfs {
		f.series += len(mf.GetMetric())
	}
	f.cpuPerScrape = (cpuEnd - cpuStart) / float64(n+1)
	f.goroutines = floor(t, d, "go_goroutines", 5)
	f.fds = floor(t, d, "process_open_fds", 5)
	st := procStatus(t, d.cmd.Process.Pid)
	f.rssMiB, f.peakRSSMiB, f.threads = st["VmRSS"]/1024, st["VmHWM"]/1024, st["Threads"]

	// Background cost without scrapes: rescans, table scans, idle
	// event sockets. Read from /proc, as a scrape would cost CPU itself.
	time.Sleep(time.Second) // the last scrape's garbage collection
	before := procCPUSeconds(t, d.cmd.Process.Pid)
	time.Sleep(idle)
	f.idleCPUFrac = (procCPUSeconds(t, d.cmd.Process.Pid) - before) / idle.Seconds()
	f.loadAfter = loadAverage(t)
	return f
}

// procCPUSeconds returns the user and system CPU time of a process, its
// ended threads included, from /proc/PID/stat (in USER_HZ, 100 per second
// on Linux).
func procCPUSeconds(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The command name may hold spaces: fields count from after its ")".
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return (utime + stime) / 100
}

// loadAverage returns the 1-minute load average of the machine: the
// figures of a shared machine mean little without it.
func loadAverage(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b))[0]
}

// slowCollectors names the slowest collector runs of a slow scrape.
func slowCollectors(t *testing.T, text string, took time.Duration) string {
	t.Helper()
	type run struct {
		collector, netns string
		seconds          float64
	}
	var runs []run
	for _, m := range Families(t, text)["conntrack_exporter_collector_duration_seconds"].GetMetric() {
		r := run{seconds: m.GetGauge().GetValue()}
		for _, l := range m.GetLabel() {
			switch l.GetName() {
			case "collector":
				r.collector = l.GetValue()
			case "netns":
				r.netns = l.GetValue()
			}
		}
		runs = append(runs, r)
	}
	slices.SortFunc(runs, func(a, b run) int { return cmp.Compare(b.seconds, a.seconds) })
	out := fmt.Sprintf("scrape of %s, slowest collector runs:", took.Round(time.Millisecond))
	for _, r := range runs[:min(3, len(runs))] {
		out += fmt.Sprintf(" %s/%s %.3fs", r.collector, r.netns, r.seconds)
	}
	return out
}

// TestBenchManyNamespaces measures scrape latency and memory with many
// watched namespaces, against the same daemon watching only its own.
// Reproduce (root, kernel with conntrack), as in docs/BENCHMARKS.md:
//
//	CT_EXPORTER_BENCH_NETNS=200 go test -count=1 -timeout 30m -run TestBenchManyNamespaces -v ./e2e/
func TestBenchManyNamespaces(t *testing.T) {
	count, _ := strconv.Atoi(os.Getenv(benchNetnsEnv))
	if count <= 0 {
		t.Skipf("set %s=200 to run", benchNetnsEnv)
	}
	nstest.RequireRoot(t, "mount", "umount")
	const scrapes = 200
	idle := time.Minute // a whole table scan interval and two rescans
	extra := strings.Fields(os.Getenv(benchArgsEnv))
	args := func(dir string) []string {
		return append([]string{"--conntrack.netns-discover=" + dir, "--conntrack.netns-max=" + strconv.Itoa(count+1)}, extra...)
	}

	// The same daemon watching only its own namespace, stopped before the
	// namespaces are made.
	base := startDaemon(t, args(t.TempDir())...)
	baseline := measureDaemon(t, base, scrapes, idle)
	base.cmd.Process.Signal(os.Interrupt)

	dir := newNetnsDir(t)

	start := time.Now()
	for i := range count {
		ns := nstest.NewNamespace(t)
		if i%10 == 0 {
			loopbackConns(t, ns, 5) // some traffic in one of ten
		}
		dir.add(t, ns)
	}
	t.Logf("created %d namespaces in %s", count, time.Since(start).Round(time.Second))

	d := startDaemon(t, args(dir.path)...)
	waitFor(t, d, time.Minute, fmt.Sprintf("%d namespaces watched", count+1), func(mfs map[string]*dto.MetricFamily) bool {
		v, _ := Value(mfs, "conntrack_exporter_watched_namespaces", nil)
		return v == float64(count+1)
	})
	many := measureDaemon(t, d, scrapes, idle)

	var b strings.Builder
	fmt.Fprintf(&b, "%d sequential scrapes each, %d CPUs, %s, extra flags %q, %d conntrack entries in all namespaces of the host\n",
		scrapes, runtime.NumCPU(), runtime.Version(), extra, globalEntries(t))
	fmt.Fprintf(&b, "| watched namespaces | scrape p50 | p90 | p99 | max | CPU per scrape | series | body | RSS | peak RSS | goroutines | open fds | threads | idle CPU | load before, after |\n")
	fmt.Fprintf(&b, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, f := range []benchFigures{baseline, many} {
		fmt.Fprintf(&b, "| %.0f | %s | %s | %s | %s | %.1f ms | %d | %.0f KiB | %.1f MiB | %.1f MiB | %.0f | %.0f | %.0f | %.2f %% | %s, %s |\n",
			f.namespaces, f.p50.Round(100*time.Microsecond), f.p90.Round(100*time.Microsecond),
			f.p99.Round(100*time.Microsecond), f.max.Round(100*time.Microsecond),
			f.cpuPerScrape*1000, f.series, float64(f.scrapeBytes)/1024, f.rssMiB, f.peakRSSMiB,
			f.goroutines, f.fds, f.threads, f.idleCPUFrac*100, f.loadBefore, f.loadAfter)
	}
	for _, f := range []benchFigures{baseline, many} {
		if f.slowest != "" {
			fmt.Fprintf(&b, "%.0f namespaces: %s\n", f.namespaces, f.slowest)
		}
	}
	t.Log("\n" + b.String())
	if out := os.Getenv("CT_EXPORTER_BENCH_OUT"); out != "" {
		if err := os.WriteFile(filepath.Clean(out), []byte(b.String()), 0o644); err != nil {
			t.Error(err)
		}
	}
}
