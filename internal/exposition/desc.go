// Package exposition writes the exporter's metrics in the Prometheus text
// format without a registry's per-series work.
//
// A scrape of many namespaces holds thousands of gauges and counters: about
// 85 per namespace. Built as const metrics and gathered by a
// prometheus.Registry, each costs a few microseconds: its label pairs are
// allocated and validated, then the registry hashes it to check for
// duplicates, converts it to a protobuf message, sorts it with its family
// and encodes it again, and the garbage of all that is collected. A Desc of
// this package builds metrics that still satisfy prometheus.Metric (so
// registries, testutil and the protobuf format keep working), and the
// Handler writes them straight as text lines when the scraper asks for the
// text format: Prometheus does unless it ingests native histograms, and so
// do curl and most other clients. Requests for any other format, and every
// metric that is not built by a Desc (histograms, the Go runtime's), take
// client_golang's path unchanged.
package exposition

import (
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
)

// Desc describes one family of gauges or counters with variable labels.
// It carries what client_golang's prometheus.Desc keeps private and the
// text format needs: the name, the type and the label names.
type Desc struct {
	desc      *prometheus.Desc
	name      string
	valueType prometheus.ValueType
	labels    []string
	// order holds the positions of labels sorted by name: the order in
	// which a series' labels are written and compared, as client_golang
	// does.
	order []int
	// header is the family's # HELP and # TYPE lines.
	header string
	// prefixes[i] is the text written before the value of the i-th label
	// in order: `name{label="` for the first, `",label="` for the others.
	prefixes []string
}

// NewDesc returns the Desc of the family name, of type valueType
// (prometheus.GaugeValue or prometheus.CounterValue), with the variable
// labels given in the order their values will be. The name and labels
// must be legacy Prometheus names ([a-zA-Z_:][a-zA-Z0-9_:]*, no colon in
// labels), which the text format writes unquoted; an invalid or
// duplicate one is reported when the Desc is registered, as
// prometheus.NewDesc does.
func NewDesc(name, help string, valueType prometheus.ValueType, labels ...string) *Desc {
	desc := prometheus.NewDesc(name, help, labels, nil)
	if err := checkLegacyNames(name, labels); err != nil {
		desc = prometheus.NewInvalidDesc(err)
	}
	d := &Desc{
		desc:      desc,
		name:      name,
		valueType: valueType,
		labels:    slices.Clone(labels),
		order:     make([]int, len(labels)),
	}
	for i := range d.order {
		d.order[i] = i
	}
	slices.SortStableFunc(d.order, func(a, b int) int { return strings.Compare(labels[a], labels[b]) })
	typ := "gauge"
	if valueType == prometheus.CounterValue {
		typ = "counter"
	}
	d.header = "# HELP " + name + " " + escapeHelp(help) + "\n# TYPE " + name + " " + typ + "\n"
	for i, pos := range d.order {
		sep := `",`
		if i == 0 {
			sep = name + "{"
		}
		d.prefixes = append(d.prefixes, sep+labels[pos]+`="`)
	}
	return d
}

// checkLegacyNames reports a metric or label name that is not a legacy
// Prometheus name.
func checkLegacyNames(name string, labels []string) error {
	if !model.LegacyValidation.IsValidMetricName(name) {
		return fmt.Errorf("exposition: metric name %q is not a legacy Prometheus name", name)
	}
	for _, l := range labels {
		if !model.LegacyValidation.IsValidLabelName(l) {
			return fmt.Errorf("exposition: %s: label name %q is not a legacy Prometheus name", name, l)
		}
	}
	return nil
}

// Desc returns the prometheus.Desc of the family, for Describe.
func (d *Desc) Desc() *prometheus.Desc { return d.desc }

// Metric returns one series of the family. labelValues are in the order of
// the labels given to NewDesc; a wrong number of them is a programming
// error and panics, as with prometheus.MustNewConstMetric.
func (d *Desc) Metric(value float64, labelValues ...string) prometheus.Metric {
	d.checkCount(labelValues)
	m := &metric{desc: d, value: value}
	if len(labelValues) <= len(m.inline) {
		// The values are copied, so the caller's slice does not escape:
		// one allocation per series.
		m.labelValues = m.inline[:len(labelValues)]
		copy(m.labelValues, labelValues)
	} else {
		m.labelValues = slices.Clone(labelValues)
	}
	return m
}

// checkCount panics when labelValues do not match the labels in number.
func (d *Desc) checkCount(labelValues []string) {
	if len(labelValues) != len(d.labels) {
		panic(fmt.Sprintf("exposition: %s: %d label values for %d labels", d.name, len(labelValues), len(d.labels)))
	}
}

// metric is one series built by a Desc.
type metric struct {
	desc        *Desc
	value       float64
	labelValues []string
	inline      [3]string
}

// Desc implements prometheus.Metric.
func (m *metric) Desc() *prometheus.Desc { return m.desc.desc }

// Write implements prometheus.Metric, for registries and the protobuf
// format. Label values that are not valid UTF-8 are an error, as with
// prometheus.NewConstMetric.
func (m *metric) Write(out *dto.Metric) error {
	if err := m.desc.validate(m.labelValues); err != nil {
		return err
	}
	out.Label = make([]*dto.LabelPair, len(m.labelValues))
	for i, pos := range m.desc.order {
		out.Label[i] = &dto.LabelPair{Name: &m.desc.labels[pos], Value: &m.labelValues[pos]}
	}
	v := m.value
	if m.desc.valueType == prometheus.CounterValue {
		out.Counter = &dto.Counter{Value: &v}
	} else {
		out.Gauge = &dto.Gauge{Value: &v}
	}
	return nil
}

// validate reports label values that are not valid UTF-8.
func (d *Desc) validate(labelValues []string) error {
	for i, v := range labelValues {
		if !utf8.ValidString(v) {
			return fmt.Errorf("%s: value of label %q is not valid UTF-8: %q", d.name, d.labels[i], v)
		}
	}
	return nil
}

// appendLine appends one series of the family as a line of the text
// format. It reports whether every label value is ASCII; otherwise the
// caller checks them with validate.
func (d *Desc) appendLine(b []byte, value float64, labelValues []string) ([]byte, bool) {
	ascii := true
	if len(labelValues) == 0 {
		b = append(b, d.name...)
	} else {
		for i, pos := range d.order {
			b = append(b, d.prefixes[i]...)
			var ok bool
			b, ok = appendLabelValue(b, labelValues[pos])
			ascii = ascii && ok
		}
		b = append(b, `"}`...)
	}
	b = append(b, ' ')
	b = appendFloat(b, value)
	return append(b, '\n'), ascii
}
