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
