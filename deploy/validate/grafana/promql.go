package grafana

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/prometheus/promql/parser"
)

// ErrUnknownVariable is returned (wrapped) by Expand for a variable that has
// no value.
var ErrUnknownVariable = errors.New("unknown dashboard variable")

// variableRE matches Grafana's variable syntaxes: $name, ${name},
// ${name:format} and [[name]].
var variableRE = regexp.MustCompile(`\$\{([A-Za-z0-9_]+)(?::[A-Za-z0-9_]+)?\}|\$([A-Za-z0-9_]+)|\[\[([A-Za-z0-9_]+)\]\]`)

// Expand replaces the Grafana variables in expr with values from vars, keyed
// by name without the "$" (for example "instance", "netns",
// "__rate_interval"). A value is inserted as is: for a regex matcher such as
// netns=~"$netns", pass a regex ("self|blue") or a single escaped value.
// Every variable of expr must have a value; RateInterval computes the one
// for "__rate_interval".
func Expand(expr string, vars map[string]string) (string, error) {
	var missing []string
	out := variableRE.ReplaceAllStringFunc(expr, func(m string) string {
		sub := variableRE.FindStringSubmatch(m)
		name := sub[1] + sub[2] + sub[3]
		v, ok := vars[name]
		if !ok {
			missing = append(missing, name)
			return m
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("%w: %s in %q", ErrUnknownVariable, strings.Join(missing, ", "), expr)
	}
	return out, nil
}

// RateInterval returns the value Grafana gives $__rate_interval for a range
// query with the given step against a data source whose scrape interval is
// scrape: max(step + scrape, 4 * scrape), in PromQL duration syntax.
func RateInterval(scrape, step time.Duration) string {
	d := max(step+scrape, 4*scrape).Truncate(time.Millisecond)
	if d%time.Second == 0 {
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
}

// Variables returns the names of the Grafana variables used in expr, sorted
// and without duplicates.
func Variables(expr string) []string {
	seen := map[string]bool{}
	for _, sub := range variableRE.FindAllStringSubmatch(expr, -1) {
		seen[sub[1]+sub[2]+sub[3]] = true
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Selector is one metric name of a PromQL expression with the raw text of
// its label matchers (without braces, "" when it has none).
type Selector struct {
	Name     string
	Matchers string
}

// ErrPromQL is returned (wrapped) by Selectors for an expression that
// Prometheus' PromQL parser rejects.
var ErrPromQL = errors.New("cannot scan PromQL")

// Selectors returns the metric selectors of a PromQL expression in order of
// appearance, found by Prometheus' PromQL parser. Grafana variables may
// appear inside strings ({netns=~"$netns"}) and in place of a duration
// ([$__rate_interval]); before parsing, each one outside a string is
// replaced by a duration of the same length, so that the selectors'
// positions, and with them the raw text of their matchers, stay those of
// expr. A selector written only as {__name__="x"} or without any name is
// not reported.
func Selectors(expr string) ([]Selector, error) {
	src, err := durationsForVariables(expr)
	if err != nil {
		return nil, err
	}
	e, err := parser.NewParser(parser.Options{}).ParseExpr(src)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %v", ErrPromQL, expr, err)
	}
	var out []Selector
	var starts []int
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok || vs.Name == "" {
			return nil
		}
		pos := vs.PositionRange()
		text := expr[pos.Start:pos.End]
		sel := Selector{Name: vs.Name}
		if open := strings.IndexByte(text, '{'); open >= 0 {
			if end := strings.LastIndexByte(text, '}'); end > open {
				sel.Matchers = strings.TrimSpace(text[open+1 : end])
			}
		}
		out = append(out, sel)
		starts = append(starts, int(pos.Start))
		return nil
	})
	// Inspect walks the tree depth first; report in order of appearance.
	order := make([]int, len(out))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(i, j int) bool { return starts[order[i]] < starts[order[j]] })
	sorted := make([]Selector, len(out))
	for i, k := range order {
		sorted[i] = out[k]
	}
	return sorted, nil
}

// durationsForVariables returns expr with every Grafana variable outside a
// string literal replaced by a duration of the same length ("1s" padded
// with spaces), which the parser accepts where Grafana puts such variables.
func durationsForVariables(expr string) (string, error) {
	b := []byte(expr)
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '"', '\'', '`':
			n, err := stringLen(expr[i:])
			if err != nil {
				return "", fmt.Errorf("%w in %q", err, expr)
			}
			i += n - 1
		case '$', '[':
			loc := variableRE.FindStringIndex(expr[i:])
			if loc == nil || loc[0] != 0 {
				continue
			}
			copy(b[i:i+loc[1]], "1s"+strings.Repeat(" ", loc[1]-2))
			i += loc[1] - 1
		}
	}
	return string(b), nil
}

// MetricNames returns the metric names of a PromQL expression, sorted and
// without duplicates. See Selectors.
func MetricNames(expr string) ([]string, error) {
	sels, err := Selectors(expr)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []string
	for _, s := range sels {
		if !seen[s.Name] {
			seen[s.Name] = true
			out = append(out, s.Name)
		}
	}
	sort.Strings(out)
	return out, nil
}

// stringLen returns the length of the PromQL string literal at the start
// of s, quotes included.
func stringLen(s string) (int, error) {
	q := s[0]
	for i := 1; i < len(s); i++ {
		switch {
		case s[i] == '\\' && q != '`':
			i++
		case s[i] == q:
			return i + 1, nil
		}
	}
	return 0, fmt.Errorf("%w: unterminated string", ErrPromQL)
}
