package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/ct-exporter/ct-exporter/internal/discovery"
	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/watch"
)

// Defaults of the namespace discovery flags.
const (
	defaultNetnsMax              = 256
	defaultNetnsDiscoverInterval = 30 * time.Second
)

// namespaceFlags are the serve flags that choose the namespaces watched
// besides the --conntrack.netns paths.
type namespaceFlags struct {
	discoverDirs []string
	discoverProc bool
	interval     time.Duration
	max          int
	self         bool
	selfSet      bool
}

// addNamespaceFlags adds the namespace discovery flags to cmd.
func addNamespaceFlags(cmd *kingpin.CmdClause) *namespaceFlags {
	f := &namespaceFlags{}
	cmd.Flag("conntrack.netns-discover",
		"Watch every network namespace file in this directory, e.g. /run/netns (ip netns, containerd and CRI-O pod namespaces), labelled netns=\"<file name>\"; namespaces that appear or vanish are picked up on each rescan. Repeatable. Entering other namespaces needs CAP_SYS_ADMIN.").
		PlaceHolder("DIR").StringsVar(&f.discoverDirs)
	cmd.Flag("conntrack.netns-discover-proc",
		"Watch every network namespace a process is in (/proc/*/ns/net, one per inode), labelled netns=\"ino-<inode>\" unless a discovery directory names it; conntrack_netns_info gives its lowest PID, command and cgroup. Needs CAP_SYS_ADMIN and ptrace access to the processes (root, or CAP_SYS_PTRACE); in a container, the host's PID namespace.").
		BoolVar(&f.discoverProc)
	cmd.Flag("conntrack.netns-discover-interval", "Time between rescans for namespaces that appeared or vanished.").
		Default(defaultNetnsDiscoverInterval.String()).DurationVar(&f.interval)
	cmd.Flag("conntrack.netns-max",
		"Most network namespaces watched at once. The exporter's own and --conntrack.netns paths always are; discovered ones beyond it are counted in conntrack_exporter_netns_over_limit.").
		Default(fmt.Sprint(defaultNetnsMax)).IntVar(&f.max)
	cmd.Flag("conntrack.netns-self",
		"Watch the exporter's own network namespace as netns=\"self\" (--no-conntrack.netns-self: do not, and leave it out of discovery). Default: on, unless --conntrack.netns paths are given without discovery.").
		IsSetByUser(&f.selfSet).BoolVar(&f.self)
	return f
}

// discovering reports whether a discovery flag is given.
func (f *namespaceFlags) discovering() bool { return len(f.discoverDirs) > 0 || f.discoverProc }

// staticTargets checks the flags and returns the namespaces watched for
// the whole run: the exporter's own (unless left out) and paths.
func (f *namespaceFlags) staticTargets(paths []string) ([]netns.Target, error) {
	if f.max < 1 {
		return nil, fmt.Errorf("--conntrack.netns-max=%d: must be at least 1", f.max)
	}
	if f.interval <= 0 {
		return nil, fmt.Errorf("--conntrack.netns-discover-interval=%s: must be positive", f.interval)
	}
	for _, d := range f.discoverDirs {
		if d == "" {
			return nil, errors.New("--conntrack.netns-discover: empty directory")
		}
	}
	self := len(paths) == 0 || f.discovering()
	if f.selfSet {
		self = f.self
	}
	if !self && len(paths) == 0 && !f.discovering() {
		return nil, errors.New("--no-conntrack.netns-self: nothing left to watch; add --conntrack.netns or a discovery flag")
	}
	targets, err := watch.StaticTargets(paths, self)
	return targets, flagError(err)
}

// checkTargets returns what the start-up checks read: the static
// targets, or the exporter's own namespace when there are none, so that a
// missing CAP_NET_ADMIN is still one clear line.
func checkTargets(static []netns.Target) []netns.Target {
	if len(static) == 0 {
		return []netns.Target{netns.Self()}
	}
	return static
}

// errDiscoveryNeedsSysAdmin is the start-up error of discovery without
// the capability to enter the namespaces it finds.
var errDiscoveryNeedsSysAdmin = errors.New("namespace discovery (--conntrack.netns-discover, --conntrack.netns-discover-proc) needs CAP_SYS_ADMIN to enter other network namespaces, and it is not in the effective set; run as root or grant it (deploy/systemd/netns.conf, deploy/kubernetes/netns)")

// checkDiscoveryPrivileges fails when discovery is on but the process may
// not enter other namespaces: each one found would fail on every scrape.
// When the capabilities cannot be read, the collectors tell instead.
func (f *namespaceFlags) checkDiscoveryPrivileges() error {
	if !f.discovering() {
		return nil
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return nil
	}
	if data[unix.CAP_SYS_ADMIN/32].Effective&(1<<(unix.CAP_SYS_ADMIN%32)) == 0 {
		return errDiscoveryNeedsSysAdmin
	}
	return nil
}

// namespaceSet returns the set of watched namespaces that starts and
// stops watchers and makes forgetters forget with each namespace. It fails
// when discovery is on without the privileges it needs.
func (f *namespaceFlags) namespaceSet(static []netns.Target, watchers map[string]watch.Watcher, forgetters []watch.Forgetter, logger *zap.Logger) (*watch.Set, error) {
	if err := f.checkDiscoveryPrivileges(); err != nil {
		return nil, err
	}
	cfg := watch.Config{
		Static:     static,
		Max:        f.max,
		Interval:   f.interval,
		Watchers:   watchers,
		Forgetters: forgetters,
		Logger:     logger,
	}
	if f.discovering() {
		cfg.Discoverer = discovery.New(discovery.Options{
			Dirs:    f.discoverDirs,
			Proc:    f.discoverProc,
			SkipPID: os.Getpid(),
		})
	}
	return watch.New(cfg)
}
