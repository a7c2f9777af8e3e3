package exposition

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// HandlerOpts configures a Handler.
type HandlerOpts struct {
	// ErrorLog receives the errors met while gathering and writing; a
	// scrape goes on past them with what it could gather. Nil drops them.
	ErrorLog promhttp.Logger
	// MaxRequestsInFlight bounds the scrapes served at once; more get
	// 503. 0 means no bound.
	MaxRequestsInFlight int
}

// Handler serves the metrics of collectors whose gauges and counters are
// built by Descs (fast) together with those of a Gatherer (rest: the Go
// runtime, the process, build information). A request for the text format
// gets fast's gauges and counters written directly as lines and every
// other metric encoded by client_golang; a request for any other format
// (protobuf, which Prometheus asks for when it ingests native histograms)
// is served by promhttp over a registry holding fast, merged with rest.
// Both paths give the same series; within a family, text lines are sorted
// by their label values as a registry sorts them.
type Handler struct {
	fast     []prometheus.Collector
	rest     prometheus.Gatherer
	fallback http.Handler
	errorLog promhttp.Logger
	inFlight chan struct{}
	gzips    sync.Pool
	// textSize is the length of the last scrape's text lines: the next
	// scrape allocates that much (and an eighth more) at once.
	textSize atomic.Int64
}

// NewHandler returns a Handler over rest and the fast collectors. It fails
// when their descriptors are invalid or inconsistent.
func NewHandler(rest prometheus.Gatherer, opts HandlerOpts, fast ...prometheus.Collector) (*Handler, error) {
	reg := prometheus.NewRegistry()
	for _, c := range fast {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics handler: %w", err)
		}
	}
	h := &Handler{
		fast:     fast,
		rest:     rest,
		errorLog: opts.ErrorLog,
		fallback: promhttp.HandlerFor(prometheus.Gatherers{rest, reg}, promhttp.HandlerOpts{
			ErrorLog:      opts.ErrorLog,
			ErrorHandling: promhttp.ContinueOnError,
		}),
	}
	if opts.MaxRequestsInFlight > 0 {
		h.inFlight = make(chan struct{}, opts.MaxRequestsInFlight)
	}
	return h, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.inFlight != nil {
		select {
		case h.inFlight <- struct{}{}:
			defer func() { <-h.inFlight }()
		default:
			http.Error(w, fmt.Sprintf("Limit of concurrent requests reached (%d), try again later.", cap(h.inFlight)),
				http.StatusServiceUnavailable)
			return
		}
	}
	format := expfmt.NegotiateAccept(r.Header, expfmt.DefaultAcceptedFormats()...)
	if format.FormatType() != expfmt.TypeTextPlain {
		h.fallback.ServeHTTP(w, r)
		return
	}

	p, err := h.gather()
	if err != nil {
		h.logf("error gathering metrics: %v", err)
		if p.empty() {
			http.Error(w, "An error has occurred while gathering metrics:\n\n"+err.Error(), http.StatusInternalServerError)
			return
		}
	}

	header := w.Header()
	header.Add("Vary", "Accept")
	header.Add("Vary", "Accept-Encoding")
	header.Set("Content-Type", string(format))
	out := io.Writer(w)
	if acceptsGzip(r.Header) {
		header.Set("Content-Encoding", "gzip")
		gz := h.gzipWriter(w)
		defer h.closeGzip(gz)
		out = gz
	}
	bw := bufio.NewWriterSize(out, 64<<10)
	if err := p.write(bw, nameFilter(r)); err != nil {
		h.logf("error writing metrics: %v", err)
		return
	}
	if err := bw.Flush(); err != nil {
		h.logf("error writing metrics: %v", err)
	}
}

// logf logs to the ErrorLog, if any.
func (h *Handler) logf(format string, args ...any) {
	if h.errorLog != nil {
		h.errorLog.Println(fmt.Sprintf(format, args...))
	}
}

// gzipWriter returns a gzip writer onto w from the handler's pool.
func (h *Handler) gzipWriter(w io.Writer) *gzip.Writer {
	if gz, ok := h.gzips.Get().(*gzip.Writer); ok {
		gz.Reset(w)
		return gz
	}
	gz, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		panic(err) // BestSpeed is a valid level
	}
	return gz
}

// closeGzip finishes a gzip stream and returns its writer to the pool.
func (h *Handler) closeGzip(gz *gzip.Writer) {
	if err := gz.Close(); err != nil {
		h.logf("error writing metrics: %v", err)
	}
	h.gzips.Put(gz)
}

// gather collects fast and gathers rest into one page.
func (h *Handler) gather() (*page, error) {
	p := &page{
		byDesc:  map[*Desc]*family{},
		byName:  map[string]*family{},
		encoded: map[string]*dto.MetricFamily{},
	}
	if n := h.textSize.Load(); n > 0 {
		p.text = make([]byte, 0, n+n/8)
	}
	var errs prometheus.MultiError
	var others replay
	ch := make(chan prometheus.Metric, 1024)
	go func() {
		defer close(ch)
		for _, c := range h.fast {
			c.Collect(ch)
		}
	}()
	for m := range ch {
		fm, ok := m.(*metric)
		if !ok {
			others = append(others, m)
			continue
		}
		if err := fm.validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		p.add(fm)
	}
	h.textSize.Store(int64(len(p.text)))
	mfs, err := h.rest.Gather()
	if err != nil {
		errs = append(errs, err)
	}
	if len(others) > 0 {
		// Histograms and any other metric not built by a Desc: a
		// registry of their own checks and converts them.
		reg := prometheus.NewRegistry()
		if err := reg.Register(others); err != nil {
			errs = append(errs, err)
		} else {
			omfs, err := reg.Gather()
			if err != nil {
				errs = append(errs, err)
			}
			mfs = append(mfs, omfs...)
		}
	}
	for _, mf := range mfs {
		if prev, ok := p.encoded[mf.GetName()]; ok {
			prev.Metric = append(prev.Metric, mf.Metric...)
			continue
		}
		p.encoded[mf.GetName()] = mf
	}
	return p, errs.MaybeUnwrap()
}

// replay is a collector that sends metrics collected before; it describes
// nothing, so a registry takes it unchecked.
type replay []prometheus.Metric

// Describe implements prometheus.Collector.
func (replay) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector.
func (r replay) Collect(ch chan<- prometheus.Metric) {
	for _, m := range r {
		ch <- m
	}
}

// page is what one scrape writes: the text lines of the families built
// by Descs, and the families client_golang gathered.
type page struct {
	byDesc  map[*Desc]*family
	byName  map[string]*family
	encoded map[string]*dto.MetricFamily
	// text holds the lines of every family built by Descs, in the order
	// they were collected.
	text []byte
}

// family is one family's series built by Descs: where their lines are in
// page.text.
type family struct {
	header string
	lines  []span
	// same is how many bytes every line of the family starts with alike
	// (its name, and the first label's name when one Desc makes them
	// all): sorting skips them.
	same int
}

// span is where one line lies in page.text.
type span struct{ start, end int }

// add appends m's line to its family.
func (p *page) add(m *metric) {
	f := p.byDesc[m.desc]
	if f == nil {
		f = p.byName[m.desc.name]
		if f == nil {
			f = &family{header: m.desc.header, same: len(m.desc.name)}
			if len(m.desc.prefixes) > 0 {
				f.same = len(m.desc.prefixes[0])
			}
			p.byName[m.desc.name] = f
		} else {
			// A second Desc of the same name: only the name is shared.
			f.same = len(m.desc.name)
		}
		p.byDesc[m.desc] = f
	}
	start := len(p.text)
	p.text = m.appendText(p.text)
	f.lines = append(f.lines, span{start, len(p.text)})
}

// empty reports whether nothing was gathered.
func (p *page) empty() bool { return len(p.byName) == 0 && len(p.encoded) == 0 }

// write writes every family, sorted by name, that keep accepts.
func (p *page) write(w *bufio.Writer, keep func(name string) bool) error {
	names := make([]string, 0, len(p.byName)+len(p.encoded))
	for name := range p.byName {
		names = append(names, name)
	}
	for name := range p.encoded {
		if _, dup := p.byName[name]; !dup {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		if !keep(name) {
			continue
		}
		f := p.byName[name]
		if mf, ok := p.encoded[name]; ok {
			if _, err := expfmt.MetricFamilyToText(w, mf); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		} else if _, err := w.WriteString(f.header); err != nil {
			return err
		}
		if f != nil {
			if err := f.write(w, p.text); err != nil {
				return err
			}
		}
	}
	return nil
}

// write writes the family's lines sorted. The labels of a line are in
// name order and its label values end in a double quote, so sorting the
// lines sorts the series by label values, as a registry does, unless a
// value holds a character below '"' (a space, a control character, '!').
func (f *family) write(w *bufio.Writer, text []byte) error {
	slices.SortFunc(f.lines, func(a, b span) int {
		return bytes.Compare(text[a.start+f.same:a.end], text[b.start+f.same:b.end])
	})
	for _, l := range f.lines {
		if _, err := w.Write(text[l.start:l.end]); err != nil {
			return err
		}
	}
	return nil
}

// nameFilter returns whether a family is asked for: every family, or
// those named by name[] parameters of the request, as promhttp does.
func nameFilter(r *http.Request) func(string) bool {
	if r.URL == nil {
		return func(string) bool { return true }
	}
	names := r.URL.Query()["name[]"]
	if len(names) == 0 {
		return func(string) bool { return true }
	}
	return func(name string) bool { return slices.Contains(names, name) }
}

// acceptsGzip reports whether the Accept-Encoding header accepts gzip
// (named, or by "*") with a non-zero quality.
func acceptsGzip(h http.Header) bool {
	for _, v := range h.Values("Accept-Encoding") {
		for part := range strings.SplitSeq(v, ",") {
			coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			coding = strings.TrimSpace(coding)
			if coding != "gzip" && coding != "*" {
				continue
			}
			if q, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
				if f, err := strconv.ParseFloat(q, 64); err != nil || f == 0 {
					continue
				}
			}
			return true
		}
	}
	return false
}
