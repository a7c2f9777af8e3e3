// Command ct-scanbench reads the conntrack table of one network namespace
// once, the way the table-scan drill measures it, and prints one JSON line
// with the number of entries read. It exists so that each method runs in a
// small process of its own whose wall time and peak RSS can be measured
// (for example under GNU time):
//
//	ct-scanbench --netns=/run/netns/NAME --method=scan   # ct-exporter's streaming scan
//	ct-scanbench --netns=/run/netns/NAME --method=timo   # ti-mo/conntrack Dump
//
// The drill that fills a namespace with a million entries and compares
// both with conntrack -L is TestScanBench in e2e/table_bench_test.go.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"

	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/tablescan"
)

// output is the JSON line printed on success.
type output struct {
	Method  string  `json:"method"`
	Entries uint64  `json:"entries"`
	Seconds float64 `json:"seconds"`
	// Scan details, for --method=scan.
	Datagrams        uint64 `json:"datagrams,omitempty"`
	SourceErrorBound uint64 `json:"source_error_bound,omitempty"`
	Malformed        uint64 `json:"malformed,omitempty"`
}

func main() {
	path := flag.String("netns", "", "network namespace file, e.g. /run/netns/NAME; empty: this process's namespace")
	method := flag.String("method", "scan", "scan (ct-exporter's streaming scan) or timo (ti-mo/conntrack Dump)")
	topK := flag.Int("top-k", tablescan.DefaultTopK, "top K of the scan's breakdowns")
	timeout := flag.Duration("timeout", 5*time.Minute, "time limit")
	flag.Parse()
	out, err := run(*path, *method, *topK, *timeout)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ct-scanbench: %v\n", err)
		os.Exit(1)
	}
	b, err := json.Marshal(out)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ct-scanbench: %v\n", err)
		os.Exit(1)
	}
	fmt.Println(string(b))
}

func run(path, method string, topK int, timeout time.Duration) (output, error) {
	target := netns.Self()
	if path != "" {
		target = netns.Target{Name: netns.NameFromPath(path), Path: path}
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	out := output{Method: method}
	switch method {
	case "scan":
		s, err := tablescan.NewScanner(tablescan.Options{TopK: topK}).Scan(ctx, target)
		if err != nil {
			return out, err
		}
		out.Entries, out.Datagrams, out.Malformed = s.Total, s.Dump.Datagrams, s.Malformed
		if s.Sources != nil {
			out.SourceErrorBound = s.Sources.MaxError
		}
	case "timo":
		cfg := &netlink.Config{}
		if !target.IsSelf() {
			f, err := target.Open()
			if err != nil {
				return out, err
			}
			defer f.Close()
			cfg.NetNS = int(f.Fd())
		}
		c, err := conntrack.Dial(cfg)
		if err != nil {
			return out, fmt.Errorf("ti-mo/conntrack dial: %w", err)
		}
		defer c.Close()
		flows, err := c.Dump(nil)
		if err != nil {
			return out, fmt.Errorf("ti-mo/conntrack dump: %w", err)
		}
		out.Entries = uint64(len(flows))
	default:
		return out, errors.New("--method must be scan or timo")
	}
	out.Seconds = time.Since(start).Seconds()
	return out, nil
}
