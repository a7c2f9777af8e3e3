package histogram

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

func TestBucketsResolveCommonTimeouts(t *testing.T) {
	b := Buckets()
	if !slices.IsSorted(b) {
		t.Fatalf("buckets not sorted: %v", b)
	}
	for _, want := range []float64{1, 5, 30, 60, 120, 240, 250, 300, 350, 600, 900, 1200, 3600, 7200, 86400, 432000} {
		if !slices.Contains(b, want) {
			t.Errorf("bucket %v missing", want)
		}
	}
	b[0] = -1
	if Buckets()[0] != 1 {
		t.Fatal("Buckets returns a shared slice")
	}
}

func TestLabelValues(t *testing.T) {
	protos := map[uint8]string{6: "tcp", 17: "udp", 132: "sctp", 1: "icmp", 58: "icmpv6", 47: "other", 0: "other", 255: "other"}
	for n, want := range protos {
		if got := ProtocolFromNumber(n).String(); got != want {
			t.Errorf("protocol %d = %q, want %q", n, got, want)
		}
	}
	if Protocol(200).String() != "other" {
		t.Error("out-of-range protocol")
	}
	states := []string{"none", "syn_sent", "syn_recv", "established", "fin_wait", "close_wait", "last_ack", "time_wait", "close", "syn_sent2"}
	for i, want := range states {
		if got := EndStateFromTCP(uint8(i)).String(); got != want {
			t.Errorf("state %d = %q, want %q", i, got, want)
		}
	}
	for _, n := range []uint8{10, 11, 255} {
		if got := EndStateFromTCP(n); got != EndNone {
			t.Errorf("state %d = %v, want none", n, got)
		}
	}
	if EndState(42).String() != "none" {
		t.Error("out-of-range end state")
	}
}

func TestLifetimesExposition(t *testing.T) {
	l := New("ns1")
	for _, s := range []float64{2, 299, 301, 310, 1000} {
		l.Observe(ProtocolTCP, EndEstablished, s)
	}
	l.Observe(ProtocolTCP, EndTimeWait, 0.5)
	l.Observe(ProtocolUDP, EndNone, -3)          // clamped to 0
	l.Observe(Protocol(99), EndState(99), 7)     // other / none
	l.Observe(ProtocolICMP, EndNone, math.NaN()) // 0

	var b strings.Builder
	b.WriteString("# HELP conntrack_flow_lifetime_seconds " + Opts().Help + "\n# TYPE conntrack_flow_lifetime_seconds histogram\n")
	series := []struct {
		proto, state string
		obs          []float64
	}{
		{"icmp", "none", []float64{0}},
		{"other", "none", []float64{7}},
		{"tcp", "established", []float64{2, 299, 301, 310, 1000}},
		{"tcp", "time_wait", []float64{0.5}},
		{"udp", "none", []float64{0}},
	}
	for _, s := range series {
		var sum float64
		for _, o := range s.obs {
			sum += o
		}
		for _, ub := range Buckets() {
			n := 0
			for _, o := range s.obs {
				if o <= ub {
					n++
				}
			}
			fmt.Fprintf(&b, "conntrack_flow_lifetime_seconds_bucket{end_state=%q,netns=\"ns1\",protocol=%q,le=\"%g\"} %d\n", s.state, s.proto, ub, n)
		}
		fmt.Fprintf(&b, "conntrack_flow_lifetime_seconds_bucket{end_state=%q,netns=\"ns1\",protocol=%q,le=\"+Inf\"} %d\n", s.state, s.proto, len(s.obs))
		fmt.Fprintf(&b, "conntrack_flow_lifetime_seconds_sum{end_state=%q,netns=\"ns1\",protocol=%q} %g\n", s.state, s.proto, sum)
		fmt.Fprintf(&b, "conntrack_flow_lifetime_seconds_count{end_state=%q,netns=\"ns1\",protocol=%q} %d\n", s.state, s.proto, len(s.obs))
	}
	if err := testutil.CollectAndCompare(l, strings.NewReader(b.String())); err != nil {
		t.Fatal(err)
	}
}

func TestLifetimesNativeBuckets(t *testing.T) {
	l := New("self")
	for i := 1; i <= 1000; i++ {
		l.Observe(ProtocolTCP, EndEstablished, float64(i))
	}
	ch := make(chan prometheus.Metric, 1)
	l.Collect(ch)
	var m dto.Metric
	if err := (<-ch).Write(&m); err != nil {
		t.Fatal(err)
	}
	h := m.GetHistogram()
	if h.GetSchema() != 3 || len(h.GetPositiveSpan()) == 0 {
		t.Fatalf("no native buckets: schema %d, spans %v", h.GetSchema(), h.GetPositiveSpan())
	}
	var n int64
	var buckets int
	for _, d := range h.GetPositiveDelta() {
		n += d
		buckets++
	}
	if buckets > NativeMaxBucketNumber {
		t.Fatalf("%d native buckets", buckets)
	}
	if len(h.GetBucket()) != len(Buckets()) || h.GetSampleCount() != 1000 {
		t.Fatalf("classic buckets %d, count %d", len(h.GetBucket()), h.GetSampleCount())
	}
}

func TestObserveDoesNotAllocate(t *testing.T) {
	l := New("self")
	l.Observe(ProtocolTCP, EndEstablished, 1)
	if a := testing.AllocsPerRun(1000, func() { l.Observe(ProtocolTCP, EndEstablished, 300) }); a != 0 {
		t.Fatalf("Observe allocates %v times", a)
	}
}

func TestCollapseShare(t *testing.T) {
	l := New("x")
	for _, s := range []float64{10, 260, 300, 349, 351, 3600} {
		l.Observe(ProtocolTCP, EndEstablished, s)
	}
	l.Observe(ProtocolUDP, EndNone, 300)
	ch := make(chan prometheus.Metric, 10)
	l.Collect(ch)
	close(ch)
	var tcp []Bucket
	var count uint64
	for mm := range ch {
		var m dto.Metric
		if err := mm.Write(&m); err != nil {
			t.Fatal(err)
		}
		if m.GetLabel()[2].GetValue() != "tcp" { // labels sorted: end_state, netns, protocol
			continue
		}
		for _, b := range m.GetHistogram().GetBucket() {
			tcp = append(tcp, Bucket{UpperBound: b.GetUpperBound(), CumulativeCount: b.GetCumulativeCount()})
		}
		count = m.GetHistogram().GetSampleCount()
	}
	share, ok := CollapseShare(tcp, count)
	if !ok || share != 0.5 {
		t.Fatalf("share %v %v, want 0.5", share, ok)
	}
	if _, ok := CollapseShare(tcp, 0); ok {
		t.Error("share of zero deaths")
	}
	if _, ok := ShareBetween(tcp, count, 250, 333); ok {
		t.Error("share with a missing bound")
	}
}

// TestEachSendsWhatCollectSends checks that Each hands out the series
// Collect sends: one per observed label pair, with the same contents.
func TestEachSendsWhatCollectSends(t *testing.T) {
	l := New("ns1")
	l.Observe(ProtocolTCP, EndEstablished, 301)
	l.Observe(ProtocolTCP, EndTimeWait, 2)
	l.Observe(ProtocolUDP, EndNone, 30)
	l.Observe(ProtocolTCP, EndEstablished, 5)
	text := func(ms []prometheus.Metric) []string {
		var out []string
		for _, m := range ms {
			var d dto.Metric
			if err := m.Write(&d); err != nil {
				t.Fatal(err)
			}
			out = append(out, m.Desc().String()+" "+d.String())
		}
		slices.Sort(out)
		return out
	}
	ch := make(chan prometheus.Metric, 16)
	l.Collect(ch)
	close(ch)
	var collected, each []prometheus.Metric
	for m := range ch {
		collected = append(collected, m)
	}
	l.Each(func(m prometheus.Metric) { each = append(each, m) })
	if len(each) != 3 || !slices.Equal(text(each), text(collected)) {
		t.Fatalf("Each sent %d series, Collect %d:\n%v\n%v", len(each), len(collected), text(each), text(collected))
	}
}
