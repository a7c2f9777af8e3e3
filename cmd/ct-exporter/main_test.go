package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown flag", []string{"--foo"}, exitUsage,
			"ct-exporter: error: unknown long flag '--foo', try --help\n"},
		{"bad log level", []string{"--log.level=loud"}, exitUsage,
			"ct-exporter: error: enum value must be one of debug,info,warn,error, got 'loud', try --help\n"},
		{"bad log format", []string{"--log.format=xml"}, exitUsage,
			"ct-exporter: error: enum value must be one of logfmt,json, got 'xml', try --help\n"},
		{"relative telemetry path", []string{"--web.telemetry-path=metrics"}, exitUsage,
			"ct-exporter: error: --web.telemetry-path=\"metrics\" must start with /\n"},
		{"same namespace twice", []string{"--conntrack.netns=/run/netns/a", "--conntrack.netns=/var/run/netns/a"}, exitUsage,
			"ct-exporter: error: --conntrack.netns=/var/run/netns/a: same namespace name \"a\" as /run/netns/a\n"},
		{"missing namespace", []string{"--conntrack.netns=/run/netns/ct-exporter-does-not-exist"}, exitFailure,
			"ct-exporter: --conntrack.netns=/run/netns/ct-exporter-does-not-exist: no such network namespace; create it (ip netns add NAME) or fix the path\n"},
		{"not a namespace", []string{"--conntrack.netns=/etc/hostname"}, exitFailure,
			"ct-exporter: --conntrack.netns=/etc/hostname: not a network namespace file; pass /run/netns/NAME or /proc/PID/ns/net\n"},
		{"zero event buffer", []string{"--events.buffer-size=0B"}, exitUsage,
			"ct-exporter: error: --events.buffer-size=0B must be more than 0 and at most 1GiB\n"},
		{"huge event buffer", []string{"--events.buffer-size=2GiB"}, exitUsage,
			"ct-exporter: error: --events.buffer-size=2GiB must be more than 0 and at most 1GiB\n"},
		{"zero flow table", []string{"--events.flow-table-size=0"}, exitUsage,
			"ct-exporter: error: --events.flow-table-size=0 must be positive\n"},
		{"zero top window", []string{"--events.top-window=0s"}, exitUsage,
			"ct-exporter: error: --events.top-window=0s must be positive\n"},
		{"top window not whole steps", []string{"--events.top-window=5m30s"}, exitUsage,
			"ct-exporter: error: --events.top-window: invalid top-k window options: window 5m30s is not a whole number of 1m0s steps\n"},
		{"top window too many steps", []string{"--events.top-window=61m"}, exitUsage,
			"ct-exporter: error: --events.top-window: invalid top-k window options: window 1h1m0s holds more than 60 steps of 1m0s\n"},
		{"top window below a step", []string{"--events.top-window=1ns"}, exitUsage,
			"ct-exporter: error: --events.top-window: invalid top-k window options: window 1ns, step 0s: both must be positive\n"},
		{"negative events top-k", []string{"--events.top-k=-1"}, exitUsage,
			"ct-exporter: error: --events.top-k=-1 must be between 0 and 100\n"},
		{"huge events top-k", []string{"--events.top-k=101"}, exitUsage,
			"ct-exporter: error: --events.top-k=101 must be between 0 and 100\n"},
		{"negative table interval", []string{"--table.interval=-1s"}, exitUsage,
			"ct-exporter: error: --table.interval=-1s must not be negative\n"},
		{"zero table timeout", []string{"--table.timeout=0s"}, exitUsage,
			"ct-exporter: error: --table.timeout=0s must be positive\n"},
		{"negative top-k", []string{"--table.top-k=-1"}, exitUsage,
			"ct-exporter: error: --table.top-k=-1 must not be negative\n"},
		{"netns max zero", []string{"--conntrack.netns-discover=/run/netns", "--conntrack.netns-max=0"}, exitUsage,
			"ct-exporter: error: --conntrack.netns-max=0: must be at least 1\n"},
		{"discovery interval zero", []string{"--conntrack.netns-discover-proc", "--conntrack.netns-discover-interval=0s"}, exitUsage,
			"ct-exporter: error: --conntrack.netns-discover-interval=0s: must be positive\n"},
		{"empty discovery directory", []string{"--conntrack.netns-discover="}, exitUsage,
			"ct-exporter: error: --conntrack.netns-discover: empty directory\n"},
		{"nothing to watch", []string{"--no-conntrack.netns-self"}, exitUsage,
			"ct-exporter: error: --no-conntrack.netns-self: nothing left to watch; add --conntrack.netns or a discovery flag\n"},
		{"a path named self", []string{"--conntrack.netns=/run/netns/self", "--conntrack.netns-self"}, exitUsage,
			"ct-exporter: error: --conntrack.netns=/run/netns/self: name \"self\" is the exporter's own namespace\n"},
		{"diagnose bad flag", []string{"diagnose", "--foo"}, diagnoseCouldNotRun,
			"ct-exporter: error: unknown long flag '--foo', try --help\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tc.args, &stdout, &stderr)
			if code != tc.code {
				t.Errorf("exit code %d, want %d", code, tc.code)
			}
			if stderr.String() != tc.want {
				t.Errorf("stderr:\n%q\nwant:\n%q", stderr.String(), tc.want)
			}
			if strings.Count(stderr.String(), "\n") != 1 {
				t.Errorf("want exactly one line on stderr, got %q", stderr.String())
			}
		})
	}
}

func TestHelpListsEveryFlag(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--help"}, &stdout, &stderr); code != 0 {
		t.Fatalf("--help exit code %d: %s", code, stderr.String())
	}
	for _, flag := range []string{
		"--web.listen-address", "--web.telemetry-path", "--web.config.file",
		"--log.level", "--log.format", "--conntrack.netns", "diagnose",
		"--events.buffer-size=128MiB", "--events.flow-table-size=262144", "--[no-]conntrack.enable-timestamps",
		"--table.interval=60s", "--table.timeout=50s", "--table.top-k=10", "--[no-]table.by-zone-mark",
		"--events.top-window=5m0s", "--events.top-k=10",
	} {
		if !strings.Contains(stdout.String(), flag) {
			t.Errorf("--help does not mention %s", flag)
		}
	}
}

func TestVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--version"}, &stdout, &stderr); code != 0 {
		t.Fatalf("--version exit code %d", code)
	}
	if !strings.HasPrefix(stdout.String()+stderr.String(), "ct-exporter, version ") {
		t.Errorf("--version printed %q / %q", stdout.String(), stderr.String())
	}
}
