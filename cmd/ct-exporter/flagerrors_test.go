package main

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ct-exporter/ct-exporter/events"
	"github.com/ct-exporter/ct-exporter/internal/logging"
	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/preflight"
	"github.com/ct-exporter/ct-exporter/internal/topk"
	"github.com/ct-exporter/ct-exporter/internal/watch"
)

// TestFlagError: each library error gets the flag it came from, wrapped
// in context or not; other errors pass unchanged.
func TestFlagError(t *testing.T) {
	_, levelErr := logging.New("loud", "logfmt", nil)
	_, formatErr := logging.New("info", "xml", nil)
	other := errors.New("something else")
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&watch.SameNamespaceError{Path: "/run/netns/b", Earlier: "/run/netns/a"},
			"--conntrack.netns=/run/netns/b: same network namespace as --conntrack.netns=/run/netns/a"},
		{fmt.Errorf("start: %w", &watch.SameNamespaceError{Path: "/x", Earlier: "/y"}),
			"--conntrack.netns=/x: same network namespace as --conntrack.netns=/y"},
		{&preflight.PathError{Path: "/run/netns/x", Err: preflight.ErrNoNamespace},
			"--conntrack.netns=/run/netns/x: no such network namespace; create it (ip netns add NAME) or fix the path"},
		{&watch.SelfNameError{Path: "/run/netns/self", Name: "self"},
			`--conntrack.netns=/run/netns/self: name "self" is the exporter's own namespace`},
		{&netns.SameNameError{Path: "/var/run/netns/a", Name: "a", Earlier: "/run/netns/a"},
			`--conntrack.netns=/var/run/netns/a: same namespace name "a" as /run/netns/a`},
		{netns.ErrEmptyPath, "--conntrack.netns: empty path"},
		{fmt.Errorf("events: %w: denied", events.ErrEnableTimestamps),
			"--conntrack.enable-timestamps: events: cannot enable conntrack timestamps: denied"},
		{topk.WindowOptions{Window: 90 * time.Minute}.Validate(),
			"--events.top-window: invalid top-k window options: window 1h30m0s holds more than 60 steps of 1m0s"},
		{levelErr, `--log.level: unknown level "loud" (want debug, info, warn or error)`},
		{formatErr, `--log.format: unknown format "xml" (want logfmt or json)`},
		{other, "something else"},
	} {
		if got := flagError(tc.err); got == nil || got.Error() != tc.want {
			t.Errorf("flagError(%v) = %v, want %q", tc.err, got, tc.want)
		}
	}
	if flagError(nil) != nil {
		t.Error("flagError(nil) is not nil")
	}
	if got := flagError(topk.WindowOptions{Window: -time.Second}.Validate()); !errors.Is(got, topk.ErrOptions) {
		t.Errorf("flagError lost topk.ErrOptions: %v", got)
	}
	if got := flagError(&watch.SameNamespaceError{Path: "/x", Earlier: "/y"}); !errors.Is(got, watch.ErrSameNamespace) {
		t.Errorf("flagError lost the sentinel: %v", got)
	}
}
