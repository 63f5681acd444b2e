package testenv

import (
	"math"
	"testing"
	"time"
)

// TestCPUSample: busy cores between two readings of /proc/stat (user nice
// system idle iowait irq softirq steal guest guest_nice): all but idle and
// iowait.
func TestCPUSample(t *testing.T) {
	at := time.Unix(1000, 0)
	a := parseCPUSample("cpu  100 0 50 800 10 0 0 40 0 0\ncpu0 1 0 0 0 0 0 0 0 0 0\ncpu1 1 0 0 0 0 0 0 0 0 0\nintr 5\n", at)
	// 200 ticks on 2 cores in 1 s: user +100, system +20, idle +50,
	// iowait +10, steal +20.
	b := parseCPUSample("cpu  200 0 70 850 20 0 0 60 0 0\ncpu0 1 0 0 0 0 0 0 0 0 0\ncpu1 1 0 0 0 0 0 0 0 0 0\n", at.Add(time.Second))
	if a.cores != 2 {
		t.Fatalf("cores = %d, want 2", a.cores)
	}
	for _, c := range []struct {
		name      string
		got, want float64
	}{
		{"busy", a.BusyCores(b), 2 * 140.0 / 200},
		{"busy, no time passed", a.BusyCores(a), 0},
		{"unreadable", CPUSample{}.BusyCores(parseCPUSample("", at)), 0},
	} {
		if math.Abs(c.got-c.want) > 1e-9 {
			t.Errorf("%s: %v, want %v", c.name, c.got, c.want)
		}
	}
}
