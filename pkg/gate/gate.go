package gate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
)

// Defaults applied by New.
const (
	// DefaultRetryAfter is the Retry-After of a refused write, in seconds.
	DefaultRetryAfter = 5
	// MaxClassifyBody caps what the gate reads of a request body to
	// classify it (only database creation is read, for its name).
	MaxClassifyBody = 64 << 10
)

// Error types in refusal bodies ({"error": ..., "message": ...}, the shape
// of Chroma's own errors).
const (
	ErrorWriteFenced   = "WriteFenced"
	ErrorFencesUnknown = "FenceStateUnknown"
	ErrorBadGateway    = "BadGateway"
)

// Option configures a Gate.
type Option func(*Gate)

// WithLogger logs refused writes (info) and upstream failures (warn) to l.
// Request headers are never logged.
func WithLogger(l *slog.Logger) Option {
	return func(g *Gate) {
		if l != nil {
			g.log = l
		}
	}
}

// WithRetryAfter sets the Retry-After of a refused write, in seconds
// (values under 1 mean DefaultRetryAfter).
func WithRetryAfter(seconds int) Option {
	return func(g *Gate) {
		if seconds >= 1 {
			g.retryAfter = seconds
		}
	}
}

// WithFenceAllWritesWhenAnyFence makes the whole server read-only while any
// fence is raised: every write is refused, whatever database it touches,
// including writes whose database the gate cannot determine (creating a
// tenant). It needs a FenceSource that is a FenceLister.
func WithFenceAllWritesWhenAnyFence(on bool) Option {
	return func(g *Gate) { g.fenceAll = on }
}

// WithTransport replaces the transport to Chroma (default: a clone of
// http.DefaultTransport keeping up to 64 idle connections).
func WithTransport(rt http.RoundTripper) Option {
	return func(g *Gate) {
		if rt != nil {
			g.transport = rt
		}
	}
}

// Gate is an HTTP reverse proxy in front of Chroma that passes reads and
// refuses writes to fenced databases with 503 and Retry-After. Bodies are
// streamed both ways; headers (X-Chroma-Token, Authorization included) are
// passed to Chroma unchanged.
type Gate struct {
	upstream   *url.URL
	fences     FenceSource
	log        *slog.Logger
	retryAfter int
	fenceAll   bool
	transport  http.RoundTripper
	proxy      *httputil.ReverseProxy

	mu       sync.Mutex
	inflight map[scopeKey]int
}

type noFences struct{}

func (noFences) Fenced(string, string) (contract.Fence, bool) { return contract.Fence{}, false }

// scopeKey counts admitted writes in flight by what they touch.
type scopeKey struct {
	scope            Scope
	tenant, database string
}

// New returns a gate forwarding to upstream (Chroma's base URL; a path
// prefix is kept) that asks fences whether a database is fenced (nil: no
// database is ever fenced).
func New(upstream *url.URL, fences FenceSource, opts ...Option) *Gate {
	if fences == nil {
		fences = noFences{}
	}
	u := *upstream
	u.User = nil
	g := &Gate{
		upstream:   &u,
		fences:     fences,
		log:        slog.New(slog.DiscardHandler),
		retryAfter: DefaultRetryAfter,
		inflight:   map[scopeKey]int{},
	}
	for _, o := range opts {
		o(g)
	}
	if g.transport == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConns = 128
		t.MaxIdleConnsPerHost = 64
		g.transport = t
	}
	g.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(g.upstream) // also sets Host to Chroma's
			pr.SetXForwarded()
		},
		Transport:    g.transport,
		ErrorHandler: g.upstreamError,
		ErrorLog:     slog.NewLogLogger(g.log.Handler(), slog.LevelWarn),
	}
	return g
}

// Upstream is the Chroma URL the gate forwards to.
func (g *Gate) Upstream() *url.URL { u := *g.upstream; return &u }

// ServeHTTP passes reads to Chroma and refuses fenced writes.
func (g *Gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := Classify(r.Method, r.URL.EscapedPath(), r.URL.Query())
	if !c.Write {
		g.proxy.ServeHTTP(w, r)
		return
	}
	if c.DatabaseInBody {
		if err := peekDatabaseName(r, &c); err != nil {
			writeJSON(w, http.StatusBadRequest, nil, map[string]any{
				"error": "InvalidArgumentError", "message": "gate: reading the request body: " + err.Error(),
			})
			return
		}
	}
	k, counted := inflightKey(c)
	if counted {
		// Counted before the fence is checked, so Quiesce cannot miss a
		// write admitted just before the fence was seen.
		g.begin(k)
		defer g.end(k)
	}
	if ref, refused := g.refusal(c); refused {
		g.refuse(w, r, c, ref)
		return
	}
	g.proxy.ServeHTTP(w, r)
}

// peekDatabaseName reads the start of a database creation body for the
// new database's name and puts the bytes back. If the body is too large or
// not a JSON object with a name, the write keeps ScopeTenant.
func peekDatabaseName(r *http.Request, c *Class) error {
	if r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	buf, err := io.ReadAll(io.LimitReader(r.Body, MaxClassifyBody+1))
	if err != nil {
		return err
	}
	r.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
	if len(buf) > MaxClassifyBody {
		return nil
	}
	var body struct {
		Name string `json:"name"`
	}
	if json.Unmarshal(buf, &body) == nil && body.Name != "" {
		c.Database, c.Scope = body.Name, ScopeDatabase
	}
	return nil
}

func inflightKey(c Class) (scopeKey, bool) {
	switch c.Scope {
	case ScopeDatabase:
		return scopeKey{ScopeDatabase, c.Tenant, c.Database}, true
	case ScopeTenant:
		return scopeKey{scope: ScopeTenant, tenant: c.Tenant}, true
	case ScopeServer:
		return scopeKey{scope: ScopeServer}, true
	}
	return scopeKey{}, false
}

func (g *Gate) begin(k scopeKey) {
	g.mu.Lock()
	g.inflight[k]++
	g.mu.Unlock()
}

func (g *Gate) end(k scopeKey) {
	g.mu.Lock()
	if g.inflight[k]--; g.inflight[k] <= 0 {
		delete(g.inflight, k)
	}
	g.mu.Unlock()
}

// refusal is why a write is refused.
type refusal struct {
	fence    contract.Fence
	notReady bool
}

func (g *Gate) refusal(c Class) (refusal, bool) {
	if rd, ok := g.fences.(readier); ok {
		select {
		case <-rd.Ready():
		default:
			return refusal{notReady: true}, true
		}
	}
	if c.Scope == ScopeDatabase {
		if f, ok := g.fences.Fenced(c.Tenant, c.Database); ok {
			return refusal{fence: f}, true
		}
	}
	l, ok := g.fences.(FenceLister)
	if !ok {
		return refusal{}, false
	}
	switch {
	case g.fenceAll, c.Scope == ScopeServer:
		if fs := l.Fences(); len(fs) > 0 {
			return refusal{fence: fs[0]}, true
		}
	case c.Scope == ScopeTenant:
		for _, f := range l.Fences() {
			if f.Tenant == c.Tenant {
				return refusal{fence: f}, true
			}
		}
	}
	return refusal{}, false
}

// Refusal is the JSON body of a refused write.
type Refusal struct {
	// Error is ErrorWriteFenced, or ErrorFencesUnknown before the gate has
	// loaded the fences.
	Error   string `json:"error"`
	Message string `json:"message"`
	// Tenant and Database are what the write touches (as far as known).
	Tenant   string `json:"tenant,omitempty"`
	Database string `json:"database,omitempty"`
	Endpoint string `json:"endpoint"`
	// Fence is the fence that holds the write back.
	Fence             *contract.Fence `json:"fence,omitempty"`
	OpID              string          `json:"op_id,omitempty"`
	Reason            string          `json:"reason,omitempty"`
	RetryAfterSeconds int             `json:"retry_after_seconds"`
}

func (g *Gate) refuse(w http.ResponseWriter, r *http.Request, c Class, ref refusal) {
	body := Refusal{
		Tenant: c.Tenant, Database: c.Database, Endpoint: c.Endpoint,
		RetryAfterSeconds: g.retryAfter,
	}
	if ref.notReady {
		body.Error = ErrorFencesUnknown
		body.Message = fmt.Sprintf("the read-only gate has not loaded the write fences yet; "+
			"writes are refused until it has, reads pass; retry after %d s", g.retryAfter)
	} else {
		f := ref.fence
		body.Error = ErrorWriteFenced
		body.Fence, body.OpID, body.Reason = &f, f.OpID, f.Reason
		op := f.OpID
		if op == "" {
			op = "(unknown operation)"
		}
		held := fmt.Sprintf("rollback %s holds the write fence of database %q of tenant %q", op, f.Database, f.Tenant)
		if f.Reason != "" {
			held += " (" + f.Reason + ")"
		}
		var msg string
		switch {
		case c.Scope == ScopeDatabase && c.Tenant == f.Tenant && c.Database == f.Database:
			msg = fmt.Sprintf("database %q of tenant %q is read-only: %s", f.Database, f.Tenant, held)
		case c.Scope == ScopeTenant || c.Scope == ScopeServer:
			msg = fmt.Sprintf("this %s write reaches beyond one database and %s", c.Endpoint, held)
		default:
			msg = "the gate refuses every write while any fence is raised, and " + held
		}
		body.Message = msg + fmt.Sprintf("; reads still work; retry after %d s", g.retryAfter)
	}
	g.log.LogAttrs(r.Context(), slog.LevelInfo, "write refused by the fence",
		slog.String("method", r.Method), slog.String("path", r.URL.Path),
		slog.String("op_id", body.OpID), slog.String("endpoint", c.Endpoint),
		slog.String("tenant", c.Tenant), slog.String("database", c.Database),
		slog.String("error", body.Error))
	h := http.Header{}
	h.Set("Retry-After", strconv.Itoa(g.retryAfter))
	h.Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusServiceUnavailable, h, body)
}

func writeJSON(w http.ResponseWriter, status int, h http.Header, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte(`{"error":"ChromaError","message":"gate: encoding the answer failed"}`)
	}
	for k, vs := range h {
		w.Header()[k] = vs
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func (g *Gate) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The client went away; nobody reads an answer.
		w.WriteHeader(499)
		return
	}
	g.log.LogAttrs(r.Context(), slog.LevelWarn, "chroma upstream failed",
		slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.Any("err", err))
	writeJSON(w, http.StatusBadGateway, nil, map[string]any{
		"error":   ErrorBadGateway,
		"message": "gate: Chroma at " + g.upstream.Redacted() + " did not answer: " + err.Error(),
	})
}

// Quiesce waits until the gate sees the fence of tenant/database raised and
// no write to it that was admitted before is still in flight (nor a write
// reaching beyond one database, such as a reset). A rollback calls it after
// raising the fence and before reading or changing the database, so no
// write let through before the fence lands in the middle of the rollback.
func (g *Gate) Quiesce(ctx context.Context, tenant, database string) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, ok := g.fences.Fenced(tenant, database); ok && g.idle(tenant, database) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("gate: waiting for writes to %s/%s to drain: %w", tenant, database, ctx.Err())
		case <-tick.C:
		}
	}
}

// InFlightWrites is the number of admitted writes to tenant/database still
// being served (writes reaching beyond one database not included).
func (g *Gate) InFlightWrites(tenant, database string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.inflight[scopeKey{ScopeDatabase, tenant, database}]
}

func (g *Gate) idle(tenant, database string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.inflight[scopeKey{ScopeDatabase, tenant, database}] == 0 &&
		g.inflight[scopeKey{scope: ScopeTenant, tenant: tenant}] == 0 &&
		g.inflight[scopeKey{scope: ScopeServer}] == 0
}
