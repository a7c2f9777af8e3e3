package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestEventsFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--events.buffer-size=0B"}, "ct-exporter: error: --events.buffer-size=0B must be more than 0 and at most 1GiB\n"},
		{[]string{"--events.buffer-size=2GiB"}, "ct-exporter: error: --events.buffer-size=2GiB must be more than 0 and at most 1GiB\n"},
		{[]string{"--events.flow-table-size=0"}, "ct-exporter: error: --events.flow-table-size=0 must be positive\n"},
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
	for _, flag := range []string{"--events.buffer-size=128MiB", "--events.flow-table-size=262144", "--[no-]conntrack.enable-timestamps"} {
		if !strings.Contains(stdout.String(), flag) {
			t.Errorf("--help does not show %s:\n%s", flag, stdout.String())
		}
	}
}
