package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Duration is a time.Duration written in JSON as a Go duration string
// ("1.5s").
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	*d = Duration(v)
	return nil
}

// Params are the knobs of one drill run. A drill documents which it uses;
// zero means the drill's default.
type Params struct {
	// Size is a number of entries or connections.
	Size int `json:"size,omitempty"`
	// Rate is a target rate per second (connections, events).
	Rate float64 `json:"rate,omitempty"`
	// Duration is how long the drill generates load.
	Duration Duration `json:"duration,omitempty"`
	// Timeout is the established timeout of the idle-expiry drill.
	Timeout Duration `json:"timeout,omitempty"`
}

// String lists the parameters that are set, as flags would name them.
func (p Params) String() string {
	var parts []string
	if p.Size != 0 {
		parts = append(parts, fmt.Sprintf("size=%d", p.Size))
	}
	if p.Rate != 0 {
		parts = append(parts, fmt.Sprintf("rate=%g", p.Rate))
	}
	if p.Duration != 0 {
		parts = append(parts, "duration="+time.Duration(p.Duration).String())
	}
	if p.Timeout != 0 {
		parts = append(parts, "timeout="+time.Duration(p.Timeout).String())
	}
	return strings.Join(parts, " ")
}

// withDefaults fills the zero fields of p from d.
func (p Params) withDefaults(d Params) Params {
	if p.Size == 0 {
		p.Size = d.Size
	}
	if p.Rate == 0 {
		p.Rate = d.Rate
	}
	if p.Duration == 0 {
		p.Duration = d.Duration
	}
	if p.Timeout == 0 {
		p.Timeout = d.Timeout
	}
	return p
}

// Row compares one measure of the exporter with the same measure of an
// anchor, a standard tool doing the same job in the same run. Either side
// may be absent.
type Row struct {
	// Metric names the measure.
	Metric string `json:"metric"`
	// Unit is the unit of both values: "entries", "events", "s", "bytes",
	// "ratio", "1/s", "connections".
	Unit string `json:"unit,omitempty"`
	// Exporter is ct-exporter's value.
	Exporter *float64 `json:"exporter,omitempty"`
	// Anchor names the tool the exporter is compared with.
	Anchor string `json:"anchor,omitempty"`
	// AnchorValue is the anchor's value.
	AnchorValue *float64 `json:"anchor_value,omitempty"`
	// Ratio is Exporter / AnchorValue when both are present and the
	// anchor's value is not zero.
	Ratio *float64 `json:"ratio,omitempty"`
}

// NewRow returns a row with both values and their ratio.
func NewRow(metric, unit string, exporter float64, anchor string, anchorValue float64) Row {
	r := Row{Metric: metric, Unit: unit, Exporter: &exporter, Anchor: anchor, AnchorValue: &anchorValue}
	if anchorValue != 0 && !math.IsNaN(exporter) && !math.IsNaN(anchorValue) {
		ratio := exporter / anchorValue
		r.Ratio = &ratio
	}
	return r
}

// ExporterRow returns a row with the exporter's value only.
func ExporterRow(metric, unit string, exporter float64) Row {
	return Row{Metric: metric, Unit: unit, Exporter: &exporter}
}

// Fact is something the drill did or saw, not a comparison: entries
// created, the rate reached, the table limit.
type Fact struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit,omitempty"`
}

// Result is the outcome of one run of one drill.
type Result struct {
	Drill   string    `json:"drill"`
	Params  Params    `json:"params"`
	Started time.Time `json:"started"`
	// Wall is how long the whole run took, set-up and clean-up included.
	Wall  Duration `json:"wall"`
	Facts []Fact   `json:"facts,omitempty"`
	Rows  []Row    `json:"rows"`
	// Notes say what a reader needs to read the rows right.
	Notes []string `json:"notes,omitempty"`
	// Series are measures sampled over the run (the soak drill's memory,
	// goroutines and open files), each drawn as a panel over time.
	Series []TimeSeries `json:"series,omitempty"`
}

// TimeSeries is one measure sampled over a run.
type TimeSeries struct {
	// Name names the measure.
	Name string `json:"name"`
	// Unit is the unit of the values, as in Row.
	Unit string `json:"unit,omitempty"`
	// Seconds are the times of the samples since the run started.
	Seconds []float64 `json:"seconds"`
	// Values are the samples.
	Values []float64 `json:"values"`
}

// Add appends one sample.
func (s *TimeSeries) Add(at time.Duration, v float64) {
	s.Seconds = append(s.Seconds, at.Seconds())
	s.Values = append(s.Values, v)
}

// AddFact appends a fact.
func (r *Result) AddFact(name string, value float64, unit string) {
	r.Facts = append(r.Facts, Fact{Name: name, Value: value, Unit: unit})
}

// Fact returns the value of the named fact.
func (r *Result) Fact(name string) (float64, bool) {
	for _, f := range r.Facts {
		if f.Name == name {
			return f.Value, true
		}
	}
	return 0, false
}

// Row returns the first row of the metric compared with anchor ("" for
// any).
func (r *Result) Row(metric, anchor string) (Row, bool) {
	for _, row := range r.Rows {
		if row.Metric == metric && (anchor == "" || row.Anchor == anchor) {
			return row, true
		}
	}
	return Row{}, false
}

// Env is what a drill runs with.
type Env struct {
	// Lab creates namespaces and child processes and undoes them.
	Lab *Lab
	// Exporter is the ct-exporter binary to start.
	Exporter string
	// ExporterArgs are extra flags for every exporter a drill starts.
	ExporterArgs []string
	// ScrapeInterval is how often drills that scrape during their load
	// (churn) scrape the exporter, as Prometheus would; 0 means once a
	// second, a negative value not at all during the load.
	ScrapeInterval time.Duration
	// CPUProfile, when set, is the path prefix of the exporter CPU
	// profiles that drills which support it (churn) take during their
	// load: PREFIX-rate=R.pprof. The exporter then runs with
	// --web.enable-pprof.
	CPUProfile string
	// Self is an executable that runs an anchor in a child process when
	// started with ChildEnv set (the drill tool itself, or a test binary
	// whose TestMain calls RunChild).
	Self string
	// Log receives progress lines.
	Log io.Writer
}

// Logf writes one progress line.
func (e *Env) Logf(format string, args ...any) {
	if e.Log != nil {
		fmt.Fprintf(e.Log, format+"\n", args...)
	}
}

// PlotSpec says how the plot draws a drill's results: one panel per
// metric, its rows' values against a parameter, one line for the
// exporter and one for each anchor.
type PlotSpec struct {
	// X is the parameter on the x axis: "size", "rate", or "auto": runs
	// with a rate against their rate, the others against their size.
	X string
	// XLabel labels the x axis (of the size runs, with "auto").
	XLabel string
	// RateLabel labels the x axis of the rate runs, with "auto".
	RateLabel string
	// Metrics are the row metrics to draw, one panel each.
	Metrics []string
}

// Drill is one named, repeatable experiment.
type Drill interface {
	// Name is the drill's command-line name.
	Name() string
	// Summary says in one line what the drill does.
	Summary() string
	// Defaults are the parameters of a full run.
	Defaults() Params
	// Smoke are the parameters of the small run the default test suite
	// does.
	Smoke() Params
	// Plot says how the drill's results are drawn.
	Plot() PlotSpec
	// Run runs the drill once. Everything it creates goes through
	// env.Lab, which removes it.
	Run(ctx context.Context, env *Env, p Params) (*Result, error)
}

// Drills returns every drill, in the order the tool lists them.
func Drills() []Drill {
	return []Drill{Burst{}, Churn{}, Fill{}, Scan{}, IdleExpiry{}, Namespaces{}, Soak{}}
}

// Run runs drill d with parameters p (zero fields from its defaults) and
// stamps the result with the drill's name, the parameters and the wall
// time.
func Run(ctx context.Context, env *Env, d Drill, p Params) (*Result, error) {
	p = p.withDefaults(d.Defaults())
	start := time.Now()
	load := loadAverage()
	env.Logf("== %s %s", d.Name(), p)
	r, err := d.Run(ctx, env, p)
	if err != nil {
		return nil, fmt.Errorf("drill %s (%s): %w", d.Name(), p, err)
	}
	// A drill may record the parameters it really used (a size it
	// derived from others); otherwise they are the ones asked for.
	if r.Params == (Params{}) {
		r.Params = p
	}
	r.Drill, r.Started, r.Wall = d.Name(), start, Duration(time.Since(start))
	// Other work on the machine skews every figure: say how busy it was.
	r.AddFact("load average (1 min) before the drill", load, "")
	r.AddFact("load average (1 min) after the drill", loadAverage(), "")
	return r, nil
}

// loadAverage returns the 1-minute load average, NaN if unknown.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return math.NaN()
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return math.NaN()
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return math.NaN()
	}
	return v
}

// Machine describes where the figures were measured.
type Machine struct {
	Cores       int    `json:"cores"`
	CPU         string `json:"cpu"`
	Kernel      string `json:"kernel"`
	MemoryBytes uint64 `json:"memory_bytes"`
	Go          string `json:"go"`
	Conntrack   string `json:"conntrack_tools"`
}

// String is the one-line description used in tables and documents.
func (m Machine) String() string {
	return fmt.Sprintf("%d cores (%s), %.0f GiB, Linux %s, %s, %s",
		m.Cores, m.CPU, float64(m.MemoryBytes)/(1<<30), m.Kernel, m.Go, m.Conntrack)
}

// ThisMachine describes the machine the drills run on.
func ThisMachine() Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version(), CPU: "unknown"}
	var u unix.Utsname
	if err := unix.Uname(&u); err == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err == nil {
		m.MemoryBytes = uint64(si.Totalram) * uint64(si.Unit)
	}
	if out, err := exec.Command("conntrack", "--version").CombinedOutput(); err == nil {
		m.Conntrack = strings.TrimSpace(string(out))
	}
	return m
}

// Report is what the tool writes with --json: the machine, the command
// line and every result of the run.
type Report struct {
	Machine Machine   `json:"machine"`
	Command string    `json:"command"`
	Results []*Result `json:"results"`
}

// ReadReport reads a report written by WriteJSON.
func ReadReport(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read report: %w", err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("read report %s: %w", path, err)
	}
	return &r, nil
}

// WriteJSON writes the report, indented, to path.
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// plotGroup is the results of one drill drawn against one parameter.
type plotGroup struct {
	drill   string
	x       string
	label   string
	metrics []string
	results []*Result
}

// plotGroups splits the results by drill and by the parameter they are
// drawn against, each group ordered by that parameter.
func plotGroups(results []*Result) []plotGroup {
	var out []plotGroup
	for _, d := range Drills() {
		spec := d.Plot()
		var bySize, byRate []*Result
		for _, r := range results {
			if r.Drill != d.Name() {
				continue
			}
			if spec.X == "rate" || (spec.X == "auto" && r.Params.Rate > 0) {
				byRate = append(byRate, r)
			} else {
				bySize = append(bySize, r)
			}
		}
		rateLabel := spec.XLabel
		if spec.X == "auto" {
			rateLabel = spec.RateLabel
		}
		for _, g := range []plotGroup{
			{drill: d.Name(), x: "size", label: spec.XLabel, metrics: spec.Metrics, results: bySize},
			{drill: d.Name(), x: "rate", label: rateLabel, metrics: spec.Metrics, results: byRate},
		} {
			if len(g.results) == 0 {
				continue
			}
			sort.SliceStable(g.results, func(i, j int) bool {
				return paramValue(g.results[i].Params, g.x) < paramValue(g.results[j].Params, g.x)
			})
			out = append(out, g)
		}
	}
	return out
}

// paramValue returns the numeric value of a named parameter.
func paramValue(p Params, name string) float64 {
	switch name {
	case "size":
		return float64(p.Size)
	case "rate":
		return p.Rate
	case "duration":
		return time.Duration(p.Duration).Seconds()
	case "timeout":
		return time.Duration(p.Timeout).Seconds()
	}
	return math.NaN()
}
