package testenv_test

import (
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
)

// TestMedianRatio: rounds are paired (each operation against its own
// round's limit), unlike the ratio of the medians, and a round without a
// limit is left out.
func TestMedianRatio(t *testing.T) {
	s := func(v ...float64) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x * float64(time.Second))
		}
		return out
	}
	for _, c := range []struct {
		name     string
		num, den []time.Duration
		want     float64
	}{
		// Medians 8.5 and 7.0 give 1.21; the rounds give 1.14, 1.25, 1.11.
		{"paired", s(8.5, 8.75, 7.4), s(7.46, 7.0, 6.66), 1.1394},
		{"even count", s(2, 3), s(1, 1), 2.5},
		{"a round without a limit", s(2, 9, 3), s(1, 0, 1), 2.5},
		{"lengths differ", s(2, 3, 100), s(1, 1), 2.5},
		{"nothing", nil, nil, 0},
	} {
		if got := testenv.MedianRatio(c.num, c.den); got < c.want-0.001 || got > c.want+0.001 {
			t.Errorf("%s: MedianRatio = %.4f, want %.4f", c.name, got, c.want)
		}
	}
}

// TestProcessStat: the CPU time and the minor faults read from /proc move
// with the work this process does, and an unknown process reads as 0.
func TestProcessStat(t *testing.T) {
	faults, cpu := testenv.ProcessMinorFaults(0), testenv.ProcessCPU(0)
	// 64 MiB touched page by page, fresh from the kernel: at least a
	// fault per 2 MiB even where huge pages back the heap.
	buf := make([]byte, 64<<20)
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = 1
	}
	if got := testenv.ProcessMinorFaults(0) - faults; got < 32 {
		t.Errorf("touching 64 MiB took %d minor faults, want at least 32", got)
	}
	// Spinning shows as CPU time (in ticks of 10 ms) well within 5 s,
	// however busy the machine.
	for end := time.Now().Add(5 * time.Second); testenv.ProcessCPU(0)-cpu < 20*time.Millisecond; buf[len(buf)-1]++ {
		if time.Now().After(end) {
			t.Fatalf("5 s of spinning used %v of CPU", testenv.ProcessCPU(0)-cpu)
		}
	}
	if sys, all := testenv.ProcessSystemCPU(0), testenv.ProcessCPU(0); sys > all {
		t.Errorf("system CPU %v is more than all CPU %v", sys, all)
	}
	if got := testenv.ProcessMinorFaults(1 << 30); got != 0 {
		t.Errorf("an unknown process took %d faults", got)
	}
	if got := testenv.ProcessCPU(1<<30) + testenv.ProcessSystemCPU(1<<30); got != 0 {
		t.Errorf("an unknown process used %v", got)
	}
}
