package alerts

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"
)

// Scale says how Scaled shortens the durations of a rule file.
type Scale struct {
	// Divisor divides every range ([30m]), subquery range and step
	// ([30m:1m]) and every "for:" duration. With 30, [30m] becomes [1m] and
	// "for: 5m" becomes "for: 10s". Must be at least 1.
	Divisor int
	// MinRange is the shortest a divided range or subquery step may become,
	// for example four scrape intervals so that rate() still sees two
	// samples. Zero means no floor. A range never grows beyond its original.
	MinRange time.Duration
	// MinFor is the shortest a divided "for:" may become. Zero means no
	// floor. A "for:" never grows beyond its original.
	MinFor time.Duration
}

// ErrInvalidScale is returned (wrapped) by Scaled for a Divisor below 1 or
// negative minimums.
var ErrInvalidScale = errors.New("invalid scale")

// Scaled returns rulesYAML with every range duration in every expr, and
// every "for:" duration, divided as s says. Names, labels, annotations,
// thresholds and offsets are left alone, so a recording rule keeps its
// production name (netns:...:rate30m) while it computes over the short
// window. Each expr is parsed with Prometheus' PromQL parser, its range
// selectors and subqueries are changed in the syntax tree, and it is
// printed back in the parser's canonical form (see RewriteExprs), so
// durations inside string literals are never touched. The result is
// checked with Parse.
func Scaled(rulesYAML []byte, s Scale) ([]byte, error) {
	if s.Divisor < 1 || s.MinRange < 0 || s.MinFor < 0 {
		return nil, fmt.Errorf("%w: %+v", ErrInvalidScale, s)
	}
	scaleFor := func(v string) (string, error) {
		d, err := ParseDuration(v)
		if err != nil {
			return "", err
		}
		return FormatDuration(scaleDuration(d, s.Divisor, s.MinFor)), nil
	}
	return rewrite(rulesYAML, func(e parser.Expr) error { return scaleExpr(e, s) }, scaleFor)
}

// RewriteExprs returns rulesYAML with every rule's expr parsed by
// Prometheus' PromQL parser, handed to fn, which may change the syntax
// tree in place, and printed back with the tree's String(). Everything
// else in the file stays as it was. Errors wrap ErrInvalidRules and name
// the expr's line.
func RewriteExprs(rulesYAML []byte, fn func(parser.Expr) error) ([]byte, error) {
	return rewrite(rulesYAML, fn, nil)
}

// rewrite applies exprFn to the syntax tree of every expr and, when forFn
// is not nil, replaces every "for:" value with what forFn returns.
func rewrite(rulesYAML []byte, exprFn func(parser.Expr) error, forFn func(string) (string, error)) ([]byte, error) {
	if _, err := Parse(rulesYAML); err != nil {
		return nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(rulesYAML, &doc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidRules, err)
	}
	p := parser.NewParser(parser.Options{})
	for _, rule := range ruleNodes(&doc) {
		for i := 0; i+1 < len(rule.Content); i += 2 {
			key, val := rule.Content[i], rule.Content[i+1]
			var err error
			switch {
			case key.Value == "expr":
				var e parser.Expr
				if e, err = p.ParseExpr(val.Value); err == nil {
					if err = exprFn(e); err == nil {
						val.Value = e.String()
						val.Style = 0
					}
				}
			case key.Value == "for" && forFn != nil:
				val.Value, err = forFn(val.Value)
			}
			if err != nil {
				return nil, fmt.Errorf("%w: line %d: %v", ErrInvalidRules, val.Line, err)
			}
		}
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	if _, err := Parse(buf.Bytes()); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// ErrDurationExpr is returned (wrapped) by Scaled for a range or subquery
// written as a duration expression ([5m * 2]), which it cannot divide.
var ErrDurationExpr = errors.New("duration expressions are not supported")

// scaleExpr divides every range selector's range and every subquery's
// range and step in the syntax tree e.
func scaleExpr(e parser.Expr, s Scale) error {
	var err error
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.MatrixSelector:
			if n.RangeExpr != nil {
				err = fmt.Errorf("%w: %s", ErrDurationExpr, n)
				return err
			}
			n.Range = scaleDuration(n.Range, s.Divisor, s.MinRange)
		case *parser.SubqueryExpr:
			if n.RangeExpr != nil || n.StepExpr != nil {
				err = fmt.Errorf("%w: %s", ErrDurationExpr, n)
				return err
			}
			n.Range = scaleDuration(n.Range, s.Divisor, s.MinRange)
			if n.Step != 0 {
				n.Step = scaleDuration(n.Step, s.Divisor, s.MinRange)
			}
		}
		return nil
	})
	return err
}

// ruleNodes returns the mapping node of every rule in a parsed rule file.
func ruleNodes(doc *yaml.Node) []*yaml.Node {
	var out []*yaml.Node
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil
	}
	for _, groups := range mappingValues(doc.Content[0], "groups") {
		for _, g := range groups.Content {
			for _, rules := range mappingValues(g, "rules") {
				for _, r := range rules.Content {
					if r.Kind == yaml.MappingNode {
						out = append(out, r)
					}
				}
			}
		}
	}
	return out
}

// mappingValues returns the values stored under key in mapping node m.
func mappingValues(m *yaml.Node, key string) []*yaml.Node {
	var out []*yaml.Node
	if m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			out = append(out, m.Content[i+1])
		}
	}
	return out
}

// scaleDuration divides d by div (truncated to whole milliseconds), raises
// it to min and never returns more than d.
func scaleDuration(d time.Duration, div int, min time.Duration) time.Duration {
	out := (d / time.Duration(div)).Truncate(time.Millisecond)
	if out < min {
		out = min
	}
	if out > d {
		out = d
	}
	return out
}

// durationUnits are Prometheus' duration units, largest first.
var durationUnits = []struct {
	name string
	d    time.Duration
}{
	{"y", 365 * 24 * time.Hour},
	{"w", 7 * 24 * time.Hour},
	{"d", 24 * time.Hour},
	{"h", time.Hour},
	{"m", time.Minute},
	{"s", time.Second},
	{"ms", time.Millisecond},
}

// durationRE is Prometheus' duration syntax.
var durationRE = regexp.MustCompile(`^(?:([0-9]+)y)?(?:([0-9]+)w)?(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?(?:([0-9]+)ms)?$`)

// ErrInvalidDuration is returned (wrapped) by ParseDuration.
var ErrInvalidDuration = errors.New("invalid duration")

// ParseDuration parses a Prometheus duration such as "30m", "1h30m" or
// "500ms".
func ParseDuration(s string) (time.Duration, error) {
	m := durationRE.FindStringSubmatch(s)
	if s == "" || m == nil {
		return 0, fmt.Errorf("%w: %q", ErrInvalidDuration, s)
	}
	var d time.Duration
	for i, u := range durationUnits {
		if m[i+1] == "" {
			continue
		}
		n, err := strconv.ParseInt(m[i+1], 10, 64)
		if err != nil || n > int64((1<<63-1)/u.d) {
			return 0, fmt.Errorf("%w: %q overflows", ErrInvalidDuration, s)
		}
		d += time.Duration(n) * u.d
	}
	return d, nil
}

// FormatDuration formats d, truncated to milliseconds, in Prometheus'
// duration syntax ("1m30s"; "0s" for zero or less).
func FormatDuration(d time.Duration) string {
	d = d.Truncate(time.Millisecond)
	if d <= 0 {
		return "0s"
	}
	var b strings.Builder
	for _, u := range durationUnits {
		if n := d / u.d; n > 0 {
			b.WriteString(strconv.FormatInt(int64(n), 10))
			b.WriteString(u.name)
			d -= n * u.d
		}
	}
	return b.String()
}
