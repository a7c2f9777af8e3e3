package diagnose

import (
	"context"

	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/tablescan"
)

// TableScan is the TableSource of the running kernel: one streaming dump
// of the namespace's table through tablescan.
type TableScan struct {
	scanner *tablescan.Scanner
}

// NewTableScan returns a TableScan reporting the topK sources and
// destination ports. Scans of several namespaces run one after the other.
func NewTableScan(topK int) *TableScan {
	return &TableScan{scanner: tablescan.NewScanner(tablescan.Options{TopK: max(topK, 1)})}
}

// Table implements TableSource.
func (s *TableScan) Table(ctx context.Context, target netns.Target) (*TableSample, error) {
	scan, err := s.scanner.Scan(ctx, target)
	if err != nil {
		return nil, err
	}
	t := TableFromScan(scan.Result)
	t.Duration = scan.Duration()
	return t, nil
}

// TableFromScan converts a tablescan breakdown.
func TableFromScan(r *tablescan.Result) *TableSample {
	t := &TableSample{Entries: r.Total, Malformed: r.Malformed, Shortened: r.Shortened}
	threshold, ok := r.Timeouts.ShortenedThreshold()
	t.ShortenedThreshold, t.ShortenedDetectable = uint64(threshold), ok
	for _, s := range r.States {
		t.States = append(t.States, StateCount{Protocol: s.Protocol, State: s.State, Entries: s.Entries})
	}
	if r.Sources != nil {
		for _, c := range r.Sources.Top {
			t.Sources = append(t.Sources, SourceCount{Address: c.Value.String(), Entries: c.Entries})
		}
		t.OtherSources = r.Sources.Other
	}
	if r.Ports != nil {
		for _, c := range r.Ports.Top {
			t.Ports = append(t.Ports, PortCount{Protocol: c.Value.ProtocolLabel(), Port: c.Value.PortLabel(), Entries: c.Entries})
		}
		t.OtherPorts = r.Ports.Other
	}
	for _, k := range r.NAT.Kinds() {
		t.NAT = append(t.NAT, NATCount{NAT: k.NAT, Entries: k.Entries})
	}
	t.Unreplied, t.Evictable = r.Unreplied, r.Evictable
	for _, h := range r.Helpers {
		t.Helpers = append(t.Helpers, HelperCount{Helper: h.Helper, Entries: h.Entries})
	}
	return t
}
