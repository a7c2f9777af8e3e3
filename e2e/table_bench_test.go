package e2e

// The table-scan drill. It fills a namespace with a million entries and
// measures, in the same run and each in a process of its own under GNU time
// (/usr/bin/time), the wall time and peak RSS of
//
//   - conntrack -L > /dev/null
//   - the exporter's streaming scan (ct-scanbench --method=scan)
//   - ti-mo/conntrack Dump (ct-scanbench --method=timo)
//
// and then the /metrics latency of a ct-exporter daemon whose table
// collector scans that namespace back to back (--table.interval=1s). It
// raises the global nf_conntrack_max for the run and restores it when the
// test ends, or on SIGINT, SIGTERM or SIGHUP, so it runs only when asked:
//
//	CT_EXPORTER_SCANBENCH=1 go test -run '^TestScanBench$' -v -timeout 30m ./e2e/
//
// CT_EXPORTER_SCANBENCH_ENTRIES sets the table size (default 1000000),
// CT_EXPORTER_SCANBENCH_ROUNDS the rounds per method (default 3).
// docs/BENCHMARKS.md, section "Table scan", holds the figures.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

const (
	scanBenchEnv     = "CT_EXPORTER_SCANBENCH"
	conntrackMaxPath = "/proc/sys/net/netfilter/nf_conntrack_max"
)

// scanBenchMethods are the three ways to read the table, in run order.
var scanBenchMethods = []string{"conntrack -L", "ct-exporter scan", "ti-mo Dump"}

func scanBenchInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

// scanBenchEntries is the drill's table: every entry from its own source
// address (the worst case for the top-K summary, which then evicts on
// every entry), 2000 destination ports, 80 % TCP ESTABLISHED, 10 % TCP
// TIME_WAIT, 10 % UDP.
func scanBenchEntries(n int) []nstest.Entry {
	out := make([]nstest.Entry, n)
	dst := netip.MustParseAddr("198.18.0.1")
	for i := range out {
		e := nstest.Entry{
			Proto: unix.IPPROTO_TCP,
			Src:   netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}),
			Dst:   dst, SPort: 40000, DPort: uint16(1 + i%2000), Timeout: 3600,
			TCPState: nstest.TCPEstablished,
		}
		switch i % 10 {
		case 8:
			e.TCPState = nstest.TCPTimeWait
		case 9:
			e.Proto, e.TCPState = unix.IPPROTO_UDP, nstest.TCPNone
		}
		out[i] = e
	}
	return out
}

// raiseConntrackMax sets the global nf_conntrack_max to at least n and
// restores the old value when the test ends or the process is
// interrupted.
func raiseConntrackMax(t *testing.T, n int) {
	t.Helper()
	b, err := os.ReadFile(conntrackMaxPath)
	if err != nil {
		t.Fatal(err)
	}
	old := strings.TrimSpace(string(b))
	oldN, err := strconv.Atoi(old)
	if err != nil {
		t.Fatalf("%s: %q", conntrackMaxPath, old)
	}
	if oldN >= n {
		return
	}
	var once sync.Once
	restore := func() {
		once.Do(func() {
			if err := os.WriteFile(conntrackMaxPath, []byte(old), 0o644); err != nil {
				fmt.Fprintf(os.Stderr, "restore %s=%s: %v\n", conntrackMaxPath, old, err)
			}
		})
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sig:
			restore()
			fmt.Fprintf(os.Stderr, "%v: restored %s=%s\n", s, conntrackMaxPath, old)
			os.Exit(2)
		case <-done:
		}
	}()
	t.Cleanup(func() {
		restore()
		signal.Stop(sig)
		close(done)
		t.Logf("restored %s=%s", conntrackMaxPath, old)
	})
	if err := os.WriteFile(conntrackMaxPath, []byte(strconv.Itoa(n)), 0o644); err != nil {
		restore()
		t.Fatal(err)
	}
	t.Logf("raised %s from %s to %d for the run", conntrackMaxPath, old, n)
}

// scanMeasurement is one run of one method.
type scanMeasurement struct {
	Method  string
	Wall    time.Duration
	MaxRSS  int64 // KiB
	User    time.Duration
	Sys     time.Duration
	Entries uint64
	Extra   string
}

// runMeasured runs cmd under GNU time and measures it. The peak RSS comes
// from GNU time, which forks the command: the rusage of a child that Go
// starts itself (vfork and exec) would report the larger RSS of this test
// process instead.
func runMeasured(t *testing.T, method string, cmd *exec.Cmd) scanMeasurement {
	t.Helper()
	timeOut := t.TempDir() + "/time"
	path, err := exec.LookPath("time")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Path = path
	cmd.Args = append([]string{"time", "-f", "%M %U %S", "-o", timeOut}, cmd.Args...)
	var stdout strings.Builder
	if cmd.Stdout == nil {
		cmd.Stdout = &stdout
	}
	cmd.Stderr = os.Stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	m := scanMeasurement{Method: method, Wall: time.Since(start)}
	b, err := os.ReadFile(timeOut)
	if err != nil {
		t.Fatal(err)
	}
	var user, sys float64
	if _, err := fmt.Sscanf(string(b), "%d %g %g", &m.MaxRSS, &user, &sys); err != nil {
		t.Fatalf("%s: GNU time output %q: %v", method, b, err)
	}
	m.User = time.Duration(user * float64(time.Second))
	m.Sys = time.Duration(sys * float64(time.Second))
	for line := range strings.Lines(stdout.String()) {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var r struct {
			Entries          uint64  `json:"entries"`
			Seconds          float64 `json:"seconds"`
			Datagrams        uint64  `json:"datagrams"`
			SourceErrorBound uint64  `json:"source_error_bound"`
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("%s: output %q: %v", method, line, err)
		}
		m.Entries = r.Entries
		if r.Datagrams > 0 {
			m.Extra = fmt.Sprintf("(in-process %.3fs, %d datagrams, top source error bound %d)", r.Seconds, r.Datagrams, r.SourceErrorBound)
		}
	}
	return m
}

// buildScanBench builds cmd/ct-scanbench, the small program that runs one
// scan or one ti-mo/conntrack Dump.
func buildScanBench(t *testing.T) string {
	t.Helper()
	bin := t.TempDir() + "/ct-scanbench"
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/ct-scanbench").CombinedOutput()
	if err != nil {
		t.Fatalf("build ct-scanbench: %v\n%s", err, out)
	}
	return bin
}

func TestScanBench(t *testing.T) {
	if os.Getenv(scanBenchEnv) == "" {
		t.Skip("table-scan drill: set " + scanBenchEnv + "=1 to run it (raises nf_conntrack_max for the run)")
	}
	nstest.RequireRoot(t, "conntrack", "time")
	n := scanBenchInt(t, scanBenchEnv+"_ENTRIES", 1_000_000)
	rounds := scanBenchInt(t, scanBenchEnv+"_ROUNDS", 3)
	bench := buildScanBench(t)
	raiseConntrackMax(t, n+n/10+65536)

	ns := nstest.NewNamespace(t)
	start := time.Now()
	created, err := ns.CreateEntries(t, scanBenchEntries(n))
	if err != nil || created != n {
		t.Fatalf("created %d of %d: %v", created, n, err)
	}
	t.Logf("filled %s with %d entries in %v", ns.Name, n, time.Since(start).Round(time.Millisecond))
	if got := ns.CountEntries(t); got != n {
		t.Fatalf("conntrack -C = %d, want %d", got, n)
	}
	buckets, _ := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_buckets")

	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	var all []scanMeasurement
	for round := range rounds {
		for _, method := range scanBenchMethods {
			var cmd *exec.Cmd
			switch method {
			case "conntrack -L":
				cmd = exec.Command("ip", "netns", "exec", ns.Name, "conntrack", "-L")
				cmd.Stdout = devnull
			case "ct-exporter scan":
				cmd = exec.Command(bench, "--netns="+ns.Path, "--method=scan")
			case "ti-mo Dump":
				cmd = exec.Command(bench, "--netns="+ns.Path, "--method=timo")
			}
			m := runMeasured(t, method, cmd)
			t.Logf("round %d: %-16s wall %7.3fs  user %6.3fs  sys %6.3fs  peak RSS %7.1f MiB  entries %d %s",
				round+1, m.Method, m.Wall.Seconds(), m.User.Seconds(), m.Sys.Seconds(), float64(m.MaxRSS)/1024, m.Entries, m.Extra)
			if m.Entries != 0 && m.Entries != uint64(n) {
				t.Errorf("%s counted %d entries, want %d", method, m.Entries, n)
			}
			all = append(all, m)
		}
	}
	latency, hwm := scrapeDuringScans(t, ns)

	var b strings.Builder
	fmt.Fprintf(&b, "\n%d entries, nf_conntrack_buckets %s, %d rounds: fastest and median wall, median CPU (user+sys), highest peak RSS\n\n",
		n, strings.TrimSpace(string(buckets)), rounds)
	fmt.Fprintf(&b, "| method | wall, fastest (s) | wall, median (s) | CPU (s) | peak RSS (MiB) |\n|---|---:|---:|---:|---:|\n")
	var refMin, refMed, refCPU time.Duration
	for _, method := range scanBenchMethods {
		var walls, cpus []time.Duration
		var rss int64
		for _, m := range all {
			if m.Method == method {
				walls, cpus = append(walls, m.Wall), append(cpus, m.User+m.Sys)
				rss = max(rss, m.MaxRSS)
			}
		}
		minWall, medWall, cpu := slices.Min(walls), scanMedian(walls), scanMedian(cpus)
		if method == "conntrack -L" {
			refMin, refMed, refCPU = minWall, medWall, cpu
		}
		fmt.Fprintf(&b, "| %s | %.2f (%.2fx) | %.2f (%.2fx) | %.2f (%.2fx) | %.1f |\n", method,
			minWall.Seconds(), minWall.Seconds()/refMin.Seconds(), medWall.Seconds(), medWall.Seconds()/refMed.Seconds(),
			cpu.Seconds(), cpu.Seconds()/refCPU.Seconds(), float64(rss)/1024)
	}
	fmt.Fprintf(&b, "\n/metrics of ct-exporter scanning with --table.interval=1s: %s; daemon peak RSS %.1f MiB\n", latency, hwm/1024)
	t.Log(b.String())
}

func scanMedian(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// vmHWM returns the peak RSS of a running process in KiB.
func vmHWM(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, err := strconv.ParseFloat(f[0], 64)
				if err == nil {
					return kb
				}
			}
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// scrapeDuringScans runs the daemon on ns with table scans as often as it
// allows (--table.interval=1s; after each scan it pauses as long as the
// scan took) and scrapes /metrics every 10 ms until four scans have
// finished after the first. Each scan's window comes from its
// conntrack_table_last_scan_timestamp_seconds and
// conntrack_table_scan_duration_seconds; the latencies reported are those
// of the scrapes that started while a scan ran. It also returns the
// daemon's peak RSS in KiB.
func scrapeDuringScans(t *testing.T, ns *nstest.Namespace) (string, float64) {
	t.Helper()
	d := startDaemon(t, "--conntrack.netns="+ns.Path, "--table.interval=1s", "--log.level=warn")
	client := &http.Client{Timeout: 10 * time.Second}
	type scrapeTiming struct {
		start time.Time
		took  time.Duration
	}
	type window struct{ from, to time.Time }
	scans := map[float64]window{} // by end timestamp
	scrape := func() scrapeTiming {
		start := time.Now()
		resp, err := client.Get("http://" + d.Addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		var end, dur float64
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			line := sc.Text()
			for name, dst := range map[string]*float64{
				"conntrack_table_last_scan_timestamp_seconds{": &end,
				"conntrack_table_scan_duration_seconds{":       &dur,
			} {
				if strings.HasPrefix(line, name) {
					f := strings.Fields(line)
					*dst, _ = strconv.ParseFloat(f[len(f)-1], 64)
				}
			}
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		took := time.Since(start)
		if end > 0 {
			to := time.Unix(0, int64(end*1e9))
			scans[end] = window{from: to.Add(-time.Duration(dur * 1e9)), to: to}
		}
		return scrapeTiming{start: start, took: took}
	}
	deadline := time.Now().Add(5 * time.Minute)
	for len(scans) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no table scan finished within 5 minutes")
		}
		scrape()
		time.Sleep(10 * time.Millisecond)
	}
	var timings []scrapeTiming
	for len(scans) < 5 {
		timings = append(timings, scrape())
		time.Sleep(10 * time.Millisecond)
	}
	hwm := vmHWM(t, d.cmd.Process.Pid)
	var during, between []time.Duration
	for _, s := range timings {
		in := false
		for _, w := range scans {
			if !s.start.Before(w.from) && s.start.Before(w.to) {
				in = true
				break
			}
		}
		if in {
			during = append(during, s.took)
		} else {
			between = append(between, s.took)
		}
	}
	if len(during) == 0 || len(between) == 0 {
		t.Fatalf("%d scrapes during scans, %d between", len(during), len(between))
	}
	pct := func(lat []time.Duration, p float64) float64 {
		slices.Sort(lat)
		return lat[int(float64(len(lat)-1)*p)].Seconds() * 1000
	}
	return fmt.Sprintf("%d scrapes started during 4 scans: p50 %.1f ms, p99 %.1f ms, max %.1f ms; "+
		"%d scrapes between scans: p50 %.1f ms, p99 %.1f ms, max %.1f ms",
		len(during), pct(during, 0.5), pct(during, 0.99), pct(during, 1),
		len(between), pct(between, 0.5), pct(between, 0.99), pct(between, 1)), hwm
}
