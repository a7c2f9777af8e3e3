package lab

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
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

// atClkTck is AT_CLKTCK, the auxiliary vector entry of the clock tick.
const atClkTck = 17

// clockTicks returns the number of clock ticks per second that
// /proc/PID/stat counts in, from the process's auxiliary vector; 100 if it
// cannot be read.
func clockTicks() int64 {
	b, err := os.ReadFile("/proc/self/auxv")
	if err != nil {
		return 100
	}
	for len(b) >= 16 {
		k, v := binary.NativeEndian.Uint64(b[0:8]), binary.NativeEndian.Uint64(b[8:16])
		if k == atClkTck && v > 0 {
			return int64(v)
		}
		if k == 0 {
			break
		}
		b = b[16:]
	}
	return 100
}

// ProcUsage reads the CPU time of a running process, all its threads
// (including those that have ended) summed, and its resident set, peak
// resident set and threads from VmRSS, VmHWM and Threads in
// /proc/PID/status.
//
// The CPU time is the process's scheduler clock (see ProcessCPU), to the
// nanosecond; /proc/PID/stat, read only where that clock cannot be, counts
// user and system time in whole clock ticks (10 ms each at 100 Hz), which
// at the 20-60 ms an exporter spends over a 30-second event drill is an
// error of a third.
func ProcUsage(pid int) (Usage, error) {
	cpu, err := ProcessCPU(pid)
	if err != nil {
		stat, statErr := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if statErr != nil {
			return Usage{}, fmt.Errorf("process %d: %w", pid, statErr)
		}
		if cpu, statErr = parseStatCPU(stat, clockTicks()); statErr != nil {
			return Usage{}, fmt.Errorf("process %d: %w", pid, statErr)
		}
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

// parseStatCPU returns utime+stime of a /proc/PID/stat line.
func parseStatCPU(stat []byte, ticks int64) (time.Duration, error) {
	// The command name is in parentheses and may contain spaces; the
	// fields after it start with the state (field 3). utime and stime are
	// fields 14 and 15.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("stat: no command name")
	}
	fields := strings.Fields(string(stat[i+1:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("stat: %d fields after the command name", len(fields))
	}
	var total int64
	for _, f := range fields[11:13] {
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("stat: %w", err)
		}
		total += v
	}
	return time.Duration(total) * time.Second / time.Duration(ticks), nil
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
