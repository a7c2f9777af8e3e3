package grafana

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
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

// promqlKeywords are identifiers that are never metric names.
var promqlKeywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true,
	"inf": true, "nan": true, "atan2": true, "start": true, "end": true,
	// Aggregation operators, which may be followed by by/without before
	// their "(".
	"sum": true, "min": true, "max": true, "avg": true, "group": true,
	"stddev": true, "stdvar": true, "count": true, "count_values": true,
	"bottomk": true, "topk": true, "quantile": true, "limitk": true,
	"limit_ratio": true,
}

// groupingKeywords are followed by a parenthesised list of label names.
var groupingKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true,
	"group_left": true, "group_right": true,
}

// ErrPromQL is returned (wrapped) by Selectors for an expression it cannot
// scan: unbalanced brackets or an unterminated string.
var ErrPromQL = errors.New("cannot scan PromQL")

// Selectors returns the metric selectors of a PromQL expression in order of
// appearance. It is a scanner, not a parser: identifiers followed by "(" are
// functions or aggregations, label lists after by/without/on/ignoring/
// group_left/group_right are skipped, and so are strings, ranges and
// numbers (with their duration or exponent suffixes). Grafana variables
// ($name) are skipped. A selector written only as {__name__="x"} is not
// reported.
func Selectors(expr string) ([]Selector, error) {
	var out []Selector
	s := expr
	i := 0
	skipSpace := func(j int) int {
		for j < len(s) && strings.ContainsRune(" \t\r\n", rune(s[j])) {
			j++
		}
		return j
	}
	closing := func(open int, o, c byte) (int, error) {
		depth := 0
		for j := open; j < len(s); j++ {
			switch s[j] {
			case '"', '\'', '`':
				n, err := stringLen(s[j:])
				if err != nil {
					return 0, err
				}
				j += n - 1
			case o:
				depth++
			case c:
				depth--
				if depth == 0 {
					return j, nil
				}
			}
		}
		return 0, fmt.Errorf("%w: unbalanced %q in %q", ErrPromQL, o, expr)
	}
	for i < len(s) {
		ch := s[i]
		switch {
		case ch == '"' || ch == '\'' || ch == '`':
			n, err := stringLen(s[i:])
			if err != nil {
				return nil, fmt.Errorf("%w in %q", err, expr)
			}
			i += n
		case ch == '[':
			j, err := closing(i, '[', ']')
			if err != nil {
				return nil, err
			}
			i = j + 1
		case ch == '{':
			// A selector without a name: {__name__="x"} or {job="y"}.
			j, err := closing(i, '{', '}')
			if err != nil {
				return nil, err
			}
			i = j + 1
		case ch == '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case ch == '$':
			i++
			if i < len(s) && s[i] == '{' {
				j, err := closing(i, '{', '}')
				if err != nil {
					return nil, err
				}
				i = j + 1
				continue
			}
			for i < len(s) && isIdentChar(s[i]) {
				i++
			}
		case isDigit(ch) || (ch == '.' && i+1 < len(s) && isDigit(s[i+1])):
			// A number (1, 0.5, 1e-3, 0x1f) or a duration (5m, 1h30m).
			start := i
			for i < len(s) && (isIdentChar(s[i]) || s[i] == '.' ||
				((s[i] == '+' || s[i] == '-') && (s[i-1] == 'e' || s[i-1] == 'E') &&
					!strings.ContainsAny(s[start:i], "xX"))) {
				i++
			}
		case isIdentStart(ch):
			j := i
			for j < len(s) && (isIdentChar(s[j]) || s[j] == ':') {
				j++
			}
			name := s[i:j]
			k := skipSpace(j)
			switch {
			case groupingKeywords[name]:
				i = k
				if k < len(s) && s[k] == '(' {
					c, err := closing(k, '(', ')')
					if err != nil {
						return nil, err
					}
					i = c + 1
				}
			case k < len(s) && s[k] == '(':
				i = j // a function or an aggregation
			case promqlKeywords[strings.ToLower(name)]:
				i = j
			default:
				sel := Selector{Name: name}
				i = j
				if k < len(s) && s[k] == '{' {
					c, err := closing(k, '{', '}')
					if err != nil {
						return nil, err
					}
					sel.Matchers = strings.TrimSpace(s[k+1 : c])
					i = c + 1
				}
				out = append(out, sel)
			}
		default:
			i++
		}
	}
	return out, nil
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

func isDigit(c byte) bool      { return c >= '0' && c <= '9' }
func isIdentStart(c byte) bool { return c == '_' || c == ':' || (c|0x20 >= 'a' && c|0x20 <= 'z') }
func isIdentChar(c byte) bool  { return isIdentStart(c) || isDigit(c) }
