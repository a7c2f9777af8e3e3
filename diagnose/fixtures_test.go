package diagnose

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/ct-exporter/ct-exporter/histogram"
	"github.com/ct-exporter/ct-exporter/internal/ctnl"
	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/sysctl"
)

// fixedStart is the start time of every fixture.
var fixedStart = time.Date(2026, 11, 24, 3, 14, 0, 0, time.UTC)

// testBounds is a lifetime bucket layout for the fixtures.
var testBounds = histogram.Buckets()

// bucketIndex returns the index of the bucket of testBounds holding v.
func bucketIndex(v float64) int {
	for i, b := range testBounds {
		if v <= b {
			return i
		}
	}
	return len(testBounds)
}

// deaths builds a lifetime histogram from lifetime -> count pairs.
func deaths(pairs map[float64]uint64) []uint64 {
	out := make([]uint64, len(testBounds)+1)
	for v, n := range pairs {
		out[bucketIndex(v)] += n
	}
	return out
}

// defaultSettings are the sysctls of a fresh namespace on kernel 6.18.
func defaultSettings() sysctl.Values {
	return sysctl.Values{
		"nf_conntrack_tcp_timeout_syn_sent":       120,
		"nf_conntrack_tcp_timeout_syn_recv":       60,
		"nf_conntrack_tcp_timeout_established":    432000,
		"nf_conntrack_tcp_timeout_fin_wait":       120,
		"nf_conntrack_tcp_timeout_close_wait":     60,
		"nf_conntrack_tcp_timeout_last_ack":       30,
		"nf_conntrack_tcp_timeout_time_wait":      120,
		"nf_conntrack_tcp_timeout_close":          10,
		"nf_conntrack_tcp_timeout_max_retrans":    300,
		"nf_conntrack_tcp_timeout_unacknowledged": 300,
		"nf_conntrack_udp_timeout":                30,
		"nf_conntrack_udp_timeout_stream":         120,
		"nf_conntrack_buckets":                    262144,
		"nf_conntrack_events":                     2,
		"nf_conntrack_timestamp":                  0,
		"nf_conntrack_acct":                       0,
		"nf_conntrack_checksum":                   1,
		"nf_conntrack_tcp_be_liberal":             0,
		"nf_conntrack_tcp_loose":                  1,
		"nf_conntrack_tcp_ignore_invalid_rst":     0,
		"nf_conntrack_tcp_max_retrans":            3,
		"nf_conntrack_icmp_timeout":               30,
		"nf_conntrack_icmpv6_timeout":             30,
		"nf_conntrack_generic_timeout":            600,
	}
}

// with returns the settings with some values changed.
func with(s sysctl.Values, kv ...any) sysctl.Values {
	out := maps.Clone(s)
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i].(string)] = int64(kv[i+1].(int))
	}
	return out
}

// stats builds a statistics snapshot of two CPUs.
func stats(entries, limit uint32, cpu0, cpu1 map[ctnl.Counter]uint32) ctnl.Snapshot {
	var c0, c1 [ctnl.NumCounters]uint32
	for k, v := range cpu0 {
		c0[k] = v
	}
	for k, v := range cpu1 {
		c1[k] = v
	}
	return ctnl.Snapshot{
		Inode:  4026532000,
		Global: ctnl.GlobalStats{Entries: entries, MaxEntries: limit},
		CPUs:   []ctnl.CPUStats{{CPU: 0, Counters: c0}, {CPU: 1, Counters: c1}},
	}
}

// sampleAt returns a Sample of target over 30 s from fixedStart.
func sampleAt(name string) Sample {
	return Sample{
		Target: netns.Target{Name: name, Path: "/run/netns/" + name},
		Start:  fixedStart,
		End:    fixedStart.Add(30 * time.Second),
		Host: HostInfo{
			SlabObjectBytes: 256,
			Helpers:         []string{"ftp", "sip"},
		},
	}
}

// healthySample is a quiet namespace with default settings.
func healthySample() Sample {
	s := sampleAt("web")
	s.Before = stats(1200, 262144, map[ctnl.Counter]uint32{ctnl.Found: 100, ctnl.SearchRestart: 3}, nil)
	s.After = stats(1234, 262144, map[ctnl.Counter]uint32{ctnl.Found: 180, ctnl.SearchRestart: 4}, map[ctnl.Counter]uint32{ctnl.ClashResolve: 2})
	s.Settings = defaultSettings()
	s.Table = &TableSample{
		Entries: 1234, Duration: 4 * time.Millisecond,
		States: []StateCount{
			{Protocol: "tcp", State: "established", Entries: 900},
			{Protocol: "tcp", State: "time_wait", Entries: 200},
			{Protocol: "udp", State: "none", Entries: 130},
			{Protocol: "icmp", State: "none", Entries: 4},
		},
		Sources: []SourceCount{
			{Address: "10.0.0.11", Entries: 300}, {Address: "10.0.0.12", Entries: 280},
			{Address: "10.0.0.13", Entries: 250}, {Address: "fd00::1", Entries: 200},
			{Address: "10.0.0.14", Entries: 104}, {Address: "10.0.0.15", Entries: 100},
		},
		Ports: []PortCount{
			{Protocol: "tcp", Port: "443", Entries: 700}, {Protocol: "tcp", Port: "5432", Entries: 400},
			{Protocol: "udp", Port: "53", Entries: 130}, {Protocol: "icmp", Port: "none", Entries: 4},
		},
		ShortenedThreshold: 300, ShortenedDetectable: true, Shortened: 2,
	}
	s.Lifetimes = &LifetimeSample{
		Bounds: testBounds,
		Counts: map[string][]uint64{
			"time_wait":   deaths(map[float64]uint64{0.3: 40, 2: 25, 45: 10}),
			"close":       deaths(map[float64]uint64{0.1: 3}),
			"established": deaths(map[float64]uint64{700: 1, 4000: 1}),
		},
		WithoutTimestamp: 12,
	}
	return s
}

// nearlyFullSample is a namespace at 91.6 % with one dominant source and
// drops.
func nearlyFullSample() Sample {
	s := sampleAt("edge")
	s.Before = stats(240000, 262144, map[ctnl.Counter]uint32{ctnl.Drop: 10, ctnl.EarlyDrop: 0}, map[ctnl.Counter]uint32{ctnl.Drop: 4294967290})
	s.After = stats(240113, 262144, map[ctnl.Counter]uint32{ctnl.Drop: 130, ctnl.EarlyDrop: 12}, map[ctnl.Counter]uint32{ctnl.Drop: 20})
	s.Settings = defaultSettings()
	s.Table = &TableSample{
		Entries: 240113, Duration: 1100 * time.Millisecond,
		States: []StateCount{
			{Protocol: "tcp", State: "established", Entries: 229000},
			{Protocol: "tcp", State: "syn_sent", Entries: 8000},
			{Protocol: "tcp", State: "time_wait", Entries: 3000},
			{Protocol: "udp", State: "none", Entries: 113},
		},
		Sources: []SourceCount{
			{Address: "10.20.30.40", Entries: 200000}, {Address: "198.19.0.1", Entries: 8000},
			{Address: "198.19.0.2", Entries: 8000}, {Address: "198.19.0.3", Entries: 8000},
		},
		OtherSources: 16113,
		Ports: []PortCount{
			{Protocol: "tcp", Port: "8080", Entries: 200000}, {Protocol: "tcp", Port: "443", Entries: 40000},
			{Protocol: "udp", Port: "53", Entries: 113},
		},
		ShortenedThreshold: 300, ShortenedDetectable: true,
	}
	s.LifetimesErr = fmt.Errorf("%w: nf_conntrack_events is 0, the kernel sends no DESTROY events", ErrNotAvailable)
	s.Settings = with(s.Settings, "nf_conntrack_events", 0)
	return s
}

// shortTimeoutSample is a namespace whose established timeout is 3 s:
// idle flows die in established at ~3 s.
func shortTimeoutSample() Sample {
	s := sampleAt("idle")
	s.Before = stats(3, 262144, nil, nil)
	s.After = stats(2, 262144, nil, nil)
	s.Settings = with(defaultSettings(), "nf_conntrack_tcp_timeout_established", 3, "nf_conntrack_timestamp", 1, "nf_conntrack_events", 1)
	s.Table = &TableSample{
		Entries: 2, Duration: time.Millisecond,
		States:  []StateCount{{Protocol: "tcp", State: "established", Entries: 2}},
		Sources: []SourceCount{{Address: "198.18.0.1", Entries: 2}},
		Ports:   []PortCount{{Protocol: "tcp", Port: "40000", Entries: 2}},
		// The established timeout is below max_retrans.
		ShortenedThreshold: 300,
	}
	s.Lifetimes = &LifetimeSample{
		Bounds: testBounds,
		Counts: map[string][]uint64{
			"established": deaths(map[float64]uint64{3.01: 40, 7: 2}),
			"time_wait":   deaths(map[float64]uint64{1: 1}),
		},
	}
	return s
}

// retransSample shows the 300 s signature: deaths at 250..350 s and
// shortened entries, with insert failures and a long chain.
func retransSample() Sample {
	s := sampleAt("nat")
	s.Before = stats(52000, 262144, map[ctnl.Counter]uint32{ctnl.InsertFailed: 5}, nil)
	s.After = stats(52500, 262144, map[ctnl.Counter]uint32{ctnl.InsertFailed: 95, ctnl.ChainTooLong: 3, ctnl.ClashResolve: 400}, nil)
	s.Settings = with(defaultSettings(), "nf_conntrack_timestamp", 1, "nf_conntrack_events", 1, "nf_conntrack_tcp_be_liberal", 1, "nf_conntrack_buckets", 16384)
	s.Host.SlabObjectBytes = 0 // /proc/slabinfo not readable
	s.Table = &TableSample{
		Entries: 52500, Duration: 210 * time.Millisecond,
		States: []StateCount{
			{Protocol: "tcp", State: "established", Entries: 40000},
			{Protocol: "udp", State: "none", Entries: 12500},
		},
		Sources:            []SourceCount{{Address: "10.1.0.5", Entries: 9000}, {Address: "10.1.0.6", Entries: 8000}},
		OtherSources:       35500,
		Ports:              []PortCount{{Protocol: "tcp", Port: "6379", Entries: 30000}, {Protocol: "udp", Port: "53", Entries: 12500}},
		OtherPorts:         10000,
		Shortened:          6100,
		ShortenedThreshold: 300, ShortenedDetectable: true,
	}
	s.Lifetimes = &LifetimeSample{
		Bounds: testBounds,
		Counts: map[string][]uint64{
			"established": deaths(map[float64]uint64{301: 180, 320: 40, 1500: 12, 20: 3}),
			"time_wait":   deaths(map[float64]uint64{0.8: 900, 4: 300}),
			"close":       deaths(map[float64]uint64{0.2: 50}),
		},
		Lost: 7, WithoutTimestamp: 31,
	}
	return s
}

// timeWaitSample is a table at 80 % filled by closing connections.
func timeWaitSample() Sample {
	s := sampleAt("api")
	s.Before = stats(209000, 262144, nil, nil)
	s.After = stats(210000, 262144, map[ctnl.Counter]uint32{ctnl.SearchRestart: 40}, nil)
	s.Settings = with(defaultSettings(), "nf_conntrack_timestamp", 1)
	s.Table = &TableSample{
		Entries: 210000, Duration: 900 * time.Millisecond,
		States: []StateCount{
			{Protocol: "tcp", State: "time_wait", Entries: 150000},
			{Protocol: "tcp", State: "established", Entries: 50000},
			{Protocol: "tcp", State: "fin_wait", Entries: 10000},
		},
		Sources:            []SourceCount{{Address: "10.2.0.1", Entries: 30000}, {Address: "10.2.0.2", Entries: 29000}},
		OtherSources:       151000,
		Ports:              []PortCount{{Protocol: "tcp", Port: "80", Entries: 100000}, {Protocol: "tcp", Port: "443", Entries: 100000}},
		OtherPorts:         10000,
		ShortenedThreshold: 300, ShortenedDetectable: true,
	}
	s.Lifetimes = &LifetimeSample{Bounds: testBounds, Counts: map[string][]uint64{
		"time_wait": deaths(map[float64]uint64{0.1: 30000}),
	}}
	return s
}

// fakeSampler returns fixed samples by namespace name.
type fakeSampler map[string]Sample

// errGone is the error of a namespace that vanished.
var errGone = errors.New("netns gone (/run/netns/gone): network namespace path does not exist")

func (f fakeSampler) Sample(_ context.Context, t netns.Target, _ time.Duration) (Sample, error) {
	s, ok := f[t.Name]
	if !ok {
		return Sample{}, errGone
	}
	return s, nil
}

// fixtureReport runs the fake sampler over the named fixtures.
func fixtureReport(t *testing.T, samples ...Sample) *Report {
	t.Helper()
	f := fakeSampler{}
	var targets []netns.Target
	for _, s := range samples {
		f[s.Target.Name] = s
		targets = append(targets, s.Target)
	}
	return runFake(t, f, targets)
}

// runFake runs a sampler and fixes the start time.
func runFake(t *testing.T, s Sampler, targets []netns.Target) *Report {
	t.Helper()
	r, err := Run(context.Background(), s, targets, 30*time.Second, Options{})
	if err != nil {
		t.Fatal(err)
	}
	r.Start = fixedStart
	return r
}
