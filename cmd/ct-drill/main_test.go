package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ct-exporter/ct-exporter/bench"
)

func TestParamsExpandLists(t *testing.T) {
	f := &drillFlags{size: "10, 20", rate: "1,2.5", duration: time.Second}
	ps, err := f.params()
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 4 || ps[0].Size != 10 || ps[0].Rate != 1 || ps[3].Size != 20 || ps[3].Rate != 2.5 || ps[3].Duration != bench.Duration(time.Second) {
		t.Fatalf("params %+v", ps)
	}
	for _, bad := range []*drillFlags{{size: "ten"}, {size: "-1"}, {rate: "x"}} {
		if _, err := bad.params(); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

func TestList(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"list"}, &out, &errOut); code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	for _, d := range bench.Drills() {
		if !strings.Contains(out.String(), d.Name()) {
			t.Errorf("list lacks %s:\n%s", d.Name(), out.String())
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"nope"},
		{"burst", "--size=abc"},
		{"scan", "--rate=-3"},
		{"plot"},
	} {
		var out, errOut bytes.Buffer
		if code := run(args, &out, &errOut); code != exitUsage {
			t.Errorf("%v: exit %d, want %d (%s)", args, code, exitUsage, errOut.String())
		}
	}
}

func TestPlotFromJSON(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "scan.json")
	rep := &bench.Report{Command: "ct-drill scan", Results: []*bench.Result{
		{Drill: "scan", Params: bench.Params{Size: 10000}, Rows: []bench.Row{bench.NewRow("scan wall time", "s", 0.025, bench.AnchorList, 0.044)}},
		{Drill: "scan", Params: bench.Params{Size: 100000}, Rows: []bench.Row{bench.NewRow("scan wall time", "s", 0.16, bench.AnchorList, 0.37)}},
	}}
	if err := rep.WriteJSON(in); err != nil {
		t.Fatal(err)
	}
	svg, md := filepath.Join(dir, "scan.svg"), filepath.Join(dir, "scan.md")
	var out, errOut bytes.Buffer
	if code := run([]string{"--markdown=" + md, "plot", "--from=" + in, "--plot=" + svg}, &out, &errOut); code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "== scan  size=100000") {
		t.Errorf("table:\n%s", out.String())
	}
	b, err := os.ReadFile(svg)
	if err != nil || !strings.HasPrefix(string(b), "<svg") {
		t.Fatalf("svg: %v %.40q", err, b)
	}
	b, err = os.ReadFile(md)
	if err != nil || !strings.Contains(string(b), "**scan: growth with size**") {
		t.Fatalf("markdown: %v\n%s", err, b)
	}
}
