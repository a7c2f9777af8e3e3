package artifacts_test

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

// nobody is the unprivileged user the exporter runs as in these tests.
const nobody = 65534

// Capability bits in /proc/PID/status capability masks.
const (
	capNetAdmin = uint64(1) << 12
	capSysAdmin = uint64(1) << 21
)

// listenInNetns is the listen address used inside throwaway namespaces: the
// namespace is new, so the exporter's default port is free.
const listenInNetns = "127.0.0.1:9549"

// setprivCaps turns a unit's capability list ("CAP_NET_ADMIN ...") into a
// setpriv capability list that starts from nothing ("-all,+net_admin").
func setprivCaps(t *testing.T, unitValue string) string {
	t.Helper()
	list := "-all"
	for _, c := range strings.Fields(unitValue) {
		name, ok := strings.CutPrefix(c, "CAP_")
		if !ok {
			t.Fatalf("unexpected capability %q in unit", c)
		}
		list += ",+" + strings.ToLower(name)
	}
	return list
}

// unitPrivileges returns setpriv arguments that reproduce the identity and
// capabilities ct-exporter.service grants, with the given drop-ins (paths
// relative to the repository) applied: an unprivileged user without groups,
// the ambient capabilities (which need to be inheritable), the bounding set,
// and no_new_privs. Capability settings of drop-ins merge with the unit's,
// as systemd merges them.
func unitPrivileges(t *testing.T, dropIns ...string) []string {
	t.Helper()
	u := parseUnit(t, readRepoFile(t, unitPath))
	merged := func(key string) string {
		v := strings.Join(u["Service"][key], " ")
		for _, d := range dropIns {
			v += " " + strings.Join(parseUnit(t, readRepoFile(t, d))["Service"][key], " ")
		}
		return v
	}
	ambient := setprivCaps(t, merged("AmbientCapabilities"))
	args := []string{
		fmt.Sprintf("--reuid=%d", nobody), fmt.Sprintf("--regid=%d", nobody), "--clear-groups",
		"--inh-caps=" + ambient,
		"--ambient-caps=" + ambient,
		"--bounding-set=" + setprivCaps(t, merged("CapabilityBoundingSet")),
	}
	if u.last("Service", "NoNewPrivileges") == "yes" {
		args = append(args, "--no-new-privs")
	}
	return args
}

// withListenAddress returns args with any --web.listen-address replaced by
// (or, when absent, extended with) one for addr.
func withListenAddress(args []string, addr string) []string {
	out := []string{"--web.listen-address=" + addr}
	for i := 0; i < len(args); i++ {
		switch {
		case strings.HasPrefix(args[i], "--web.listen-address="):
		case args[i] == "--web.listen-address":
			i++
		default:
			out = append(out, args[i])
		}
	}
	return out
}

// procStatus returns the fields of /proc/PID/status.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

// checkRunsAs asserts that the process p (ip netns exec and setpriv both
// exec, so its PID is the exporter's) is bin, runs as uid, and has exactly
// the effective capabilities capEff.
func checkRunsAs(t *testing.T, p *process, bin string, uid int, capEff uint64) {
	t.Helper()
	pid := p.cmd.Process.Pid
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		t.Fatal(err)
	}
	if exe != bin {
		t.Fatalf("PID %d runs %s, want %s", pid, exe, bin)
	}
	st := procStatus(t, pid)
	if uids := strings.Fields(st["Uid"]); len(uids) != 4 || uids[0] != strconv.Itoa(uid) || uids[1] != strconv.Itoa(uid) {
		t.Errorf("exporter Uid: %q, want real and effective %d", st["Uid"], uid)
	}
	eff, err := strconv.ParseUint(st["CapEff"], 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	if eff != capEff {
		t.Errorf("exporter CapEff=%016x, want %016x", eff, capEff)
	}
}

// checkMetrics scrapes the exporter in the namespace and checks the
// endpoints the deployments rely on.
func checkMetrics(t *testing.T, p *process, ns *nstest.Namespace) {
	t.Helper()
	body := scrapeWhenUp(t, p, ns, listenInNetns, "/metrics")
	for _, want := range []string{`conntrack_entries{netns="self"}`, "conntrack_stat_found_total"} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %s", want)
		}
	}
	for _, path := range []string{"/-/healthy", "/-/ready"} {
		code, _, err := httpGetInNetns(ns, listenInNetns, path)
		if err != nil || code != 200 {
			t.Errorf("GET %s: %d, %v; want 200", path, code, err)
		}
	}
	if t.Failed() {
		t.Logf("scrape:\n%s", body)
	}
}

// TestRunsWithUnitPrivileges runs the exporter the way ct-exporter.service
// does, as far as setpriv can reproduce it (user, ambient and bounding
// capabilities, no_new_privs, the env file's flags), inside a throwaway
// network namespace, and scrapes it.
func TestRunsWithUnitPrivileges(t *testing.T) {
	nstest.RequireRoot(t, "setpriv")
	setpriv := needTool(t, "setpriv")
	bin := exporterBinary(t)
	ns := nstest.NewNamespace(t)

	argv := append([]string{setpriv}, unitPrivileges(t)...)
	argv = append(argv, "--", bin)
	argv = append(argv, withListenAddress(envArgs(t), listenInNetns)...)
	t.Logf("ip netns exec %s %s", ns.Name, strings.Join(argv, " "))
	p := startInNetns(t, ns, argv...)

	checkMetrics(t, p, ns)
	checkRunsAs(t, p, bin, nobody, capNetAdmin)
}

// TestFailsWithoutNetAdmin runs the exporter unprivileged without any
// capability: it must exit non-zero with one line on stderr that names
// CAP_NET_ADMIN.
func TestFailsWithoutNetAdmin(t *testing.T) {
	nstest.RequireRoot(t, "setpriv")
	setpriv := needTool(t, "setpriv")
	bin := exporterBinary(t)
	ns := nstest.NewNamespace(t)

	p := startInNetns(t, ns, setpriv,
		fmt.Sprintf("--reuid=%d", nobody), fmt.Sprintf("--regid=%d", nobody), "--clear-groups",
		"--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--no-new-privs",
		"--", bin, "--web.listen-address="+listenInNetns)
	err := p.wait(defaultWait)
	stderr := p.stderr.String()
	t.Logf("exit: %v; stderr: %q", err, stderr)
	if _, ok := err.(*exec.ExitError); !ok {
		t.Fatalf("want a non-zero exit, got %v", err)
	}
	lines := nonEmptyLines(stderr)
	if len(lines) != 1 {
		t.Fatalf("want exactly one line on stderr, got %d:\n%s", len(lines), stderr)
	}
	if !strings.Contains(lines[0], "CAP_NET_ADMIN") {
		t.Errorf("stderr line does not name CAP_NET_ADMIN: %q", lines[0])
	}
}

// TestNetnsDropInPrivileges checks what deploy/systemd/netns.conf claims:
// with the unit's privileges alone the exporter cannot watch another
// namespace and says so in one line naming CAP_SYS_ADMIN; with the drop-in's
// capabilities added it serves that namespace's metrics.
func TestNetnsDropInPrivileges(t *testing.T) {
	nstest.RequireRoot(t, "setpriv")
	setpriv := needTool(t, "setpriv")
	bin := exporterBinary(t)
	target := nstest.NewNamespace(t)
	flags := []string{"--web.listen-address=" + listenInNetns, "--conntrack.netns=" + target.Path}

	t.Run("unit-only", func(t *testing.T) {
		ns := nstest.NewNamespace(t)
		argv := append(append([]string{setpriv}, unitPrivileges(t)...), "--", bin)
		p := startInNetns(t, ns, append(argv, flags...)...)
		err := p.wait(defaultWait)
		t.Logf("exit: %v; stderr: %q", err, p.stderr.String())
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatalf("want a non-zero exit, got %v", err)
		}
		lines := nonEmptyLines(p.stderr.String())
		if len(lines) != 1 || !strings.Contains(lines[0], "CAP_SYS_ADMIN") {
			t.Errorf("want one stderr line naming CAP_SYS_ADMIN, got %q", lines)
		}
	})
	t.Run("with-drop-in", func(t *testing.T) {
		ns := nstest.NewNamespace(t)
		argv := append(append([]string{setpriv}, unitPrivileges(t, "deploy/systemd/netns.conf")...), "--", bin)
		argv = append(argv, flags...)
		t.Logf("ip netns exec %s %s", ns.Name, strings.Join(argv, " "))
		p := startInNetns(t, ns, argv...)
		body := scrapeWhenUp(t, p, ns, listenInNetns, "/metrics")
		want := fmt.Sprintf("conntrack_entries{netns=%q}", target.Name)
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %s:\n%s", want, body)
		}
		checkRunsAs(t, p, bin, nobody, capNetAdmin|capSysAdmin)
	})
}
