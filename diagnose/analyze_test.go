package diagnose

import (
	"bytes"
	"context"
	"errors"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ct-exporter/ct-exporter/events"
	"github.com/ct-exporter/ct-exporter/histogram"
	"github.com/ct-exporter/ct-exporter/internal/ctnl"
	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/sysctl"
	"github.com/ct-exporter/ct-exporter/internal/tablescan"
	"github.com/ct-exporter/ct-exporter/internal/topk"
)

// codes returns the finding codes of a report.
func codes(r NamespaceReport) []string {
	var out []string
	for _, f := range r.Findings {
		out = append(out, f.Code)
	}
	return out
}

// recCodes returns the recommendation codes of a report.
func recCodes(r NamespaceReport) []string {
	var out []string
	for _, rec := range r.Recommendations {
		out = append(out, rec.Code)
	}
	return out
}

func TestAnalyzeHealthyHasNoRecommendations(t *testing.T) {
	r := Analyze(healthySample(), Options{})
	if r.Verdict != VerdictOK {
		t.Errorf("verdict %s, want ok; findings %v", r.Verdict, codes(r))
	}
	if len(r.Recommendations) != 0 {
		t.Errorf("recommendations on a healthy namespace: %v", recCodes(r))
	}
	for _, f := range r.Findings {
		if f.Severity != SeverityInfo {
			t.Errorf("finding %s is %s on a healthy namespace", f.Code, f.Severity)
		}
	}
}

func TestAnalyzeNearlyFull(t *testing.T) {
	r := Analyze(nearlyFullSample(), Options{})
	if r.Verdict != VerdictCritical || r.Fill.Verdict != VerdictCritical {
		t.Errorf("verdict %s, fill %s, want critical", r.Verdict, r.Fill.Verdict)
	}
	for _, code := range []string{"fill_high", "drop", "early_drop", "source_dominates"} {
		if !slices.Contains(codes(r), code) {
			t.Errorf("no finding %s in %v", code, codes(r))
		}
	}
	if got := recCodes(r); !slices.Contains(got, "raise_limit") || !slices.Contains(got, "dominant_source") {
		t.Errorf("recommendations %v, want raise_limit and dominant_source", got)
	}
	var named bool
	for _, rec := range r.Recommendations {
		if rec.Code == "dominant_source" && strings.Contains(rec.Action, "10.20.30.40") {
			named = true
		}
		if rec.Code == "raise_limit" && !strings.Contains(rec.Action, "524,288") {
			t.Errorf("raise_limit does not propose twice the limit: %s", rec.Action)
		}
	}
	if !named {
		t.Error("dominant_source does not name 10.20.30.40")
	}
}

func TestAnalyzeCountersWrap(t *testing.T) {
	// CPU 1's drop counter wraps from 2^32-6 to 20: 26, plus CPU 0's 120.
	r := Analyze(nearlyFullSample(), Options{})
	want := map[string]uint64{"drop": 146, "early_drop": 12, "insert_failed": 0}
	for _, c := range r.Counters {
		if w, ok := want[c.Name]; ok && c.Increase != w {
			t.Errorf("%s increase %d, want %d", c.Name, c.Increase, w)
		}
		if c.Name == "drop" && math.Abs(c.PerSecond-146.0/30) > 1e-9 {
			t.Errorf("drop per second %v", c.PerSecond)
		}
	}
	names := []string{}
	for _, c := range r.Counters {
		names = append(names, c.Name)
	}
	if want := []string{"drop", "early_drop", "insert_failed", "clash_resolve", "chaintoolong", "search_restart"}; !slices.Equal(names, want) {
		t.Errorf("counters %v, want %v", names, want)
	}
}

func TestAnalyzeCPUWithoutFirstReading(t *testing.T) {
	s := healthySample()
	s.After.CPUs = append(s.After.CPUs, ctnl.CPUStats{CPU: 7, Counters: [ctnl.NumCounters]uint32{ctnl.Drop: 99}})
	r := Analyze(s, Options{})
	if r.Counters[0].Increase != 0 || r.Verdict != VerdictOK {
		t.Errorf("a CPU seen only at the end counted: drop %d, verdict %s", r.Counters[0].Increase, r.Verdict)
	}
}

func TestAnalyzeFillThresholds(t *testing.T) {
	for _, tc := range []struct {
		entries uint32
		want    Verdict
	}{
		{196608, VerdictOK},       // exactly 75 %
		{196609, VerdictWarning},  // above 75 %
		{235929, VerdictWarning},  // 89.99 %
		{235930, VerdictCritical}, // above 90 %
	} {
		s := healthySample()
		s.After.Global.Entries = tc.entries
		r := Analyze(s, Options{})
		if r.Fill.Verdict != tc.want || r.Verdict != tc.want {
			t.Errorf("%d of 262144: fill %s, verdict %s, want %s", tc.entries, r.Fill.Verdict, r.Verdict, tc.want)
		}
		if tc.want != VerdictOK && !slices.Contains(recCodes(r), "raise_limit") {
			t.Errorf("%d of 262144: no raise_limit", tc.entries)
		}
	}
}

func TestAnalyzeShortTimeoutCluster(t *testing.T) {
	r := Analyze(shortTimeoutSample(), Options{})
	c := r.Lifetimes.Cluster
	if c == nil {
		t.Fatal("no cluster")
	}
	if c.Near != "established" || c.FromSeconds != 1 || c.ToSeconds != 5 || c.Deaths != 40 {
		t.Errorf("cluster %+v, want 40 deaths at 1..5 s near established", *c)
	}
	if !slices.Contains(codes(r), "lifetime_established_timeout") || !slices.Contains(recCodes(r), "established_timeout") {
		t.Errorf("findings %v, recommendations %v", codes(r), recCodes(r))
	}
	if r.Verdict != VerdictWarning {
		t.Errorf("verdict %s, want warning", r.Verdict)
	}
}

func TestAnalyzeRetransSignature(t *testing.T) {
	r := Analyze(retransSample(), Options{})
	l := r.Lifetimes
	if l.Cluster == nil || l.Cluster.Near != "max_retrans" {
		t.Fatalf("cluster %+v, want near max_retrans", l.Cluster)
	}
	if want := 220.0 / 235; math.Abs(l.Share250To350-want) > 1e-9 {
		t.Errorf("250..350 share %v, want %v", l.Share250To350, want)
	}
	for _, code := range []string{"lifetime_300s", "shortened_timeouts", "insert_failed", "chaintoolong"} {
		if !slices.Contains(codes(r), code) {
			t.Errorf("no finding %s in %v", code, codes(r))
		}
	}
	if got := recCodes(r); !slices.Equal(got, []string{"insert_failed", "raise_buckets", "unanswered_flows"}) {
		t.Errorf("recommendations %v", got)
	}
	if r.Fill.Memory.Source != "documented" || r.Fill.Memory.BytesPerEntry != DocumentedBytesPerEntry {
		t.Errorf("memory %+v, want the documented estimate", r.Fill.Memory)
	}
}

func TestAnalyzeNoClusterBelowMinimum(t *testing.T) {
	s := shortTimeoutSample()
	s.Lifetimes.Counts = map[string][]uint64{"established": deaths(map[float64]uint64{3: clusterMin - 1})}
	if c := Analyze(s, Options{}).Lifetimes.Cluster; c != nil {
		t.Errorf("cluster %+v from %d deaths", *c, clusterMin-1)
	}
}

func TestAnalyzeTopKTrims(t *testing.T) {
	r := Analyze(healthySample(), Options{TopK: 2})
	if len(r.Table.Sources) != 2 || r.Table.OtherSources != 1234-300-280 {
		t.Errorf("sources %v other %d", r.Table.Sources, r.Table.OtherSources)
	}
}

func TestAnalyzeNotAvailable(t *testing.T) {
	s := healthySample()
	s.Table, s.TableErr = nil, errors.New("netns web (/run/netns/web): table scan: timeout")
	s.Lifetimes, s.LifetimesErr = nil, ErrNotAvailable
	r := Analyze(s, Options{})
	if r.Table.Available || r.Table.Reason != "failed: netns web (/run/netns/web): table scan: timeout" {
		t.Errorf("table %+v", r.Table)
	}
	if r.Lifetimes.Available || r.Lifetimes.Reason != "not available" {
		t.Errorf("lifetimes %+v", r.Lifetimes)
	}
	if r.Verdict != VerdictOK {
		t.Errorf("a missing section changed the verdict: %s", r.Verdict)
	}
}

func TestRunVerdictIsWorst(t *testing.T) {
	r := fixtureReport(t, healthySample(), shortTimeoutSample(), nearlyFullSample())
	if r.Verdict != VerdictCritical {
		t.Errorf("verdict %s, want critical", r.Verdict)
	}
	r = runFake(t, fakeSampler{"web": healthySample()}, []netns.Target{{Name: "web"}, {Name: "gone", Path: "/run/netns/gone"}})
	if r.Verdict != VerdictOK || len(r.Failed()) != 1 || r.Failed()[0].Error != errGone.Error() {
		t.Errorf("verdict %s, failed %+v", r.Verdict, r.Failed())
	}
}

func TestRunCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Run(ctx, fakeSampler{}, []netns.Target{netns.Self()}, time.Second, Options{}); !errors.Is(err, context.Canceled) {
		t.Errorf("err %v, want context.Canceled", err)
	}
}

func TestVerdictWorse(t *testing.T) {
	for _, tc := range []struct{ a, b, want Verdict }{
		{VerdictOK, VerdictWarning, VerdictWarning},
		{VerdictCritical, VerdictWarning, VerdictCritical},
		{"", VerdictOK, VerdictOK},
		{VerdictWarning, VerdictOK, VerdictWarning},
	} {
		if got := tc.a.Worse(tc.b); got != tc.want {
			t.Errorf("%q.Worse(%q) = %q, want %q", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestLifetimeCounter(t *testing.T) {
	c := NewLifetimeCounter()
	c.Observe(events.Lifetime{Protocol: 6, TCPState: uint8(histogram.EndEstablished), Seconds: 3})
	c.Observe(events.Lifetime{Protocol: 6, TCPState: uint8(histogram.EndEstablished), Seconds: 5}) // upper bound inclusive
	c.Observe(events.Lifetime{Protocol: 6, TCPState: uint8(histogram.EndEstablished), Seconds: 300.5})
	c.Observe(events.Lifetime{Protocol: 6, TCPState: uint8(histogram.EndTimeWait), Seconds: 1e9}) // beyond the last bound
	c.Observe(events.Lifetime{Protocol: 17, Seconds: 30})                                         // not TCP: not counted
	s := c.Sample()
	est := s.Counts["established"]
	if est[bucketIndex(3)] != 2 || est[bucketIndex(300.5)] != 1 {
		t.Errorf("established counts %v", est)
	}
	if tw := s.Counts["time_wait"]; tw[len(tw)-1] != 1 {
		t.Errorf("time_wait counts %v", tw)
	}
	if _, ok := s.Counts["none"]; ok {
		t.Error("a UDP flow was counted")
	}
	r := Analyze(Sample{Lifetimes: s, Settings: defaultSettings()}, Options{})
	if r.Lifetimes.Deaths != 4 || r.Lifetimes.EstablishedDeaths != 3 {
		t.Errorf("deaths %d, established %d", r.Lifetimes.Deaths, r.Lifetimes.EstablishedDeaths)
	}
}

func TestTableFromScan(t *testing.T) {
	a := tablescan.NewAggregator(tablescan.Options{TopK: 2})
	a.Reset(tablescan.Timeouts{Established: 432000, MaxRetrans: 300, Unacknowledged: 300})
	for _, f := range []ctnl.Flow{
		tcpFlow("10.0.0.1", 443, ctnl.TCPStateEstablished, 100),
		tcpFlow("10.0.0.1", 443, ctnl.TCPStateEstablished, 431000),
		tcpFlow("10.0.0.2", 80, ctnl.TCPStateTimeWait, 60),
	} {
		a.Add(&f)
	}
	ts := TableFromScan(a.Result())
	if ts.Entries != 3 || ts.Shortened != 1 || !ts.ShortenedDetectable || ts.ShortenedThreshold != 300 {
		t.Errorf("table %+v", ts)
	}
	if len(ts.Sources) != 2 || ts.Sources[0] != (SourceCount{Address: "10.0.0.1", Entries: 2}) {
		t.Errorf("sources %+v", ts.Sources)
	}
	if len(ts.Ports) != 2 || ts.Ports[0] != (PortCount{Protocol: "tcp", Port: "443", Entries: 2}) {
		t.Errorf("ports %+v", ts.Ports)
	}
}

func TestSlabObjectSize(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "slabinfo")
	content := "slabinfo - version: 2.1\n" +
		"# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>\n" +
		"nf_conntrack_expect      0      0    208   19    1 : tunables    0    0    0 : slabdata      0      0      0\n" +
		"nf_conntrack         192    256    256   16    1 : tunables    0    0    0 : slabdata     16     16      0\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if n, err := SlabObjectSize(path); err != nil || n != 256 {
		t.Errorf("SlabObjectSize = %d, %v; want 256", n, err)
	}
	if _, err := SlabObjectSize(filepath.Join(dir, "missing")); err == nil {
		t.Error("no error for a missing file")
	}
	if err := os.WriteFile(path, []byte("slabinfo - version: 2.1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := SlabObjectSize(path); !errors.Is(err, errNoSlab) {
		t.Errorf("err %v, want errNoSlab", err)
	}
}

func TestHelpers(t *testing.T) {
	dir := t.TempDir()
	for _, m := range []string{"nf_conntrack", "nf_conntrack_ftp", "nf_conntrack_sip", "nf_conntrack_netlink", "nf_nat_ftp"} {
		if err := os.Mkdir(filepath.Join(dir, m), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if got := Helpers(dir); !slices.Equal(got, []string{"ftp", "sip"}) {
		t.Errorf("Helpers = %v, want [ftp sip]", got)
	}
}

func TestFormat(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{count(0), "0"}, {count(999), "999"}, {count(1000), "1,000"}, {count(262144), "262,144"}, {count(1234567), "1,234,567"},
		{percent(0.9155), "91.5 %"}, {seconds(30), "30 s"}, {seconds(2.5), "2.5 s"}, {seconds(432000), "5 d"}, {seconds(7200), "2 h"},
		{bytesIEC(512), "512 B"}, {bytesIEC(100663296), "96 MiB"}, {bytesIEC(1536), "1.5 KiB"},
		{bucketRange(LifetimeBucket{FromSeconds: 250, ToSeconds: 300}), "250..300 s"},
		{bucketRange(LifetimeBucket{FromSeconds: 432000}), "> 432000 s"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

// tcpFlow returns a decoded TCP entry from src to port 198.18.0.1:dport.
func tcpFlow(src string, dport uint16, state uint8, timeout uint32) ctnl.Flow {
	return ctnl.Flow{
		Present:  ctnl.HasProtocol | ctnl.HasAddrs | ctnl.HasPorts | ctnl.HasTCPState | ctnl.HasTimeout,
		Family:   2,
		Protocol: 6,
		Src:      netip.MustParseAddr(src), Dst: netip.MustParseAddr("198.18.0.1"),
		SrcPort: 40000, DstPort: dport,
		TCPState: state, Timeout: timeout,
	}
}

// TestNeverRecommendsFinTimeout renders every fixture, text and JSON:
// tcp_fin_timeout does not shorten conntrack's time_wait, so no command
// sets it and every mention of it says that it does not.
func TestNeverRecommendsFinTimeout(t *testing.T) {
	cases := goldenCases(t)
	cases["time_wait_with_ends"] = fixtureReport(t, func() Sample {
		s := timeWaitSample()
		s.Lifetimes.Attribution = &AttributionSample{Ends: attributionItems(30000, topk.Item{Key: addr("10.2.0.1"), Count: 20000})}
		return s
	}())
	var mentions int
	for name, r := range cases {
		var text, js bytes.Buffer
		if err := WriteText(&text, r, TextOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := WriteJSON(&js, r); err != nil {
			t.Fatal(err)
		}
		for _, ns := range r.Namespaces {
			for _, rec := range ns.Recommendations {
				for _, c := range rec.Commands {
					if strings.Contains(c, "fin_timeout") {
						t.Errorf("%s: [%s] command sets tcp_fin_timeout: %s", name, rec.Code, c)
					}
				}
			}
		}
		// Joined to one line, every mention must deny the effect.
		for _, out := range []string{strings.Join(strings.Fields(text.String()), " "), js.String()} {
			for rest := out; ; {
				i := strings.Index(rest, "tcp_fin_timeout")
				if i < 0 {
					break
				}
				mentions++
				rest = rest[i+len("tcp_fin_timeout"):]
				if !strings.HasPrefix(rest, " does not shorten") {
					t.Errorf("%s: tcp_fin_timeout mentioned without denial: ...%s", name, rest[:min(len(rest), 60)])
				}
			}
		}
	}
	if mentions == 0 {
		t.Error("no fixture mentions tcp_fin_timeout: the time_wait advice is not covered")
	}
}

func TestAnalyzeAttribution(t *testing.T) {
	r := Analyze(attributionSample(), Options{MiddleboxIdleTimeout: 350 * time.Second})
	for _, code := range []string{"helper_entries", "unreplied_share", "keepalive_above_idle_timeout", "churning_source", "silent_destination"} {
		if !slices.Contains(codes(r), code) {
			t.Errorf("no finding %s in %v", code, codes(r))
		}
	}
	if got := recCodes(r); !slices.Equal(got, []string{"helper_assignment", "unreplied_flows", "keepalive_below_idle_timeout"}) {
		t.Errorf("recommendations %v", got)
	}
	tb := r.Table
	if tb.Unreplied != 1100 || math.Abs(tb.UnrepliedShare-1100.0/4100) > 1e-9 || tb.Evictable != 2100 || tb.TimeWait != 1000 {
		t.Errorf("table %+v", tb)
	}
	if len(tb.NAT) != 4 || tb.NAT[1] != (NATCount{NAT: "snat", Entries: 3000, Share: 3000.0 / 4100}) {
		t.Errorf("nat %+v", tb.NAT)
	}
	if len(tb.Helpers) != 2 || tb.Helpers[0].Helper != "ftp" || tb.Helpers[0].Entries != 600 {
		t.Errorf("helpers %+v", tb.Helpers)
	}
	fe := r.FlowEnds
	if !fe.Available || fe.Ends != 400 || fe.SilentEnds != 14 || fe.OtherSources != 20 ||
		fe.Sources[0] != (EndSource{Address: "10.3.0.7", Ends: 320, Share: 0.8}) ||
		fe.SilentDestinations[0].name() != "10.9.0.5:5432" || fe.SilentDestinations[1].name() != "[fd00::5]:6379" {
		t.Errorf("flow ends %+v", fe)
	}
	for _, rec := range r.Recommendations {
		if rec.Code == "keepalive_below_idle_timeout" &&
			(!slices.Equal(rec.Commands, []string{"sysctl -w net.ipv4.tcp_keepalive_time=280"}) || !strings.Contains(rec.Action, "10.9.0.5:5432")) {
			t.Errorf("keepalive recommendation %+v", rec)
		}
	}
	k := r.Settings.Keepalive
	if k == nil || *k != (Keepalive{TimeSeconds: 7200, IntervalSeconds: 75, Probes: 9, MiddleboxIdleTimeoutSeconds: 350}) {
		t.Errorf("keepalive %+v", k)
	}
}

func TestAnalyzeKeepaliveAgainstIdleTimeout(t *testing.T) {
	for _, tc := range []struct {
		keepalive int
		idle      time.Duration
		warn      bool
	}{
		{7200, 0, false},                 // off by default
		{7200, 350 * time.Second, true},  // AWS NAT gateway
		{240, 240 * time.Second, true},   // at the Azure default: warned
		{239, 240 * time.Second, false},  // below it
		{600, 1200 * time.Second, false}, // GCP Cloud NAT
	} {
		s := healthySample()
		s.Keepalive = with(defaultKeepalive(), sysctl.KeepaliveTime, tc.keepalive)
		r := Analyze(s, Options{MiddleboxIdleTimeout: tc.idle})
		if got := slices.Contains(codes(r), "keepalive_above_idle_timeout"); got != tc.warn {
			t.Errorf("keepalive %d s, idle timeout %v: warned %v, want %v", tc.keepalive, tc.idle, got, tc.warn)
		}
		if wantVerdict := map[bool]Verdict{true: VerdictWarning, false: VerdictOK}[tc.warn]; r.Verdict != wantVerdict {
			t.Errorf("keepalive %d s, idle timeout %v: verdict %s", tc.keepalive, tc.idle, r.Verdict)
		}
	}
	s := healthySample()
	s.Keepalive, s.KeepaliveErr = nil, errors.New("read tcp_keepalive_time: permission denied")
	if r := Analyze(s, Options{MiddleboxIdleTimeout: time.Second}); r.Settings.Keepalive != nil || r.Verdict != VerdictOK {
		t.Errorf("unread keepalive: %+v, verdict %s", r.Settings.Keepalive, r.Verdict)
	}
	for idle, want := range map[time.Duration]int64{350 * time.Second: 280, 240 * time.Second: 190, 1200 * time.Second: 960, 10 * time.Second: 8} {
		if got := suggestedKeepalive(idle); got != want {
			t.Errorf("suggestedKeepalive(%v) = %d, want %d", idle, got, want)
		}
	}
}

func TestAnalyzeAttributionThresholds(t *testing.T) {
	for _, tc := range []struct {
		name               string
		helpers, unreplied uint64
		codes              []string
	}{
		{"below both", 9, 19, nil},
		{"at both minimums", 10, 20, []string{"helper_entries", "unreplied_share"}},
	} {
		s := healthySample()
		s.Table.Entries = 100
		s.Table.Helpers = []HelperCount{{Helper: "ftp", Entries: tc.helpers}}
		s.Table.Unreplied = tc.unreplied
		r := Analyze(s, Options{})
		for _, code := range []string{"helper_entries", "unreplied_share"} {
			if slices.Contains(codes(r), code) != slices.Contains(tc.codes, code) {
				t.Errorf("%s: findings %v", tc.name, codes(r))
			}
		}
	}
	// A share below the threshold: 10 helper entries of 1,234.
	s := healthySample()
	s.Table.Helpers = []HelperCount{{Helper: "ftp", Entries: 100}}
	if r := Analyze(s, Options{}); slices.Contains(codes(r), "helper_entries") {
		t.Errorf("8.1 %% helper entries is a finding: %v", codes(r))
	}
}

func TestLifetimeDistribution(t *testing.T) {
	r := Analyze(healthySample(), Options{})
	want := []DistributionBucket{{1, 43}, {5, 25}, {60, 10}, {900, 1}, {7200, 1}}
	if !slices.Equal(r.Lifetimes.Distribution, want) {
		t.Errorf("distribution %+v, want %+v", r.Lifetimes.Distribution, want)
	}
	if got := distributionRange(DistributionBucket{UpperSeconds: 60}); got != "30..60 s" {
		t.Errorf("range %q", got)
	}
	if got := distributionRange(DistributionBucket{}); got != "> 432000 s" {
		t.Errorf("last range %q", got)
	}
	var plain, block bytes.Buffer
	rep := fixtureReport(t, healthySample())
	if err := WriteText(&plain, rep, TextOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := WriteText(&block, rep, TextOptions{Unicode: true}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(plain.String(), "  all deaths     0..1 s                  43 "+strings.Repeat("#", maxBar)+"\n") {
		t.Errorf("no ASCII bar of the largest bucket:\n%s", plain.String())
	}
	if strings.ContainsRune(plain.String(), '\u2588') || !strings.Contains(block.String(), strings.Repeat("\u2588", maxBar)) {
		t.Error("block characters outside a terminal, or none on it")
	}
}

func TestAttributionWindowCoversTheSample(t *testing.T) {
	for d, want := range map[time.Duration]time.Duration{
		30 * time.Second: 5 * time.Minute,
		10 * time.Minute: 13 * time.Minute,
		59 * time.Minute: 60 * time.Minute,
		3 * time.Hour:    60 * time.Minute,
	} {
		o := AttributionWindow(d)
		if o.Window != want || o.Step != time.Minute {
			t.Errorf("AttributionWindow(%v) = %+v, want %v in 1m steps", d, o, want)
		}
		if err := o.Validate(); err != nil {
			t.Errorf("AttributionWindow(%v): %v", d, err)
		}
	}
}
