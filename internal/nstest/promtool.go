package nstest

import (
	"os/exec"
	"strings"
	"testing"
)

// PromtoolPath returns the path of promtool. A missing promtool skips the
// test outside CI and fails it in CI (apt-get install prometheus).
func PromtoolPath(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		if InCI() {
			t.Fatalf("promtool not found (apt-get install prometheus): %v", err)
		}
		t.Skipf("promtool not found: %v", err)
	}
	return path
}

// Promtool runs promtool with args in dir; a non-zero exit fails the test
// with what promtool printed.
func Promtool(t testing.TB, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command(PromtoolPath(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
}
