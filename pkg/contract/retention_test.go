package contract

import (
	"strings"
	"testing"
	"time"
)

func TestParseAge(t *testing.T) {
	const day = 24 * time.Hour
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"7d", 7 * day},
		{"72h", 72 * time.Hour},
		{"1d12h", day + 12*time.Hour},
		{" 90m ", 90 * time.Minute},
		{"0d30s", 30 * time.Second},
	} {
		got, err := ParseAge(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseAge(%q) = %s, %v; want %s", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "0", "0d", "-1h", "-7d", "1.5d", "d", "7days", "7dd", "1h2d", "soon", "99999d"} {
		if got, err := ParseAge(in); err == nil {
			t.Errorf("ParseAge(%q) = %s, want an error", in, got)
		}
	}
	// Too many days is told as such, not as a number that is not whole.
	if _, err := ParseAge("100000d"); err == nil || !strings.Contains(err.Error(), "at most 65535 days") {
		t.Errorf("ParseAge(100000d): %v, want at most 65535 days", err)
	}
}

func TestFormatAge(t *testing.T) {
	const day = 24 * time.Hour
	for _, tc := range []struct {
		in   time.Duration
		want string
	}{
		{7 * day, "7d"},
		{day + 12*time.Hour + 30*time.Second, "1d12h1m"},
		{36 * time.Minute, "36m"},
		{1500 * time.Millisecond, "2s"},
		{0, "0s"},
	} {
		if got := FormatAge(tc.in); got != tc.want {
			t.Errorf("FormatAge(%s) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzParseAge: whatever it accepts is positive, and what FormatAge writes
// of it (to the minute) reads back to the same minute.
func FuzzParseAge(f *testing.F) {
	for _, s := range []string{"7d", "72h", "1d12h", "90m", "-1h", "1.5d", "7dd"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseAge(s)
		if err != nil {
			return
		}
		if d <= 0 {
			t.Fatalf("ParseAge(%q) = %s, not positive", s, d)
		}
		if d < time.Minute {
			return
		}
		back, err := ParseAge(FormatAge(d))
		if err != nil || back != d.Round(time.Minute) {
			t.Fatalf("ParseAge(FormatAge(%s) = %q) = %s, %v; want %s", d, FormatAge(d), back, err, d.Round(time.Minute))
		}
	})
}
