package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/ct-exporter/ct-exporter/internal/lab"
	"github.com/ct-exporter/ct-exporter/internal/netns"
)

// EventFloorInterval is how often the floor drains its socket: the
// exporter's default events.DefaultCoalesce (a test of package events
// checks that they agree; package events' tests import this one).
const EventFloorInterval = 5 * time.Second

// EventFloor is the floor of the event path: a child process that only
// receives the DESTROY events of a namespace (lab.ReceiveDestroys), on the
// exporter's schedule (a drain every EventFloorInterval) and into a
// receive batch of the exporter's shape, and counts them without decoding
// them. Its CPU time per event is what the kernel's delivery and the Go
// runtime cost; the exporter's above it is its own work.
type EventFloor struct {
	ns             *lab.Namespace
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	// done is closed when the child has exited, with waitErr set.
	done    chan struct{}
	waitErr error
}

// StartEventFloor starts the floor receiver in the namespace and returns
// once its socket is subscribed.
func StartEventFloor(env *Env, ns *lab.Namespace) (*EventFloor, error) {
	f := &EventFloor{ns: ns, done: make(chan struct{})}
	f.cmd = exec.Command(env.Self)
	f.cmd.Env = append(os.Environ(), ChildEnv+"="+childEventFloor, childNetnsEnv+"="+ns.Path)
	f.cmd.Stdout, f.cmd.Stderr = &f.stdout, &f.stderr
	if err := env.Lab.Start(f.cmd); err != nil {
		return nil, fmt.Errorf("event floor: %w", err)
	}
	go func() {
		f.waitErr = f.cmd.Wait()
		close(f.done)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := subscribedSocket(f.cmd.Process.Pid, ns)
		if err == nil {
			return f, nil
		}
		select {
		case <-f.done:
			return nil, fmt.Errorf("event floor exited before it subscribed: %v: %s", f.waitErr, f.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = f.cmd.Process.Kill()
			<-f.done
			return nil, fmt.Errorf("event floor did not subscribe within 10s: %w: %s", err, f.stderr.String())
		}
	}
}

// CPU returns the receiver's CPU time so far.
func (f *EventFloor) CPU() (time.Duration, error) {
	cpu, err := lab.ProcessCPU(f.cmd.Process.Pid)
	if err != nil {
		return 0, fmt.Errorf("event floor: %w", err)
	}
	return cpu, nil
}

// Drops returns the kernel's drop count of the receiver's socket.
func (f *EventFloor) Drops() (uint64, error) {
	s, err := subscribedSocket(f.cmd.Process.Pid, f.ns)
	if err != nil {
		return 0, fmt.Errorf("event floor: %w", err)
	}
	return s.Drops, nil
}

// Stop has the receiver drain its socket once more and exit, and returns
// the DESTROY events it counted in all. Calling it again returns the
// same.
func (f *EventFloor) Stop() (uint64, error) {
	if !terminate(f.cmd, f.done) {
		return 0, fmt.Errorf("event floor did not exit within 10s of SIGTERM: %s", f.stderr.String())
	}
	if f.waitErr != nil {
		return 0, fmt.Errorf("event floor: %w: %s", f.waitErr, f.stderr.String())
	}
	var rep ChildReport
	if err := json.Unmarshal(f.stdout.Bytes(), &rep); err != nil {
		return 0, fmt.Errorf("event floor report %q: %w", f.stdout.String(), err)
	}
	return uint64(rep.Entries), nil
}

// eventFloor is the child side of EventFloor: it receives until SIGTERM,
// however long the drill runs, and returns the DESTROY events it counted.
func eventFloor(_ context.Context, target netns.Target) (int, error) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	n, err := lab.ReceiveDestroys(ctx, target, EventFloorInterval, func() {})
	return int(n), err
}
