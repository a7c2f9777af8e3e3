package alerts_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/promql/parser"

	"github.com/ct-exporter/ct-exporter/deploy/validate/alerts"
)

func TestParseFormatDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		out  string
	}{
		{"5m", 5 * time.Minute, "5m"},
		{"30m", 30 * time.Minute, "30m"},
		{"90s", 90 * time.Second, "1m30s"},
		{"1h30m", 90 * time.Minute, "1h30m"},
		{"1d", 24 * time.Hour, "1d"},
		{"2w", 14 * 24 * time.Hour, "2w"},
		{"1y", 365 * 24 * time.Hour, "1y"},
		{"500ms", 500 * time.Millisecond, "500ms"},
		{"1s500ms", 1500 * time.Millisecond, "1s500ms"},
		{"0s", 0, "0s"},
	} {
		got, err := alerts.ParseDuration(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if s := alerts.FormatDuration(got); s != tc.out {
			t.Errorf("FormatDuration(%v) = %q; want %q", got, s, tc.out)
		}
	}
	for _, bad := range []string{"", "5", "m", "5M", "1m1h", "1.5m", "-5m", "5 m", "99999999999999999999y"} {
		if _, err := alerts.ParseDuration(bad); !errors.Is(err, alerts.ErrInvalidDuration) {
			t.Errorf("ParseDuration(%q) error = %v; want ErrInvalidDuration", bad, err)
		}
	}
}

// ruleKey names a rule for comparisons.
func ruleKey(r alerts.Rule) string {
	if r.Alert != "" {
		return "alert " + r.Alert
	}
	return "record " + r.Record
}

func TestScaledRules(t *testing.T) {
	orig, err := alerts.Parse(rulesYAML(t))
	if err != nil {
		t.Fatal(err)
	}
	out, err := alerts.Scaled(rulesYAML(t), alerts.Scale{Divisor: 30})
	if err != nil {
		t.Fatal(err)
	}
	scaled, err := alerts.Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(scaled.Groups) != len(orig.Groups) {
		t.Fatalf("scaled has %d groups, want %d", len(scaled.Groups), len(orig.Groups))
	}
	// What the end-to-end test relies on: these rewrites of the rule
	// text, compared in the parser's canonical form, in which Scaled
	// prints every expression.
	ranges := strings.NewReplacer("[5m]", "[10s]", "[10m]", "[20s]", "[30m]", "[1m]")
	fors := map[string]string{"": "", "5m": "10s", "10m": "20s", "15m": "30s"}
	seenRange := 0
	for gi, g := range orig.Groups {
		sg := scaled.Groups[gi]
		if sg.Name != g.Name || len(sg.Rules) != len(g.Rules) {
			t.Fatalf("group %d: got %q with %d rules, want %q with %d", gi, sg.Name, len(sg.Rules), g.Name, len(g.Rules))
		}
		for ri, r := range g.Rules {
			s := sg.Rules[ri]
			if ruleKey(s) != ruleKey(r) {
				t.Fatalf("rule %d of %s: got %s, want %s", ri, g.Name, ruleKey(s), ruleKey(r))
			}
			if strings.Contains(r.Expr, "[") {
				seenRange++
			}
			if want := canonical(t, ranges.Replace(r.Expr)); s.Expr != want {
				t.Errorf("%s: expr\n%s\nwant\n%s", ruleKey(r), s.Expr, want)
			}
			want, ok := fors[r.For]
			if !ok {
				t.Errorf("%s: for %q not covered by this test", ruleKey(r), r.For)
			} else if s.For != want {
				t.Errorf("%s: for %q, want %q", ruleKey(r), s.For, want)
			}
			if !equalMaps(s.Labels, r.Labels) || !equalMaps(s.Annotations, r.Annotations) {
				t.Errorf("%s: labels or annotations changed", ruleKey(r))
			}
		}
	}
	if seenRange == 0 {
		t.Error("no rule has a range selector: the test checks nothing")
	}
}

// canonical returns expr as Prometheus' PromQL parser prints it.
func canonical(t *testing.T, expr string) string {
	t.Helper()
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		t.Fatalf("%q: %v", expr, err)
	}
	return e.String()
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

const scaleInput = `groups:
  - name: g
    rules:
      - record: a:b:c
        expr: |
          max_over_time(rate(x_total[30m])[1h:1m]) + rate(y_total[ 5m ] offset 5m)
          + on () group_left label_replace(vector(1), "w", "[30m]", "", "")
          + count_over_time(z[30m:])
      - alert: A
        expr: a:b:c > 0
        for: 1h
        labels:
          severity: warning
`

func TestScaledSyntax(t *testing.T) {
	for _, tc := range []struct {
		name     string
		scale    alerts.Scale
		wantExpr string
		wantFor  string
	}{
		{
			name:     "divide",
			scale:    alerts.Scale{Divisor: 30},
			wantExpr: `max_over_time(rate(x_total[1m])[2m:2s]) + rate(y_total[10s] offset 5m)` + "\n" + `+ on () group_left label_replace(vector(1), "w", "[30m]", "", "")` + "\n" + `+ count_over_time(z[1m:])` + "\n",
			wantFor:  "2m",
		},
		{
			name:     "floors",
			scale:    alerts.Scale{Divisor: 30, MinRange: 15 * time.Second, MinFor: 5 * time.Minute},
			wantExpr: `max_over_time(rate(x_total[1m])[2m:15s]) + rate(y_total[15s] offset 5m)` + "\n" + `+ on () group_left label_replace(vector(1), "w", "[30m]", "", "")` + "\n" + `+ count_over_time(z[1m:])` + "\n",
			wantFor:  "5m",
		},
		{
			name:     "floors never lengthen",
			scale:    alerts.Scale{Divisor: 1000, MinRange: 10 * time.Minute, MinFor: 2 * time.Hour},
			wantExpr: `max_over_time(rate(x_total[10m])[10m:1m]) + rate(y_total[5m] offset 5m)` + "\n" + `+ on () group_left label_replace(vector(1), "w", "[30m]", "", "")` + "\n" + `+ count_over_time(z[10m:])` + "\n",
			wantFor:  "1h",
		},
		{
			name:     "identity",
			scale:    alerts.Scale{Divisor: 1},
			wantExpr: `max_over_time(rate(x_total[30m])[1h:1m]) + rate(y_total[5m] offset 5m)` + "\n" + `+ on () group_left label_replace(vector(1), "w", "[30m]", "", "")` + "\n" + `+ count_over_time(z[30m:])` + "\n",
			wantFor:  "1h",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := alerts.Scaled([]byte(scaleInput), tc.scale)
			if err != nil {
				t.Fatal(err)
			}
			f, err := alerts.Parse(out)
			if err != nil {
				t.Fatal(err)
			}
			rules := f.Groups[0].Rules
			if want := canonical(t, tc.wantExpr); rules[0].Expr != want {
				t.Errorf("expr\n%q\nwant\n%q", rules[0].Expr, want)
			}
			if rules[1].For != tc.wantFor {
				t.Errorf("for %q, want %q", rules[1].For, tc.wantFor)
			}
			if rules[1].Expr != "a:b:c > 0" || rules[1].Labels["severity"] != "warning" {
				t.Errorf("unrelated fields changed: %+v", rules[1])
			}
		})
	}
}

func TestScaledErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		in    string
		scale alerts.Scale
		want  error
	}{
		{"zero divisor", scaleInput, alerts.Scale{}, alerts.ErrInvalidScale},
		{"negative floor", scaleInput, alerts.Scale{Divisor: 2, MinFor: -time.Second}, alerts.ErrInvalidScale},
		{"bad for", strings.Replace(scaleInput, "for: 1h", "for: 1hour", 1), alerts.Scale{Divisor: 2}, alerts.ErrInvalidRules},
		{"bad range", strings.Replace(scaleInput, "x_total[30m]", "x_total[30mm]", 1), alerts.Scale{Divisor: 2}, alerts.ErrInvalidRules},
		{"not a rule file", "groups: 3\n", alerts.Scale{Divisor: 2}, alerts.ErrInvalidRules},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := alerts.Scaled([]byte(tc.in), tc.scale); !errors.Is(err, tc.want) {
				t.Errorf("error = %v; want %v", err, tc.want)
			}
		})
	}
}
