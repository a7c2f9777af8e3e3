package diagnose

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ct-exporter/ct-exporter/internal/ctnl"
	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/sysctl"
)

// TableSource dumps a namespace's table and returns its breakdown.
type TableSource interface {
	Table(ctx context.Context, target netns.Target) (*TableSample, error)
}

// LifetimeSource watches a namespace's DESTROY events for the length of
// a sample.
type LifetimeSource interface {
	// Watch subscribes to the DESTROY events of target. The subscription
	// runs until the returned LifetimeWatch is stopped or ctx ends.
	Watch(ctx context.Context, target netns.Target) (LifetimeWatch, error)
}

// LifetimeWatch is one running subscription.
type LifetimeWatch interface {
	// Stop reads the events already queued, ends the subscription and
	// returns the lifetimes seen.
	Stop() (*LifetimeSample, error)
}

// KernelSampler samples a namespace of the running kernel. The zero value
// reads statistics over ctnetlink and settings from /proc/sys; Table and
// Lifetimes are optional, and their sections are reported as not
// available without them.
type KernelSampler struct {
	// Sysctls reads the settings; the zero value reads /proc/sys.
	Sysctls sysctl.Reader
	// Table dumps the table at the end of the sample.
	Table TableSource
	// Lifetimes subscribes to DESTROY events during the sample.
	Lifetimes LifetimeSource
	// SlabInfo and ModuleDir override /proc/slabinfo and /sys/module,
	// for tests.
	SlabInfo, ModuleDir string
}

// Sample implements Sampler. It reads the settings, starts the event
// subscription, reads the statistics, waits d, dumps the table, reads the
// statistics again and stops the subscription.
func (k KernelSampler) Sample(ctx context.Context, target netns.Target, d time.Duration) (Sample, error) {
	s := Sample{Target: target, Host: k.host()}
	var err error
	s.Settings, err = k.Sysctls.Read(ctx, target, sysctl.Conntrack()...)
	if err != nil {
		return Sample{}, fmt.Errorf("read settings: %w", err)
	}
	s.Keepalive, s.KeepaliveErr = k.Sysctls.ReadIPv4(ctx, target, sysctl.Keepalive()...)
	if s.KeepaliveErr == nil && len(s.Keepalive) == 0 {
		s.KeepaliveErr = fmt.Errorf("%w: no tcp_keepalive sysctls", ErrNotAvailable)
	}

	var watch LifetimeWatch
	switch {
	case k.Lifetimes == nil:
		s.LifetimesErr = fmt.Errorf("%w: this build has no DESTROY-event subscriber", ErrNotAvailable)
	case s.Settings[sysEvents] == 0 && s.Settings.Has(sysEvents):
		s.LifetimesErr = fmt.Errorf("%w: %s is 0, the kernel sends no DESTROY events", ErrNotAvailable, sysEvents)
	default:
		watch, err = k.Lifetimes.Watch(ctx, target)
		if err != nil {
			s.LifetimesErr = fmt.Errorf("subscribe to DESTROY events: %w", err)
			watch = nil
		}
	}
	stopWatch := func() {
		if watch == nil {
			return
		}
		l, werr := watch.Stop()
		if werr != nil {
			s.LifetimesErr = fmt.Errorf("DESTROY events: %w", werr)
		} else {
			s.Lifetimes = l
		}
		watch = nil
	}
	defer stopWatch()

	s.Before, err = ctnl.ReadSnapshot(ctx, target)
	if err != nil {
		return Sample{}, fmt.Errorf("read statistics: %w", err)
	}
	s.Start = time.Now()

	timer := time.NewTimer(d)
	select {
	case <-ctx.Done():
		timer.Stop()
		return Sample{}, fmt.Errorf("sample: %w", ctx.Err())
	case <-timer.C:
	}

	if k.Table == nil {
		s.TableErr = fmt.Errorf("%w: this build has no table scan", ErrNotAvailable)
	} else {
		s.Table, s.TableErr = k.Table.Table(ctx, target)
		if s.TableErr != nil {
			s.Table = nil
		}
	}

	s.After, err = ctnl.ReadSnapshot(ctx, target)
	if err != nil {
		return Sample{}, fmt.Errorf("read statistics: %w", err)
	}
	s.End = time.Now()
	if s.After.Inode != s.Before.Inode {
		return Sample{}, fmt.Errorf("netns %s was replaced during the sample", target)
	}
	stopWatch()
	return s, nil
}

// host reads what diagnose needs from the host.
func (k KernelSampler) host() HostInfo {
	slab := k.SlabInfo
	if slab == "" {
		slab = "/proc/slabinfo"
	}
	mods := k.ModuleDir
	if mods == "" {
		mods = "/sys/module"
	}
	size, _ := SlabObjectSize(slab)
	return HostInfo{SlabObjectBytes: size, Helpers: Helpers(mods)}
}

// SlabObjectSize returns the object size of the nf_conntrack slab cache
// from a /proc/slabinfo file (readable by root only).
func SlabObjectSize(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("slab object size: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		// name active_objs num_objs objsize objperslab pagesperslab ...
		if len(fields) < 4 || fields[0] != "nf_conntrack" {
			continue
		}
		n, err := strconv.ParseUint(fields[3], 10, 64)
		if err != nil || n == 0 {
			return 0, fmt.Errorf("slab object size: %s: bad objsize %q", path, fields[3])
		}
		return n, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("slab object size: %s: %w", path, err)
	}
	return 0, fmt.Errorf("slab object size: %s: %w", path, errNoSlab)
}

var errNoSlab = errors.New("no nf_conntrack cache")

// helperNames are the conntrack helpers of the kernel tree.
var helperNames = []string{"amanda", "ftp", "h323", "irc", "netbios_ns", "pptp", "sane", "sip", "snmp", "tftp"}

// Helpers lists the conntrack helpers built in or loaded, from the
// nf_conntrack_NAME directories under a /sys/module directory.
func Helpers(moduleDir string) []string {
	var out []string
	for _, name := range helperNames {
		if _, err := os.Stat(filepath.Join(moduleDir, "nf_conntrack_"+name)); err == nil {
			out = append(out, name)
		}
	}
	return out
}
