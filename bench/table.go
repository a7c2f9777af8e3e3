package bench

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// FormatValue prints a value in its unit the way people read it: seconds
// as s/ms/µs, bytes as MiB/KiB, counts with thousands separators.
func FormatValue(v float64, unit string) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	switch unit {
	case "s":
		return time.Duration(v * float64(time.Second)).Round(roundFor(v)).String()
	case "bytes":
		switch a := math.Abs(v); {
		case a >= 1<<30:
			return fmt.Sprintf("%.2f GiB", v/(1<<30))
		case a >= 1<<20:
			return fmt.Sprintf("%.1f MiB", v/(1<<20))
		case a >= 1<<10:
			return fmt.Sprintf("%.1f KiB", v/(1<<10))
		}
		return fmt.Sprintf("%.0f B", v)
	case "ratio":
		return strconv.FormatFloat(v, 'f', 3, 64)
	case "%":
		return strconv.FormatFloat(v, 'f', 1, 64) + " %"
	}
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return thousands(int64(v)) + unitSuffix(unit)
	}
	if math.Abs(v) >= 100 {
		return thousands(int64(math.Round(v))) + unitSuffix(unit)
	}
	return strconv.FormatFloat(v, 'g', 3, 64) + unitSuffix(unit)
}

// roundFor picks a rounding that keeps three significant digits of a
// duration in seconds.
func roundFor(seconds float64) time.Duration {
	switch a := math.Abs(seconds); {
	case a >= 10:
		return 10 * time.Millisecond
	case a >= 1:
		return time.Millisecond
	case a >= 0.01:
		return 10 * time.Microsecond
	case a >= 0.001:
		return time.Microsecond
	}
	return 10 * time.Nanosecond
}

func unitSuffix(unit string) string {
	switch unit {
	case "", "entries", "events", "connections", "observations":
		return ""
	}
	return " " + unit
}

// thousands writes an integer with comma separators.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// WriteTable prints results as text tables: per result a header line, the
// facts, and the rows with exporter value, anchor, anchor value and ratio.
func WriteTable(w io.Writer, m Machine, results []*Result) error {
	if _, err := fmt.Fprintf(w, "machine: %s\n", m); err != nil {
		return err
	}
	for _, r := range results {
		fmt.Fprintf(w, "\n== %s  %s  (%s)\n", r.Drill, r.Params, time.Duration(r.Wall).Round(time.Millisecond))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, f := range r.Facts {
			fmt.Fprintf(tw, "  %s\t%s\n", f.Name, FormatValue(f.Value, f.Unit))
		}
		if len(r.Facts) > 0 {
			fmt.Fprintln(tw)
		}
		fmt.Fprintln(tw, "metric\tct-exporter\tanchor\tanchor value\texporter/anchor")
		for _, row := range r.Rows {
			exp, anc, ratio := row.cells("-")
			name := row.Anchor
			if name == "" {
				name = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", row.Metric, exp, name, anc, ratio)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, n := range r.Notes {
			fmt.Fprintf(w, "note: %s\n", n)
		}
	}
	return nil
}

// cells formats a row's exporter value, anchor value and ratio, with
// missing for a value the row does not have.
func (row Row) cells(missing string) (exp, anc, ratio string) {
	exp, anc, ratio = missing, missing, missing
	if row.Exporter != nil {
		exp = FormatValue(*row.Exporter, row.Unit)
	}
	if row.AnchorValue != nil {
		anc = FormatValue(*row.AnchorValue, row.Unit)
	}
	if row.Ratio != nil {
		ratio = strconv.FormatFloat(*row.Ratio, 'f', 3, 64)
	}
	return exp, anc, ratio
}

// WriteMarkdown prints a report as Markdown, the form docs/BENCHMARKS.md
// quotes: the machine and the command, a growth table for every drill run
// at several sizes or rates, then each result's table.
func WriteMarkdown(w io.Writer, rep *Report) error {
	if _, err := fmt.Fprintf(w, "Machine: %s.\n\n", rep.Machine); err != nil {
		return err
	}
	if rep.Command != "" {
		fmt.Fprintf(w, "```sh\n%s\n```\n", rep.Command)
	}
	if err := WriteGrowthMarkdown(w, rep.Results); err != nil {
		return err
	}
	for _, r := range rep.Results {
		fmt.Fprintf(w, "\n**%s** %s\n\n", r.Drill, r.Params)
		for _, f := range r.Facts {
			fmt.Fprintf(w, "- %s: %s\n", f.Name, FormatValue(f.Value, f.Unit))
		}
		if len(r.Facts) > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintln(w, "| metric | ct-exporter | anchor | anchor value | exporter/anchor |")
		fmt.Fprintln(w, "|---|---:|---|---:|---:|")
		for _, row := range r.Rows {
			exp, anc, ratio := row.cells("")
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", row.Metric, exp, mdAnchor(row.Anchor), anc, ratio)
		}
		for _, n := range r.Notes {
			fmt.Fprintf(w, "\n%s\n", n)
		}
	}
	return nil
}

// mdAnchor sets a command-line anchor in code type.
func mdAnchor(name string) string {
	if strings.HasPrefix(name, "conntrack ") {
		cmd, rest, _ := strings.Cut(name[len("conntrack "):], " ")
		out := "`conntrack " + cmd + "`"
		if rest != "" {
			out += " " + rest
		}
		return out
	}
	return name
}

// WriteGrowthMarkdown prints, for every drill with results at more than
// one size or rate, how its plotted metrics grow: one line per metric and
// side (the exporter and each anchor), one column per run, and the factor
// from the first run to the last.
func WriteGrowthMarkdown(w io.Writer, results []*Result) error {
	for _, g := range plotGroups(results) {
		rs, x := g.results, g.x
		if len(rs) < 2 {
			continue
		}
		if _, err := fmt.Fprintf(w, "\n**%s: growth with %s** (%s)\n\n", g.drill, x, g.label); err != nil {
			return err
		}
		head, rule := "| metric | side |", "|---|---|"
		for _, r := range rs {
			head += " " + compact(paramValue(r.Params, x), "") + " |"
			rule += "---:|"
		}
		fmt.Fprintf(w, "%s first to last |\n%s---:|\n", head, rule)
		for _, metric := range g.metrics {
			for _, side := range growthSides(rs, metric) {
				line := "| " + metric + " | " + mdAnchor(side) + " |"
				var first, last float64
				n := 0
				for _, r := range rs {
					v, unit, ok := sideValue(r, metric, side)
					if !ok {
						line += " |"
						continue
					}
					line += " " + FormatValue(v, unit) + " |"
					if n == 0 {
						first = v
					}
					last = v
					n++
				}
				factor := ""
				if n > 1 && first != 0 {
					factor = "×" + strconv.FormatFloat(last/first, 'g', 3, 64)
				}
				fmt.Fprintf(w, "%s %s |\n", line, factor)
			}
		}
	}
	return nil
}

// growthSides lists "ct-exporter" and the anchors that have values of the
// metric, in the order they first appear.
func growthSides(rs []*Result, metric string) []string {
	var sides []string
	seen := map[string]bool{}
	add := func(s string) {
		if !seen[s] {
			seen[s] = true
			sides = append(sides, s)
		}
	}
	for _, r := range rs {
		for _, row := range r.Rows {
			if row.Metric != metric {
				continue
			}
			if row.Exporter != nil {
				add("ct-exporter")
			}
			if row.AnchorValue != nil {
				add(row.Anchor)
			}
		}
	}
	return sides
}

// sideValue returns the value of the metric for one side in a result.
func sideValue(r *Result, metric, side string) (float64, string, bool) {
	for _, row := range r.Rows {
		if row.Metric != metric {
			continue
		}
		if side == "ct-exporter" && row.Exporter != nil {
			return *row.Exporter, row.Unit, true
		}
		if side == row.Anchor && row.AnchorValue != nil {
			return *row.AnchorValue, row.Unit, true
		}
	}
	return 0, "", false
}
