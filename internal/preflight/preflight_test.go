package preflight

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

func TestCheckPathErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for path, tc := range map[string]struct {
		reason error
		want   string
	}{
		missing: {ErrNoNamespace, missing + ": no such network namespace; create it (ip netns add NAME) or fix the path"},
		plain:   {ErrNotNamespace, plain + ": not a network namespace file; pass /run/netns/NAME or /proc/PID/ns/net"},
	} {
		err := Check(context.Background(), []netns.Target{{Name: "x", Path: path}})
		var pe *PathError
		if !errors.As(err, &pe) || pe.Path != path || !errors.Is(err, tc.reason) || err.Error() != tc.want {
			t.Errorf("Check(%s) = %v, want %q", path, err, tc.want)
		}
	}
}

func TestCheckRealNamespace(t *testing.T) {
	nstest.RequireRoot(t)
	ns := nstest.NewNamespace(t)
	if err := Check(context.Background(), []netns.Target{netns.Self(), ns.Target()}); err != nil {
		t.Fatalf("Check as root: %v", err)
	}
}
