package artifacts_test

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

const (
	unitPath   = "deploy/systemd/ct-exporter.service"
	envPath    = "deploy/systemd/ct-exporter.env"
	sysctlPath = "deploy/systemd/90-ct-exporter.conf"

	// maxExposure is the highest acceptable "Overall exposure level" of
	// `systemd-analyze security` (0 = fully locked down, 10 = unprotected).
	maxExposure = 1.7
)

// unitFile is a parsed systemd unit: section -> key -> values in order.
type unitFile map[string]map[string][]string

// parseUnit parses the subset of the systemd unit syntax the project uses:
// sections, Key=Value lines (repeatable), comments, no line continuations.
func parseUnit(t *testing.T, b []byte) unitFile {
	t.Helper()
	u := unitFile{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
			continue
		case strings.HasSuffix(line, `\`):
			t.Fatalf("%s:%d: line continuations are not used in this unit", unitPath, n)
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not a Key=Value line in a section: %q", unitPath, n, line)
			}
			u[section][strings.TrimSpace(k)] = append(u[section][strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	return u
}

// last returns the value a unit setting ends up with when it is assigned
// once, or "" when absent.
func (u unitFile) last(section, key string) string {
	vs := u[section][key]
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}

// TestUnitGrantsWhatTheExporterNeeds guards the unit against hardening that
// would break the exporter while improving its score: it must keep the host
// network, netlink sockets, /proc/sys, and CAP_NET_ADMIN, and nothing more.
func TestUnitGrantsWhatTheExporterNeeds(t *testing.T) {
	u := parseUnit(t, readRepoFile(t, unitPath))
	svc := "Service"

	if got := u.last(svc, "CapabilityBoundingSet"); got != "CAP_NET_ADMIN" {
		t.Errorf("CapabilityBoundingSet=%q, want CAP_NET_ADMIN", got)
	}
	if got := u.last(svc, "AmbientCapabilities"); got != "CAP_NET_ADMIN" {
		t.Errorf("AmbientCapabilities=%q, want CAP_NET_ADMIN", got)
	}
	if u.last(svc, "DynamicUser") != "yes" {
		if user := u.last(svc, "User"); user == "" || user == "root" || user == "0" {
			t.Errorf("neither DynamicUser=yes nor a non-root User= (User=%q)", user)
		}
	}
	if u.last(svc, "NoNewPrivileges") != "yes" {
		t.Error("NoNewPrivileges=yes missing")
	}

	fams := strings.Fields(u.last(svc, "RestrictAddressFamilies"))
	slices.Sort(fams)
	if want := []string{"AF_INET", "AF_INET6", "AF_NETLINK", "AF_UNIX"}; !slices.Equal(fams, want) {
		t.Errorf("RestrictAddressFamilies=%v, want exactly %v", fams, want)
	}

	// Settings that would cut the exporter off from what it watches.
	for key, bad := range map[string]string{
		"PrivateNetwork": "yes", // the host's conntrack table is in the host netns
		"PrivateUsers":   "yes", // capabilities would not apply to the host netns
		"ProcSubset":     "pid", // hides /proc/sys/net/netfilter
	} {
		if u.last(svc, key) == bad {
			t.Errorf("%s=%s would break the exporter", key, bad)
		}
	}
	for _, v := range u[svc]["InaccessiblePaths"] {
		if strings.Contains(v, "/proc") {
			t.Errorf("InaccessiblePaths=%s hides /proc", v)
		}
	}

	exec := u.last(svc, "ExecStart")
	if !strings.HasPrefix(exec, "/usr/local/bin/ct-exporter ") || !strings.Contains(exec, "$CT_EXPORTER_ARGS") {
		t.Errorf("ExecStart=%q, want /usr/local/bin/ct-exporter $CT_EXPORTER_ARGS", exec)
	}
	if got := u.last(svc, "EnvironmentFile"); got != "-/etc/default/ct-exporter" {
		t.Errorf("EnvironmentFile=%q, want -/etc/default/ct-exporter", got)
	}
	if got := u.last("Install", "WantedBy"); got != "multi-user.target" {
		t.Errorf("WantedBy=%q, want multi-user.target", got)
	}
}

var exposureRE = regexp.MustCompile(`Overall exposure level for \S+: ([0-9]+(?:\.[0-9]+)?)`)

// TestUnitSecurityExposure runs systemd-analyze security on the unit file
// and requires an overall exposure level of at most maxExposure.
func TestUnitSecurityExposure(t *testing.T) {
	sa := needTool(t, "systemd-analyze")
	cmd := exec.Command(sa, "security", "--offline=true", "--no-pager", repoPath(unitPath))
	cmd.Env = append(os.Environ(), "SYSTEMD_COLORS=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := exposureRE.FindSubmatch(out)
	if m == nil {
		t.Fatalf("no \"Overall exposure level\" line in:\n%s", out)
	}
	score, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("systemd-analyze security: overall exposure level %.1f (limit %.1f)", score, maxExposure)
	if score > maxExposure {
		t.Errorf("exposure %.1f > %.1f:\n%s", score, maxExposure, out)
	}
}

// TestUnitVerify runs systemd-analyze verify on a copy of the unit whose
// ExecStart points at a freshly built binary (the only change), and requires
// it to exit 0 and print nothing.
func TestUnitVerify(t *testing.T) {
	sa := needTool(t, "systemd-analyze")
	bin := exporterBinary(t)
	unit := string(readRepoFile(t, unitPath))
	const installed = "ExecStart=/usr/local/bin/ct-exporter "
	if strings.Count(unit, installed) != 1 {
		t.Fatalf("want exactly one %q line", installed)
	}
	unit = strings.Replace(unit, installed, "ExecStart="+bin+" ", 1)
	dir := t.TempDir()
	copyPath := filepath.Join(dir, "ct-exporter.service")
	if err := os.WriteFile(copyPath, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sa, "verify", copyPath)
	cmd.Env = append(os.Environ(), "SYSTEMD_COLORS=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	if s := strings.TrimSpace(string(out)); s != "" {
		t.Errorf("systemd-analyze verify printed:\n%s", s)
	}
}

// envArgs returns the words of CT_EXPORTER_ARGS in the env file.
func envArgs(t *testing.T) []string {
	t.Helper()
	var args []string
	found := 0
	for _, line := range strings.Split(string(readRepoFile(t, envPath)), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || k != "CT_EXPORTER_ARGS" {
			t.Fatalf("%s: unexpected line %q", envPath, line)
		}
		if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
			t.Fatalf("%s: CT_EXPORTER_ARGS must be double-quoted: %q", envPath, v)
		}
		args = strings.Fields(v[1 : len(v)-1])
		found++
	}
	if found != 1 {
		t.Fatalf("%s: CT_EXPORTER_ARGS set %d times, want 1", envPath, found)
	}
	return args
}

var flagRE = regexp.MustCompile(`--[a-z][a-z0-9-]*(?:\.[a-z0-9-]+)+`)

// TestDocumentedFlagsExist checks that every exporter flag the env file
// sets or documents, and every one docs/INSTALL.md mentions, is one the
// binary knows.
func TestDocumentedFlagsExist(t *testing.T) {
	if len(envArgs(t)) == 0 {
		t.Fatal("CT_EXPORTER_ARGS is empty")
	}
	help := helpText(t, exporterBinary(t))
	for _, rel := range []string{envPath, "docs/INSTALL.md"} {
		flags := flagRE.FindAllString(string(readRepoFile(t, rel)), -1)
		if len(flags) == 0 {
			t.Errorf("no flags found in %s", rel)
		}
		for _, f := range flags {
			if !strings.Contains(help, f) {
				t.Errorf("%s mentions %s, which `ct-exporter --help` does not list", rel, f)
			}
		}
	}
}

// TestSysctlSnippet applies the sysctl.d snippet with sysctl(8) in a
// throwaway network namespace (both settings are per namespace) and reads
// the values back.
func TestSysctlSnippet(t *testing.T) {
	want := map[string]string{
		"net.netfilter.nf_conntrack_events":    "1",
		"net.netfilter.nf_conntrack_timestamp": "1",
	}
	got := map[string]string{}
	for _, line := range strings.Split(string(readRepoFile(t, sysctlPath)), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: not a key = value line: %q", sysctlPath, line)
		}
		got[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s sets %v, want %v", sysctlPath, got, want)
	}

	nstest.RequireRoot(t, "sysctl")
	sysctl := needTool(t, "sysctl")
	if _, err := os.Stat("/proc/sys/net/netfilter/nf_conntrack_events"); err != nil {
		skipOrFail(t, "conntrack sysctls absent (nf_conntrack not loaded?): %v", err)
	}
	ns := nstest.NewNamespace(t)
	p := startInNetns(t, ns, sysctl, "-p", repoPath(sysctlPath))
	if err := p.wait(defaultWait); err != nil {
		t.Fatalf("sysctl -p: %v\n%s%s", err, p.stdout.String(), p.stderr.String())
	}
	for k, v := range want {
		p := startInNetns(t, ns, sysctl, "-n", k)
		if err := p.wait(defaultWait); err != nil {
			t.Fatalf("sysctl -n %s: %v\n%s", k, err, p.stderr.String())
		}
		if got := strings.TrimSpace(p.stdout.String()); got != v {
			t.Errorf("after sysctl -p, %s = %q, want %q", k, got, v)
		}
	}
}

// securityChecks runs systemd-analyze security on the unit installed under
// root with its drop-ins and returns each check's verdict (true for ✓) by
// setting name, and the overall exposure level.
func securityChecks(t *testing.T, root string) (map[string]bool, float64) {
	t.Helper()
	sa := needTool(t, "systemd-analyze")
	cmd := exec.Command(sa, "security", "--offline=true", "--no-pager", "--root="+root, "ct-exporter.service")
	cmd.Env = append(os.Environ(), "SYSTEMD_COLORS=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	checks := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && (f[0] == "✓" || f[0] == "✗") {
			checks[f[1]] = f[0] == "✓"
		}
	}
	m := exposureRE.FindSubmatch(out)
	if m == nil {
		t.Fatalf("no \"Overall exposure level\" line in:\n%s", out)
	}
	score, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return checks, score
}

// TestNetnsDropIn installs the unit and the opt-in netns.conf drop-in into a
// scratch root and checks with systemd-analyze security that the drop-in
// merges as intended: CAP_SYS_ADMIN and joining network namespaces are
// added, every other restriction stays.
func TestNetnsDropIn(t *testing.T) {
	root := t.TempDir()
	sysDir := filepath.Join(root, "etc", "systemd", "system")
	if err := os.MkdirAll(filepath.Join(sysDir, "ct-exporter.service.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := copyFile(repoPath(unitPath), filepath.Join(sysDir, "ct-exporter.service")); err != nil {
		t.Fatal(err)
	}
	base, baseScore := securityChecks(t, root)
	if err := copyFile(repoPath("deploy/systemd/netns.conf"), filepath.Join(sysDir, "ct-exporter.service.d", "netns.conf")); err != nil {
		t.Fatal(err)
	}
	withDropIn, score := securityChecks(t, root)
	t.Logf("exposure: unit %.1f, with netns.conf %.1f", baseScore, score)

	changed := map[string]bool{"CapabilityBoundingSet=~CAP_SYS_ADMIN": true, "RestrictNamespaces=~net": true}
	for name := range changed {
		if !base[name] || withDropIn[name] {
			t.Errorf("%s: want ✓ without the drop-in and ✗ with it (got %v, %v)", name, base[name], withDropIn[name])
		}
	}
	for name, ok := range base {
		if !changed[name] && withDropIn[name] != ok {
			t.Errorf("the drop-in changes %s", name)
		}
	}
	if len(base) < 50 {
		t.Errorf("only %d checks parsed from systemd-analyze security", len(base))
	}
}
