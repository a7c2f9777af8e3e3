package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestTableFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--table.interval=-1s"}, "ct-exporter: error: --table.interval=-1s must not be negative\n"},
		{[]string{"--table.timeout=0s"}, "ct-exporter: error: --table.timeout=0s must be positive\n"},
		{[]string{"--table.top-k=-1"}, "ct-exporter: error: --table.top-k=-1 must not be negative\n"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(tc.args, &stdout, &stderr); code != exitUsage {
			t.Errorf("%v: exit code %d, want %d", tc.args, code, exitUsage)
		}
		if stderr.String() != tc.want {
			t.Errorf("%v: stderr %q, want %q", tc.args, stderr.String(), tc.want)
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--help"}, &stdout, &stderr); code != 0 {
		t.Fatalf("--help exit code %d: %s", code, stderr.String())
	}
	for _, flag := range []string{"--table.interval=60s", "--table.timeout=50s", "--table.top-k=10", "--[no-]table.by-zone-mark"} {
		if !strings.Contains(stdout.String(), flag) {
			t.Errorf("--help does not show %s:\n%s", flag, stdout.String())
		}
	}
}
