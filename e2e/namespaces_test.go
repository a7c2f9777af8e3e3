package e2e

import (
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/ct-exporter/ct-exporter/internal/netns"
	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

// netnsDir is a discovery directory of the test's own: namespaces
// appear in it by a bind mount, as ip netns add makes them appear in
// /run/netns, and vanish when unmounted. Namespaces other tests create in
// /run/netns meanwhile stay out of sight.
type netnsDir struct {
	path    string
	mu      sync.Mutex
	mounted map[string]bool
}

func newNetnsDir(t *testing.T) *netnsDir {
	t.Helper()
	d := &netnsDir{path: t.TempDir(), mounted: map[string]bool{}}
	t.Cleanup(func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		for name := range d.mounted {
			exec.Command("umount", filepath.Join(d.path, name)).Run()
		}
	})
	return d
}

// add makes namespace n appear in the directory under its name.
func (d *netnsDir) add(t *testing.T, n *nstest.Namespace) {
	t.Helper()
	dst := filepath.Join(d.path, n.Name)
	if err := os.WriteFile(dst, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	nstest.Run(t, "mount", "--bind", n.Path, dst)
	d.mu.Lock()
	d.mounted[n.Name] = true
	d.mu.Unlock()
}

// remove makes namespace n vanish from the directory.
func (d *netnsDir) remove(t *testing.T, n *nstest.Namespace) {
	t.Helper()
	dst := filepath.Join(d.path, n.Name)
	nstest.Run(t, "umount", dst)
	d.mu.Lock()
	delete(d.mounted, n.Name)
	d.mu.Unlock()
	if err := os.Remove(dst); err != nil {
		t.Fatal(err)
	}
}

// loopbackConns opens n TCP connections over loopback inside ns: n
// conntrack entries. They are closed when the returned function is
// called or the test ends.
func loopbackConns(t *testing.T, ns *nstest.Namespace, n int) (closeAll func()) {
	t.Helper()
	l := ns.Listen(t, "127.0.0.1:0")
	var conns []net.Conn
	accepted := make(chan net.Conn, n)
	go func() {
		for range n {
			c, err := l.Accept()
			if err != nil {
				break
			}
			accepted <- c
		}
		close(accepted)
	}()
	for i := range n {
		c, err := ns.Dial(t, l.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatalf("%s: connection %d of %d: %v", ns.Name, i+1, n, err)
		}
		conns = append(conns, c)
	}
	for c := range accepted {
		conns = append(conns, c)
	}
	closeAll = func() {
		for _, c := range conns {
			c.Close()
		}
		l.Close()
	}
	t.Cleanup(closeAll)
	return closeAll
}

// statCounters are the conntrack -S fields the exporter exports as
// conntrack_stat_<field>_total.
var statCounters = []string{
	"found", "invalid", "insert", "insert_failed", "drop", "early_drop",
	"error", "search_restart", "clash_resolve", "chaintoolong",
}

// waitFor scrapes until cond holds, failing the test after timeout.
func waitFor(t *testing.T, d *Daemon, timeout time.Duration, what string, cond func(map[string]*dto.MetricFamily) bool) map[string]*dto.MetricFamily {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		mfs := Families(t, d.Scrape(t))
		if cond(mfs) {
			return mfs
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// floor returns the lowest value of the unlabelled metric name over n
// scrapes: go_goroutines and process_open_fds also count the goroutines
// and sockets of the scrape being served, which vary between scrapes.
func floor(t *testing.T, d *Daemon, name string, n int) float64 {
	t.Helper()
	low := math.Inf(1)
	for range n {
		v, ok := Value(Families(t, d.Scrape(t)), name, nil)
		if !ok {
			t.Fatalf("scrape lacks %s", name)
		}
		low = min(low, v)
		time.Sleep(20 * time.Millisecond)
	}
	return low
}

// seriesOf counts the series of family name labelled netns=ns.
func seriesOf(mfs map[string]*dto.MetricFamily, ns string) int {
	n := 0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "netns" && l.GetValue() == ns {
					n++
				}
			}
		}
	}
	return n
}

func TestManyNamespacesDiscoveredAndDropped(t *testing.T) {
	nstest.RequireRoot(t, "conntrack", "mount", "umount")
	const total, traffic = 20, 6
	dir := newNetnsDir(t)
	var all []*nstest.Namespace
	for range total {
		all = append(all, nstest.NewNamespace(t))
	}
	// Traffic in some: namespace i of the first `traffic` holds i+1
	// connections, so a mix-up between namespaces shows.
	closers := map[string]func(){}
	wantEntries := map[string]int{}
	for i, ns := range all {
		if i%(total/traffic) == 0 && len(closers) < traffic {
			closers[ns.Name] = loopbackConns(t, ns, len(closers)+1)
		}
		wantEntries[ns.Name] = ns.CountEntries(t)
	}
	// stay: the 10 watched from the start to the end; leave: the 10
	// that appear while the exporter runs and are deleted again. Both
	// halves have namespaces with traffic.
	var stay, leave []*nstest.Namespace
	for i, ns := range all {
		if i%2 == 0 {
			stay = append(stay, ns)
		} else {
			leave = append(leave, ns)
		}
	}
	for _, ns := range stay {
		dir.add(t, ns)
	}

	d := startDaemon(t, "--conntrack.netns-discover="+dir.path, "--conntrack.netns-discover-interval=200ms")
	watched := func(n float64) func(map[string]*dto.MetricFamily) bool {
		return func(mfs map[string]*dto.MetricFamily) bool {
			v, _ := Value(mfs, "conntrack_exporter_watched_namespaces", nil)
			return v == n
		}
	}
	// 10 namespaces and the exporter's own.
	waitFor(t, d, 30*time.Second, "10 namespaces and self watched", watched(1+float64(len(stay))))
	baseFDs, baseGoroutines := floor(t, d, "process_open_fds", 8), floor(t, d, "go_goroutines", 8)
	t.Logf("with %d namespaces watched: %v open fds, %v goroutines", len(stay), baseFDs, baseGoroutines)

	// The other 10 appear and are picked up by the next rescan.
	for _, ns := range leave {
		dir.add(t, ns)
	}
	mfs := waitFor(t, d, 30*time.Second, "20 namespaces and self watched", watched(1+total))
	before := map[string]map[string]float64{}
	for _, ns := range all {
		before[ns.Name] = ns.ConntrackStats(t)
	}
	mfs = Families(t, d.Scrape(t))
	for _, ns := range all {
		checkNamespace(t, mfs, ns, wantEntries[ns.Name], before[ns.Name], ns.ConntrackStats(t))
	}
	for _, ns := range all {
		if v, ok := Value(mfs, "conntrack_netns_info", map[string]string{"netns": ns.Name, "source": "dir"}); !ok || v != 1 {
			t.Errorf("%s: conntrack_netns_info{source=\"dir\"} = %v (present %v)", ns.Name, v, ok)
		}
	}
	fullFDs, fullGoroutines := floor(t, d, "process_open_fds", 8), floor(t, d, "go_goroutines", 8)
	t.Logf("with %d namespaces watched: %v open fds, %v goroutines", total, fullFDs, fullGoroutines)

	// Delete 10 mid-run, traffic still open in the others.
	for _, ns := range leave {
		if c, ok := closers[ns.Name]; ok {
			c()
		}
		dir.remove(t, ns)
		ns.Delete(t)
	}
	mfs = waitFor(t, d, 30*time.Second, "deleted namespaces dropped", watched(1+float64(len(stay))))
	for _, ns := range leave {
		if n := seriesOf(mfs, ns.Name); n != 0 {
			t.Errorf("deleted %s still has %d series", ns.Name, n)
		}
	}
	// The daemon keeps serving the rest, new traffic included.
	more := stay[len(stay)-1]
	loopbackConns(t, more, 3)
	wantEntries[more.Name] = more.CountEntries(t)
	for _, ns := range stay {
		before[ns.Name] = ns.ConntrackStats(t)
	}
	mfs = Families(t, d.Scrape(t))
	for _, ns := range stay {
		checkNamespace(t, mfs, ns, wantEntries[ns.Name], before[ns.Name], ns.ConntrackStats(t))
	}

	// Every socket, file and goroutine of the deleted ones is released:
	// back to the figures with the same 10 watched.
	deadline := time.Now().Add(30 * time.Second)
	for {
		fds, goroutines := floor(t, d, "process_open_fds", 8), floor(t, d, "go_goroutines", 8)
		if fds <= baseFDs && goroutines <= baseGoroutines {
			t.Logf("after deleting %d: %v open fds, %v goroutines", len(leave), fds, goroutines)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after deleting %d namespaces: %v open fds, %v goroutines; with the same %d watched before: %v, %v",
				len(leave), fds, goroutines, len(stay), baseFDs, baseGoroutines)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if v, _ := Value(mfs, "conntrack_exporter_netns_over_limit", nil); v != 0 {
		t.Errorf("conntrack_exporter_netns_over_limit = %v", v)
	}
}

// checkNamespace compares the scrape's series of ns with the kernel's:
// entries exactly, each counter between two readings of conntrack -S
// taken around the scrape.
func checkNamespace(t *testing.T, mfs map[string]*dto.MetricFamily, ns *nstest.Namespace, entries int, before, after map[string]float64) {
	t.Helper()
	labels := map[string]string{"netns": ns.Name}
	if v, ok := Value(mfs, "conntrack_entries", labels); !ok || v != float64(entries) {
		t.Errorf("%s: conntrack_entries = %v (present %v), conntrack -C = %d", ns.Name, v, ok, entries)
	}
	for _, c := range statCounters {
		name := "conntrack_stat_" + c + "_total"
		v, ok := Value(mfs, name, labels)
		if !ok || v < before[c] || v > after[c] {
			t.Errorf("%s: %s = %v (present %v), conntrack -S %s between %v and %v", ns.Name, name, v, ok, c, before[c], after[c])
		}
	}
	for _, collector := range []string{"stats", "settings"} {
		if v, _ := Value(mfs, "conntrack_exporter_collector_success", map[string]string{"netns": ns.Name, "collector": collector}); v != 1 {
			t.Errorf("%s: %s collector_success = %v", ns.Name, collector, v)
		}
	}
}

func TestNamespaceCap(t *testing.T) {
	nstest.RequireRoot(t, "mount", "umount")
	dir := newNetnsDir(t)
	var all []*nstest.Namespace
	for range 5 {
		ns := nstest.NewNamespace(t)
		dir.add(t, ns)
		all = append(all, ns)
	}
	// Room for self and 2 of the 5.
	d := startDaemon(t, "--conntrack.netns-discover="+dir.path, "--conntrack.netns-max=3",
		"--conntrack.netns-discover-interval=200ms")
	mfs := Families(t, d.Scrape(t))
	if v, _ := Value(mfs, "conntrack_exporter_watched_namespaces", nil); v != 3 {
		t.Errorf("conntrack_exporter_watched_namespaces = %v, want 3", v)
	}
	if v, _ := Value(mfs, "conntrack_exporter_netns_over_limit", nil); v != 3 {
		t.Errorf("conntrack_exporter_netns_over_limit = %v, want 3", v)
	}
	watchedNames := func(mfs map[string]*dto.MetricFamily) []string {
		var out []string
		for _, ns := range all {
			if _, ok := Value(mfs, "conntrack_entries", map[string]string{"netns": ns.Name}); ok {
				out = append(out, ns.Name)
			}
		}
		return out
	}
	first := watchedNames(mfs)
	if len(first) != 2 {
		t.Fatalf("conntrack_entries for %v, want 2 of the 5", first)
	}
	if !strings.Contains(d.logs.String(), "more network namespaces than --conntrack.netns-max") {
		t.Error("no log line says namespaces are over the limit")
	}
	// One watched namespace goes: another takes its place.
	gone := all[0]
	for _, ns := range all {
		if ns.Name == first[0] {
			gone = ns
		}
	}
	dir.remove(t, gone)
	mfs = waitFor(t, d, 30*time.Second, "over-limit count down to 2", func(mfs map[string]*dto.MetricFamily) bool {
		v, _ := Value(mfs, "conntrack_exporter_netns_over_limit", nil)
		return v == 2
	})
	now := watchedNames(mfs)
	if len(now) != 2 || now[0] == gone.Name || now[1] == gone.Name || (now[0] != first[1] && now[1] != first[1]) {
		t.Errorf("watched %v after %s went, want %s kept and one more", now, gone.Name, first[1])
	}
}

func TestProcDiscoveryFollowsProcesses(t *testing.T) {
	nstest.RequireRoot(t, "unshare", "sleep")
	cmd := exec.Command("unshare", "--net", "sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	link := filepath.Join("/proc", strconv.Itoa(cmd.Process.Pid), "ns", "net")
	hostIno, err := netns.Self().Inode()
	if err != nil {
		t.Fatal(err)
	}
	host := fmt.Sprintf("net:[%d]", hostIno)
	var name string
	deadline := time.Now().Add(5 * time.Second)
	for {
		// Once the command is sleep, unshare has made the namespace.
		comm, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(cmd.Process.Pid), "comm"))
		l, _ := os.Readlink(link)
		if string(comm) == "sleep\n" && l != "" && l != host {
			name = "ino-" + strings.TrimSuffix(strings.TrimPrefix(l, "net:["), "]")
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("unshare did not enter a new namespace")
		}
		time.Sleep(10 * time.Millisecond)
	}

	d := startDaemon(t, "--conntrack.netns-discover-proc", "--conntrack.netns-max=100000",
		"--conntrack.netns-discover-interval=200ms")
	mfs := Families(t, d.Scrape(t))
	labels := map[string]string{"netns": name, "source": "proc", "pid": strconv.Itoa(cmd.Process.Pid), "comm": "sleep"}
	if v, ok := Value(mfs, "conntrack_netns_info", labels); !ok || v != 1 {
		t.Errorf("conntrack_netns_info%v = %v (present %v)", labels, v, ok)
	}
	for _, c := range []string{"stats", "settings"} {
		if v, _ := Value(mfs, "conntrack_exporter_collector_success", map[string]string{"netns": name, "collector": c}); v != 1 {
			t.Errorf("%s: %s collector_success = %v", name, c, v)
		}
	}
	if v, ok := Value(mfs, "conntrack_entries", map[string]string{"netns": "self"}); !ok {
		t.Errorf("self: conntrack_entries = %v (present %v)", v, ok)
	}
	// The exporter holds the namespace open while it watches it.
	ino := strings.TrimPrefix(name, "ino-")
	if !holdsNetns(t, d, ino) {
		t.Errorf("the exporter holds no file of namespace %s", ino)
	}

	// The process ends: the namespace goes with its series and file.
	cmd.Process.Kill()
	cmd.Wait()
	waitFor(t, d, 30*time.Second, name+" dropped", func(mfs map[string]*dto.MetricFamily) bool {
		return seriesOf(mfs, name) == 0
	})
	if holdsNetns(t, d, ino) {
		t.Errorf("the exporter still holds namespace %s open", ino)
	}
}

// holdsNetns reports whether the daemon has a file of the namespace with
// the given inode open.
func holdsNetns(t *testing.T, d *Daemon, ino string) bool {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", d.cmd.Process.Pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if l, _ := os.Readlink(filepath.Join(dir, e.Name())); l == "net:["+ino+"]" {
			return true
		}
	}
	return false
}

// lifetimeCount sums conntrack_flow_lifetime_seconds_count over the
// series of netns ns.
func lifetimeCount(mfs map[string]*dto.MetricFamily, ns string) (total uint64, endStates []string) {
	for _, m := range mfs["conntrack_flow_lifetime_seconds"].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["netns"] != ns {
			continue
		}
		total += m.GetHistogram().GetSampleCount()
		endStates = append(endStates, labels["protocol"]+"/"+labels["end_state"])
	}
	return total, endStates
}

func TestEventsOfEachNamespaceInItsOwnSeries(t *testing.T) {
	nstest.RequireRoot(t, "conntrack", "mount", "umount")
	dir := newNetnsDir(t)
	flows := map[string]int{}
	var all []*nstest.Namespace
	for i := range 4 {
		ns := nstest.NewNamespace(t)
		ns.Sysctl(t, "net.netfilter.nf_conntrack_events", "1")
		ns.Sysctl(t, "net.netfilter.nf_conntrack_timestamp", "1")
		all = append(all, ns)
		flows[ns.Name] = []int{3, 5, 2, 0}[i] // the fourth stays quiet
	}
	for _, ns := range all[:2] {
		dir.add(t, ns)
	}
	d := startDaemon(t, "--conntrack.netns-discover="+dir.path, "--conntrack.netns-discover-interval=200ms")
	// The other two appear while the exporter runs.
	for _, ns := range all[2:] {
		dir.add(t, ns)
	}
	waitFor(t, d, 30*time.Second, "all four watched", func(mfs map[string]*dto.MetricFamily) bool {
		for _, ns := range all {
			if _, ok := Value(mfs, "conntrack_entries", map[string]string{"netns": ns.Name}); !ok {
				return false
			}
		}
		return true
	})

	// Flows that reach ESTABLISHED, then a flush: one DESTROY each, in
	// its own namespace.
	for _, ns := range all {
		if flows[ns.Name] > 0 {
			loopbackConns(t, ns, flows[ns.Name])
		}
	}
	for _, ns := range all {
		ns.Conntrack(t, "-F")
	}
	mfs := waitFor(t, d, 30*time.Second, "every flow's lifetime observed", func(mfs map[string]*dto.MetricFamily) bool {
		for _, ns := range all {
			if n, _ := lifetimeCount(mfs, ns.Name); n < uint64(flows[ns.Name]) {
				return false
			}
		}
		return true
	})
	for _, ns := range all {
		n, states := lifetimeCount(mfs, ns.Name)
		t.Logf("%s: %d lifetimes in %v", ns.Name, n, states)
		if n != uint64(flows[ns.Name]) {
			t.Errorf("%s: %d lifetimes observed, %d flows flushed there", ns.Name, n, flows[ns.Name])
		}
		if v, _ := Value(mfs, "conntrack_exporter_collector_success", map[string]string{"netns": ns.Name, "collector": "events"}); v != 1 {
			t.Errorf("%s: events collector_success = %v", ns.Name, v)
		}
	}
}

func TestDiscoveryWithoutSysAdminStopsAtStart(t *testing.T) {
	nstest.RequireRoot(t, "setpriv")
	cmd := exec.Command("setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin", "--",
		binary, "--web.listen-address=127.0.0.1:0", "--conntrack.netns-discover=/run/netns")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("exit: %v, want code 1; output %q", err, out)
	}
	want := "ct-exporter: namespace discovery (--conntrack.netns-discover, --conntrack.netns-discover-proc) needs CAP_SYS_ADMIN to enter other network namespaces, and it is not in the effective set; run as root or grant it (deploy/systemd/netns.conf, deploy/kubernetes/netns)\n"
	if string(out) != want {
		t.Errorf("output:\n%q\nwant:\n%q", out, want)
	}
}
