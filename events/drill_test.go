package events

import (
	"bufio"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ct-exporter/ct-exporter/internal/nstest"
)

// drillEntries is the size of the burst drill.
const drillEntries = 200_000

// eventCounter runs conntrack -E -e DESTROY in a namespace and counts the
// events it prints.
type eventCounter struct {
	cmd   *exec.Cmd
	count atomic.Int64
	done  chan struct{}
}

func startEventCounter(t *testing.T, ns *nstest.Namespace) *eventCounter {
	t.Helper()
	ec := &eventCounter{done: make(chan struct{})}
	ec.cmd = exec.Command("ip", "netns", "exec", ns.Name, "conntrack", "-E", "-e", "DESTROY")
	out, err := ec.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := ec.cmd.Start(); err != nil {
		t.Fatalf("conntrack -E: %v", err)
	}
	go func() {
		defer close(ec.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "[DESTROY]") {
				ec.count.Add(1)
			}
		}
	}()
	t.Cleanup(func() { ec.stop() })
	return ec
}

// settle waits until the count has not changed for quiet, or until
// timeout.
func (ec *eventCounter) settle(quiet, timeout time.Duration) int64 {
	deadline := time.Now().Add(timeout)
	last, since := ec.count.Load(), time.Now()
	for time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		if c := ec.count.Load(); c != last {
			last, since = c, time.Now()
		} else if time.Since(since) >= quiet {
			break
		}
	}
	return last
}

// stop ends conntrack -E, the process this test started.
func (ec *eventCounter) stop() {
	if ec.cmd.ProcessState != nil {
		return
	}
	_ = ec.cmd.Process.Signal(os.Interrupt)
	select {
	case <-ec.done:
	case <-time.After(5 * time.Second):
		_ = ec.cmd.Process.Kill()
		<-ec.done
	}
	_ = ec.cmd.Wait()
}

// cpuTime returns the process's user and system CPU time.
func cpuTime(t *testing.T) (user, sys time.Duration) {
	t.Helper()
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

// TestBurstDrill creates 200,000 entries over ctnetlink in a namespace
// with the Subscriber and conntrack -E -e DESTROY both listening, flushes
// the table, and checks that every DESTROY event is either received or
// counted as lost: received + lost == 200,000. conntrack -E's count is
// logged beside it, not asserted.
func TestBurstDrill(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	t.Parallel()
	ns := nstest.NewNamespace(t)
	ns.Sysctl(t, "net.netfilter.nf_conntrack_timestamp", "1")
	s, sink := startSubscriber(t, ns, Config{})
	ec := startEventCounter(t, ns)
	time.Sleep(200 * time.Millisecond) // let conntrack -E subscribe

	created, err := ns.CreateEntries(t, nstest.EstablishedEntries(drillEntries, 600))
	if created != drillEntries {
		t.Fatalf("created %d of %d entries: %v", created, drillEntries, err)
	}
	u0, s0 := cpuTime(t)
	start := time.Now()
	ns.Conntrack(t, "-F")
	flush := time.Since(start)
	waitFor(t, 60*time.Second, "received + lost to reach the drill size", func() bool {
		st := s.Stats()
		return st.Events[EventDestroy]+st.Lost >= drillEntries
	})
	drained := time.Since(start)
	u1, s1 := cpuTime(t)
	st := s.Stats()
	ctE := ec.settle(time.Second, 30*time.Second)
	ec.stop()

	received, lost := st.Events[EventDestroy], st.Lost
	t.Logf("burst drill, %d entries flushed in %v: exporter received %d DESTROY events (%.2f %%), lost %d (overruns %d), drained %v after the flush began, CPU %v user + %v sys; conntrack -E -e DESTROY received %d (%.2f %%)",
		drillEntries, flush.Round(time.Millisecond), received, 100*float64(received)/drillEntries, lost, st.Overruns,
		drained.Round(time.Millisecond), (u1 - u0).Round(time.Millisecond), (s1 - s0).Round(time.Millisecond),
		ctE, 100*float64(ctE)/drillEntries)
	if received+lost != drillEntries {
		t.Errorf("received %d + lost %d = %d, want %d", received, lost, received+lost, drillEntries)
	}
	if lost > 0 && st.Overruns == 0 {
		t.Errorf("%d events lost without an overrun", lost)
	}
	if st.Malformed != 0 {
		t.Errorf("%d malformed", st.Malformed)
	}
	// Every received DESTROY is of an ASSURED flow with timestamps.
	if got := uint64(len(sink.all())); got != received || st.WithoutTimestamp != 0 {
		t.Errorf("%d observations of %d received, %d without timestamp", got, received, st.WithoutTimestamp)
	}
}

// TestOverrunIsCountedAndSurvived: with a receive buffer far too small for
// the burst, the kernel drops events; the Subscriber counts every one of
// them, sees the overruns, and keeps receiving afterwards.
func TestOverrunIsCountedAndSurvived(t *testing.T) {
	nstest.RequireRoot(t, "conntrack")
	t.Parallel()
	const n = 20_000
	ns := nstest.NewNamespace(t)
	ns.Sysctl(t, "net.netfilter.nf_conntrack_timestamp", "1")
	s, sink := startSubscriber(t, ns, Config{BufferSize: 4096})
	if created, err := ns.CreateEntries(t, nstest.EstablishedEntries(n, 600)); created != n {
		t.Fatalf("created %d: %v", created, err)
	}
	ns.Conntrack(t, "-F")
	waitFor(t, 30*time.Second, "received + lost to reach the burst size", func() bool {
		st := s.Stats()
		return st.Events[EventDestroy]+st.Lost >= n
	})
	st := s.Stats()
	if st.Lost == 0 || st.Overruns == 0 || st.Events[EventDestroy]+st.Lost != n || !st.Running || st.Restarts != 0 {
		t.Fatalf("stats %+v", st)
	}
	t.Logf("%d-byte receive buffer (as reported): received %d, lost %d, overruns %d",
		st.ReceiveBuffer, st.Events[EventDestroy], st.Lost, st.Overruns)
	// The loop is still receiving. The buffer holds only a few events, so
	// some of the next ten may be dropped too, but each is received or
	// counted.
	before := st.Events[EventDestroy]
	if created, err := ns.CreateEntries(t, nstest.EstablishedEntries(10, 600)); created != 10 {
		t.Fatalf("created %d: %v", created, err)
	}
	ns.Conntrack(t, "-F")
	waitFor(t, 10*time.Second, "events after the overrun", func() bool {
		st := s.Stats()
		return st.Events[EventDestroy]+st.Lost == n+10
	})
	if st := s.Stats(); st.Events[EventDestroy] == before || uint64(len(sink.all())) != st.Events[EventDestroy] {
		t.Fatalf("after the overrun: %d received before, stats %+v, %d observations", before, st, len(sink.all()))
	}
}
