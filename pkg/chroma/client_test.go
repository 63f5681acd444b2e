package chroma_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
)

func TestNewValidatesURL(t *testing.T) {
	for _, tc := range []struct {
		url  string
		ok   bool
		base string
	}{
		{"http://localhost:8000", true, "http://localhost:8000"},
		{"https://chroma.example.com/prefix/", true, "https://chroma.example.com/prefix"},
		{"localhost:8000", false, ""},
		{"ftp://x", false, ""},
		{"http://", false, ""},
		{"http://h/?q=1", false, ""},
		{"::", false, ""},
	} {
		t.Run(tc.url, func(t *testing.T) {
			c, err := chroma.New(tc.url)
			if (err == nil) != tc.ok {
				t.Fatalf("New(%q) err = %v, want ok=%v", tc.url, err, tc.ok)
			}
			if tc.ok && c.BaseURL() != tc.base {
				t.Errorf("BaseURL() = %q, want %q", c.BaseURL(), tc.base)
			}
		})
	}
}

func TestServerInfo(t *testing.T) {
	c := server.Client(t)
	if err := c.Heartbeat(t.Context()); err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	v, err := c.Version(t.Context())
	if err != nil || v != "1.0.0" {
		t.Errorf("Version() = %q, %v; want 1.0.0", v, err)
	}
	p, err := c.PreflightChecks(t.Context())
	if err != nil {
		t.Fatalf("preflight: %v", err)
	}
	if p.MaxBatchSize <= 0 || !p.SupportsBase64Encoding {
		t.Errorf("preflight = %+v, want a positive batch size and base64 support", p)
	}
}

func TestTenantsAndDatabases(t *testing.T) {
	c, ct := countingClient(t, "")
	ctx := t.Context()
	tenant, db := newDB(t, c)

	if got, err := c.GetTenant(ctx, tenant); err != nil || got.Name != tenant {
		t.Errorf("GetTenant = %+v, %v", got, err)
	}
	if err := c.CreateTenant(ctx, tenant); !errors.Is(err, chroma.ErrAlreadyExists) {
		t.Errorf("CreateTenant twice: err = %v, want ErrAlreadyExists", err)
	}
	if err := c.CreateDatabase(ctx, tenant, db); !errors.Is(err, chroma.ErrAlreadyExists) {
		t.Errorf("CreateDatabase twice: err = %v, want ErrAlreadyExists", err)
	}
	if err := c.CreateDatabase(ctx, tenant, "second"); err != nil {
		t.Fatal(err)
	}
	d, err := c.GetDatabase(ctx, tenant, db)
	if err != nil || d.Name != db || d.Tenant != tenant || d.ID == "" {
		t.Errorf("GetDatabase = %+v, %v", d, err)
	}
	ds, err := c.ListDatabases(ctx, tenant)
	if err != nil || len(ds) != 2 {
		t.Fatalf("ListDatabases = %+v, %v; want 2", ds, err)
	}
	if err := c.DeleteDatabase(ctx, tenant, "second"); err != nil {
		t.Fatal(err)
	}

	before := ct.n.Load()
	_, err = c.GetDatabase(ctx, tenant, "second")
	if !errors.Is(err, chroma.ErrNotFound) {
		t.Fatalf("GetDatabase after delete: err = %v, want ErrNotFound", err)
	}
	if n := ct.n.Load() - before; n != 1 {
		t.Errorf("a 404 was sent %d times, want once (no retry)", n)
	}
	var ae *chroma.APIError
	if !errors.As(err, &ae) || ae.StatusCode != 404 || ae.Type != "NotFoundError" || !strings.Contains(ae.Error(), "get database") {
		t.Errorf("error = %#v (%v), want a 404 NotFoundError naming the op", ae, err)
	}
	if _, err := c.GetTenant(ctx, "nope-tenant"); !errors.Is(err, chroma.ErrNotFound) {
		t.Errorf("GetTenant(missing): err = %v, want ErrNotFound", err)
	}
	if _, err := c.GetCollection(ctx, tenant, db, "missing"); !errors.Is(err, chroma.ErrNotFound) {
		t.Errorf("GetCollection(missing): err = %v, want ErrNotFound", err)
	}
	if err := c.DeleteCollection(ctx, tenant, db, "missing"); !errors.Is(err, chroma.ErrNotFound) {
		t.Errorf("DeleteCollection(missing): err = %v, want ErrNotFound", err)
	}
}

func TestEmptyNamesRejected(t *testing.T) {
	c, ct := countingClient(t, "")
	ctx := t.Context()
	for name, call := range map[string]func() error{
		"tenant":     func() error { return c.CreateTenant(ctx, "") },
		"database":   func() error { return c.CreateDatabase(ctx, "acme", "") },
		"list":       func() error { _, err := c.ListCollections(ctx, "", "db"); return err },
		"collection": func() error { _, err := c.GetCollection(ctx, "t", "d", ""); return err },
		"count":      func() error { _, err := c.Count(ctx, "t", "d", ""); return err },
	} {
		if err := call(); err == nil || !strings.Contains(err.Error(), "must not be empty") {
			t.Errorf("%s: err = %v, want a must-not-be-empty error", name, err)
		}
	}
	if n := ct.n.Load(); n != 0 {
		t.Errorf("%d requests sent for invalid names, want none", n)
	}
}

// flaky answers the first failures requests with status and forwards the
// rest to the real server.
func flaky(t *testing.T, failures int, status int) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	target, _ := url.Parse(server.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	var n atomic.Int64
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) <= int64(failures) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			io.WriteString(w, `{"error":"Unavailable","message":"try later"}`)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	return s, &n
}

func TestRetriesTransientFailures(t *testing.T) {
	for _, status := range []int{503, 429, 500} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			s, n := flaky(t, 2, status)
			c, err := chroma.New(s.URL)
			if err != nil {
				t.Fatal(err)
			}
			v, err := c.Version(t.Context())
			if err != nil || v != "1.0.0" {
				t.Fatalf("Version() = %q, %v; want success after retries", v, err)
			}
			if got := n.Load(); got != 3 {
				t.Errorf("requests = %d, want 3 (2 failures + success)", got)
			}
		})
	}
}

func TestRetryGivesUpAfterMaxElapsed(t *testing.T) {
	s, n := flaky(t, 1<<30, 503)
	c, err := chroma.New(s.URL, chroma.WithRetryMaxElapsed(500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = c.Heartbeat(t.Context())
	var ae *chroma.APIError
	if !errors.As(err, &ae) || ae.StatusCode != 503 || ae.Message != "try later" {
		t.Fatalf("err = %v, want the last 503", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("gave up after %v, want about 500ms", took)
	}
	if n.Load() < 2 {
		t.Errorf("requests = %d, want retries", n.Load())
	}
}

func TestPermanentErrorNotRetried(t *testing.T) {
	s, n := flaky(t, 5, 400)
	c, _ := chroma.New(s.URL)
	err := c.Heartbeat(t.Context())
	var ae *chroma.APIError
	if !errors.As(err, &ae) || ae.StatusCode != 400 {
		t.Fatalf("err = %v, want 400", err)
	}
	if n.Load() != 1 {
		t.Errorf("requests = %d, want 1", n.Load())
	}
}

func TestRetriesConnectionFailures(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		c, _ := chroma.New("http://"+addr, chroma.WithRetryMaxElapsed(300*time.Millisecond))
		if err := c.Heartbeat(t.Context()); err == nil || !strings.Contains(err.Error(), "attempts") {
			t.Errorf("err = %v, want a connection error after several attempts", err)
		}
	})
	t.Run("body cut short", func(t *testing.T) {
		var n atomic.Int64
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if n.Add(1) == 1 {
				// Promise more than is sent, then drop the connection.
				conn, _, err := w.(http.Hijacker).Hijack()
				if err != nil {
					return
				}
				bw := bufio.NewWriter(conn)
				bw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"ids\":[\"a\"")
				bw.Flush()
				conn.Close()
				return
			}
			io.WriteString(w, `{"ids":["a"],"embeddings":[[1.5]],"documents":[null],"uris":[null],"metadatas":[null]}`)
		}))
		defer s.Close()
		c, _ := chroma.New(s.URL)
		b, err := c.Get(t.Context(), "t", "d", "c", chroma.GetRequest{})
		if err != nil || b.Len() != 1 || b.Embeddings[0][0] != 1.5 {
			t.Fatalf("Get = %+v, %v; want one record after a retry", b, err)
		}
		if n.Load() != 2 {
			t.Errorf("requests = %d, want 2", n.Load())
		}
	})
	t.Run("malformed body not retried", func(t *testing.T) {
		var n atomic.Int64
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n.Add(1)
			io.WriteString(w, `{"ids":["a"],"embeddings":[[1.5],[2]]}`)
		}))
		defer s.Close()
		c, _ := chroma.New(s.URL)
		if _, err := c.Get(t.Context(), "t", "d", "c", chroma.GetRequest{}); err == nil {
			t.Fatal("Get of a malformed answer succeeded")
		}
		if n.Load() != 1 {
			t.Errorf("requests = %d, want 1", n.Load())
		}
	})
}

func TestContextCancelStopsRetries(t *testing.T) {
	s, _ := flaky(t, 1<<30, 503)
	c, _ := chroma.New(s.URL)
	ctx, cancel := contextWithTimeout(t, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := c.Heartbeat(ctx); err == nil {
		t.Fatal("Heartbeat succeeded against a failing server")
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("returned after %v, want soon after the context ended", took)
	}
}

// TestDeadlineSaysWhatFailed: when the caller's deadline ends the retries,
// the error is still the deadline's, and says what kept failing.
func TestDeadlineSaysWhatFailed(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c, _ := chroma.New("http://" + addr) // retries for longer than the deadline
	ctx, cancel := contextWithTimeout(t, 500*time.Millisecond)
	defer cancel()
	err = c.Heartbeat(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), "attempts") {
		t.Errorf("err = %v; want the deadline, after attempts refused", err)
	}
}

func TestAuthHeaders(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   []chroma.Option
		header string
		want   string
	}{
		{"default x-chroma-token", []chroma.Option{chroma.WithToken("s3cret")}, "X-Chroma-Token", "s3cret"},
		{"explicit x-chroma-token", []chroma.Option{chroma.WithToken("s3cret"), chroma.WithAuthHeader(chroma.AuthXChromaToken)}, "X-Chroma-Token", "s3cret"},
		{"bearer", []chroma.Option{chroma.WithToken("s3cret"), chroma.WithAuthHeader(chroma.AuthBearer)}, "Authorization", "Bearer s3cret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got http.Header
			s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got = r.Header.Clone()
				io.WriteString(w, `"1.0.0"`)
			}))
			defer s.Close()
			c, err := chroma.New(s.URL, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Version(t.Context()); err != nil {
				t.Fatal(err)
			}
			if v := got.Get(tc.header); v != tc.want {
				t.Errorf("%s = %q, want %q", tc.header, v, tc.want)
			}
			other := "Authorization"
			if tc.header == other {
				other = "X-Chroma-Token"
			}
			if v := got.Get(other); v != "" {
				t.Errorf("%s = %q, want unset", other, v)
			}
		})
	}
}

func TestErrorMessage(t *testing.T) {
	e := &chroma.APIError{StatusCode: 404, Type: "NotFoundError", Message: "Collection [x] does not exists", Op: `get collection "x"`}
	want := `chroma: get collection "x": Collection [x] does not exists (HTTP 404 NotFoundError)`
	if e.Error() != want {
		t.Errorf("Error() = %q, want %q", e.Error(), want)
	}
	// A NotFoundError body under another status still matches.
	if !errors.Is(&chroma.APIError{StatusCode: 400, Type: "NotFoundError"}, chroma.ErrNotFound) {
		t.Error("NotFoundError body does not match ErrNotFound")
	}
	if errors.Is(&chroma.APIError{StatusCode: 400}, chroma.ErrNotFound) {
		t.Error("400 matches ErrNotFound")
	}
	var _ = json.Valid
}

// TestLongPlainErrorBody: a proxy in front of Chroma answering with a long
// page of text gets its first 200 bytes in the error, cut between
// characters.
func TestLongPlainErrorBody(t *testing.T) {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		_, _ = io.WriteString(w, "x"+strings.Repeat("é", 300))
	}))
	defer s.Close()
	c, _ := chroma.New(s.URL)
	err := c.Heartbeat(t.Context())
	var ae *chroma.APIError
	if !errors.As(err, &ae) || ae.StatusCode != 403 {
		t.Fatalf("err = %v, want a 403", err)
	}
	if want := "x" + strings.Repeat("é", 99) + "..."; ae.Message != want {
		t.Errorf("message = %q, want %q", ae.Message, want)
	}
}
