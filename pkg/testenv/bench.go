package testenv

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Helpers shared by the benchmarks behind `make bench`.

// Emit prints one figure as "bench: NAME value=X unit=U", the format the
// bench report is grepped for.
func Emit(name string, v float64, unit string) {
	fmt.Printf("bench: %s value=%s unit=%s\n", name, strconv.FormatFloat(v, 'f', -1, 64), unit)
}

// LoadAvg is the one-minute load average (0 when unknown), to tell a busy
// machine's figures from a quiet one's.
func LoadAvg() float64 {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f, _ := strconv.ParseFloat(strings.Fields(string(data) + " 0")[0], 64)
	return f
}

// Median of vs (vs is not changed): durations, or figures like ratios.
func Median[T ~int64 | ~float64](vs []T) T {
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// PeakRSSKB reads a process's peak resident set size (VmHWM) in KiB.
func PeakRSSKB(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("no VmHWM in /proc status")
}

// CPUSample is the machine's CPU time so far, from /proc/stat.
type CPUSample struct {
	busy, total uint64 // clock ticks, all cores
	cores       int
	at          time.Time
}

// SampleCPU reads the machine's CPU time so far (zero when unknown).
func SampleCPU() CPUSample {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return CPUSample{at: time.Now()}
	}
	return parseCPUSample(string(data), time.Now())
}

// parseCPUSample reads a /proc/stat taken at at.
func parseCPUSample(data string, at time.Time) CPUSample {
	s := CPUSample{at: at}
	line, rest, _ := strings.Cut(data, "\n")
	for l := range strings.Lines(rest) {
		if len(l) > 3 && strings.HasPrefix(l, "cpu") && l[3] >= '0' && l[3] <= '9' {
			s.cores++
		}
	}
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return s
	}
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		s.total += n
		if i != 3 && i != 4 { // idle and iowait
			s.busy += n
		}
	}
	return s
}

// BusyCores is how many cores of the machine were busy, on average, from
// s to later: 2 on a saturated 2-core machine. It tells a CPU-bound phase
// from one that waits.
func (s CPUSample) BusyCores(later CPUSample) float64 {
	wall := later.at.Sub(s.at).Seconds()
	if later.total <= s.total || wall <= 0 {
		return 0
	}
	share := float64(later.busy-s.busy) / float64(later.total-s.total)
	return share * float64(s.cores)
}

// ProcessCPU is the CPU time (user and system) a process and its waited-for
// children have used so far; pid 0 means this process. It is 0 when unknown.
func ProcessCPU(pid int) time.Duration { return procTicks(pid, 11, 12, 13, 14) } // utime, stime, cutime, cstime

// ProcessSystemCPU is the part of ProcessCPU spent in the kernel: system
// calls, and page faults of memory touched for the first time.
func ProcessSystemCPU(pid int) time.Duration { return procTicks(pid, 12, 14) } // stime, cstime

// procTicks sums the fields at is of procStat(pid), in clock ticks.
func procTicks(pid int, is ...int) time.Duration {
	f := procStat(pid)
	if len(f) < 15 {
		return 0
	}
	var ticks uint64
	for _, i := range is {
		n, _ := strconv.ParseUint(f[i], 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks
}

// ProcessMinorFaults is how many minor page faults a process has taken so
// far (pid 0: this process), 0 when unknown: each is a page of memory
// touched for the first time (or again after it was given back), which
// costs system CPU.
func ProcessMinorFaults(pid int) uint64 {
	f := procStat(pid)
	if len(f) < 8 {
		return 0
	}
	n, _ := strconv.ParseUint(f[7], 10, 64) // minflt
	return n
}

// procStat is the fields of /proc/<pid>/stat after the command name, nil
// when unreadable; pid 0 means this process.
func procStat(pid int) []string {
	path := "/proc/self/stat"
	if pid > 0 {
		path = fmt.Sprintf("/proc/%d/stat", pid)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	// The command name, in parentheses, may hold spaces: fields count
	// from the last ')'.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(data[i+1:]))
}

// clockTicks is USER_HZ, 100 on Linux everywhere Go runs.
const clockTicks = 100

// Quiet is what WaitQuiet counts as a quiet machine: fewer than
// quietCores cores busy, on average, over quietWindow.
const (
	quietCores  = 0.2
	quietWindow = 500 * time.Millisecond
)

// WaitQuiet waits, up to timeout, until the machine is quiet (see
// quietCores): background work left by what ran before, like Chroma
// persisting an index after a large add or the kernel writing back what
// was written, would otherwise land in whichever measurement comes next.
// It returns how long it waited and whether the machine got quiet.
func WaitQuiet(timeout time.Duration) (time.Duration, bool) {
	start := time.Now()
	for {
		s := SampleCPU()
		time.Sleep(quietWindow)
		if busy := s.BusyCores(SampleCPU()); busy < quietCores {
			return time.Since(start), true
		}
		if time.Since(start) >= timeout {
			return time.Since(start), false
		}
	}
}

// SettleAfterSeeding waits up to two minutes for a quiet machine after a
// benchmark seeded its workloads (seeding 50,000 x 768 leaves Chroma and
// the kernel busy for a while) and reports the wait as
// "quiet_after_seeding_seconds"; a machine still busy is logged, and
// measured anyway.
func SettleAfterSeeding(tb testing.TB) {
	settled, quiet := WaitQuiet(2 * time.Minute)
	Emit("quiet_after_seeding_seconds", settled.Seconds(), "s")
	if !quiet {
		tb.Logf("the machine was still busy %s after seeding; measuring anyway", settled.Round(time.Second))
	}
}

// Quieter waits for a quiet machine (WaitQuiet) before each measurement
// of a benchmark and keeps count for its report.
type Quieter struct {
	Waited   time.Duration
	TimedOut int
}

// Wait waits for a quiet machine, up to timeout.
func (q *Quieter) Wait(timeout time.Duration) {
	d, ok := WaitQuiet(timeout)
	q.Waited += d
	if !ok {
		q.TimedOut++
	}
}

// Emit reports the waits as prefix+"quiet_wait_seconds" (in all) and
// prefix+"quiet_timeouts" (measurements that began on a busy machine).
func (q *Quieter) Emit(prefix string) {
	Emit(prefix+"quiet_wait_seconds", q.Waited.Seconds(), "s")
	Emit(prefix+"quiet_timeouts", float64(q.TimedOut), "count")
}

// MedianRatio is the median over rounds of num[i]/den[i]: each operation
// against the limit measured just before it, in the same round, so that a
// slow spell of a shared machine weighs on both sides of a ratio. (A ratio
// of the two medians can pair an operation with another round's limit.)
func MedianRatio(num, den []time.Duration) float64 {
	var rs []float64
	for i := range min(len(num), len(den)) {
		if den[i] > 0 {
			rs = append(rs, num[i].Seconds()/den[i].Seconds())
		}
	}
	return Median(rs)
}
