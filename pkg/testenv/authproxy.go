package testenv

import (
	"crypto/subtle"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// ChromaAuthProxy is a reverse proxy in front of a Chroma server that
// demands a token, as a Chroma server with token auth does: the pinned
// Chroma 1.0 server has no auth of its own. It takes the token in
// X-Chroma-Token or as "Authorization: Bearer <token>", answers 401 with
// Chroma's error body without it, and forwards the rest without the token.
type ChromaAuthProxy struct {
	// URL is the proxy's base URL, to give clients instead of Chroma's.
	URL string

	mu      sync.Mutex
	token   string
	deny    func(*http.Request) bool
	refused atomic.Int64
	passed  atomic.Int64
}

// StartChromaAuthProxy starts a proxy to upstream (a Chroma base URL) that
// accepts token, closed at cleanup.
func StartChromaAuthProxy(tb testing.TB, upstream, token string) *ChromaAuthProxy {
	tb.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		tb.Fatalf("auth proxy upstream: %v", err)
	}
	p := &ChromaAuthProxy{token: token}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !p.allowed(r) {
			p.refused.Add(1)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"AuthError","message":"Unauthorized"}`))
			return
		}
		p.passed.Add(1)
		r.Header.Del("X-Chroma-Token")
		r.Header.Del("Authorization")
		rp.ServeHTTP(w, r)
	}))
	tb.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

func (p *ChromaAuthProxy) allowed(r *http.Request) bool {
	p.mu.Lock()
	token, deny := p.token, p.deny
	p.mu.Unlock()
	if deny != nil && deny(r) {
		return false
	}
	got := r.Header.Get("X-Chroma-Token")
	if b, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && got == "" {
		got = b
	}
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1
}

// SetToken makes the proxy accept token instead: the old one is revoked.
func (p *ChromaAuthProxy) SetToken(token string) {
	p.mu.Lock()
	p.token = token
	p.mu.Unlock()
}

// Deny answers 401 to every request deny matches, whatever its token (a
// token revoked in the middle of a job); nil lifts it.
func (p *ChromaAuthProxy) Deny(deny func(*http.Request) bool) {
	p.mu.Lock()
	p.deny = deny
	p.mu.Unlock()
}

// Refused is the number of requests answered 401.
func (p *ChromaAuthProxy) Refused() int64 { return p.refused.Load() }

// Passed is the number of requests forwarded to Chroma.
func (p *ChromaAuthProxy) Passed() int64 { return p.passed.Load() }
