package exposition

import (
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// escapeHelp escapes a HELP text as the text format wants: backslash and
// line feed.
func escapeHelp(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(s)
}

// appendLabelValue appends a label value escaped as the text format wants:
// backslash, double quote and line feed. It reports whether the value is
// ASCII: only then is it known to be valid UTF-8 without a second look.
// The runs between escapes are copied whole: a namespace name has none.
func appendLabelValue(b []byte, v string) ([]byte, bool) {
	ascii := true
	start := 0
	for i := 0; i < len(v); i++ {
		var esc string
		switch c := v[i]; {
		case c >= utf8.RuneSelf:
			ascii = false
			continue
		case c == '\\':
			esc = `\\`
		case c == '"':
			esc = `\"`
		case c == '\n':
			esc = `\n`
		default:
			continue
		}
		b = append(b, v[start:i]...)
		b = append(b, esc...)
		start = i + 1
	}
	return append(b, v[start:]...), ascii
}

// maxPlainInteger bounds the integers that client_golang's text encoder
// (strconv 'g' with the shortest precision) writes as plain digits: from
// 1e6 on it switches to an exponent.
const maxPlainInteger = 1e6

// appendFloat appends a sample value as client_golang's text encoder
// writes it, so that both paths give the same bytes. Most values of this
// exporter are small integers, written without the float formatter.
func appendFloat(b []byte, f float64) []byte {
	switch {
	case f == 1:
		return append(b, '1')
	case f == 0:
		return append(b, '0')
	case f == -1:
		return append(b, "-1"...)
	case f > -maxPlainInteger && f < maxPlainInteger && f == math.Trunc(f):
		return strconv.AppendInt(b, int64(f), 10)
	case math.IsNaN(f):
		return append(b, "NaN"...)
	case math.IsInf(f, +1):
		return append(b, "+Inf"...)
	case math.IsInf(f, -1):
		return append(b, "-Inf"...)
	default:
		return strconv.AppendFloat(b, f, 'g', -1, 64)
	}
}
