package histogram

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// The observe path of conntrack_flow_lifetime_seconds, one call per
// DESTROY event, against the plain client_golang ways of doing the same:
//
//	go test -run '^$' -bench '^BenchmarkObserve$' -benchmem -count 10 ./histogram > observe.txt
//	benchstat -col /impl observe.txt
//
// impl=lifetimes is Lifetimes.Observe (series cached per label pair);
// impl=vec looks the series up by label values on every call, with the
// same classic and native buckets; impl=classic-vec does that with the
// classic buckets only, as an exporter without native histograms would.

// lifetimesSample cycles through lifetimes that land in different buckets.
var lifetimesSample = [...]float64{0.004, 0.9, 3, 59, 120.5, 299, 301, 899, 3600, 432000}

func BenchmarkObserve(b *testing.B) {
	b.Run("impl=lifetimes", func(b *testing.B) {
		l := New("self")
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			l.Observe(ProtocolTCP, [2]EndState{EndEstablished, EndTimeWait}[i&1], lifetimesSample[i%len(lifetimesSample)])
		}
	})
	b.Run("impl=vec", func(b *testing.B) {
		vec := prometheus.NewHistogramVec(Opts(), []string{netnsLabel, ProtocolLabel, EndStateLabel})
		states := [2]string{EndEstablished.String(), EndTimeWait.String()}
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			vec.WithLabelValues("self", "tcp", states[i&1]).Observe(lifetimesSample[i%len(lifetimesSample)])
		}
	})
	b.Run("impl=classic-vec", func(b *testing.B) {
		opts := Opts()
		opts.NativeHistogramBucketFactor = 0
		opts.NativeHistogramMaxBucketNumber = 0
		opts.NativeHistogramMinResetDuration = 0
		vec := prometheus.NewHistogramVec(opts, []string{netnsLabel, ProtocolLabel, EndStateLabel})
		states := [2]string{EndEstablished.String(), EndTimeWait.String()}
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			vec.WithLabelValues("self", "tcp", states[i&1]).Observe(lifetimesSample[i%len(lifetimesSample)])
		}
	})
}

// BenchmarkObserveParallel is Lifetimes.Observe from every CPU at once,
// as when several namespaces' subscribers share one histogram family.
func BenchmarkObserveParallel(b *testing.B) {
	l := New("self")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			l.Observe(ProtocolTCP, EndTimeWait, lifetimesSample[i%len(lifetimesSample)])
			i++
		}
	})
}
