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
	"runtime"
	"slices"
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
	// pods has only label values that share a prefix longer than a
	// sort key, some of them prefixes of others.
	pods *Desc
	hist prometheus.Histogram
	seed uint64
}

// labelValues are label values that need escaping or are not ASCII; their
// order is the same raw and escaped, so both paths sort them alike.
var labelValues = []string{`back\slash`, "new\nline", "plain", `quo"te`, "ünïcode"}

// podValues share a prefix longer than a sort key, as the namespaces of
// a node do.
var podValues = []string{"cni-00000000-0010", "cni-00000000-0002", "cni-00000000-", "cni-00000000-00100", "cni-00000000-0001"}

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
		pods:    NewDesc("test_pod_entries", "Entries of pods.", prometheus.GaugeValue, "netns", "state"),
		hist:    h,
		seed:    1,
	}
}

func (c *sampleCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.gauge.Desc()
	ch <- c.counter.Desc()
	ch <- c.plain.Desc()
	ch <- c.pods.Desc()
	c.hist.Describe(ch)
}

// series is one series of a sampleCollector.
type series struct {
	d      *Desc
	value  float64
	labels []string
}

// series returns the collector's gauges and counters in a shuffled order.
func (c *sampleCollector) series() []series {
	values := []float64{0, 1, -1, 0.5, 1e21, 12345678, math.NaN(), math.Inf(1), math.Inf(-1), 3.25e-7}
	var ss []series
	for i, ns := range labelValues {
		for j, zone := range labelValues {
			ss = append(ss, series{c.gauge, values[(i+j)%len(values)], []string{zone, ns, fmt.Sprint(j)}})
		}
		ss = append(ss, series{c.counter, float64(i*1000 + 7), []string{ns}})
	}
	ss = append(ss, series{c.plain, 1, nil})
	for i, pod := range podValues {
		for j, state := range []string{"syn_sent", "established"} {
			ss = append(ss, series{c.pods, float64(i*10 + j), []string{pod, state}})
		}
	}
	rand.New(rand.NewPCG(c.seed, 2)).Shuffle(len(ss), func(i, j int) { ss[i], ss[j] = ss[j], ss[i] })
	return ss
}

func (c *sampleCollector) Collect(ch chan<- prometheus.Metric) {
	ss := c.series()
	for i, s := range ss {
		if i == len(ss)/2 {
			ch <- c.hist
		}
		ch <- s.d.Metric(s.value, s.labels...)
	}
}

// shardedCollector sends the series of a sampleCollector from three
// goroutines, each through a Sink of its own.
type shardedCollector struct{ *sampleCollector }

func (c shardedCollector) CollectTo(newSink func() *Sink) {
	ss := c.series()
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sink := newSink()
			if w == 1 {
				sink.Metric(c.hist)
			}
			for i := w; i < len(ss); i += 3 {
				sink.Add(ss[i].d, ss[i].value, ss[i].labels...)
			}
		}()
	}
	wg.Wait()
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
	for _, tc := range []struct {
		name string
		fast func(*sampleCollector) prometheus.Collector
	}{
		{"channel", func(c *sampleCollector) prometheus.Collector { return c }},
		{"sinks", func(c *sampleCollector) prometheus.Collector { return shardedCollector{c} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rest := restRegistry(t)
			sample := newSampleCollector()
			fast := tc.fast(sample)
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
			// Another order of collection gives the same text.
			sample.seed = 99
			again := serve(t, h, textAccept, "", "")
			want := serve(t, registryHandler(t, rest, fast), textAccept, "", "")
			if again.Body.String() != want.Body.String() {
				t.Error("another order of collection gave another text")
			}
			if !strings.Contains(again.Body.String(), `test_entries{a="1",netns="back\\slash",zone="new\nline"} 1`+"\n") {
				t.Errorf("escaped, label-sorted line missing:\n%s", again.Body)
			}
		})
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
		"test_entries": 25, "test_events_total": 5, "test_up": 1, "test_pod_entries": 10, "test_lifetime_seconds": 1,
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

func TestWrongLabelCountPanics(t *testing.T) {
	d := NewDesc("test_x", "X.", prometheus.GaugeValue, "a", "b")
	for name, send := range map[string]func(){
		"Metric":        func() { d.Metric(1, "only") },
		"text Sink.Add": func() { (&Sink{shard: newShard()}).Add(d, 1, "only") },
		"channel Sink.Add": func() {
			ChannelSink(make(chan prometheus.Metric, 1)).Add(d, 1, "one", "two", "three")
		},
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("%s with the wrong number of label values did not panic", name)
				}
			}()
			send()
		})
	}
}

// TestSinkAddDoesNotAllocate checks that writing a series into a shard
// that has been used before allocates nothing: the text and line memory
// of a scrape is kept for the next.
func TestSinkAddDoesNotAllocate(t *testing.T) {
	d := NewDesc("test_entries", "Entries.", prometheus.GaugeValue, "netns", "state")
	sh := newShard()
	sink := &Sink{shard: sh}
	for i := range 1000 {
		sink.Add(d, float64(i), "cni-0f3a1b2c", "established")
	}
	sh.reset()
	allocs := testing.AllocsPerRun(500, func() {
		sink.Add(d, 12345.5, "cni-0f3a1b2c", "established")
	})
	if allocs != 0 {
		t.Errorf("%v allocations per series", allocs)
	}
}

// TestScrapesKeepTheirMemory checks that a scrape of 129 namespaces
// (10,965 lines) uses the memory of the scrapes before it: shards, line
// index, writers. A line index allocated anew alone is 350 KB.
func TestScrapesKeepTheirMemory(t *testing.T) {
	h, err := NewHandler(prometheus.NewRegistry(), HandlerOpts{}, newNamespacesCollector(129))
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	req.Header.Set("Accept", textAccept)
	req.Header.Set("Accept-Encoding", "gzip")
	scrape := func() {
		rec := &discardRecorder{header: http.Header{}}
		h.ServeHTTP(rec, req)
		if rec.code != 0 && rec.code != http.StatusOK {
			t.Fatalf("status %d", rec.code)
		}
	}
	for range 3 {
		scrape()
	}
	const scrapes = 10
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range scrapes {
		scrape()
	}
	runtime.ReadMemStats(&after)
	perScrape := (after.TotalAlloc - before.TotalAlloc) / scrapes
	t.Logf("%d bytes allocated per scrape", perScrape)
	if perScrape > 64<<10 {
		t.Errorf("a scrape allocated %d bytes, want under 64 KiB", perScrape)
	}
}

// TestMergedRunsAreWhatTheRegistryWrites serves the 129 namespaces of
// BenchmarkScrape: each of its four goroutines sends its namespaces in
// order, so every family comes in four ordered runs, which are merged
// instead of sorted. The text must still be the registry's.
func TestMergedRunsAreWhatTheRegistryWrites(t *testing.T) {
	c := newNamespacesCollector(129)
	h, err := NewHandler(prometheus.NewRegistry(), HandlerOpts{}, c)
	if err != nil {
		t.Fatal(err)
	}
	got := serve(t, h, textAccept, "", "")
	want := serve(t, registryHandler(t, prometheus.NewRegistry(), c), textAccept, "", "")
	if got.Code != http.StatusOK || want.Code != http.StatusOK {
		t.Fatalf("status %d, registry %d", got.Code, want.Code)
	}
	if got.Body.String() != want.Body.String() {
		g, w := strings.Split(got.Body.String(), "\n"), strings.Split(want.Body.String(), "\n")
		for i := range min(len(g), len(w)) {
			if g[i] != w[i] {
				t.Fatalf("line %d differs: %q, registry %q (%d and %d lines)", i+1, g[i], w[i], len(g), len(w))
			}
		}
		t.Fatalf("%d lines, registry %d", len(g), len(w))
	}
}

// TestSortLines checks sortLines against a plain sort: lines in 1 to 40
// ordered runs (merged up to maxMergedRuns, sorted beyond), with equal
// keys whose texts differ past them, and equal lines.
func TestSortLines(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	const skip = 3
	for runs := 1; runs <= 40; runs++ {
		for _, n := range []int{runs, 50, 500} {
			var lines []line
			for range runs {
				var run []line
				for range max(1, n/runs) {
					// Few distinct keys: ties go to the text after them.
					text := fmt.Sprintf("ns{%08d%03d}", r.IntN(20)*1000, r.IntN(50))
					run = append(run, line{key: sortKey([]byte(text[skip:])), text: []byte(text)})
				}
				slices.SortFunc(run, func(a, b line) int { return bytes.Compare(a.text, b.text) })
				lines = append(lines, run...)
			}
			want := slices.Clone(lines)
			slices.SortFunc(want, func(a, b line) int { return bytes.Compare(a.text, b.text) })
			got := sortLines(lines, make([]line, len(lines)), skip)
			if len(got) != len(want) {
				t.Fatalf("%d runs of %d: %d lines back", runs, n, len(got))
			}
			for i := range want {
				if !bytes.Equal(got[i].text, want[i].text) {
					t.Fatalf("%d runs, %d lines: line %d is %q, want %q", runs, len(want), i, got[i].text, want[i].text)
				}
			}
		}
	}
}
