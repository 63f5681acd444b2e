package testenv

import (
	"net"
	"strconv"
	"testing"
)

// TestFreePort: ports are handed out once, free, and below the kernel's
// ephemeral range when there is room for them there.
func TestFreePort(t *testing.T) {
	lo := ephemeralLow()
	seen := map[int]bool{}
	for range 20 {
		p, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		if seen[p] {
			t.Errorf("port %d handed out twice", p)
		}
		seen[p] = true
		if lo-minPort >= 1000 && (p < minPort || p >= lo) {
			t.Errorf("port %d is outside [%d, %d)", p, minPort, lo)
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			t.Errorf("port %d is not free: %v", p, err)
			continue
		}
		l.Close()
	}
}
