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
