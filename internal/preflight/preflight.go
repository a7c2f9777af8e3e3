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

// Check opens each target and reads its conntrack statistics once. The
// returned error, if any, is one line fit for a terminal.
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
			return fmt.Errorf("--conntrack.netns=%s: no such network namespace; create it (ip netns add NAME) or fix the path", t.Path)
		case errors.Is(err, netns.ErrNotNetns):
			return fmt.Errorf("--conntrack.netns=%s: not a network namespace file; pass /run/netns/NAME or /proc/PID/ns/net", t.Path)
		case err != nil:
			return fmt.Errorf("--conntrack.netns=%s: %v", t.Path, err)
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
		return errors.New("reading conntrack over netlink needs CAP_NET_ADMIN (operation not permitted); run as root or grant it, e.g. AmbientCapabilities=CAP_NET_ADMIN in the systemd unit or --cap-add NET_ADMIN for a container")
	case errors.Is(err, ctnl.ErrPermission):
		return fmt.Errorf("--conntrack.netns=%s: operation not permitted; entering another network namespace needs CAP_SYS_ADMIN and reading conntrack needs CAP_NET_ADMIN: run as root or grant both", t.Path)
	default:
		return fmt.Errorf("netns %s: reading conntrack over netlink: %v", t, err)
	}
}
