package artifacts_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ct-exporter/ct-exporter/deploy/validate/internal/repo"
	"github.com/ct-exporter/ct-exporter/internal/lab"
	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

// repoRoot is the absolute path of the repository.
var repoRoot string

// scratchDir holds binaries shared by several tests. It is world-readable so
// that an unprivileged user can execute what is built into it.
var scratchDir string

func TestMain(m *testing.M) {
	var err error
	repoRoot, err = repo.Root()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	scratchDir, err = os.MkdirTemp("", "ct-exporter-deploy-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "scratch dir:", err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(scratchDir)
		if err := os.Chmod(scratchDir, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "scratch dir:", err)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

// defaultWait bounds how long a short command may run before it is
// killed: a guard against hangs, not a speed check.
const defaultWait = 2 * time.Minute

// skipOrFail skips the test outside CI and fails it in CI.
func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if nstest.InCI() {
		t.Fatalf("CI=true: "+format, args...)
	}
	t.Skipf(format, args...)
}

// needTool returns the path of an executable, or skips (fails in CI).
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		skipOrFail(t, "%s not found in PATH: %v", name, err)
	}
	return p
}

// repoPath returns the absolute path of a file given relative to the
// repository root.
func repoPath(rel string) string { return filepath.Join(repoRoot, filepath.FromSlash(rel)) }

// readRepoFile reads a file given relative to the repository root.
func readRepoFile(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(repoPath(rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var exporterBuild struct {
	once sync.Once
	path string
	err  error
}

// exporterBinary builds ./cmd/ct-exporter once per test run with
// lab.BuildExporter and returns the path of the binary, executable by any
// user.
func exporterBinary(t *testing.T) string {
	t.Helper()
	needTool(t, "go")
	exporterBuild.once.Do(func() {
		exporterBuild.path, exporterBuild.err = lab.BuildExporter(context.Background(), scratchDir)
	})
	if exporterBuild.err != nil {
		t.Fatal(exporterBuild.err)
	}
	return exporterBuild.path
}

// helpText returns what `ct-exporter --help` prints (kingpin prints it on
// stderr, others on stdout: both are returned).
func helpText(t *testing.T, bin string) string {
	t.Helper()
	out, err := exec.Command(bin, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("%s --help: %v\n%s", bin, err, out)
	}
	return string(out)
}

// process is a command started by startInNetns.
type process struct {
	cmd    *exec.Cmd
	stdout bytes.Buffer
	stderr bytes.Buffer
	done   chan struct{}
	err    error // valid once done is closed
}

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits for the process to end, killing it after timeout.
func (p *process) wait(timeout time.Duration) error {
	select {
	case <-p.done:
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("killed after %v: %w", timeout, p.err)
	}
	return p.err
}

// startInNetns runs argv inside the namespace through `ip netns exec`. The
// process is killed when the test ends.
func startInNetns(t *testing.T, ns *nstest.Namespace, argv ...string) *process {
	t.Helper()
	ip := needTool(t, "ip")
	p := &process{done: make(chan struct{})}
	p.cmd = exec.Command(ip, append([]string{"netns", "exec", ns.Name}, argv...)...)
	p.cmd.Stdout = &p.stdout
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %q: %v", argv, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%q stderr:\n%s", argv, p.stderr.String())
		}
	})
	return p
}

// httpGetInNetns performs one HTTP GET of http://addr+path from inside the
// namespace ns: the connection is opened there, the request is sent over it.
func httpGetInNetns(ns *nstest.Namespace, addr, path string) (int, string, error) {
	var conn net.Conn
	err := ns.Target().Do(func() error {
		var err error
		conn, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err
	})
	if err != nil {
		return 0, "", err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		return 0, "", err
	}
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return 0, "", err
	}
	req.Close = true
	if err := req.Write(conn); err != nil {
		return 0, "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", err
	}
	return resp.StatusCode, string(b), nil
}

// scrapeWhenUp polls path on addr inside the namespace until it answers 200,
// the process exits, or a generous deadline passes (a hang, not a speed
// check).
func scrapeWhenUp(t *testing.T, p *process, ns *nstest.Namespace, addr, path string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var lastErr error
	for time.Now().Before(deadline) {
		if p.exited() {
			t.Fatalf("exporter exited before serving %s: %v\nstderr:\n%s", path, p.err, p.stderr.String())
		}
		code, body, err := httpGetInNetns(ns, addr, path)
		if err == nil && code == http.StatusOK {
			return body
		}
		if err == nil {
			err = fmt.Errorf("HTTP %d: %s", code, firstLine(body))
		}
		lastErr = err
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("GET %s%s never answered 200: %v", addr, path, lastErr)
	return ""
}

// firstLine returns s up to its first newline.
func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// nonEmptyLines splits s into lines, dropping empty ones.
func nonEmptyLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}
