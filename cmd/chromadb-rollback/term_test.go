package main

import (
	"bytes"
	"testing"
)

func TestTermWriter(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"plain text\twith a tab\n", "plain text\twith a tab\n"},
		{"clear\x1b[2Jthe screen", `clear\x1b[2Jthe screen`},
		{"back\rover\x08and\x7fdel\x00", `back\rover\band\x7fdel\x00`},
		{"c1\u009b and\u2028separators", `c1\u009b and\u2028separators`},
		{"prød ✓ \xff kept", "prød ✓ \xff kept"}, // other bytes as they are, invalid UTF-8 too
	} {
		var b bytes.Buffer
		n, err := termWriter{&b}.Write([]byte(c.in))
		if err != nil || n != len(c.in) || b.String() != c.want {
			t.Errorf("Write(%q) = %d, %v, wrote %q; want %d, %q", c.in, n, err, b.String(), len(c.in), c.want)
		}
		if got := termEscape(c.in); got != c.want {
			t.Errorf("termEscape(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
