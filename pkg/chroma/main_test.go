package chroma_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
)

// server is one real Chroma shared by the package's tests; each test works
// in its own tenant so they do not see each other.
var server *testenv.Chroma

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "chroma-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	logPath := filepath.Join(dir, "chroma.log")
	logf, err := os.Create(logPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer logf.Close()
	server, err = testenv.LaunchChroma(context.Background(), filepath.Join(dir, "data"), 0, logf)
	if err != nil {
		out, _ := os.ReadFile(logPath)
		fmt.Fprintf(os.Stderr, "start chroma: %v\n%s\n", err, out)
		return 1
	}
	defer server.Close()
	code := m.Run()
	if code != 0 {
		out, _ := os.ReadFile(logPath)
		if len(out) > 16<<10 {
			out = out[len(out)-16<<10:]
		}
		fmt.Fprintf(os.Stderr, "chroma server output:\n%s\n", out)
	}
	return code
}

var nonName = regexp.MustCompile(`[^a-zA-Z0-9]+`)

// newDB creates a tenant and database for t and returns their names.
func newDB(t *testing.T, c *chroma.Client) (tenant, db string) {
	t.Helper()
	tenant = "t-" + strings.ToLower(nonName.ReplaceAllString(t.Name(), "-"))
	db = "main"
	if err := c.CreateTenant(t.Context(), tenant); err != nil {
		t.Fatalf("create tenant: %v", err)
	}
	if err := c.CreateDatabase(t.Context(), tenant, db); err != nil {
		t.Fatalf("create database: %v", err)
	}
	return tenant, db
}

// countingTransport counts requests by method and path suffix.
type countingTransport struct {
	next http.RoundTripper
	n    atomic.Int64
	// match limits counting to paths with this suffix ("" counts all).
	match string
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if c.match == "" || strings.HasSuffix(r.URL.Path, c.match) {
		c.n.Add(1)
	}
	return c.next.RoundTrip(r)
}

func countingClient(t *testing.T, match string, opts ...chroma.Option) (*chroma.Client, *countingTransport) {
	t.Helper()
	ct := &countingTransport{next: http.DefaultTransport, match: match}
	opts = append([]chroma.Option{chroma.WithHTTPClient(&http.Client{Transport: ct})}, opts...)
	return server.Client(t, opts...), ct
}

func contextWithTimeout(t *testing.T, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(t.Context(), d)
}
