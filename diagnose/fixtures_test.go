package diagnose

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"testing"
	"time"

	"github.com/ct-exporter/ct-exporter/histogram"
	"github.com/ct-exporter/ct-exporter/internal/ctnl"
	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/sysctl"
	"github.com/ct-exporter/ct-exporter/internal/topk"
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

// defaultKeepalive are the keepalive sysctls of a fresh namespace.
func defaultKeepalive() sysctl.Values {
	return sysctl.Values{sysctl.KeepaliveTime: 7200, sysctl.KeepaliveInterval: 75, sysctl.KeepaliveProbes: 9}
}

// natKinds returns the four NAT kinds with the given entries.
func natKinds(none, snat, dnat, both uint64) []NATCount {
	return []NATCount{{NAT: "none", Entries: none}, {NAT: "snat", Entries: snat}, {NAT: "dnat", Entries: dnat}, {NAT: "both", Entries: both}}
}

// addr returns the topk key of an address.
func addr(s string) topk.Key { return topk.AddrKey(netip.MustParseAddr(s)) }

// addrPort returns the topk key of an address and port.
func addrPort(s string, port uint16) topk.Key {
	return topk.AddrPortKey(netip.MustParseAddr(s), port)
}

// sampleAt returns a Sample of target over 30 s from fixedStart.
func sampleAt(name string) Sample {
	return Sample{
		Target:    netns.Target{Name: name, Path: "/run/netns/" + name},
		Start:     fixedStart,
		End:       fixedStart.Add(30 * time.Second),
		Keepalive: defaultKeepalive(),
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
		NAT:       natKinds(1100, 130, 4, 0),
		Unreplied: 9, Evictable: 30,
	}
	s.Lifetimes = &LifetimeSample{
		Bounds: testBounds,
		Counts: map[string][]uint64{
			"time_wait":   deaths(map[float64]uint64{0.3: 40, 2: 25, 45: 10}),
			"close":       deaths(map[float64]uint64{0.1: 3}),
			"established": deaths(map[float64]uint64{700: 1, 4000: 1}),
		},
		WithoutTimestamp: 12,
		Attribution: &AttributionSample{
			Ends:   attributionItems(150, topk.Item{Key: addr("10.0.0.11"), Count: 30}, topk.Item{Key: addr("10.0.0.12"), Count: 25}),
			Silent: attributionItems(2, topk.Item{Key: addrPort("10.0.9.1", 5432), Count: 2}),
		},
	}
	return s
}

// attributionSample is a namespace whose table holds many ftp helper
// entries and half-open flows, whose idle pooled connections to one
// database die silently, and whose keepalive time is above the idle
// timeout of the NAT gateway on its path.
func attributionSample() Sample {
	s := sampleAt("pool")
	s.Before = stats(4000, 262144, nil, nil)
	s.After = stats(4100, 262144, nil, nil)
	s.Settings = with(defaultSettings(), "nf_conntrack_timestamp", 1, "nf_conntrack_events", 1)
	s.Table = &TableSample{
		Entries: 4100, Duration: 20 * time.Millisecond,
		States: []StateCount{
			{Protocol: "tcp", State: "established", Entries: 2000},
			{Protocol: "tcp", State: "syn_sent", Entries: 1000},
			{Protocol: "tcp", State: "time_wait", Entries: 1000},
			{Protocol: "udp", State: "none", Entries: 100},
		},
		Sources: []SourceCount{{Address: "10.3.0.7", Entries: 2500}, {Address: "10.3.0.8", Entries: 1600}},
		Ports: []PortCount{
			{Protocol: "tcp", Port: "443", Entries: 1900}, {Protocol: "tcp", Port: "5432", Entries: 1500},
			{Protocol: "tcp", Port: "21", Entries: 600}, {Protocol: "udp", Port: "53", Entries: 100},
		},
		ShortenedThreshold: 300, ShortenedDetectable: true, Shortened: 3,
		NAT:       natKinds(1000, 3000, 0, 100),
		Unreplied: 1100, Evictable: 2100,
		Helpers: []HelperCount{{Helper: "ftp", Entries: 600}, {Helper: "sip", Entries: 2}},
	}
	s.Lifetimes = &LifetimeSample{
		Bounds: testBounds,
		Counts: map[string][]uint64{
			"time_wait":   deaths(map[float64]uint64{0.4: 300, 3: 50}),
			"established": deaths(map[float64]uint64{20: 2}),
		},
		Attribution: &AttributionSample{
			Ends: attributionItems(400, topk.Item{Key: addr("10.3.0.7"), Count: 320}, topk.Item{Key: addr("10.3.0.8"), Count: 60}),
			Silent: attributionItems(14, topk.Item{Key: addrPort("10.9.0.5", 5432), Count: 12},
				topk.Item{Key: addrPort("fd00::5", 6379), Count: 2}),
		},
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
	return runFakeOpts(t, s, targets, Options{})
}

// runFakeOpts runs a sampler with options and fixes the start time.
func runFakeOpts(t *testing.T, s Sampler, targets []netns.Target, opts Options) *Report {
	t.Helper()
	r, err := Run(context.Background(), s, targets, 30*time.Second, opts)
	if err != nil {
		t.Fatal(err)
	}
	r.Start = fixedStart
	return r
}

// attributionItems builds a topk read from counts, for tests and fakes.
func attributionItems(total uint64, items ...topk.Item) topk.WindowTop {
	w := topk.WindowTop{Items: items, Total: total, Distinct: len(items)}
	var sum uint64
	for _, it := range items {
		sum += it.Count
	}
	w.Other = total - min(total, sum)
	return w
}
