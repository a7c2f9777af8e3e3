package exposition

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// textAccept is the Accept header of Prometheus 2 without native
// histograms: OpenMetrics first, which the handler does not offer, then
// the text format.
const textAccept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"

// protobufAccept is the Accept header of Prometheus with native
// histograms.
const protobufAccept = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.8,application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3"

// sampleCollector sends gauges and counters built by Descs, in a shuffled
// order, and one histogram built by client_golang.
type sampleCollector struct {
	gauge, counter, plain *Desc
	hist                  prometheus.Histogram
	seed                  uint64
}

// labelValues are label values that need escaping or are not ASCII; their
// order is the same raw and escaped, so both paths sort them alike.
var labelValues = []string{`back\slash`, "new\nline", "plain", `quo"te`, "ünïcode"}

func newSampleCollector() *sampleCollector {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "test_lifetime_seconds", Help: "A histogram.", Buckets: []float64{1, 10},
	})
	h.Observe(0.5)
	h.Observe(42)
	return &sampleCollector{
		// Labels given out of name order: the text and the registry both
		// write them sorted by name.
		gauge:   NewDesc("test_entries", "Entries \\ with a backslash\nand a line feed.", prometheus.GaugeValue, "zone", "netns", "a"),
		counter: NewDesc("test_events_total", "Events.", prometheus.CounterValue, "netns"),
		plain:   NewDesc("test_up", "No labels.", prometheus.GaugeValue),
		hist:    h,
		seed:    1,
	}
}

func (c *sampleCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.gauge.Desc()
	ch <- c.counter.Desc()
	ch <- c.plain.Desc()
	c.hist.Describe(ch)
}

func (c *sampleCollector) Collect(ch chan<- prometheus.Metric) {
	values := []float64{0, 1, -1, 0.5, 1e21, 12345678, math.NaN(), math.Inf(1), math.Inf(-1), 3.25e-7}
	var ms []prometheus.Metric
	for i, ns := range labelValues {
		for j, zone := range labelValues {
			ms = append(ms, c.gauge.Metric(values[(i+j)%len(values)], zone, ns, fmt.Sprint(j)))
		}
		ms = append(ms, c.counter.Metric(float64(i*1000+7), ns))
	}
	ms = append(ms, c.plain.Metric(1), c.hist)
	rand.New(rand.NewPCG(c.seed, 2)).Shuffle(len(ms), func(i, j int) { ms[i], ms[j] = ms[j], ms[i] })
	for _, m := range ms {
		ch <- m
	}
}

// restRegistry is a registry with a gauge and a counter vector of its own.
func restRegistry(t testing.TB) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewRegistry()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "rest_temperature", Help: "A gauge."})
	g.Set(21.5)
	cv := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rest_requests_total", Help: "A counter."}, []string{"code"})
	cv.WithLabelValues("200").Add(3)
	cv.WithLabelValues("500").Add(1)
	reg.MustRegister(g, cv)
	return reg
}

// serve makes one request with the Accept and Accept-Encoding headers.
func serve(t testing.TB, h http.Handler, accept, encoding, query string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/metrics"+query, nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	if encoding != "" {
		req.Header.Set("Accept-Encoding", encoding)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// registryHandler is client_golang's handler over the same metrics.
func registryHandler(t testing.TB, rest prometheus.Gatherer, fast prometheus.Collector) http.Handler {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(fast)
	return promhttp.HandlerFor(prometheus.Gatherers{rest, reg}, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

func TestTextIsWhatTheRegistryWrites(t *testing.T) {
	rest := restRegistry(t)
	fast := newSampleCollector()
	h, err := NewHandler(rest, HandlerOpts{}, fast)
	if err != nil {
		t.Fatal(err)
	}
	for _, accept := range []string{textAccept, "", "text/plain", "*/*"} {
		got := serve(t, h, accept, "", "")
		want := serve(t, registryHandler(t, rest, fast), accept, "", "")
		if got.Code != http.StatusOK || want.Code != http.StatusOK {
			t.Fatalf("Accept %q: status %d, registry %d", accept, got.Code, want.Code)
		}
		if g, w := got.Header().Get("Content-Type"), want.Header().Get("Content-Type"); g != w {
			t.Errorf("Accept %q: Content-Type %q, registry %q", accept, g, w)
		}
		if got.Body.String() != want.Body.String() {
			t.Errorf("Accept %q: text differs from the registry's\n--- got\n%s\n--- registry\n%s", accept, got.Body, want.Body)
		}
	}
	// The shuffle changes nothing.
	fast.seed = 99
	again := serve(t, h, textAccept, "", "")
	want := serve(t, registryHandler(t, rest, fast), textAccept, "", "")
	if again.Body.String() != want.Body.String() {
		t.Error("another order of collection gave another text")
	}
	if !strings.Contains(again.Body.String(), `test_entries{a="1",netns="back\\slash",zone="new\nline"} 1`+"\n") {
		t.Errorf("escaped, label-sorted line missing:\n%s", again.Body)
	}
}

func TestProtobufGoesThroughTheRegistry(t *testing.T) {
	rest := restRegistry(t)
	fast := newSampleCollector()
	h, err := NewHandler(rest, HandlerOpts{}, fast)
	if err != nil {
		t.Fatal(err)
	}
	rec := serve(t, h, protobufAccept, "", "")
	if ct := rec.Header().Get("Content-Type"); expfmt.Format(ct).FormatType() != expfmt.TypeProtoDelim {
		t.Fatalf("Content-Type %q, want delimited protobuf", ct)
	}
	dec := expfmt.NewDecoder(rec.Body, expfmt.Format(rec.Header().Get("Content-Type")))
	got := map[string]int{}
	for {
		var mf dto.MetricFamily
		if err := dec.Decode(&mf); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		got[mf.GetName()] = len(mf.GetMetric())
	}
	want := map[string]int{
		"rest_temperature": 1, "rest_requests_total": 2,
		"test_entries": 25, "test_events_total": 5, "test_up": 1, "test_lifetime_seconds": 1,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("protobuf families %v, want %v", got, want)
	}
}

func TestGzip(t *testing.T) {
	h, err := NewHandler(restRegistry(t), HandlerOpts{}, newSampleCollector())
	if err != nil {
		t.Fatal(err)
	}
	plain := serve(t, h, textAccept, "", "")
	if plain.Header().Get("Content-Encoding") != "" {
		t.Fatalf("Content-Encoding %q without Accept-Encoding", plain.Header().Get("Content-Encoding"))
	}
	for range 2 { // the second one reuses a pooled writer
		rec := serve(t, h, textAccept, "gzip", "")
		if rec.Header().Get("Content-Encoding") != "gzip" {
			t.Fatalf("Content-Encoding %q, want gzip", rec.Header().Get("Content-Encoding"))
		}
		zr, err := gzip.NewReader(rec.Body)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(body, plain.Body.Bytes()) {
			t.Errorf("gzipped body differs from the plain one")
		}
	}
}

func TestAcceptsGzip(t *testing.T) {
	for header, want := range map[string]bool{
		"":                        false,
		"gzip":                    true,
		"deflate, gzip;q=0.5":     true,
		"gzip;q=0":                false,
		"gzip; q=0.0, identity":   false,
		"*":                       true,
		"identity":                false,
		"br, zstd":                false,
		" GZIP ":                  false, // codings are lower case on the wire; no guessing
		"gzip;q=1.0, deflate;q=0": true,
	} {
		h := http.Header{}
		if header != "" {
			h.Set("Accept-Encoding", header)
		}
		if got := acceptsGzip(h); got != want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", header, got, want)
		}
	}
}

func TestNameFilter(t *testing.T) {
	h, err := NewHandler(restRegistry(t), HandlerOpts{}, newSampleCollector())
	if err != nil {
		t.Fatal(err)
	}
	rec := serve(t, h, textAccept, "", "?name[]=test_up&name[]=rest_temperature")
	want := "# HELP rest_temperature A gauge.\n# TYPE rest_temperature gauge\nrest_temperature 21.5\n" +
		"# HELP test_up No labels.\n# TYPE test_up gauge\ntest_up 1\n"
	if rec.Body.String() != want {
		t.Errorf("filtered text:\n%s\nwant:\n%s", rec.Body, want)
	}
}

// logLines records what a handler logs.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) Println(v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprint(v...))
}

// badCollector sends one series with a label value that is not UTF-8
// between two good ones.
type badCollector struct{ d *Desc }

func (c badCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.d.Desc() }
func (c badCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- c.d.Metric(1, "a")
	ch <- c.d.Metric(2, "b\xff")
	ch <- c.d.Metric(3, "c")
}

func TestInvalidLabelValueCostsItsSeriesOnly(t *testing.T) {
	var log logLines
	bad := badCollector{NewDesc("test_bad", "Bad.", prometheus.GaugeValue, "netns")}
	h, err := NewHandler(prometheus.NewRegistry(), HandlerOpts{ErrorLog: &log}, bad)
	if err != nil {
		t.Fatal(err)
	}
	rec := serve(t, h, textAccept, "", "")
	want := "# HELP test_bad Bad.\n# TYPE test_bad gauge\ntest_bad{netns=\"a\"} 1\ntest_bad{netns=\"c\"} 3\n"
	if rec.Code != http.StatusOK || rec.Body.String() != want {
		t.Errorf("status %d, text:\n%s\nwant:\n%s", rec.Code, rec.Body, want)
	}
	if len(log.lines) != 1 || !strings.Contains(log.lines[0], "not valid UTF-8") {
		t.Errorf("logged %q, want one line about UTF-8", log.lines)
	}
	// The registry path refuses the same series.
	var m dto.Metric
	if err := bad.d.Metric(2, "b\xff").Write(&m); err == nil {
		t.Error("Write accepted a label value that is not UTF-8")
	}
}

// blockingCollector blocks in Collect until release is closed.
type blockingCollector struct {
	entered chan struct{}
	release chan struct{}
}

func (blockingCollector) Describe(chan<- *prometheus.Desc) {}
func (c blockingCollector) Collect(chan<- prometheus.Metric) {
	c.entered <- struct{}{}
	<-c.release
}

func TestMaxRequestsInFlight(t *testing.T) {
	c := blockingCollector{entered: make(chan struct{}), release: make(chan struct{})}
	h, err := NewHandler(prometheus.NewRegistry(), HandlerOpts{MaxRequestsInFlight: 1}, c)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan int)
	go func() { done <- serve(t, h, textAccept, "", "").Code }()
	<-c.entered
	if code := serve(t, h, textAccept, "", "").Code; code != http.StatusServiceUnavailable {
		t.Errorf("second scrape while one runs: status %d, want 503", code)
	}
	close(c.release)
	if code := <-done; code != http.StatusOK {
		t.Errorf("first scrape: status %d", code)
	}
	go func() { <-c.entered }()
	if code := serve(t, h, textAccept, "", "").Code; code != http.StatusOK {
		t.Errorf("scrape after the first ended: status %d", code)
	}
}

func TestNewHandlerRefusesInvalidDescs(t *testing.T) {
	for _, d := range []*Desc{
		NewDesc("test bad", "A name the text format would have to quote.", prometheus.GaugeValue),
		NewDesc("test_bad", "A label the text format would have to quote.", prometheus.GaugeValue, "a.b"),
		NewDesc("test_bad", "A label twice.", prometheus.GaugeValue, "a", "a"),
	} {
		if _, err := NewHandler(prometheus.NewRegistry(), HandlerOpts{}, badCollector{d}); err == nil {
			t.Errorf("NewHandler accepted %s", d.Desc())
		}
	}
}

func TestMetricPanicsOnWrongLabelCount(t *testing.T) {
	d := NewDesc("test_x", "X.", prometheus.GaugeValue, "a", "b")
	defer func() {
		if recover() == nil {
			t.Error("Metric with one value for two labels did not panic")
		}
	}()
	d.Metric(1, "only")
}
