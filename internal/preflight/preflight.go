// Package preflight checks, before the exporter serves, that every watched
// namespace exists and that conntrack can be read in it, and turns each
// failure into one line that names the cause and the fix.
package preflight

import (
	"context"
	"errors"
	"fmt"

	"github.com/ct-exporter/ct-exporter/internal/ctnl"
	"github.com/ct-exporter/ct-exporter/internal/netns"
)

// Reasons of a PathError that name the fix.
var (
	ErrNoNamespace  = errors.New("no such network namespace; create it (ip netns add NAME) or fix the path")
	ErrNotNamespace = errors.New("not a network namespace file; pass /run/netns/NAME or /proc/PID/ns/net")
	ErrNotPermitted = errors.New("operation not permitted; entering another network namespace needs CAP_SYS_ADMIN and reading conntrack needs CAP_NET_ADMIN: run as root or grant both")
)

// ErrNeedNetAdmin reports that the exporter's own namespace cannot be read
// for want of CAP_NET_ADMIN.
var ErrNeedNetAdmin = errors.New("reading conntrack over netlink needs CAP_NET_ADMIN (operation not permitted); run as root or grant it, e.g. AmbientCapabilities=CAP_NET_ADMIN in the systemd unit or --cap-add NET_ADMIN for a container")

// PathError is a failed check of a namespace reached through a path. Its
// text is the path, a colon and the reason.
type PathError struct {
	Path string
	Err  error
}

// Error implements error.
func (e *PathError) Error() string { return e.Path + ": " + e.Err.Error() }

// Unwrap returns the reason.
func (e *PathError) Unwrap() error { return e.Err }

// Check opens each target and reads its conntrack statistics once. The
// returned error, if any, is one line fit for a terminal: ErrNeedNetAdmin,
// a *PathError for a target reached through a path, or a wrapped error.
func Check(ctx context.Context, targets []netns.Target) error {
	for _, t := range targets {
		if err := checkOne(ctx, t); err != nil {
			return err
		}
	}
	return nil
}

func checkOne(ctx context.Context, t netns.Target) error {
	if !t.IsSelf() {
		f, err := t.Open()
		switch {
		case errors.Is(err, netns.ErrNotExist):
			return &PathError{Path: t.Path, Err: ErrNoNamespace}
		case errors.Is(err, netns.ErrNotNetns):
			return &PathError{Path: t.Path, Err: ErrNotNamespace}
		case err != nil:
			return &PathError{Path: t.Path, Err: err}
		}
		f.Close()
	}
	c, err := ctnl.Dial(t)
	if err == nil {
		_, err = c.GlobalStats(ctx)
		c.Close()
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ctnl.ErrPermission) && t.IsSelf():
		return ErrNeedNetAdmin
	case errors.Is(err, ctnl.ErrPermission):
		return &PathError{Path: t.Path, Err: ErrNotPermitted}
	default:
		return fmt.Errorf("netns %s: reading conntrack over netlink: %v", t, err)
	}
}
