package diagnose

import (
	"fmt"
	"strconv"
	"strings"
)

// count writes n with thousands separators: 262,144.
func count(n uint64) string {
	s := strconv.FormatUint(n, 10)
	if len(s) <= 3 {
		return s
	}
	var b strings.Builder
	lead := len(s) % 3
	if lead > 0 {
		b.WriteString(s[:lead])
	}
	for i := lead; i < len(s); i += 3 {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(s[i : i+3])
	}
	return b.String()
}

// percent writes a ratio as a percentage with one decimal: 91.6 %.
func percent(r float64) string {
	return strconv.FormatFloat(r*100, 'f', 1, 64) + " %"
}

// seconds writes a duration in seconds compactly: 30 s, 2.5 s, 5 d.
func seconds(s float64) string {
	switch {
	case s >= 86400 && s == float64(int64(s)) && int64(s)%86400 == 0:
		return strconv.FormatInt(int64(s)/86400, 10) + " d"
	case s >= 3600 && s == float64(int64(s)) && int64(s)%3600 == 0:
		return strconv.FormatInt(int64(s)/3600, 10) + " h"
	case s >= 10:
		return strconv.FormatFloat(s, 'f', 0, 64) + " s"
	}
	return strconv.FormatFloat(s, 'g', 2, 64) + " s"
}

// bound writes a bucket bound in seconds without trailing zeros.
func bound(s float64) string { return strconv.FormatFloat(s, 'g', -1, 64) }

// bucketRange writes a lifetime bucket as 250..300 s, or > 3600 s for the
// last bucket.
func bucketRange(b LifetimeBucket) string {
	if b.ToSeconds == 0 {
		return "> " + bound(b.FromSeconds) + " s"
	}
	return bound(b.FromSeconds) + ".." + bound(b.ToSeconds) + " s"
}

// bytesIEC writes a byte count with a binary prefix: 96 MiB.
func bytesIEC(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	v := float64(n) / float64(div)
	prec := 0
	if v < 10 {
		prec = 1
	}
	return strconv.FormatFloat(v, 'f', prec, 64) + " " + string("KMGTPE"[exp]) + "iB"
}
