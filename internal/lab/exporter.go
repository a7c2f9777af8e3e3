package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// ErrExited reports that a ct-exporter process ended before it was ready.
var ErrExited = errors.New("ct-exporter exited before it was ready")

// ErrStopTimeout reports that a ct-exporter process did not end within the
// time Stop gives it after SIGINT, and was killed.
var ErrStopTimeout = errors.New("ct-exporter did not stop after SIGINT and was killed")

// Exporter is a ct-exporter process listening on a loopback port, started
// by StartExporter.
type Exporter struct {
	// Addr is the host:port it serves on.
	Addr string

	cmd    *exec.Cmd
	client *http.Client
	logs   *Lines
	waited chan struct{}
}

// Lines collects what a process writes, for reading while it runs.
// It is safe for concurrent use.
type Lines struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *Lines) add(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.WriteString(line)
	l.b.WriteByte('\n')
}

// Write appends p as it is, so that Lines can take a process's output.
func (l *Lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Write(p)
	return len(p), nil
}

// String returns everything written so far, each ended by a newline.
func (l *Lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// FreeLoopbackAddr returns a loopback address whose port is free now.
func FreeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free loopback port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// StartExporter runs binary with --web.listen-address on a free loopback
// port followed by args, and waits until its /-/ready answers 200. It
// gives up, stopping the process, when the process exits first (ErrExited)
// or ctx ends; the process itself does not depend on ctx. start starts
// the command; nil means (*exec.Cmd).Start.
func StartExporter(ctx context.Context, binary string, args []string, start func(*exec.Cmd) error) (*Exporter, error) {
	addr, err := FreeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	args = append([]string{"--web.listen-address=" + addr}, args...)
	e := &Exporter{
		Addr:   addr,
		cmd:    exec.Command(binary, args...),
		client: &http.Client{Timeout: 2 * time.Minute},
		logs:   &Lines{},
		waited: make(chan struct{}),
	}
	stderr, err := e.cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("ct-exporter: %w", err)
	}
	if start == nil {
		start = (*exec.Cmd).Start
	}
	if err := start(e.cmd); err != nil {
		return nil, fmt.Errorf("ct-exporter: %w", err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			e.logs.add(sc.Text())
		}
		_, _ = io.Copy(io.Discard, stderr)
		_ = e.cmd.Wait()
		close(e.waited)
	}()
	for {
		ready, err := e.ready(ctx)
		if ready {
			return e, nil
		}
		select {
		case <-e.waited:
			return nil, fmt.Errorf("%w: %s: %s\n%s", ErrExited, strings.Join(args, " "), e.cmd.ProcessState, e.logs)
		case <-ctx.Done():
			_ = e.Stop(10 * time.Second)
			return nil, fmt.Errorf("ct-exporter not ready: %w (last try: %v)\n%s", ctx.Err(), err, e.logs)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ready reports whether /-/ready answers 200.
func (e *Exporter) ready(ctx context.Context) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+e.Addr+"/-/ready", nil)
	if err != nil {
		return false, err
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("/-/ready: %s", resp.Status)
	}
	return true, nil
}

// Cmd returns the running command (for its process id).
func (e *Exporter) Cmd() *exec.Cmd { return e.cmd }

// PID returns the exporter's process id.
func (e *Exporter) PID() int { return e.cmd.Process.Pid }

// Log returns what the exporter has logged so far, and goes on collecting.
func (e *Exporter) Log() *Lines { return e.logs }

// Stop sends SIGINT and waits up to timeout for the exporter to exit; then
// it kills it and returns ErrStopTimeout. Stopping an exporter that has
// already exited returns nil.
func (e *Exporter) Stop(timeout time.Duration) error {
	_ = e.cmd.Process.Signal(os.Interrupt)
	select {
	case <-e.waited:
		return nil
	case <-time.After(timeout):
		_ = e.cmd.Process.Kill()
		<-e.waited
		return fmt.Errorf("%w (waited %s)", ErrStopTimeout, timeout)
	}
}

// ScrapeText reads /metrics and returns the exposition text and how long
// the request took, the body read included.
func (e *Exporter) ScrapeText(ctx context.Context) ([]byte, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+e.Addr+"/metrics", nil)
	if err != nil {
		return nil, 0, fmt.Errorf("scrape ct-exporter: %w", err)
	}
	start := time.Now()
	resp, err := e.client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("scrape ct-exporter: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	took := time.Since(start)
	if err != nil {
		return nil, 0, fmt.Errorf("scrape ct-exporter: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("scrape ct-exporter: status %s", resp.Status)
	}
	return body, took, nil
}

// Scrape reads /metrics and returns the parsed families and how long the
// request took.
func (e *Exporter) Scrape(ctx context.Context) (Metrics, time.Duration, error) {
	body, took, err := e.ScrapeText(ctx)
	if err != nil {
		return nil, 0, err
	}
	m, err := ParseMetrics(body)
	if err != nil {
		return nil, 0, fmt.Errorf("scrape ct-exporter: %w", err)
	}
	return m, took, nil
}
