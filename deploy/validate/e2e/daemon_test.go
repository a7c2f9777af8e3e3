package e2e

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/ct-exporter/ct-exporter/internal/lab"
)

// binary is the ct-exporter built once for the package's tests.
var binary string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

// run builds the exporter with lab.BuildExporter, runs the tests and
// removes the binary.
func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "ct-exporter-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary, err = lab.BuildExporter(context.Background(), dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}
