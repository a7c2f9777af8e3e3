package lab

import (
	"errors"
	"testing"
)

const exposition = `# TYPE conntrack_events_total counter
conntrack_events_total{netns="a",type="destroy"} 5
conntrack_events_total{netns="a",type="new"} 7
conntrack_events_total{netns="b",type="destroy"} 11
# TYPE conntrack_entries gauge
conntrack_entries{netns="a"} 3
# TYPE conntrack_flow_lifetime_seconds histogram
conntrack_flow_lifetime_seconds_bucket{netns="a",end_state="established",protocol="tcp",le="1"} 0
conntrack_flow_lifetime_seconds_bucket{netns="a",end_state="established",protocol="tcp",le="5"} 10
conntrack_flow_lifetime_seconds_bucket{netns="a",end_state="established",protocol="tcp",le="+Inf"} 10
conntrack_flow_lifetime_seconds_sum{netns="a",end_state="established",protocol="tcp"} 30
conntrack_flow_lifetime_seconds_count{netns="a",end_state="established",protocol="tcp"} 10
`

func TestMetrics(t *testing.T) {
	m, err := ParseMetrics([]byte(exposition))
	if err != nil {
		t.Fatal(err)
	}
	if v, err := m.Sum("conntrack_events_total", map[string]string{"netns": "a", "type": "destroy"}); err != nil || v != 5 {
		t.Fatalf("Sum = %v, %v", v, err)
	}
	if v, err := m.Sum("conntrack_events_total", map[string]string{"netns": "a"}); err != nil || v != 12 {
		t.Fatalf("Sum over types = %v, %v", v, err)
	}
	if _, err := m.Sum("conntrack_events_total", map[string]string{"netns": "c"}); !errors.Is(err, ErrNoSeries) {
		t.Fatalf("Sum of a missing series: %v", err)
	}
	if _, err := m.Sum("conntrack_missing", nil); !errors.Is(err, ErrNoSeries) {
		t.Fatalf("Sum of a missing family: %v", err)
	}
	n, sum, err := m.Histogram("conntrack_flow_lifetime_seconds", map[string]string{"netns": "a"})
	if err != nil || n != 10 || sum != 30 {
		t.Fatalf("Histogram = %v, %v, %v", n, sum, err)
	}
	if _, _, err := m.Histogram("conntrack_events_total", nil); !errors.Is(err, ErrNoSeries) {
		t.Fatalf("Histogram of a counter: %v", err)
	}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
		ok     bool
	}{
		{"conntrack_events_total", map[string]string{"netns": "b", "type": "destroy"}, 11, true},
		{"conntrack_events_total", map[string]string{"netns": "a"}, 5, true}, // the first match
		{"conntrack_entries", nil, 3, true},
		{"conntrack_flow_lifetime_seconds", map[string]string{"protocol": "tcp"}, 10, true},
		{"conntrack_entries", map[string]string{"netns": "b"}, 0, false},
		{"conntrack_missing", nil, 0, false},
	} {
		if v, ok := m.Value(tc.name, tc.labels); v != tc.want || ok != tc.ok {
			t.Errorf("Value(%s, %v) = %v, %v; want %v, %v", tc.name, tc.labels, v, ok, tc.want, tc.ok)
		}
	}
	if _, err := ParseMetrics([]byte("not exposition {")); err == nil {
		t.Error("ParseMetrics of garbage succeeded")
	}
}
