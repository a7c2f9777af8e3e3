package lab

import (
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestStatusField(t *testing.T) {
	status := []byte("Name:\tct-exporter\nVmPeak:\t  100 kB\nVmHWM:\t   17408 kB\nVmRSS:\t 16000 kB\nThreads:\t7\n")
	if v, err := statusField(status, "VmHWM"); err != nil || v != 17408 {
		t.Fatalf("statusField(VmHWM) = %v, %v", v, err)
	}
	if v, err := statusField(status, "Threads"); err != nil || v != 7 {
		t.Fatalf("statusField(Threads) = %v, %v", v, err)
	}
	if _, err := statusField(status, "VmSwap"); err == nil {
		t.Fatal("missing key parsed")
	}
}

func TestProcUsageOfSelf(t *testing.T) {
	u, err := ProcUsage(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if u.PeakRSS == 0 || u.RSS == 0 || u.RSS > u.PeakRSS || u.Threads == 0 {
		t.Fatalf("ProcUsage(self) = %+v", u)
	}
	peak, err := SelfPeakRSS()
	if err != nil || peak < u.PeakRSS {
		t.Fatalf("SelfPeakRSS = %v, %v; ProcUsage peak %v", peak, err, u.PeakRSS)
	}
	if _, err := ProcessCPU(-1); err == nil {
		t.Fatal("ProcessCPU of no process succeeded")
	}
	if _, err := ProcUsage(-1); err == nil {
		t.Fatal("ProcUsage of no process succeeded")
	}
}

// TestProcessCPUOfSelf checks the clock read by PID against the calling
// process's own CPU clock, read just before and after: it must lie in
// between, to the nanosecond, where /proc/PID/stat would be up to a clock
// tick behind.
func TestProcessCPUOfSelf(t *testing.T) {
	var before, after unix.Timespec
	for range 5 {
		burn(2 * time.Millisecond)
		if err := unix.ClockGettime(unix.CLOCK_PROCESS_CPUTIME_ID, &before); err != nil {
			t.Fatal(err)
		}
		cpu, err := ProcessCPU(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.ClockGettime(unix.CLOCK_PROCESS_CPUTIME_ID, &after); err != nil {
			t.Fatal(err)
		}
		if cpu < time.Duration(before.Nano()) || cpu > time.Duration(after.Nano()) {
			t.Fatalf("ProcessCPU(self) = %v, not between %v and %v", cpu, before.Nano(), after.Nano())
		}
	}
}

// burn spins on the CPU for about d of wall time.
func burn(d time.Duration) {
	for start := time.Now(); time.Since(start) < d; {
	}
}
