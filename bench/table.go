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
			exp, anc, ratio := "-", "-", "-"
			if row.Exporter != nil {
				exp = FormatValue(*row.Exporter, row.Unit)
			}
			if row.AnchorValue != nil {
				anc = FormatValue(*row.AnchorValue, row.Unit)
			}
			if row.Ratio != nil {
				ratio = strconv.FormatFloat(*row.Ratio, 'f', 3, 64)
			}
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

// WriteMarkdown prints results as Markdown tables, the form
// docs/BENCHMARKS.md quotes.
func WriteMarkdown(w io.Writer, results []*Result) error {
	for _, r := range results {
		if _, err := fmt.Fprintf(w, "\n**%s** %s\n\n", r.Drill, r.Params); err != nil {
			return err
		}
		for _, f := range r.Facts {
			fmt.Fprintf(w, "- %s: %s\n", f.Name, FormatValue(f.Value, f.Unit))
		}
		if len(r.Facts) > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintln(w, "| metric | ct-exporter | anchor | anchor value | exporter/anchor |")
		fmt.Fprintln(w, "|---|---:|---|---:|---:|")
		for _, row := range r.Rows {
			exp, anc, ratio, name := "", "", "", row.Anchor
			if row.Exporter != nil {
				exp = FormatValue(*row.Exporter, row.Unit)
			}
			if row.AnchorValue != nil {
				anc = FormatValue(*row.AnchorValue, row.Unit)
			}
			if row.Ratio != nil {
				ratio = strconv.FormatFloat(*row.Ratio, 'f', 3, 64)
			}
			if strings.HasPrefix(name, "conntrack") {
				name = "`" + name + "`"
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", row.Metric, exp, name, anc, ratio)
		}
		for _, n := range r.Notes {
			fmt.Fprintf(w, "\n%s\n", n)
		}
	}
	return nil
}
