package restorer

import "testing"

func TestSameServer(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"http://127.0.0.1:8000", "http://localhost:8000", true},
		{"http://127.0.0.1", "http://127.0.0.1:80", true},
		{"https://127.0.0.1", "https://localhost:443", true},
		{"http://127.0.0.1:8000", "http://127.0.0.1:8000/", true},
		{"http://127.0.0.1:8000", "http://127.0.0.1:8001", false},
		{"http://127.0.0.1:8000", "https://127.0.0.1:8000", false},
		{"http://127.0.0.1:8000/a", "http://127.0.0.1:8000/b", false},
		{"http://127.0.0.1:8000", "http://127.0.0.2:8000", false},
		{"http://127.0.0.1:8000", "http://no-such-host.invalid:8000", false},
	} {
		if got := sameServer(t.Context(), c.a, c.b); got != c.want {
			t.Errorf("sameServer(%s, %s) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}
