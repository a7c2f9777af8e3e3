package exposition

import "github.com/prometheus/client_golang/prometheus"

// Sink takes the series a collector sends: into a channel, for a
// prometheus.Registry (and so the protobuf format), or straight into the
// text of a scrape, with no prometheus.Metric built per series. A Sink is
// used by one goroutine at a time.
type Sink struct {
	ch    chan<- prometheus.Metric
	shard *shard
}

// ChannelSink returns a Sink that sends every series to ch as a
// prometheus.Metric, as prometheus.Collector.Collect does.
func ChannelSink(ch chan<- prometheus.Metric) *Sink { return &Sink{ch: ch} }

// Add sends one series of d. labelValues are in the order of the labels
// given to NewDesc, and are not kept; a wrong number of them panics, as
// with Desc.Metric.
func (s *Sink) Add(d *Desc, value float64, labelValues ...string) {
	if s.shard != nil {
		d.checkCount(labelValues)
		s.shard.add(d, value, labelValues)
		return
	}
	s.ch <- d.Metric(value, labelValues...)
}

// Metric sends a metric that is not built by a Desc, such as a histogram.
func (s *Sink) Metric(m prometheus.Metric) {
	if s.shard != nil {
		s.shard.metric(m)
		return
	}
	s.ch <- m
}

// Collector is a prometheus.Collector that can also send its series
// through Sinks, from as many goroutines as it runs: each calls newSink
// once for a Sink of its own. CollectTo returns when every one is done.
// The Handler writes the series of such a collector in parallel.
type Collector interface {
	prometheus.Collector
	CollectTo(newSink func() *Sink)
}

// shard is the text one goroutine of a scrape wrote: the lines of the
// families built by Descs, in the order sent, and the other metrics.
type shard struct {
	text     []byte
	families []shardFamily
	index    map[*Desc]int
	others   []prometheus.Metric
	errs     []error
}

// shardFamily is where the lines of one Desc are in shard.text.
type shardFamily struct {
	desc  *Desc
	lines []span
}

// span is where one line lies in shard.text.
type span struct{ start, end int }

func newShard() *shard { return &shard{index: map[*Desc]int{}} }

// reset empties the shard for another scrape, keeping its memory: the
// text buffer, and the line slice of every Desc seen.
func (s *shard) reset() {
	s.text = s.text[:0]
	for i := range s.families {
		s.families[i].lines = s.families[i].lines[:0]
	}
	clear(s.others)
	s.others = s.others[:0]
	s.errs = nil
}

// add appends one line of d. A label value that is not valid UTF-8 costs
// its series, and is reported.
func (s *shard) add(d *Desc, value float64, labelValues []string) {
	start := len(s.text)
	text, ascii := d.appendLine(s.text, value, labelValues)
	if !ascii {
		if err := d.validate(labelValues); err != nil {
			s.text = text[:start]
			s.errs = append(s.errs, err)
			return
		}
	}
	s.text = text
	i, ok := s.index[d]
	if !ok {
		i = len(s.families)
		s.index[d] = i
		s.families = append(s.families, shardFamily{desc: d})
	}
	s.families[i].lines = append(s.families[i].lines, span{start, len(s.text)})
}

// metric adds a metric: as a line if a Desc built it, else kept for
// client_golang to encode.
func (s *shard) metric(m prometheus.Metric) {
	if dm, ok := m.(*metric); ok {
		s.add(dm.desc, dm.value, dm.labelValues)
		return
	}
	s.others = append(s.others, m)
}
