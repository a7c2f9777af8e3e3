package nstest

import (
	"context"
	"testing"
	"time"

	"github.com/ct-exporter/ct-exporter/internal/lab"
)

// FreeLoopbackAddr returns a loopback address whose port is free now.
func FreeLoopbackAddr(t testing.TB) string {
	t.Helper()
	addr, err := lab.FreeLoopbackAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// StartExporter runs the ct-exporter binary with args plus a listen
// address (lab.StartExporter) and waits up to 15 s until /-/ready
// answers. When the test ends it is stopped; the test fails if it does
// not stop within 10 s of SIGINT, and a failed test prints its log.
func StartExporter(t testing.TB, binary string, args ...string) *lab.Exporter {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	e, err := lab.StartExporter(ctx, binary, args, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Stop(10 * time.Second); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("ct-exporter log:\n%s", e.Log())
		}
	})
	return e
}

// Scrape returns the exporter's /metrics text; the test fails if the
// scrape does not answer 200 within 20 s.
func Scrape(t testing.TB, e *lab.Exporter) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, _, err := e.ScrapeText(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// ParseMetrics parses exposition text; the test fails if it is not valid.
func ParseMetrics(t testing.TB, text string) lab.Metrics {
	t.Helper()
	m, err := lab.ParseMetrics([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return m
}
