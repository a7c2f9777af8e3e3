package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/ct-exporter/ct-exporter/internal/lab"
)

// Exporter is a ct-exporter process started by a drill, listening on a
// loopback port.
type Exporter struct {
	*lab.Exporter
}

// StartExporter starts the ct-exporter binary watching the namespace
// files in netnsPaths, with --log.level=warn and extra flags, and waits
// up to 30 s until it is ready. The Lab kills it on Close if Stop was not
// called.
func StartExporter(ctx context.Context, l *Lab, binary string, netnsPaths []string, extra ...string) (*Exporter, error) {
	args := []string{"--log.level=warn"}
	for _, p := range netnsPaths {
		args = append(args, "--conntrack.netns="+p)
	}
	args = append(args, extra...)
	readyCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	e, err := lab.StartExporter(readyCtx, binary, args, l.Start)
	if err != nil {
		return nil, err
	}
	return &Exporter{e}, nil
}

// Usage returns the exporter's CPU time so far and its peak resident
// set.
func (e *Exporter) Usage() (lab.Usage, error) {
	u, err := lab.ProcUsage(e.PID())
	if err != nil {
		return lab.Usage{}, fmt.Errorf("ct-exporter: %w", err)
	}
	return u, nil
}

// Logs returns what the exporter has logged.
func (e *Exporter) Logs() string { return e.Log().String() }

// Stop sends SIGINT and waits up to 10 s for the exporter to exit, then
// kills it.
func (e *Exporter) Stop() { _ = e.Exporter.Stop(10 * time.Second) }
