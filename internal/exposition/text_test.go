package exposition

import (
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
)

// TestAppendFloatIsStrconvG checks appendFloat against what
// client_golang's text encoder writes (strconv 'g', shortest), around
// the edges of its plain-integer path and over random values.
func TestAppendFloatIsStrconvG(t *testing.T) {
	values := []float64{
		0, math.Copysign(0, -1), 1, -1, 2, -2, 7, 300, 432000, 999999, -999999,
		1e6, -1e6, 1e6 + 1, 999999.5, -999999.5, 0.5, -0.25, 123456.789,
		1e15, 1e21, 12345678, 3.25e-7, math.MaxInt64, math.MinInt64,
		math.SmallestNonzeroFloat64, math.MaxFloat64,
		math.NaN(), math.Inf(1), math.Inf(-1),
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		values = append(values, float64(r.IntN(4_000_000)-2_000_000), r.NormFloat64()*1e6)
	}
	for _, v := range values {
		want := strconv.FormatFloat(v, 'g', -1, 64)
		switch {
		case math.IsNaN(v):
			want = "NaN"
		case math.IsInf(v, 1):
			want = "+Inf"
		case math.IsInf(v, -1):
			want = "-Inf"
		case v == 0:
			want = "0" // client_golang writes -0 as 0
		}
		if got := string(appendFloat(nil, v)); got != want {
			t.Errorf("appendFloat(%v) = %q, want %q", v, got, want)
		}
	}
}

// TestAppendLabelValue checks the escaping and the ASCII report.
func TestAppendLabelValue(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ascii    bool
	}{
		{"", "", true},
		{"cni-6f1c9a7e-8b2d-4f3a-9c1e-2a7b5d9e0f13", "cni-6f1c9a7e-8b2d-4f3a-9c1e-2a7b5d9e0f13", true},
		{`a\b"c` + "\nd", `a\\b\"c\nd`, true},
		{`\"` + "\n", `\\\"\n`, true},
		{"ünï\"code", `ünï\"code`, false},
		{"b\xff", "b\xff", false},
	} {
		got, ascii := appendLabelValue([]byte("x="), tc.in)
		if string(got) != "x="+tc.want || ascii != tc.ascii {
			t.Errorf("appendLabelValue(%q) = %q, %v; want %q, %v", tc.in, got, ascii, "x="+tc.want, tc.ascii)
		}
	}
}
