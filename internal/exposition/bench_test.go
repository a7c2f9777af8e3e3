package exposition

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// namespacesCollector sends what the exporter sends for many namespaces:
// 60 families labelled netns, 85 series per namespace (some families
// with a second label of up to 10 values).
type namespacesCollector struct {
	namespaces []string
	descs      []*Desc
	extra      []int // values of the second label of each family, 0 for none
}

func newNamespacesCollector(namespaces int) *namespacesCollector {
	c := &namespacesCollector{}
	for i := range namespaces {
		c.namespaces = append(c.namespaces, fmt.Sprintf("cni-%08x-%04x", i*7919, i))
	}
	series := 0
	for i := range 60 {
		extra := 0
		if wide := []int{10, 10, 4, 4, 2}; i < len(wide) { // timeouts by state, nat kinds, modes
			extra = wide[i]
		}
		labels := []string{"netns"}
		if extra > 0 {
			labels = append(labels, "state")
			series += extra
		} else {
			series++
		}
		typ := prometheus.GaugeValue
		if i%3 == 0 {
			typ = prometheus.CounterValue
		}
		c.descs = append(c.descs, NewDesc(fmt.Sprintf("bench_family_%d", i), "A family of the benchmark.", typ, labels...))
		c.extra = append(c.extra, extra)
	}
	if series != 85 {
		panic(fmt.Sprintf("%d series per namespace, want 85", series))
	}
	return c
}

func (c *namespacesCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d.Desc()
	}
}

// Collect sends const metrics, as the exporter did before this package.
func (c *namespacesCollector) Collect(ch chan<- prometheus.Metric) {
	for n := range c.namespaces {
		c.send(n, func(d *Desc, v float64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d.Desc(), d.valueType, v, labels...)
		})
	}
}

// CollectTo sends the namespaces from four goroutines, as the exporter's
// workers do.
func (c *namespacesCollector) CollectTo(newSink func() *Sink) {
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sink := newSink()
			for n := w; n < len(c.namespaces); n += 4 {
				c.sendTo(n, sink)
			}
		}()
	}
	wg.Wait()
}

// send sends the series of the n-th namespace.
func (c *namespacesCollector) send(n int, add func(d *Desc, v float64, labels ...string)) {
	ns := c.namespaces[n]
	for i, d := range c.descs {
		v := float64(n*1000 + i)
		if c.extra[i] == 0 {
			add(d, v, ns)
			continue
		}
		for j := range c.extra[i] {
			add(d, v+float64(j), ns, strconv.Itoa(j))
		}
	}
}

// sendTo sends the series of the n-th namespace to sink, calling Add as
// the exporter's collectors do (through a function value, the label
// values would escape).
func (c *namespacesCollector) sendTo(n int, sink *Sink) {
	ns := c.namespaces[n]
	for i, d := range c.descs {
		v := float64(n*1000 + i)
		if c.extra[i] == 0 {
			sink.Add(d, v, ns)
			continue
		}
		for j := range c.extra[i] {
			sink.Add(d, v+float64(j), ns, strconv.Itoa(j))
		}
	}
}

// BenchmarkScrape serves the series of 129 namespaces (128 and the
// exporter's own) in the text format Prometheus asks for, gzipped:
// through this package's Handler from four goroutines' Sinks, and through
// client_golang's registry and promhttp with const metrics, as the
// exporter did before this package.
//
//	go test -run='^$' -bench=Scrape -benchmem ./internal/exposition/
func BenchmarkScrape(b *testing.B) {
	for _, tc := range []struct {
		name    string
		handler func(b *testing.B) http.Handler
	}{
		{"exposition", func(b *testing.B) http.Handler {
			h, err := NewHandler(prometheus.NewRegistry(), HandlerOpts{}, newNamespacesCollector(129))
			if err != nil {
				b.Fatal(err)
			}
			return h
		}},
		{"registry", func(b *testing.B) http.Handler {
			reg := prometheus.NewRegistry()
			reg.MustRegister(newNamespacesCollector(129))
			return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			h := tc.handler(b)
			req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
			req.Header.Set("Accept", textAccept)
			req.Header.Set("Accept-Encoding", "gzip")
			b.ReportAllocs()
			for b.Loop() {
				rec := &discardRecorder{header: http.Header{}}
				h.ServeHTTP(rec, req)
				if rec.code != 0 && rec.code != http.StatusOK {
					b.Fatalf("status %d", rec.code)
				}
			}
		})
	}
}

// discardRecorder is a ResponseWriter that throws the body away.
type discardRecorder struct {
	header http.Header
	code   int
}

func (r *discardRecorder) Header() http.Header         { return r.header }
func (r *discardRecorder) WriteHeader(code int)        { r.code = code }
func (r *discardRecorder) Write(b []byte) (int, error) { return io.Discard.Write(b) }
