package exposition

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/klauspost/compress/gzip"
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
	// The memory of finished scrapes, kept for the next ones: a scrape
	// of many namespaces writes megabytes, and allocating them anew
	// each time made the garbage collector a tenth of the scrape's CPU.
	// Channels, not sync.Pools: a pool is emptied by the collections
	// that run between two scrapes.
	spareShards  chan *shard
	spareWriters chan *writers
	spareLines   chan []line
}

// writers are the buffered and gzip writers of one response.
type writers struct {
	bw *bufio.Writer
	gz *gzip.Writer
}

// How much of finished scrapes Handler keeps: the shards of one scrape of
// the exporter (a few goroutines) and then some, and the writers and line
// indexes of a few concurrent scrapes (a gzip writer holds about a
// megabyte, the line index of 128 namespaces 350 KB).
const (
	spareShardsKept  = 16
	spareWritersKept = 4
)

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
	h.spareShards = make(chan *shard, spareShardsKept)
	h.spareWriters = make(chan *writers, spareWritersKept)
	h.spareLines = make(chan []line, spareWritersKept)
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
	defer h.keepPage(p)
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
	wr := h.writers()
	defer h.keepWriters(wr)
	out := io.Writer(w)
	if wr.gz != nil && acceptsGzip(r.Header) {
		header.Set("Content-Encoding", "gzip")
		wr.gz.Reset(w)
		out = wr.gz
	}
	wr.bw.Reset(out)
	err = p.write(wr.bw, nameFilter(r))
	if err == nil {
		err = wr.bw.Flush()
	}
	if err == nil && wr.gz != nil && out == io.Writer(wr.gz) {
		err = wr.gz.Close()
	}
	if err != nil {
		h.logf("error writing metrics: %v", err)
	}
}

// logf logs to the ErrorLog, if any.
func (h *Handler) logf(format string, args ...any) {
	if h.errorLog != nil {
		h.errorLog.Println(fmt.Sprintf(format, args...))
	}
}

// writers returns the writers of a finished response, or new ones.
func (h *Handler) writers() *writers {
	select {
	case wr := <-h.spareWriters:
		return wr
	default:
	}
	wr := &writers{bw: bufio.NewWriterSize(io.Discard, 64<<10)}
	gz, err := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed)
	if err != nil {
		// Cannot happen with a valid level; the responses go out
		// uncompressed.
		h.logf("gzip writer: %v", err)
		return wr
	}
	wr.gz = gz
	return wr
}

// keepWriters keeps wr for a later response, if there is room.
func (h *Handler) keepWriters(wr *writers) {
	wr.bw.Reset(io.Discard)
	if wr.gz != nil {
		wr.gz.Reset(io.Discard)
	}
	select {
	case h.spareWriters <- wr:
	default:
	}
}

// newShard returns the shard of a finished scrape, emptied, or a new one.
func (h *Handler) newShard() *shard {
	select {
	case sh := <-h.spareShards:
		return sh
	default:
		return newShard()
	}
}

// keepPage keeps the memory of a written page for later scrapes, as much
// as there is room for: its shards, emptied, and its line index, cleared
// so that it holds on to no shard.
func (h *Handler) keepPage(p *page) {
	if p.index != nil {
		clear(p.index)
		select {
		case h.spareLines <- p.index[:0]:
		default:
		}
	}
	for _, sh := range p.shards {
		sh.reset()
		select {
		case h.spareShards <- sh:
		default:
			return
		}
	}
}

// gather collects fast and gathers rest into one page.
func (h *Handler) gather() (*page, error) {
	// The rest (the runtime's and the process's metrics) is gathered
	// while the fast collectors run, not after them.
	type gathered struct {
		mfs []*dto.MetricFamily
		err error
	}
	rest := make(chan gathered, 1)
	go func() {
		mfs, err := h.rest.Gather()
		rest <- gathered{mfs, err}
	}()
	var (
		mu     sync.Mutex
		shards []*shard
	)
	newSink := func() *Sink {
		sh := h.newShard()
		mu.Lock()
		shards = append(shards, sh)
		mu.Unlock()
		return &Sink{shard: sh}
	}
	for _, c := range h.fast {
		if sc, ok := c.(Collector); ok {
			sc.CollectTo(newSink)
			continue
		}
		sink := newSink()
		ch := make(chan prometheus.Metric, 256)
		go func() {
			defer close(ch)
			c.Collect(ch)
		}()
		for m := range ch {
			sink.Metric(m)
		}
	}

	p := &page{byName: map[string]*family{}, encoded: map[string]*dto.MetricFamily{}, shards: shards}
	var (
		errs          prometheus.MultiError
		others        replay
		total, widest int
	)
	// Count first, so that the lines of every family, and room to merge
	// those of the widest, fit in one index, which later scrapes use
	// again.
	for _, sh := range shards {
		errs = append(errs, sh.errs...)
		others = append(others, sh.others...)
		for _, sf := range sh.families {
			if len(sf.lines) > 0 {
				p.family(sf.desc).n += len(sf.lines)
				total += len(sf.lines)
			}
		}
	}
	for _, f := range p.byName {
		widest = max(widest, f.n)
	}
	p.index = h.lineIndex(total + widest)
	used := 0
	for _, f := range p.byName {
		f.lines = p.index[used : used : used+f.n]
		used += f.n
	}
	p.scratch = p.index[total : total+widest : total+widest]
	for _, sh := range shards {
		for _, sf := range sh.families {
			if len(sf.lines) > 0 {
				p.family(sf.desc).addLines(sf, sh.text)
			}
		}
	}

	g := <-rest
	mfs := g.mfs
	if g.err != nil {
		errs = append(errs, g.err)
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

// lineIndex returns the line index of a finished scrape, if it can hold
// n lines, or a new one, of length n.
func (h *Handler) lineIndex(n int) []line {
	select {
	case lines := <-h.spareLines:
		if cap(lines) >= n {
			return lines[:n]
		}
	default:
	}
	return make([]line, n)
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
	byName  map[string]*family
	encoded map[string]*dto.MetricFamily
	// shards hold the text of the lines.
	shards []*shard
	// index holds the lines of every family, each family a part of it,
	// and then scratch.
	index []line
	// scratch is where the lines of a family are merged.
	scratch []line
}

// family is the lines of one family built by Descs, from every shard.
type family struct {
	desc  *Desc
	n     int // lines counted
	lines []line
	// same is how many bytes every line of the family starts with alike
	// (its name, and the first label's name when one Desc makes them
	// all): sorting skips them.
	same int
}

// line is one line of a family and its sort key: the first 8 bytes after
// those all the family's lines share, which decide most comparisons.
type line struct {
	key  uint64
	text []byte
}

// family returns the family of d's name, created on first use.
func (p *page) family(d *Desc) *family {
	f := p.byName[d.name]
	if f == nil {
		f = &family{desc: d, same: len(d.name)}
		if len(d.prefixes) > 0 {
			f.same = len(d.prefixes[0])
		}
		p.byName[d.name] = f
	} else if f.desc != d {
		// A second Desc of the same name: only the name is shared.
		f.same = len(d.name)
	}
	return f
}

// addLines adds the lines of one Desc that a shard wrote.
func (f *family) addLines(sf shardFamily, text []byte) {
	for _, l := range sf.lines {
		f.lines = append(f.lines, line{text: text[l.start:l.end]})
	}
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
		} else if _, err := w.WriteString(f.desc.header); err != nil {
			return err
		}
		if f != nil {
			if err := f.write(w, p.scratch); err != nil {
				return err
			}
		}
	}
	return nil
}

// write writes the family's lines sorted, using scratch, which can hold
// them, to merge. The labels of a line are in name order and its label
// values end in a double quote, so sorting the lines sorts the series by
// label values, as a registry does, unless a value holds a character
// below '"' (a space, a control character, '!').
func (f *family) write(w *bufio.Writer, scratch []line) error {
	// Keys start where the lines begin to differ: label values of many
	// namespaces often share a prefix ("cni-") longer than the key.
	// Every line starts with the f.same bytes of its Desc; the
	// comparison starts past them.
	skip := f.same
	if len(f.lines) > 1 && len(f.lines[0].text) > skip {
		first := f.lines[0].text
		common := len(first)
		for _, l := range f.lines[1:] {
			if common = skip + commonPrefix(first[skip:common], l.text[skip:]); common <= skip {
				break
			}
		}
		skip = common
	}
	for i := range f.lines {
		f.lines[i].key = sortKey(f.lines[i].text[skip:])
	}
	for _, l := range sortLines(f.lines, scratch[:len(f.lines)], skip) {
		if _, err := w.Write(l.text); err != nil {
			return err
		}
	}
	return nil
}

// maxMergedRuns bounds the ordered runs sortLines merges; lines in more
// runs than that are sorted.
const maxMergedRuns = 16

// sortLines returns lines sorted by key, then by text past skip, in
// lines or in scratch, which is as long. The lines of a family come from
// a few shards, each in order already when the collector sends its
// namespaces in order and each namespace's series in label order: such
// runs are merged, a few comparisons per line; lines in no useful order
// are sorted.
func sortLines(lines, scratch []line, skip int) []line {
	compare := func(a, b line) int {
		if c := cmp.Compare(a.key, b.key); c != 0 {
			return c
		}
		return bytes.Compare(a.text[skip:], b.text[skip:])
	}
	var bounds [maxMergedRuns + 1]int // where each run starts, then len(lines)
	runs := 1
	for i := 1; i < len(lines); i++ {
		if compare(lines[i-1], lines[i]) <= 0 {
			continue
		}
		if runs == maxMergedRuns {
			slices.SortFunc(lines, compare)
			return lines
		}
		bounds[runs] = i
		runs++
	}
	bounds[runs] = len(lines)
	from, to := lines, scratch
	for runs > 1 {
		merged := 0
		for r := 0; r < runs; r += 2 {
			lo, mid, hi := bounds[r], bounds[min(r+1, runs)], bounds[min(r+2, runs)]
			mergeRuns(to[lo:hi], from[lo:mid], from[mid:hi], compare)
			bounds[merged] = lo
			merged++
		}
		bounds[merged] = len(lines)
		runs = merged
		from, to = to, from
	}
	return from
}

// mergeRuns merges the ordered runs a and b into dst, as long as both;
// of equal lines, those of a come first.
func mergeRuns(dst, a, b []line, compare func(a, b line) int) {
	i, j, k := 0, 0, 0
	for i < len(a) && j < len(b) {
		if compare(b[j], a[i]) < 0 {
			dst[k] = b[j]
			j++
		} else {
			dst[k] = a[i]
			i++
		}
		k++
	}
	k += copy(dst[k:], a[i:])
	copy(dst[k:], b[j:])
}

// commonPrefix returns how many bytes a and b start with alike.
func commonPrefix(a, b []byte) int {
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// sortKey returns the first 8 bytes of b as a big-endian number, padded
// with zeros: keys compare as the bytes do, and equal keys leave the rest
// to compare.
func sortKey(b []byte) uint64 {
	var k [8]byte
	copy(k[:], b)
	return binary.BigEndian.Uint64(k[:])
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
