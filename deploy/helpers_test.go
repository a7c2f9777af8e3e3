package deploy_test

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
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// repoRoot is the absolute path of the repository: the parent of deploy/.
var repoRoot string

// scratchDir holds binaries shared by several tests. It is world-readable so
// that an unprivileged user can execute what is built into it.
var scratchDir string

func TestMain(m *testing.M) {
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "getwd:", err)
		os.Exit(1)
	}
	repoRoot = filepath.Dir(wd)
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

// inCI reports whether the tests run in CI, where nothing may be skipped.
func inCI() bool { return os.Getenv("CI") == "true" }

// skipOrFail skips the test outside CI and fails it in CI.
func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if inCI() {
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

// requireRoot skips a kernel test when not root, and fails it in CI.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "needs root (network namespaces, capabilities)")
	}
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
	out  []byte
	err  error
}

// exporterBinary builds ./cmd/ct-exporter once per test run and returns the
// path of the binary, executable by any user.
func exporterBinary(t *testing.T) string {
	t.Helper()
	goTool := needTool(t, "go")
	exporterBuild.once.Do(func() {
		p := filepath.Join(scratchDir, "ct-exporter")
		cmd := exec.Command(goTool, "build", "-o", p, "./cmd/ct-exporter")
		cmd.Dir = repoRoot
		exporterBuild.out, exporterBuild.err = cmd.CombinedOutput()
		exporterBuild.path = p
	})
	if exporterBuild.err != nil {
		t.Fatalf("go build ./cmd/ct-exporter: %v\n%s", exporterBuild.err, exporterBuild.out)
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

var netnsSeq atomic.Int64

// newNetns creates a throwaway network namespace with its loopback up and
// returns its name and path. It is deleted when the test ends, pass or fail.
func newNetns(t *testing.T) (name, path string) {
	t.Helper()
	ip := needTool(t, "ip")
	name = fmt.Sprintf("ctexp-deploy-%d-%d", os.Getpid(), netnsSeq.Add(1))
	if out, err := exec.Command(ip, "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command(ip, "netns", "delete", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v\n%s", name, err, out)
		}
	})
	if out, err := exec.Command(ip, "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("ip -n %s link set lo up: %v\n%s", name, err, out)
	}
	return name, "/run/netns/" + name
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

// startInNetns runs argv inside the named network namespace through
// `ip netns exec`. The process is killed when the test ends.
func startInNetns(t *testing.T, ns string, argv ...string) *process {
	t.Helper()
	ip := needTool(t, "ip")
	p := &process{done: make(chan struct{})}
	p.cmd = exec.Command(ip, append([]string{"netns", "exec", ns}, argv...)...)
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
// network namespace at nsPath. The socket is created on an OS thread that
// entered the namespace; the thread is discarded afterwards.
func httpGetInNetns(nsPath, addr, path string) (int, string, error) {
	type result struct {
		code int
		body string
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		// The goroutine never unlocks: the runtime ends the thread with it,
		// so no other goroutine ever runs in the namespace.
		runtime.LockOSThread()
		var r result
		r.code, r.body, r.err = func() (int, string, error) {
			fd, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return 0, "", fmt.Errorf("open %s: %w", nsPath, err)
			}
			defer unix.Close(fd)
			if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
				return 0, "", fmt.Errorf("setns %s: %w", nsPath, err)
			}
			conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
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
		}()
		ch <- r
	}()
	r := <-ch
	return r.code, r.body, r.err
}

// scrapeWhenUp polls path on addr inside the namespace until it answers 200,
// the process exits, or a generous deadline passes (a hang, not a speed
// check).
func scrapeWhenUp(t *testing.T, p *process, nsPath, addr, path string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var lastErr error
	for time.Now().Before(deadline) {
		if p.exited() {
			t.Fatalf("exporter exited before serving %s: %v\nstderr:\n%s", path, p.err, p.stderr.String())
		}
		code, body, err := httpGetInNetns(nsPath, addr, path)
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
