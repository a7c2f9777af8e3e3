package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/ct-exporter/ct-exporter/internal/lab"
	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

// binary is the ct-exporter built once for the package's tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ct-exporter-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary, err = lab.BuildExporter(context.Background(), dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Daemon is a running ct-exporter (nstest.StartExporter), with its
// command and its log at hand.
type Daemon struct {
	*lab.Exporter
	cmd  *exec.Cmd
	logs *lab.Lines
}

// startDaemon runs the binary with args plus a listen address and waits
// until /-/ready answers. It is stopped when the test ends.
func startDaemon(t *testing.T, args ...string) *Daemon {
	t.Helper()
	e := nstest.StartExporter(t, binary, args...)
	return &Daemon{Exporter: e, cmd: e.Cmd(), logs: e.Log()}
}

// Scrape returns the raw /metrics text.
func (d *Daemon) Scrape(t *testing.T) string {
	t.Helper()
	return nstest.Scrape(t, d.Exporter)
}

// Families parses exposition text.
func Families(t *testing.T, text string) map[string]*dto.MetricFamily {
	t.Helper()
	return nstest.ParseMetrics(t, text)
}

// Value returns the value of the first series of family name whose
// labels include all of the given pairs; ok is false when there is none.
func Value(mfs map[string]*dto.MetricFamily, name string, labels map[string]string) (v float64, ok bool) {
	return lab.Metrics(mfs).Value(name, labels)
}
