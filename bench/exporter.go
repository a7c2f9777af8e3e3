package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ct-exporter/ct-exporter/internal/lab"
)

// Exporter is a ct-exporter process started by a drill, listening on a
// loopback port.
type Exporter struct {
	// Addr is the host:port it serves on.
	Addr string

	cmd    *exec.Cmd
	client *http.Client
	logs   *tailBuffer
	waited chan struct{}
}

// tailBuffer keeps the last lines a process wrote, for error messages.
type tailBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (b *tailBuffer) add(line string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lines = append(b.lines, line)
	if len(b.lines) > 50 {
		b.lines = b.lines[len(b.lines)-50:]
	}
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.lines, "\n")
}

// freeLoopbackAddr returns a loopback address whose port is free now.
func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free loopback port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// StartExporter starts the ct-exporter binary watching the namespace
// files in netnsPaths, with extra flags, and waits until it is ready. The
// Lab kills it on Close if Stop was not called.
func StartExporter(ctx context.Context, l *Lab, binary string, netnsPaths []string, extra ...string) (*Exporter, error) {
	addr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	args := []string{"--web.listen-address=" + addr, "--log.level=warn"}
	for _, p := range netnsPaths {
		args = append(args, "--conntrack.netns="+p)
	}
	args = append(args, extra...)
	e := &Exporter{
		Addr:   addr,
		cmd:    exec.Command(binary, args...),
		client: &http.Client{Timeout: 2 * time.Minute},
		logs:   &tailBuffer{},
		waited: make(chan struct{}),
	}
	stderr, err := e.cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("ct-exporter: %w", err)
	}
	if err := l.Start(e.cmd); err != nil {
		return nil, fmt.Errorf("ct-exporter: %w", err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			e.logs.add(sc.Text())
		}
		_ = e.cmd.Wait()
		close(e.waited)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-e.waited:
			return nil, fmt.Errorf("ct-exporter %s exited at start: %s\n%s", strings.Join(args, " "), e.cmd.ProcessState, e.logs)
		case <-ctx.Done():
			e.Stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		resp, err := e.client.Get("http://" + addr + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return e, nil
			}
		}
		if time.Now().After(deadline) {
			e.Stop()
			return nil, fmt.Errorf("ct-exporter not ready after 30s: %v\n%s", err, e.logs)
		}
	}
}

// PID returns the exporter's process id.
func (e *Exporter) PID() int { return e.cmd.Process.Pid }

// Usage returns the exporter's CPU time so far and its peak resident
// set.
func (e *Exporter) Usage() (lab.Usage, error) {
	u, err := lab.ProcUsage(e.PID())
	if err != nil {
		return lab.Usage{}, fmt.Errorf("ct-exporter: %w", err)
	}
	return u, nil
}

// Logs returns the last lines the exporter logged.
func (e *Exporter) Logs() string { return e.logs.String() }

// Stop sends SIGINT and waits up to 10 s for the exporter to exit, then
// kills it.
func (e *Exporter) Stop() {
	_ = e.cmd.Process.Signal(os.Interrupt)
	select {
	case <-e.waited:
	case <-time.After(10 * time.Second):
		_ = e.cmd.Process.Kill()
		<-e.waited
	}
}

// Scrape reads /metrics and returns the parsed families and how long the
// request took.
func (e *Exporter) Scrape(ctx context.Context) (Metrics, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+e.Addr+"/metrics", nil)
	if err != nil {
		return nil, 0, err
	}
	start := time.Now()
	resp, err := e.client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("scrape ct-exporter: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	took := time.Since(start)
	if err != nil {
		return nil, 0, fmt.Errorf("scrape ct-exporter: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("scrape ct-exporter: status %s", resp.Status)
	}
	m, err := ParseMetrics(body)
	if err != nil {
		return nil, 0, fmt.Errorf("scrape ct-exporter: %w", err)
	}
	return m, took, nil
}

// Metrics are the metric families of one scrape, by name.
type Metrics map[string]*dto.MetricFamily

// ParseMetrics parses Prometheus text exposition.
func ParseMetrics(text []byte) (Metrics, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(string(text)))
	if err != nil {
		return nil, fmt.Errorf("parse exposition: %w", err)
	}
	return Metrics(mfs), nil
}

// ErrNoSeries reports that a scrape had no series of a metric with the
// labels asked for.
var ErrNoSeries = errors.New("no such series")

// matches reports whether m has every label pair of want.
func matches(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, l := range m.GetLabel() {
		if v, ok := want[l.GetName()]; ok {
			if v != l.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(want)
}

// Sum adds the values of every series of the family whose labels include
// want: gauges, counters and untyped values, or the sample count of
// histograms. It fails with ErrNoSeries when no series matches.
func (ms Metrics) Sum(name string, want map[string]string) (float64, error) {
	mf, ok := ms[name]
	if !ok {
		return 0, fmt.Errorf("%s%v: %w", name, want, ErrNoSeries)
	}
	var sum float64
	found := false
	for _, m := range mf.GetMetric() {
		if !matches(m, want) {
			continue
		}
		found = true
		switch {
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Untyped != nil:
			sum += m.GetUntyped().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	if !found {
		return 0, fmt.Errorf("%s%v: %w", name, want, ErrNoSeries)
	}
	return sum, nil
}

// Histogram returns the summed sample count and sum of the histogram
// series whose labels include want.
func (ms Metrics) Histogram(name string, want map[string]string) (count uint64, sum float64, err error) {
	mf, ok := ms[name]
	if !ok {
		return 0, 0, fmt.Errorf("%s%v: %w", name, want, ErrNoSeries)
	}
	found := false
	for _, m := range mf.GetMetric() {
		if m.Histogram == nil || !matches(m, want) {
			continue
		}
		found = true
		count += m.GetHistogram().GetSampleCount()
		sum += m.GetHistogram().GetSampleSum()
	}
	if !found {
		return 0, 0, fmt.Errorf("%s%v: %w", name, want, ErrNoSeries)
	}
	return count, sum, nil
}
