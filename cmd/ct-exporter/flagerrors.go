package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/ct-exporter/ct-exporter/events"
	"github.com/ct-exporter/ct-exporter/internal/logging"
	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/preflight"
	"github.com/ct-exporter/ct-exporter/internal/topk"
	"github.com/ct-exporter/ct-exporter/internal/watch"
)

// flagError names the flag behind an error of the library packages, which
// know no flags: a namespace path is a --conntrack.netns value, a failed
// timestamp switch is --conntrack.enable-timestamps, an unknown log level
// or format is --log.level or --log.format, invalid top-k window options
// are --events.top-window. Other errors are returned as
// they are.
func flagError(err error) error {
	var (
		path     *preflight.PathError
		selfName *watch.SelfNameError
		same     *watch.SameNamespaceError
		sameName *netns.SameNameError
	)
	switch {
	case err == nil:
		return nil
	case errors.As(err, &same):
		return fmt.Errorf("--conntrack.netns=%s: %w as --conntrack.netns=%s", same.Path, watch.ErrSameNamespace, same.Earlier)
	case errors.As(err, &path):
		return fmt.Errorf("--conntrack.netns=%w", path)
	case errors.As(err, &selfName):
		return fmt.Errorf("--conntrack.netns=%w", selfName)
	case errors.As(err, &sameName):
		return fmt.Errorf("--conntrack.netns=%w", sameName)
	case errors.Is(err, netns.ErrEmptyPath):
		return fmt.Errorf("--conntrack.netns: %w", netns.ErrEmptyPath)
	case errors.Is(err, logging.ErrUnknownLevel):
		return errors.New("--log.level: " + strings.TrimPrefix(err.Error(), "log level: "))
	case errors.Is(err, logging.ErrUnknownFormat):
		return errors.New("--log.format: " + strings.TrimPrefix(err.Error(), "log format: "))
	case errors.Is(err, events.ErrEnableTimestamps):
		return fmt.Errorf("--conntrack.enable-timestamps: %w", err)
	case errors.Is(err, topk.ErrOptions):
		return fmt.Errorf("--events.top-window: %w", err)
	}
	return err
}
