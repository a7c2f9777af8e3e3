package e2e

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

// coreFamilies must be in every scrape of a healthy namespace.
var coreFamilies = []string{
	"conntrack_entries", "conntrack_entries_limit", "conntrack_fill_ratio",
	"conntrack_stat_found_total", "conntrack_stat_invalid_total", "conntrack_stat_insert_total",
	"conntrack_stat_insert_failed_total", "conntrack_stat_drop_total", "conntrack_stat_early_drop_total",
	"conntrack_stat_error_total", "conntrack_stat_search_restart_total", "conntrack_stat_clash_resolve_total",
	"conntrack_stat_chaintoolong_total", "conntrack_tcp_timeout_seconds", "conntrack_buckets",
	"conntrack_events_mode", "conntrack_timestamp_enabled", "conntrack_acct_enabled",
	"conntrack_tcp_be_liberal", "conntrack_tcp_loose", "conntrack_tcp_max_retrans",
	"conntrack_tcp_keepalive_time_seconds", "conntrack_tcp_keepalive_interval_seconds", "conntrack_tcp_keepalive_probes",
	"conntrack_exporter_collector_success", "conntrack_exporter_collector_duration_seconds",
	"conntrack_exporter_build_info", "go_goroutines", "process_resident_memory_bytes",
}

func TestDaemonServesNamespacesAndSurvivesOneVanishing(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	p := nstest.NewPair(t)
	p.Connect(t, 4)
	d := startDaemon(t, "--conntrack.netns="+p.A.Path, "--conntrack.netns="+p.B.Path)

	text := d.Scrape(t)
	mfs := Families(t, text)
	for _, name := range coreFamilies {
		if _, ok := mfs[name]; !ok {
			t.Errorf("scrape lacks %s", name)
		}
	}
	for _, ns := range []*nstest.Namespace{p.A, p.B} {
		got, ok := Value(mfs, "conntrack_entries", map[string]string{"netns": ns.Name})
		want := ns.CountEntries(t)
		t.Logf("netns %s: conntrack_entries %v, conntrack -C %d", ns.Name, got, want)
		if !ok || got != float64(want) || want != 4 {
			t.Errorf("netns %s: conntrack_entries = %v (present %v), conntrack -C = %d, want 4", ns.Name, got, ok, want)
		}
		if v, _ := Value(mfs, "conntrack_exporter_collector_success", map[string]string{"netns": ns.Name, "collector": "stats"}); v != 1 {
			t.Errorf("netns %s: stats collector_success = %v", ns.Name, v)
		}
	}

	if promtool, err := exec.LookPath("promtool"); err == nil {
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(text)
		out, err := cmd.CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) != 0 {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	} else if nstest.InCI() {
		t.Error("promtool not installed")
	}

	// A namespace vanishing is a collector failure, not a dead daemon.
	p.A.Delete(t)
	mfs = Families(t, d.Scrape(t))
	if v, ok := Value(mfs, "conntrack_exporter_collector_success", map[string]string{"netns": p.A.Name, "collector": "stats"}); !ok || v != 0 {
		t.Errorf("vanished netns: stats collector_success = %v (present %v), want 0", v, ok)
	}
	if _, ok := Value(mfs, "conntrack_entries", map[string]string{"netns": p.A.Name}); ok {
		t.Error("vanished netns still has conntrack_entries")
	}
	if v, _ := Value(mfs, "conntrack_entries", map[string]string{"netns": p.B.Name}); v != 4 {
		t.Errorf("remaining netns: conntrack_entries = %v, want 4", v)
	}
	if !strings.Contains(d.logs.String(), "collector failed") {
		t.Error("no log line says why the collector failed")
	}
}
