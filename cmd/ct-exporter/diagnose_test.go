package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ct-exporter/ct-exporter/diagnose"
	"github.com/ct-exporter/ct-exporter/internal/ctnl"
	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/sysctl"
)

func TestExitCodeOf(t *testing.T) {
	for v, want := range map[diagnose.Verdict]int{
		diagnose.VerdictOK:       diagnoseHealthy,
		diagnose.VerdictWarning:  diagnoseWarning,
		diagnose.VerdictCritical: diagnoseCritical,
		"":                       diagnoseCouldNotRun,
	} {
		if got := exitCodeOf(v); got != want {
			t.Errorf("exitCodeOf(%q) = %d, want %d", v, got, want)
		}
	}
	if diagnoseHealthy != 0 || diagnoseWarning != 1 || diagnoseCritical != 2 || diagnoseCouldNotRun != 3 {
		t.Error("the documented exit codes changed")
	}
}

// fillSampler returns a sample of the given fill, or err.
type fillSampler struct {
	entries uint32
	err     error
}

func (f fillSampler) Sample(_ context.Context, target netns.Target, _ time.Duration) (diagnose.Sample, error) {
	if f.err != nil {
		return diagnose.Sample{}, f.err
	}
	start := time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC)
	snap := ctnl.Snapshot{Global: ctnl.GlobalStats{Entries: f.entries, MaxEntries: 1000}}
	return diagnose.Sample{
		Target: target, Start: start, End: start.Add(time.Second),
		Before: snap, After: snap,
		Settings: sysctl.Values{"nf_conntrack_tcp_timeout_established": 432000},
	}, nil
}

// runDiagnose runs the diagnose command with a fake sampler.
func runDiagnose(t *testing.T, s diagnose.Sampler, output string, netnsPaths ...string) (code int, stdout, stderr string) {
	t.Helper()
	d := &diagnoseCommand{
		common:   &commonFlags{netns: netnsPaths},
		duration: time.Millisecond, output: output, topK: 5,
		sampler: s, skipPreflight: true,
	}
	var out, errOut bytes.Buffer
	code = d.run(&out, &errOut)
	return code, out.String(), errOut.String()
}

func TestDiagnoseExitCodes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries uint32
		code    int
		verdict string
	}{
		{"healthy", 100, diagnoseHealthy, "verdict: OK"},
		{"warning", 800, diagnoseWarning, "verdict: WARNING"},
		{"critical", 950, diagnoseCritical, "verdict: CRITICAL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runDiagnose(t, fillSampler{entries: tc.entries}, outputText)
			if code != tc.code {
				t.Errorf("exit code %d, want %d", code, tc.code)
			}
			if !strings.Contains(stdout, tc.verdict+"\n") {
				t.Errorf("stdout lacks %q:\n%s", tc.verdict, stdout)
			}
			if stderr != "" {
				t.Errorf("stderr %q", stderr)
			}
		})
	}
}

func TestDiagnoseJSONOutput(t *testing.T) {
	code, stdout, _ := runDiagnose(t, fillSampler{entries: 950}, outputJSON, "/run/netns/a", "/run/netns/b")
	if code != diagnoseCritical {
		t.Errorf("exit code %d, want %d", code, diagnoseCritical)
	}
	var r diagnose.Report
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatalf("stdout is not a JSON report: %v\n%s", err, stdout)
	}
	if r.Verdict != diagnose.VerdictCritical || len(r.Namespaces) != 2 || r.Namespaces[1].Name != "b" {
		t.Errorf("report %+v", r)
	}
}

func TestDiagnoseCouldNotRun(t *testing.T) {
	for _, tc := range []struct {
		name   string
		d      diagnoseCommand
		stderr string
	}{
		{"zero duration", diagnoseCommand{duration: 0, topK: 5, output: outputText},
			"ct-exporter diagnose: --duration=0s: must be positive\n"},
		{"zero top-k", diagnoseCommand{duration: time.Second, topK: 0, output: outputText},
			"ct-exporter diagnose: --top-k=0: must be at least 1\n"},
		{"negative middlebox idle timeout", diagnoseCommand{duration: time.Second, topK: 5, middleboxIdle: -5 * time.Second, output: outputText},
			"ct-exporter diagnose: --middlebox-idle-timeout=-5s: must not be negative (0 turns the check off)\n"},
		{"duplicate namespace", diagnoseCommand{common: &commonFlags{netns: []string{"/run/netns/a", "/var/run/netns/a"}}, duration: time.Second, topK: 5},
			"ct-exporter diagnose: --conntrack.netns=/var/run/netns/a: same namespace name \"a\" as /run/netns/a\n"},
		{"missing namespace", diagnoseCommand{common: &commonFlags{netns: []string{"/run/netns/ct-exporter-does-not-exist"}}, duration: time.Second, topK: 5},
			"ct-exporter diagnose: --conntrack.netns=/run/netns/ct-exporter-does-not-exist: no such network namespace; create it (ip netns add NAME) or fix the path\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.d
			if d.common == nil {
				d.common = &commonFlags{}
			}
			var stdout, stderr bytes.Buffer
			if code := d.run(&stdout, &stderr); code != diagnoseCouldNotRun {
				t.Errorf("exit code %d, want %d", code, diagnoseCouldNotRun)
			}
			if stderr.String() != tc.stderr {
				t.Errorf("stderr %q, want %q", stderr.String(), tc.stderr)
			}
		})
	}
}

func TestDiagnoseNamespaceFailed(t *testing.T) {
	code, stdout, stderr := runDiagnose(t, fillSampler{err: errors.New("netns x (/run/netns/x): setns: operation not permitted")}, outputText, "/run/netns/x")
	if code != diagnoseCouldNotRun {
		t.Errorf("exit code %d, want %d", code, diagnoseCouldNotRun)
	}
	want := "ct-exporter diagnose: netns x: netns x (/run/netns/x): setns: operation not permitted\n"
	if stderr != want {
		t.Errorf("stderr %q, want %q", stderr, want)
	}
	if !strings.Contains(stdout, "NOT SAMPLED") {
		t.Errorf("the report does not show the namespace that failed:\n%s", stdout)
	}
}

func TestDiagnoseHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"diagnose", "--help"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit code %d: %s", code, stderr.String())
	}
	for _, flag := range []string{"--duration", "--output", "--top-k", "--conntrack.netns", "--middlebox-idle-timeout"} {
		if !strings.Contains(stdout.String(), flag) {
			t.Errorf("diagnose --help does not mention %s", flag)
		}
	}
}

func TestColorTerminal(t *testing.T) {
	if colorTerminal(&bytes.Buffer{}) {
		t.Error("a buffer is not a terminal")
	}
	f, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if colorTerminal(f) {
		t.Error("a regular file is not a terminal")
	}

	tty := openPTY(t)
	t.Setenv("TERM", "xterm")
	os.Unsetenv("NO_COLOR")
	if !colorTerminal(tty) {
		t.Error("a pseudo-terminal gets no colour")
	}
	t.Setenv("NO_COLOR", "")
	if colorTerminal(tty) {
		t.Error("NO_COLOR set, yet colour")
	}
	os.Unsetenv("NO_COLOR")
	t.Setenv("TERM", "dumb")
	if colorTerminal(tty) {
		t.Error("TERM=dumb, yet colour")
	}
}

// openPTY opens a pseudo-terminal and returns its terminal side.
func openPTY(t *testing.T) *os.File {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { ptmx.Close() })
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetUint32(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	tty, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open pty: %v", err)
	}
	t.Cleanup(func() { tty.Close() })
	return tty
}

// TestDiagnoseMiddleboxIdleTimeoutFlag parses the flag as the command line
// does: a duration, or one line and exit 3 for anything else.
func TestDiagnoseMiddleboxIdleTimeoutFlag(t *testing.T) {
	for _, tc := range []struct {
		arg, stderr string
	}{
		{"--middlebox-idle-timeout=soon", "ct-exporter: error: time: invalid duration \"soon\", try --help\n"},
		{"--middlebox-idle-timeout=350", "ct-exporter: error: time: missing unit in duration \"350\", try --help\n"},
		{"--middlebox-idle-timeout=-1m", "ct-exporter diagnose: --middlebox-idle-timeout=-1m0s: must not be negative (0 turns the check off)\n"},
	} {
		var stdout, stderr bytes.Buffer
		code := run([]string{"diagnose", "--duration=1ms", tc.arg, "--conntrack.netns=/run/netns/ct-exporter-does-not-exist"}, &stdout, &stderr)
		if code != diagnoseCouldNotRun || stderr.String() != tc.stderr || stdout.Len() != 0 {
			t.Errorf("%s: exit %d, stderr %q, stdout %q; want %d and %q", tc.arg, code, stderr.String(), stdout.String(), diagnoseCouldNotRun, tc.stderr)
		}
	}
}

// TestDiagnoseMiddleboxIdleTimeoutWarns runs the command with the flag on a
// sample whose keepalive time is the kernel default: a warning, exit 1.
func TestDiagnoseMiddleboxIdleTimeoutWarns(t *testing.T) {
	s := keepaliveSampler{fillSampler{entries: 100}}
	d := &diagnoseCommand{
		common: &commonFlags{}, duration: time.Millisecond, output: outputText, topK: 5,
		middleboxIdle: 350 * time.Second, sampler: s, skipPreflight: true,
	}
	var out, errOut bytes.Buffer
	if code := d.run(&out, &errOut); code != diagnoseWarning {
		t.Errorf("exit code %d, want %d\n%s%s", code, diagnoseWarning, out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), "[keepalive_below_idle_timeout]") {
		t.Errorf("no keepalive recommendation:\n%s", out.String())
	}
	d.middleboxIdle = 0
	out.Reset()
	if code := d.run(&out, &errOut); code != diagnoseHealthy {
		t.Errorf("without the flag: exit code %d, want %d\n%s", code, diagnoseHealthy, out.String())
	}
}

// keepaliveSampler adds the default keepalive settings to a sample.
type keepaliveSampler struct{ fillSampler }

func (k keepaliveSampler) Sample(ctx context.Context, target netns.Target, d time.Duration) (diagnose.Sample, error) {
	s, err := k.fillSampler.Sample(ctx, target, d)
	s.Keepalive = sysctl.Values{sysctl.KeepaliveTime: 7200, sysctl.KeepaliveInterval: 75, sysctl.KeepaliveProbes: 9}
	return s, err
}
