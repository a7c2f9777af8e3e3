package lab

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Usage is the cost of a process: CPU time and memory.
type Usage struct {
	// CPU is user plus system time.
	CPU time.Duration
	// PeakRSS is the largest resident set, in bytes (VmHWM).
	PeakRSS uint64
	// RSS is the resident set at the reading, in bytes (VmRSS); 0 when
	// not read.
	RSS uint64
	// Threads is the number of threads at the reading; 0 when not read.
	Threads uint64
}

// Sub returns the CPU time spent between an earlier reading and u; the
// memory and threads are u's.
func (u Usage) Sub(earlier Usage) Usage {
	u.CPU -= earlier.CPU
	return u
}

// ProcUsage reads the CPU time of a running process, all its threads
// (including those that have ended) summed, and its resident set, peak
// resident set and threads from VmRSS, VmHWM and Threads in
// /proc/PID/status.
//
// The CPU time is the process's scheduler clock (see ProcessCPU), to the
// nanosecond, not /proc/PID/stat's user and system time, which counts
// whole clock ticks (10 ms each at 100 Hz): at the 20-60 ms an exporter
// spends over a 30-second event drill, an error of a third.
func ProcUsage(pid int) (Usage, error) {
	cpu, err := ProcessCPU(pid)
	if err != nil {
		return Usage{}, err
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Usage{}, fmt.Errorf("process %d: %w", pid, err)
	}
	u := Usage{CPU: cpu}
	for _, f := range []struct {
		key   string
		unit  uint64
		value *uint64
	}{{"VmHWM", 1024, &u.PeakRSS}, {"VmRSS", 1024, &u.RSS}, {"Threads", 1, &u.Threads}} {
		v, err := statusField(status, f.key)
		if err != nil {
			return Usage{}, fmt.Errorf("process %d: %w", pid, err)
		}
		*f.value = v * f.unit
	}
	return u, nil
}

// ProcessCPU returns the CPU time of a running process, its threads
// (including those that have ended) summed, to the nanosecond: the
// process's CPUCLOCK_SCHED clock (what clock_getcpuclockid(3) returns,
// built here as the kernel encodes it: the complement of the PID shifted
// left by three, and the clock type 2, process-wide).
func ProcessCPU(pid int) (time.Duration, error) {
	if pid <= 0 {
		return 0, fmt.Errorf("process %d: no such process", pid)
	}
	const cpuClockSched = 2
	id := int32(^pid<<3 | cpuClockSched)
	var ts unix.Timespec
	if err := unix.ClockGettime(id, &ts); err != nil {
		return 0, fmt.Errorf("process %d: read CPU clock: %w", pid, err)
	}
	return time.Duration(ts.Nano()), nil
}

// statusField returns the number of a "Key:   123 kB" or "Key: 123" line
// of /proc/PID/status, without its unit.
func statusField(status []byte, key string) (uint64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != key {
			continue
		}
		v = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB"))
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("status %s: %w", key, err)
		}
		return n, nil
	}
	return 0, fmt.Errorf("status: no %s", key)
}

// ExitedCPU returns the CPU time (user plus system) of a command that has
// exited, from its rusage.
//
// Its ru_maxrss is not used: os/exec starts children with
// CLONE_VM|CLONE_VFORK, and at exec the kernel folds the peak RSS of the
// memory the child shared until then, the drill process's, into the
// child's maxrss. Peak RSS comes from VmHWM of the running process, from
// GNU time's fork, or from the child itself instead.
func ExitedCPU(cmd *exec.Cmd) time.Duration {
	if cmd.ProcessState == nil {
		return 0
	}
	return cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

// SelfPeakRSS returns VmHWM of the calling process.
func SelfPeakRSS() (uint64, error) {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("own peak RSS: %w", err)
	}
	kb, err := statusField(status, "VmHWM")
	if err != nil {
		return 0, fmt.Errorf("own peak RSS: %w", err)
	}
	return kb * 1024, nil
}
