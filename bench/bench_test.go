package bench

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/ct-exporter/ct-exporter/internal/lab"
)

func TestFormatValue(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		unit string
		want string
	}{
		{200000, "events", "200,000"},
		{-1234567, "entries", "-1,234,567"},
		{1.5, "s", "1.5s"},
		{0.0123456, "s", "12.35ms"},
		{0.000123, "s", "123µs"},
		{15 << 20, "bytes", "15.0 MiB"},
		{3 << 30, "bytes", "3.00 GiB"},
		{512, "bytes", "512 B"},
		{0.5, "ratio", "0.500"},
		{62.5, "%", "62.5 %"},
		{6343.4, "events/s", "6,343 events/s"},
		{2.25, "connections/s", "2.25 connections/s"},
		{math.NaN(), "s", "n/a"},
	} {
		if got := FormatValue(tc.v, tc.unit); got != tc.want {
			t.Errorf("FormatValue(%v, %q) = %q, want %q", tc.v, tc.unit, got, tc.want)
		}
	}
}

func TestNewRowRatio(t *testing.T) {
	r := NewRow("x", "events", 20000, AnchorEvents, 12500)
	if r.Ratio == nil || *r.Ratio != 1.6 {
		t.Fatalf("ratio %v, want 1.6", r.Ratio)
	}
	if r := NewRow("x", "events", 0, AnchorEvents, 0); r.Ratio != nil {
		t.Fatalf("ratio against 0 = %v, want none", *r.Ratio)
	}
}

func TestParamsString(t *testing.T) {
	p := Params{Size: 10, Rate: 1000, Duration: Duration(2 * time.Second)}
	if got, want := p.String(), "size=10 rate=1000 duration=2s"; got != want {
		t.Fatalf("%q, want %q", got, want)
	}
	d := Params{Size: 5, Timeout: Duration(time.Second)}
	if got := (Params{Rate: 3}).withDefaults(d); got.Size != 5 || got.Rate != 3 || got.Timeout != d.Timeout {
		t.Fatalf("withDefaults = %+v", got)
	}
}

func TestReportJSONRoundTrip(t *testing.T) {
	rep := &Report{Machine: Machine{Cores: 2, Kernel: "6.18"}, Command: "ct-drill burst", Results: []*Result{{
		Drill: "burst", Params: Params{Size: 3, Duration: Duration(1500 * time.Millisecond)},
		Rows: []Row{NewRow("DESTROY events received", "events", 3, AnchorEvents, 1), ExporterRow("peak RSS", "bytes", 1<<20)},
	}}}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"duration":"1.5s"`) || !strings.Contains(string(b), `"ratio":3`) {
		t.Fatalf("JSON %s", b)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Results[0].Params != rep.Results[0].Params || *back.Results[0].Rows[0].Ratio != 3 || back.Results[0].Rows[1].Anchor != "" {
		t.Fatalf("round trip: %+v", back.Results[0])
	}
}

func TestDrills(t *testing.T) {
	seen := map[string]bool{}
	for _, d := range Drills() {
		if seen[d.Name()] {
			t.Fatalf("drill %s twice", d.Name())
		}
		seen[d.Name()] = true
		if _, ok := smokeChecks[d.Name()]; !ok {
			t.Errorf("drill %s has no smoke check", d.Name())
		}
		spec := d.Plot()
		if spec.X != "size" && spec.X != "rate" && spec.X != "auto" {
			t.Errorf("drill %s plots against %q", d.Name(), spec.X)
		}
	}
	for _, want := range []string{"burst", "churn", "fill", "scan", "idle-expiry", "namespaces"} {
		if !seen[want] {
			t.Errorf("no drill %s", want)
		}
	}
}

func TestWriteSVG(t *testing.T) {
	var results []*Result
	for i, n := range []int{10000, 100000, 1000000} {
		f := float64(i + 1)
		results = append(results, &Result{Drill: "scan", Params: Params{Size: n}, Rows: []Row{
			NewRow("scan wall time", "s", 0.05*f*f, AnchorList, 0.1*f*f),
			NewRow("scan wall time", "s", 0.05*f*f, AnchorTiMo, 0.2*f*f),
			NewRow("peak RSS", "bytes", 20<<20, AnchorTiMo, f*(100<<20)),
		}})
	}
	var b bytes.Buffer
	if err := WriteSVG(&b, `scan <&> "growth"`, results); err != nil {
		t.Fatal(err)
	}
	checkXML(t, b.Bytes())
	svg := b.String()
	for _, want := range []string{"scan: scan wall time (s, log scale)", "scan: peak RSS (bytes)", "ti-mo/conntrack Dump", "conntrack -L", "ct-exporter", "&lt;&amp;&gt;", "log scale", "<polyline"} {
		if !strings.Contains(svg, want) {
			t.Errorf("SVG lacks %q", want)
		}
	}
	// The exporter's line in the wall-time panel has one point per size.
	if got := strings.Count(svg, "<title>ct-exporter: "); got != 6 {
		t.Errorf("%d exporter points, want 6 (two panels of three sizes)", got)
	}
	if err := WriteSVG(&b, "empty", nil); err == nil {
		t.Fatal("WriteSVG of no results succeeded")
	}
}

func TestPlotAutoAxis(t *testing.T) {
	results := []*Result{
		{Drill: "burst", Params: Params{Size: 5000, Rate: 1000}, Rows: []Row{ExporterRow("CPU per 1000 events", "s", 0.01)}},
		{Drill: "burst", Params: Params{Size: 50000, Rate: 10000}, Rows: []Row{ExporterRow("CPU per 1000 events", "s", 0.02)}},
	}
	results = append(results, &Result{Drill: "burst", Params: Params{Size: 200000}, Rows: []Row{ExporterRow("CPU per 1000 events", "s", 0.003)}})
	ps := panels(results)
	if len(ps) != 2 || len(ps[0].series) != 1 || len(ps[1].series) != 1 {
		t.Fatalf("panels %+v", ps)
	}
	if ps[0].xLabel != "entries flushed at once" || ps[0].series[0].xs[0] != 200000 {
		t.Fatalf("size panel %+v", ps[0])
	}
	if xs := ps[1].series[0].xs; ps[1].xLabel != "DESTROY events per second" || xs[0] != 1000 || xs[1] != 10000 {
		t.Fatalf("rate panel %+v", ps[1])
	}
}

func TestWriteTableAndMarkdown(t *testing.T) {
	r := &Result{Drill: "burst", Params: Params{Size: 200000}, Wall: Duration(time.Second),
		Facts: []Fact{{Name: "flush time", Value: 0.67, Unit: "s"}},
		Rows:  []Row{NewRow("DESTROY events received", "events", 200000, AnchorEvents, 10068), ExporterRow("peak RSS", "bytes", 17<<20)},
		Notes: []string{"a note"}}
	var b bytes.Buffer
	if err := WriteTable(&b, Machine{Cores: 2, Kernel: "6.18"}, []*Result{r}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"== burst  size=200000", "flush time", "670ms", "200,000", "10,068", "19.865", "17.0 MiB", "note: a note"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	r2 := *r
	r2.Params.Size = 20000
	r2.Rows = []Row{NewRow("DESTROY events received, share", "%", 100, AnchorEvents+" (whole run)", 10), NewRow("CPU per 1000 events", "s", 0.003, AnchorEvents, 0.07)}
	r.Rows = append(r.Rows, NewRow("DESTROY events received, share", "%", 100, AnchorEvents+" (whole run)", 5), NewRow("CPU per 1000 events", "s", 0.0033, AnchorEvents, 0.078))
	rep := &Report{Machine: Machine{Cores: 2}, Command: "ct-drill burst --size=20000,200000", Results: []*Result{r, &r2}}
	if err := WriteMarkdown(&b, rep); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| DESTROY events received | 200,000 | `conntrack -E` | 10,068 | 19.865 |",
		"ct-drill burst --size=20000,200000",
		"**burst: growth with size**",
		"| metric | side | 20k | 200k | first to last |",
		"| DESTROY events received, share | `conntrack -E` (whole run) | 10.0 % | 5.0 % | ×0.5 |",
		"| CPU per 1000 events | ct-exporter | 3ms | 3.3ms | ×1.1 |",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, b.String())
		}
	}
}

func TestParseNetlinkSockets(t *testing.T) {
	text := []byte(`sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops    Inode
000000009642b5d8 12  13066      00000000 0        0        0     2        0        279161
000000008b1dadf4 12  -3439859   00000004 0        0        0     2        7499     279162
000000007ecc05fd 0   0          00000000 0        0        0     2        0        4
`)
	socks, err := parseNetlinkSockets(text)
	if err != nil || len(socks) != 3 {
		t.Fatalf("parse = %v, %v", socks, err)
	}
	s := socks[1]
	if s.Protocol != 12 || s.PortID != -3439859 || s.Groups != groupDestroy || s.Drops != 7499 || s.Inode != 279162 {
		t.Fatalf("socket %+v", s)
	}
}

func TestParseDestroyLine(t *testing.T) {
	d, ok := parseDestroyLine([]byte("[1795541831.432783]\t[DESTROY] tcp      6 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=1000 dport=80 src=10.0.0.2 dst=10.0.0.1 sport=80 dport=1000 [ASSURED] delta-time=2\n"))
	if !ok || !d.established || !d.hasDelta || d.delta != 2 || d.at.Unix() != 1795541831 {
		t.Fatalf("parse = %+v, %v", d, ok)
	}
	if _, ok := parseDestroyLine([]byte("    [NEW] tcp      6 120 SYN_SENT src=10.0.0.1")); ok {
		t.Fatal("NEW line parsed as DESTROY")
	}
	d, ok = parseDestroyLine([]byte("[DESTROY] udp      17 src=10.0.0.1 dst=10.0.0.2 sport=1 dport=53"))
	if !ok || d.established || d.hasDelta || !d.at.IsZero() {
		t.Fatalf("parse = %+v, %v", d, ok)
	}
}

func TestReadEventCountersNeedsTheLostCounter(t *testing.T) {
	m, err := lab.ParseMetrics([]byte(`# TYPE conntrack_events_total counter
conntrack_events_total{netns="a",type="destroy"} 5
conntrack_events_total{netns="a",type="new"} 7
`))
	if err != nil {
		t.Fatal(err)
	}
	c, err := readEventCounters(m, "a")
	if err == nil {
		t.Fatalf("readEventCounters without the lost counter: %+v", c)
	}
}

func TestBurstSize(t *testing.T) {
	if got := burstSize(Params{Size: 1000}, 262144); got != 1000 {
		t.Fatalf("size: %d", got)
	}
	if got := burstSize(Params{Size: 1000, Rate: 10000, Duration: Duration(2 * time.Second)}, 262144); got != 20000 {
		t.Fatalf("rate x duration: %d", got)
	}
	if got := burstSize(Params{Rate: 100000, Duration: Duration(5 * time.Second)}, 262144); got != 262144-1024 {
		t.Fatalf("capped: %d", got)
	}
}
