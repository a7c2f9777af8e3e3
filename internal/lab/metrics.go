package lab

import (
	"bytes"
	"errors"
	"fmt"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// ErrNoSeries reports that a scrape had no series of a metric with the
// labels asked for.
var ErrNoSeries = errors.New("no such series")

// Metrics are the metric families of one scrape, by name.
type Metrics map[string]*dto.MetricFamily

// ParseMetrics parses Prometheus text exposition.
func ParseMetrics(text []byte) (Metrics, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		return nil, fmt.Errorf("parse exposition: %w", err)
	}
	return Metrics(mfs), nil
}

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

// sampleValue is the value of a gauge, counter or untyped series, or the
// sample count of a histogram; ok is false for other types.
func sampleValue(m *dto.Metric) (v float64, ok bool) {
	switch {
	case m.Gauge != nil:
		return m.GetGauge().GetValue(), true
	case m.Counter != nil:
		return m.GetCounter().GetValue(), true
	case m.Untyped != nil:
		return m.GetUntyped().GetValue(), true
	case m.Histogram != nil:
		return float64(m.GetHistogram().GetSampleCount()), true
	}
	return 0, false
}

// Value returns the value of the first series of the family whose labels
// include want (a histogram's value is its sample count); ok is false
// when there is none.
func (ms Metrics) Value(name string, want map[string]string) (v float64, ok bool) {
	for _, m := range ms[name].GetMetric() {
		if !matches(m, want) {
			continue
		}
		if v, ok := sampleValue(m); ok {
			return v, true
		}
	}
	return 0, false
}

// Sum adds the values of every series of the family whose labels include
// want: gauges, counters and untyped values, or the sample count of
// histograms. It fails with ErrNoSeries when no series matches.
func (ms Metrics) Sum(name string, want map[string]string) (float64, error) {
	var sum float64
	found := false
	for _, m := range ms[name].GetMetric() {
		if !matches(m, want) {
			continue
		}
		found = true
		v, _ := sampleValue(m)
		sum += v
	}
	if !found {
		return 0, fmt.Errorf("%s%v: %w", name, want, ErrNoSeries)
	}
	return sum, nil
}

// Histogram returns the summed sample count and sum of the histogram
// series whose labels include want.
func (ms Metrics) Histogram(name string, want map[string]string) (count uint64, sum float64, err error) {
	found := false
	for _, m := range ms[name].GetMetric() {
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
