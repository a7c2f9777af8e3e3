package bench

import (
	"fmt"
	"html"
	"io"
	"math"
	"strconv"
	"strings"
)

// series is one line of a panel: the exporter's values or an anchor's.
type series struct {
	name   string
	xs, ys []float64
}

// panel is one small chart: one metric of one drill against a parameter.
type panel struct {
	title, xLabel, unit string
	series              []series
}

// Panels of the plot, and the colours of its lines: the exporter first,
// then the anchors.
const (
	panelW, panelH = 380, 280
	marginL        = 64
	marginR        = 16
	marginT        = 48
	marginB        = 44
	perRow         = 3
)

var palette = [...]string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"}

// panels builds the panels of every drill that has results: for each
// metric of the drill's PlotSpec, one line for the exporter and one per
// anchor, each point one result.
func panels(results []*Result) []panel {
	var out []panel
	for _, g := range plotGroups(results) {
		for _, metric := range g.metrics {
			p := panel{title: g.drill + ": " + metric, xLabel: g.label}
			var exp series
			exp.name = "ct-exporter"
			anchors := map[string]*series{}
			var order []string
			for _, r := range g.results {
				x := paramValue(r.Params, g.x)
				for _, row := range r.Rows {
					if row.Metric != metric {
						continue
					}
					p.unit = row.Unit
					if row.Exporter != nil && !containsX(exp.xs, x) {
						exp.xs, exp.ys = append(exp.xs, x), append(exp.ys, *row.Exporter)
					}
					if row.AnchorValue != nil {
						s, ok := anchors[row.Anchor]
						if !ok {
							s = &series{name: row.Anchor}
							anchors[row.Anchor] = s
							order = append(order, row.Anchor)
						}
						if !containsX(s.xs, x) {
							s.xs, s.ys = append(s.xs, x), append(s.ys, *row.AnchorValue)
						}
					}
				}
			}
			if len(exp.xs) > 0 {
				p.series = append(p.series, exp)
			}
			for _, name := range order {
				p.series = append(p.series, *anchors[name])
			}
			if len(p.series) > 0 {
				out = append(out, p)
			}
		}
	}
	return out
}

// timePanels builds one panel per sampled series of each result, over
// minutes since the run started.
func timePanels(results []*Result) []panel {
	var out []panel
	for _, r := range results {
		for _, ts := range r.Series {
			s := series{name: "ct-exporter", ys: ts.Values}
			for _, sec := range ts.Seconds {
				s.xs = append(s.xs, sec/60)
			}
			if len(s.xs) == 0 {
				continue
			}
			out = append(out, panel{title: r.Drill + ": " + ts.Name, xLabel: "minutes since the start", unit: ts.Unit, series: []series{s}})
		}
	}
	return out
}

func containsX(xs []float64, x float64) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// WriteSVG draws the results as an SVG image: a grid of small line
// charts, one per drill and plotted metric, logarithmic axes when the
// values span more than a factor of 20.
func WriteSVG(w io.Writer, title string, results []*Result) error {
	ps := append(panels(results), timePanels(results)...)
	if len(ps) == 0 {
		return fmt.Errorf("plot: no results of a drill with plotted metrics")
	}
	cols := min(perRow, len(ps))
	rows := (len(ps) + perRow - 1) / perRow
	width, height := cols*panelW, rows*panelH+30
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="8" y="20" font-size="14" font-weight="bold">%s</text>`+"\n", html.EscapeString(title))
	for i, p := range ps {
		drawPanel(&b, p, (i%perRow)*panelW, 30+(i/perRow)*panelH)
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// axis maps values to pixels, linearly or logarithmically.
type axis struct {
	lo, hi   float64
	log      bool
	pix0, px float64 // pixel of lo, and length in pixels (signed)
}

// newAxis fits an axis to the values. Logarithmic byte axes have their
// decades in MiB (1, 10, 100 MiB) rather than in bytes.
func newAxis(vals []float64, pix0, length float64, zeroBased bool, unit string) axis {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range vals {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			continue
		}
		lo, hi = math.Min(lo, v), math.Max(hi, v)
	}
	if math.IsInf(lo, 1) {
		lo, hi = 0, 1
	}
	a := axis{pix0: pix0, px: length}
	if lo > 0 && hi/lo > 20 && unit != "%" {
		unitScale := 1.0
		if unit == "bytes" && lo >= 1<<20 {
			unitScale = 1 << 20
		}
		a.log = true
		a.lo = unitScale * math.Pow(10, math.Floor(math.Log10(lo/unitScale)))
		a.hi = unitScale * math.Pow(10, math.Ceil(math.Log10(hi/unitScale)))
		return a
	}
	if zeroBased && lo > 0 {
		lo = 0
	}
	if hi == lo {
		hi = lo + math.Max(1, math.Abs(lo)*0.1)
	}
	step := niceStep((hi - lo) / 4)
	a.lo, a.hi = math.Floor(lo/step)*step, math.Ceil(hi/step)*step
	return a
}

func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if raw <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func (a axis) pos(v float64) float64 {
	var f float64
	if a.log {
		if v <= 0 {
			v = a.lo
		}
		f = (math.Log10(v) - math.Log10(a.lo)) / (math.Log10(a.hi) - math.Log10(a.lo))
	} else {
		f = (v - a.lo) / (a.hi - a.lo)
	}
	return a.pix0 + f*a.px
}

func (a axis) ticks() []float64 {
	var t []float64
	if a.log {
		for v := a.lo; v <= a.hi*1.0001; v *= 10 {
			t = append(t, v)
		}
		return t
	}
	step := niceStep((a.hi - a.lo) / 4)
	for v := a.lo; v <= a.hi+step/1000; v += step {
		t = append(t, v)
	}
	return t
}

// compact prints an axis label: 10k, 1M, 250ms, 64MiB.
func compact(v float64, unit string) string {
	switch unit {
	case "s":
		switch a := math.Abs(v); {
		case a == 0:
			return "0"
		case a >= 1:
			return num(v) + "s"
		case a >= 1e-3:
			return num(v*1e3) + "ms"
		}
		return num(v*1e6) + "µs"
	case "bytes":
		switch a := math.Abs(v); {
		case a >= 10<<30:
			return num(v/(1<<30)) + "GiB"
		case a >= 1<<20:
			return num(v/(1<<20)) + "MiB"
		case a >= 1<<10:
			return num(v/(1<<10)) + "KiB"
		}
		return num(v) + "B"
	}
	switch a := math.Abs(v); {
	case a >= 1e6:
		return num(v/1e6) + "M"
	case a >= 1e3:
		return num(v/1e3) + "k"
	}
	return num(v)
}

// num prints a tick value: whole numbers in full, others with three
// significant digits.
func num(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e6 {
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

func drawPanel(b *strings.Builder, p panel, x0, y0 int) {
	left, top := float64(x0+marginL), float64(y0+marginT)
	w, h := float64(panelW-marginL-marginR), float64(panelH-marginT-marginB)
	var xs, ys []float64
	for _, s := range p.series {
		xs, ys = append(xs, s.xs...), append(ys, s.ys...)
	}
	ax := newAxis(xs, left, w, false, "")
	ay := newAxis(ys, top+h, -h, true, p.unit)
	title := p.title
	switch {
	case p.unit != "" && ay.log:
		title += " (" + p.unit + ", log scale)"
	case p.unit != "":
		title += " (" + p.unit + ")"
	case ay.log:
		title += " (log scale)"
	}
	fmt.Fprintf(b, `<text x="%d" y="%d" font-size="12" font-weight="bold">%s</text>`+"\n", x0+8, y0+16, html.EscapeString(title))
	// Legend.
	lx := float64(x0 + 8)
	for i, s := range p.series {
		c := palette[i%len(palette)]
		fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-width="2"/>`, lx, y0+30, lx+14, y0+30, c)
		fmt.Fprintf(b, `<text x="%.1f" y="%d">%s</text>`+"\n", lx+18, y0+34, html.EscapeString(s.name))
		lx += 26 + 6.2*float64(len(s.name))
	}
	// Frame, grid and tick labels.
	fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#999"/>`+"\n", left, top, w, h)
	for _, t := range ax.ticks() {
		px := ax.pos(t)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#eee"/>`, px, top, px, top+h)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", px, top+h+14, compact(t, ""))
	}
	for _, t := range ay.ticks() {
		py := ay.pos(t)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#eee"/>`, left, py, left+w, py)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", left-4, py+4, compact(t, p.unit))
	}
	scale := ""
	if ax.log {
		scale = " (log scale)"
	}
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s%s</text>`+"\n", left+w/2, top+h+32, html.EscapeString(p.xLabel), scale)
	// Lines and points.
	for i, s := range p.series {
		c := palette[i%len(palette)]
		var pts []string
		for j := range s.xs {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", ax.pos(s.xs[j]), ay.pos(s.ys[j])))
		}
		if len(pts) > 1 {
			fmt.Fprintf(b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(pts, " "), c)
		}
		for j := range s.xs {
			fmt.Fprintf(b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"><title>%s: %s</title></circle>`+"\n",
				ax.pos(s.xs[j]), ay.pos(s.ys[j]), c, html.EscapeString(s.name), html.EscapeString(FormatValue(s.ys[j], p.unit)))
		}
	}
}
