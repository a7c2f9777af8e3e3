package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/ct-exporter/ct-exporter/internal/lab"
	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

// This file runs the Debian packages of Prometheus and Alertmanager for
// one test: each in its own temporary directory, on a free loopback port,
// stopped when the test ends, with its log printed if the test failed. A
// webhook receiver inside the test records what Alertmanager delivers.

// maxLogTail is how much of a helper process's log a failed test prints.
const maxLogTail = 64 << 10

// process is a helper program (Prometheus, Alertmanager) run for one test.
type process struct {
	name string
	cmd  *exec.Cmd
	logs *lab.Lines
}

// startProcess runs bin with args, waits until readyURL answers 200, and
// stops the process with SIGINT (SIGKILL after 15 s) when the test ends.
func startProcess(t *testing.T, name, readyURL, bin string, args ...string) *process {
	t.Helper()
	p := &process{name: name, logs: &lab.Lines{}}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout = p.logs
	p.cmd.Stderr = p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			p.cmd.Process.Kill()
			<-exited
			t.Errorf("%s did not stop within 15s of SIGINT", name)
		}
		if t.Failed() {
			logs := p.logs.String()
			if len(logs) > maxLogTail {
				logs = "...\n" + logs[len(logs)-maxLogTail:]
			}
			t.Logf("%s log:\n%s", name, logs)
		}
	})
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("%s exited before it was ready: %v", name, err)
		default:
		}
		resp, err := client.Get(readyURL)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after 30s: %v", name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// writeFile writes data to name in dir and returns the path.
func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// jsonConfig encodes a configuration as JSON, which is valid YAML for
// Prometheus and Alertmanager and needs no quoting rules of its own.
func jsonConfig(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Alertmanager is a running prometheus-alertmanager.
type Alertmanager struct {
	Addr string
	proc *process
}

// startAlertmanager runs Alertmanager with one route to webhookURL: alerts
// are grouped by alertname and netns and sent after group_wait 1s,
// group_interval 1s, resolved ones too. Clustering is off.
func startAlertmanager(t *testing.T, webhookURL string) *Alertmanager {
	t.Helper()
	dir := t.TempDir()
	cfg := map[string]any{
		"route": map[string]any{
			"receiver":        "webhook",
			"group_by":        []string{"alertname", "netns"},
			"group_wait":      "1s",
			"group_interval":  "1s",
			"repeat_interval": "1h",
		},
		"receivers": []any{map[string]any{
			"name": "webhook",
			"webhook_configs": []any{map[string]any{
				"url":           webhookURL,
				"send_resolved": true,
			}},
		}},
	}
	path := writeFile(t, dir, "alertmanager.yml", jsonConfig(t, cfg))
	am := &Alertmanager{Addr: nstest.FreeLoopbackAddr(t)}
	am.proc = startProcess(t, "alertmanager", "http://"+am.Addr+"/-/ready", "prometheus-alertmanager",
		"--config.file="+path,
		"--storage.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+am.Addr,
		"--cluster.listen-address=",
	)
	return am
}

// PrometheusConfig is what startPrometheus needs.
type PrometheusConfig struct {
	// ScrapeInterval is the scrape and rule evaluation interval; the
	// scrape timeout equals it.
	ScrapeInterval time.Duration
	// Job is the scrape job name; Targets are its host:port targets.
	Job     string
	Targets []string
	// MoreJobs are further scrape jobs, for example a kube-state-metrics
	// stand-in.
	MoreJobs []ScrapeJob
	// Rules are the contents of the rule files, one file each.
	Rules [][]byte
	// Alertmanager is the host:port alerts are sent to.
	Alertmanager string
	// NativeHistograms starts Prometheus with
	// --enable-feature=native-histograms: it then scrapes histograms that
	// have native buckets as native histograms only, without their classic
	// _bucket, _count and _sum series.
	NativeHistograms bool
}

// ScrapeJob is one scrape job of static host:port targets.
type ScrapeJob struct {
	Job     string
	Targets []string
}

// Prometheus is a running Prometheus server.
type Prometheus struct {
	Addr string
	proc *process
}

// startPrometheus runs Prometheus with cfg, its own TSDB directory and a
// loopback listen address.
func startPrometheus(t *testing.T, cfg PrometheusConfig) *Prometheus {
	t.Helper()
	dir := t.TempDir()
	var rules []string
	for i, r := range cfg.Rules {
		rules = append(rules, writeFile(t, dir, fmt.Sprintf("rules-%d.yml", i), r))
	}
	jobs := []any{map[string]any{
		"job_name":       cfg.Job,
		"static_configs": []any{map[string]any{"targets": cfg.Targets}},
	}}
	for _, j := range cfg.MoreJobs {
		jobs = append(jobs, map[string]any{
			"job_name":       j.Job,
			"static_configs": []any{map[string]any{"targets": j.Targets}},
		})
	}
	iv := model.Duration(cfg.ScrapeInterval).String()
	conf := map[string]any{
		"global": map[string]any{
			"scrape_interval":     iv,
			"scrape_timeout":      iv,
			"evaluation_interval": iv,
		},
		"rule_files": rules,
		"alerting": map[string]any{
			"alertmanagers": []any{map[string]any{
				"api_version":    "v2",
				"static_configs": []any{map[string]any{"targets": []string{cfg.Alertmanager}}},
			}},
		},
		"scrape_configs": jobs,
	}
	path := writeFile(t, dir, "prometheus.yml", jsonConfig(t, conf))
	p := &Prometheus{Addr: nstest.FreeLoopbackAddr(t)}
	args := []string{
		"--config.file=" + path,
		"--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--web.listen-address=" + p.Addr,
	}
	if cfg.NativeHistograms {
		args = append(args, "--enable-feature=native-histograms")
	}
	p.proc = startProcess(t, "prometheus", "http://"+p.Addr+"/-/ready", "prometheus", args...)
	return p
}

// ErrQuery is returned (wrapped) when Prometheus answers a query with an
// error, for example a PromQL parse error (errorType bad_data).
var ErrQuery = errors.New("prometheus query failed")

// apiResponse is the envelope of every Prometheus HTTP API answer.
type apiResponse struct {
	Status    string          `json:"status"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Warnings  []string        `json:"warnings"`
	Data      json.RawMessage `json:"data"`
}

// get calls the Prometheus HTTP API and returns the data of a successful
// answer.
func (p *Prometheus) get(ctx context.Context, path string, params url.Values) (json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	u := "http://" + p.Addr + path + "?" + params.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var r apiResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("%s: status %d: %v: %.200s", path, resp.StatusCode, err, body)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("%w: %s: %s", ErrQuery, r.ErrorType, r.Error)
	}
	return r.Data, nil
}

// queryData is the data of a query or query_range answer.
type queryData struct {
	ResultType model.ValueType `json:"resultType"`
	Result     json.RawMessage `json:"result"`
}

// decodeValue decodes a query result by its type.
func decodeValue(raw json.RawMessage) (model.Value, error) {
	var d queryData
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, err
	}
	var v model.Value
	switch d.ResultType {
	case model.ValVector:
		v = &model.Vector{}
	case model.ValMatrix:
		v = &model.Matrix{}
	case model.ValScalar:
		v = &model.Scalar{}
	case model.ValString:
		v = &model.String{}
	default:
		return nil, fmt.Errorf("unknown result type %q", d.ResultType)
	}
	if err := json.Unmarshal(d.Result, v); err != nil {
		return nil, err
	}
	switch x := v.(type) {
	case *model.Vector:
		return *x, nil
	case *model.Matrix:
		return *x, nil
	}
	return v, nil
}

// Query runs an instant query at ts.
func (p *Prometheus) Query(ctx context.Context, expr string, ts time.Time) (model.Value, error) {
	raw, err := p.get(ctx, "/api/v1/query", url.Values{
		"query": {expr},
		"time":  {formatTime(ts)},
	})
	if err != nil {
		return nil, err
	}
	return decodeValue(raw)
}

// QueryRange runs a range query.
func (p *Prometheus) QueryRange(ctx context.Context, expr string, start, end time.Time, step time.Duration) (model.Matrix, error) {
	raw, err := p.get(ctx, "/api/v1/query_range", url.Values{
		"query": {expr},
		"start": {formatTime(start)},
		"end":   {formatTime(end)},
		"step":  {strconv.FormatFloat(step.Seconds(), 'f', -1, 64)},
	})
	if err != nil {
		return nil, err
	}
	v, err := decodeValue(raw)
	if err != nil {
		return nil, err
	}
	m, ok := v.(model.Matrix)
	if !ok {
		return nil, fmt.Errorf("query_range returned %s", v.Type())
	}
	return m, nil
}

// LabelValues returns the values of label on the series that match the
// selector match, as Grafana's label_values(match, label) does.
func (p *Prometheus) LabelValues(ctx context.Context, label, match string) ([]string, error) {
	raw, err := p.get(ctx, "/api/v1/label/"+url.PathEscape(label)+"/values", url.Values{"match[]": {match}})
	if err != nil {
		return nil, err
	}
	var out []string
	err = json.Unmarshal(raw, &out)
	return out, err
}

// formatTime formats t as the API's Unix seconds.
func formatTime(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixNano())/1e9, 'f', 3, 64)
}

// Vector runs an instant query now and fails the test unless it returns a
// vector.
func (p *Prometheus) Vector(t *testing.T, expr string) model.Vector {
	t.Helper()
	v, err := p.Query(context.Background(), expr, time.Now())
	if err != nil {
		t.Fatalf("query %s: %v", expr, err)
	}
	vec, ok := v.(model.Vector)
	if !ok {
		t.Fatalf("query %s returned %s, want a vector", expr, v.Type())
	}
	return vec
}

// WaitVector polls an instant query until it returns at least one sample
// or timeout passes, and returns the last answer.
func (p *Prometheus) WaitVector(t *testing.T, expr string, timeout time.Duration) model.Vector {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		vec := p.Vector(t, expr)
		if len(vec) > 0 || time.Now().After(deadline) {
			return vec
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// eachSample calls fn with every sample value of a query result; for a
// native histogram sample, with its count.
func eachSample(v model.Value, fn func(model.SampleValue)) {
	switch x := v.(type) {
	case model.Vector:
		for _, s := range x {
			if s.Histogram != nil {
				fn(model.SampleValue(s.Histogram.Count))
				continue
			}
			fn(s.Value)
		}
	case model.Matrix:
		for _, ss := range x {
			for _, s := range ss.Values {
				fn(s.Value)
			}
			for _, h := range ss.Histograms {
				fn(model.SampleValue(h.Histogram.Count))
			}
		}
	case *model.Scalar:
		fn(x.Value)
	}
}

// countSamples returns how many samples of v are numbers (not NaN) and how
// many are NaN.
func countSamples(v model.Value) (numbers, nans int) {
	eachSample(v, func(f model.SampleValue) {
		if math.IsNaN(float64(f)) {
			nans++
		} else {
			numbers++
		}
	})
	return numbers, nans
}

// maxValue returns the highest number in v, NaN left out; ok is false
// when v holds no number.
func maxValue(v model.Value) (top float64, ok bool) {
	eachSample(v, func(f model.SampleValue) {
		if x := float64(f); !math.IsNaN(x) && (!ok || x > top) {
			top, ok = x, true
		}
	})
	return top, ok
}

// WebhookAlert is one alert of one Alertmanager webhook notification, with
// the time the notification arrived.
type WebhookAlert struct {
	Received    time.Time
	Status      string // "firing" or "resolved"
	Labels      map[string]string
	Annotations map[string]string
	StartsAt    time.Time
}

// webhookMessage is the body Alertmanager posts to a webhook receiver
// (version 4), reduced to the fields the tests read.
type webhookMessage struct {
	Version string `json:"version"`
	Status  string `json:"status"`
	Alerts  []struct {
		Status      string            `json:"status"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
		StartsAt    time.Time         `json:"startsAt"`
	} `json:"alerts"`
}

// Webhook is an Alertmanager webhook receiver on loopback that records
// every alert it is sent.
type Webhook struct {
	URL string

	mu      sync.Mutex
	alerts  []WebhookAlert
	bad     []string
	changed chan struct{} // closed and replaced on every notification
}

// startWebhook starts a webhook receiver that lives until the test ends.
func startWebhook(t *testing.T) *Webhook {
	t.Helper()
	w := &Webhook{changed: make(chan struct{})}
	srv := httptest.NewServer(http.HandlerFunc(w.serve))
	t.Cleanup(srv.Close)
	w.URL = srv.URL + "/alerts"
	return w
}

// serve records one notification.
func (w *Webhook) serve(rw http.ResponseWriter, r *http.Request) {
	now := time.Now()
	var msg webhookMessage
	err := json.NewDecoder(r.Body).Decode(&msg)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil || msg.Version != "4" {
		w.bad = append(w.bad, fmt.Sprintf("version %q: %v", msg.Version, err))
		http.Error(rw, "bad notification", http.StatusBadRequest)
		return
	}
	for _, a := range msg.Alerts {
		w.alerts = append(w.alerts, WebhookAlert{
			Received: now, Status: a.Status, Labels: a.Labels,
			Annotations: a.Annotations, StartsAt: a.StartsAt,
		})
	}
	close(w.changed)
	w.changed = make(chan struct{})
}

// Alerts returns every alert received so far, in order of arrival, and the
// notifications that could not be decoded.
func (w *Webhook) Alerts() (alerts []WebhookAlert, bad []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]WebhookAlert(nil), w.alerts...), append([]string(nil), w.bad...)
}

// WaitFiring waits until a firing alert called alertname with the netns
// label value netns has arrived, and returns the first one; ok is false if
// none arrived before ctx ended.
func (w *Webhook) WaitFiring(ctx context.Context, alertname, netns string) (a WebhookAlert, ok bool) {
	for {
		w.mu.Lock()
		for _, a := range w.alerts {
			if a.Status == "firing" && a.Labels["alertname"] == alertname && a.Labels["netns"] == netns {
				w.mu.Unlock()
				return a, true
			}
		}
		changed := w.changed
		w.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return WebhookAlert{}, false
		}
	}
}
