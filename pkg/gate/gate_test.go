package gate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
)

// mapFences is a FenceLister kept in memory; ready, when not nil, makes it
// a readier too.
type mapFences struct {
	mu sync.Mutex
	m  map[dbKey]contract.Fence
}

func newMapFences() *mapFences { return &mapFences{m: map[dbKey]contract.Fence{}} }

func (f *mapFences) raise(tenant, database, op, reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.m[dbKey{tenant, database}] = contract.Fence{
		Envelope: contract.NewEnvelope(contract.TypeFence),
		Tenant:   tenant, Database: database, OpID: op, Reason: reason, RaisedAt: time.Now().UTC(),
	}
}

func (f *mapFences) lower(tenant, database string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.m, dbKey{tenant, database})
}

func (f *mapFences) Fenced(tenant, database string) (contract.Fence, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fe, ok := f.m[dbKey{tenant, database}]
	return fe, ok
}

func (f *mapFences) Fences() []contract.Fence {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []contract.Fence
	for _, fe := range f.m {
		out = append(out, fe)
	}
	return out
}

// readyFences is a mapFences that is not ready until its channel closes.
type readyFences struct {
	*mapFences
	ready chan struct{}
}

func (f readyFences) Ready() <-chan struct{} { return f.ready }

// seen is one request as the fake upstream received it.
type seen struct {
	Method, URI, Host string
	Header            http.Header
	Body              []byte
}

// fakeChroma records requests and answers 200 {"ok":true}.
type fakeChroma struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []seen
}

func newFakeChroma(t *testing.T) *fakeChroma {
	t.Helper()
	f := &fakeChroma{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.reqs = append(f.reqs, seen{r.Method, r.RequestURI, r.Host, r.Header.Clone(), b})
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Chroma-Trace-Id", "abc")
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeChroma) requests() []seen {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]seen(nil), f.reqs...)
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func startGate(t *testing.T, upstream string, fences FenceSource, opts ...Option) (*Gate, *httptest.Server) {
	t.Helper()
	g := New(mustURL(t, upstream), fences, opts...)
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	return g, srv
}

func do(t *testing.T, method, u string, body string, hdr http.Header) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

const (
	acmeProd  = "/api/v2/tenants/acme/databases/prod"
	acmeStage = "/api/v2/tenants/acme/databases/stage"
	prodAdd   = acmeProd + "/collections/c1/add"
)

func TestGatePassesRequestsUnchanged(t *testing.T) {
	up := newFakeChroma(t)
	_, gw := startGate(t, up.URL, newMapFences())
	hdr := http.Header{
		"X-Chroma-Token": {"secret-token"},
		"Authorization":  {"Bearer secret-bearer"},
		"Content-Type":   {"application/json"},
		"X-Custom":       {"kept"},
	}
	resp, body := do(t, "POST", gw.URL+prodAdd+"?x=1", `{"ids":["a"]}`, hdr)
	if resp.StatusCode != 200 || string(body) != `{"ok":true}` || resp.Header.Get("Chroma-Trace-Id") != "abc" {
		t.Fatalf("answer %d %q %v", resp.StatusCode, body, resp.Header)
	}
	resp, _ = do(t, "GET", gw.URL+"/api/v2/tenants/t%2Fx/databases/d%20e/collections", "", hdr)
	if resp.StatusCode != 200 {
		t.Fatalf("get: %d", resp.StatusCode)
	}
	reqs := up.requests()
	if len(reqs) != 2 {
		t.Fatalf("upstream saw %d requests", len(reqs))
	}
	r := reqs[0]
	if r.Method != "POST" || r.URI != prodAdd+"?x=1" || string(r.Body) != `{"ids":["a"]}` {
		t.Errorf("upstream got %s %s %q", r.Method, r.URI, r.Body)
	}
	for k, v := range hdr {
		if got := r.Header.Get(k); got != v[0] {
			t.Errorf("header %s reached upstream as %q, want %q", k, got, v[0])
		}
	}
	if want := mustURL(t, up.URL).Host; r.Host != want {
		t.Errorf("upstream Host %q, want %q", r.Host, want)
	}
	if reqs[1].URI != "/api/v2/tenants/t%2Fx/databases/d%20e/collections" {
		t.Errorf("escaped path changed on the way: %q", reqs[1].URI)
	}
}

func TestGateRefusesFencedWrites(t *testing.T) {
	up := newFakeChroma(t)
	fences := newMapFences()
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	_, gw := startGate(t, up.URL, fences, WithLogger(log))
	fences.raise("acme", "prod", "op_123", "validation below 0.95")
	secret := http.Header{"X-Chroma-Token": {"tok-XYZ"}, "Authorization": {"Bearer bear-XYZ"}}

	writes := []struct{ method, path, body string }{
		{"POST", prodAdd, `{"ids":["a"]}`},
		{"POST", acmeProd + "/collections/c1/upsert", `{}`},
		{"POST", acmeProd + "/collections/c1/update", `{}`},
		{"POST", acmeProd + "/collections/c1/delete", `{}`},
		{"POST", acmeProd + "/collections/c1/fork", `{"new_name":"x"}`},
		{"POST", acmeProd + "/collections", `{"name":"x"}`},
		{"PUT", acmeProd + "/collections/c1", `{"new_name":"x"}`},
		{"DELETE", acmeProd + "/collections/c1", ""},
		{"DELETE", acmeProd, ""},
		{"POST", "/api/v2/tenants/acme/databases", `{"name":"prod"}`},
		{"POST", acmeProd + "/collections/c1/brand_new_verb", `{}`},
	}
	for _, w := range writes {
		resp, body := do(t, w.method, gw.URL+w.path, w.body, secret)
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("%s %s: %d, want 503", w.method, w.path, resp.StatusCode)
			continue
		}
		if ra := resp.Header.Get("Retry-After"); ra != "5" {
			t.Errorf("%s %s: Retry-After %q", w.method, w.path, ra)
		}
		var ref Refusal
		if err := json.Unmarshal(body, &ref); err != nil {
			t.Fatalf("refusal body %q: %v", body, err)
		}
		if ref.Error != ErrorWriteFenced || ref.OpID != "op_123" || ref.Reason != "validation below 0.95" ||
			ref.Tenant != "acme" || ref.Database != "prod" || ref.RetryAfterSeconds != 5 ||
			ref.Fence == nil || ref.Fence.OpID != "op_123" {
			t.Errorf("%s %s: refusal %+v", w.method, w.path, ref)
		}
		if !strings.Contains(ref.Message, "op_123") || !strings.Contains(ref.Message, "validation below 0.95") {
			t.Errorf("message does not name the rollback: %q", ref.Message)
		}
	}
	if n := len(up.requests()); n != 0 {
		t.Fatalf("%d refused writes reached upstream", n)
	}

	// Reads of the fenced database and writes elsewhere pass.
	passes := []struct{ method, path, body string }{
		{"GET", acmeProd + "/collections", ""},
		{"GET", acmeProd + "/collections_count", ""},
		{"GET", acmeProd + "/collections/c1", ""},
		{"GET", acmeProd + "/collections/c1/count", ""},
		{"POST", acmeProd + "/collections/c1/get", `{}`},
		{"POST", acmeProd + "/collections/c1/query", `{}`},
		{"HEAD", "/api/v2/heartbeat", ""},
		{"POST", acmeStage + "/collections/c1/add", `{}`},
		{"POST", "/api/v2/tenants/other/databases/prod/collections/c1/add", `{}`},
		{"POST", "/api/v2/tenants/acme/databases", `{"name":"prod2"}`},
		{"POST", "/api/v2/tenants", `{"name":"newtenant"}`},
	}
	for _, p := range passes {
		if resp, body := do(t, p.method, gw.URL+p.path, p.body, nil); resp.StatusCode != 200 {
			t.Errorf("%s %s: %d %s, want it passed", p.method, p.path, resp.StatusCode, body)
		}
	}
	if n := len(up.requests()); n != len(passes) {
		t.Errorf("upstream saw %d requests, want %d", n, len(passes))
	}
	// The create-database body the gate read reached upstream whole.
	for _, r := range up.requests() {
		if r.URI == "/api/v2/tenants/acme/databases" && string(r.Body) != `{"name":"prod2"}` {
			t.Errorf("create database body upstream: %q", r.Body)
		}
	}

	// Each refusal is logged at info with method, path and op id; no secret.
	out := logs.String()
	if strings.Contains(out, "XYZ") {
		t.Fatalf("log holds a credential: %s", out)
	}
	var rec map[string]any
	first, _, _ := strings.Cut(out, "\n")
	if err := json.Unmarshal([]byte(first), &rec); err != nil {
		t.Fatalf("log line %q: %v", first, err)
	}
	if rec["level"] != "INFO" || rec["method"] != "POST" || rec["path"] != prodAdd || rec["op_id"] != "op_123" {
		t.Errorf("log record %v", rec)
	}
	if n := strings.Count(out, "write refused by the fence"); n != len(writes) {
		t.Errorf("%d refusals logged, want %d", n, len(writes))
	}

	// Lowered: writes pass again.
	fences.lower("acme", "prod")
	if resp, body := do(t, "POST", gw.URL+prodAdd, `{}`, nil); resp.StatusCode != 200 {
		t.Fatalf("after lowering: %d %s", resp.StatusCode, body)
	}
}

func TestGateRetryAfterOption(t *testing.T) {
	up := newFakeChroma(t)
	fences := newMapFences()
	fences.raise("acme", "prod", "op_1", "")
	_, gw := startGate(t, up.URL, fences, WithRetryAfter(17))
	resp, body := do(t, "POST", gw.URL+prodAdd, `{}`, nil)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "17" || !strings.Contains(string(body), `"retry_after_seconds":17`) {
		t.Fatalf("%d %v %s", resp.StatusCode, resp.Header, body)
	}
}

func TestGateWritesBeyondOneDatabase(t *testing.T) {
	up := newFakeChroma(t)
	fences := newMapFences()
	_, gw := startGate(t, up.URL, fences)
	_, all := startGate(t, up.URL, fences, WithFenceAllWritesWhenAnyFence(true))
	big := `{"name":"prod","pad":"` + strings.Repeat("x", MaxClassifyBody) + `"}`
	cases := []struct {
		method, path, body string
		// refused with the fence of acme/prod raised, without and with
		// WithFenceAllWritesWhenAnyFence
		refused, refusedAll bool
	}{
		{"POST", "/api/v2/reset", "", true, true},
		{"DELETE", "/api/v2/tenants/acme", "", true, true},
		{"DELETE", "/api/v2/tenants/other", "", false, true},
		{"POST", "/api/v2/tenants/acme/unknown", "{}", true, true},
		{"POST", "/api/v2/tenants/acme/databases", big, true, true},    // too big to read the name
		{"POST", "/api/v2/tenants/acme/databases", "nope", true, true}, // no name
		{"POST", "/api/v2/tenants/other/databases", big, false, true},
		{"POST", "/api/v2/tenants", `{"name":"x"}`, false, true},
		{"PATCH", "/api/v2/tenants/acme", `{}`, false, true},
		{"POST", "/api/v2/unknown", `{}`, false, true},
		{"POST", acmeStage + "/collections/c/add", `{}`, false, true},
		{"GET", acmeStage + "/collections", "", false, false},
		{"POST", acmeStage + "/collections/c/query", "{}", false, false},
	}
	run := func(base string, fenced bool) {
		for _, tc := range cases {
			want := 200
			if fenced && (tc.refused || base == all.URL && tc.refusedAll) {
				want = 503
			}
			resp, body := do(t, tc.method, base+tc.path, tc.body, nil)
			if resp.StatusCode != want {
				t.Errorf("fenced=%v all=%v %s %s: %d %.200s, want %d", fenced, base == all.URL, tc.method, tc.path, resp.StatusCode, body, want)
			}
		}
	}
	run(gw.URL, false)
	run(all.URL, false)
	before := len(up.requests())
	fences.raise("acme", "prod", "op_9", "manual")
	run(gw.URL, true)
	run(all.URL, true)
	for _, m := range []struct{ base, method, path, want string }{
		{gw.URL, "POST", "/api/v2/reset", "this server.reset write reaches beyond one database and rollback op_9 holds the write fence of database \"prod\" of tenant \"acme\" (manual)"},
		{all.URL, "POST", acmeStage + "/collections/c/add", "the gate refuses every write while any fence is raised, and rollback op_9"},
		{all.URL, "POST", acmeProd + "/collections/c/add", "database \"prod\" of tenant \"acme\" is read-only: rollback op_9"},
	} {
		_, body := do(t, m.method, m.base+m.path, "{}", nil)
		var ref Refusal
		if err := json.Unmarshal(body, &ref); err != nil || !strings.Contains(ref.Message, m.want) || ref.OpID != "op_9" {
			t.Errorf("%s %s: message %q, want it to contain %q", m.method, m.path, ref.Message, m.want)
		}
	}
	// Bodies read to classify reach upstream whole.
	for _, r := range up.requests()[before:] {
		if strings.HasSuffix(r.URI, "/databases") && r.Method == "POST" && len(r.Body) != len(big) {
			t.Errorf("create database body cut to %d bytes", len(r.Body))
		}
	}
}

// A source without Fences (not a FenceLister) fences single databases only;
// no source fences nothing.
func TestGateMinimalFenceSource(t *testing.T) {
	up := newFakeChroma(t)
	_, open := startGate(t, up.URL, nil)
	if resp, _ := do(t, "POST", open.URL+prodAdd, `{}`, nil); resp.StatusCode != 200 {
		t.Errorf("write without a fence source: %d", resp.StatusCode)
	}
	fences := newMapFences()
	fences.raise("acme", "prod", "op_1", "")
	_, gw := startGate(t, up.URL, struct{ FenceSource }{fences})
	if resp, _ := do(t, "POST", gw.URL+prodAdd, `{}`, nil); resp.StatusCode != 503 {
		t.Errorf("fenced write: %d", resp.StatusCode)
	}
	if resp, _ := do(t, "POST", gw.URL+"/api/v2/reset", ``, nil); resp.StatusCode != 200 {
		t.Errorf("reset: %d", resp.StatusCode)
	}
}

func TestGateRefusesWritesUntilFencesLoaded(t *testing.T) {
	up := newFakeChroma(t)
	fences := readyFences{newMapFences(), make(chan struct{})}
	_, gw := startGate(t, up.URL, fences)
	resp, body := do(t, "POST", gw.URL+acmeStage+"/collections/c/add", `{}`, nil)
	var ref Refusal
	_ = json.Unmarshal(body, &ref)
	if resp.StatusCode != 503 || ref.Error != ErrorFencesUnknown || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("write before ready: %d %s", resp.StatusCode, body)
	}
	if resp, _ := do(t, "POST", gw.URL+acmeStage+"/collections/c/get", `{}`, nil); resp.StatusCode != 200 {
		t.Fatalf("read before ready: %d", resp.StatusCode)
	}
	close(fences.ready)
	if resp, _ := do(t, "POST", gw.URL+acmeStage+"/collections/c/add", `{}`, nil); resp.StatusCode != 200 {
		t.Fatalf("write after ready: %d", resp.StatusCode)
	}
}

func TestGateUpstreamDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	_, gw := startGate(t, dead, newMapFences())
	resp, body := do(t, "GET", gw.URL+"/api/v2/heartbeat", "", http.Header{"X-Chroma-Token": {"tok-XYZ"}})
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), ErrorBadGateway) {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
}

// The request body is streamed to Chroma, not buffered: Chroma reads the
// first part before the client has sent the rest.
func TestGateStreamsRequestBody(t *testing.T) {
	gotFirst := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 5)
		if _, err := io.ReadFull(r.Body, buf); err != nil || string(buf) != "first" {
			http.Error(w, "bad start", 400)
			return
		}
		close(gotFirst)
		rest, _ := io.ReadAll(r.Body)
		_, _ = w.Write(append(buf, rest...))
	}))
	defer up.Close()
	_, gw := startGate(t, up.URL, newMapFences())
	pr, pw := io.Pipe()
	go func() {
		_, _ = pw.Write([]byte("first"))
		select {
		case <-gotFirst:
			_, _ = pw.Write([]byte("+second"))
			pw.Close()
		case <-time.After(10 * time.Second):
			pw.CloseWithError(errors.New("upstream never saw the first part: the body was buffered"))
		}
	}()
	resp, err := http.Post(gw.URL+prodAdd, "application/json", pr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "first+second" {
		t.Fatalf("%d %q", resp.StatusCode, b)
	}
}

// Quiesce returns only once the fence is seen and writes admitted before it
// have finished.
func TestGateQuiesce(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/add") {
			close(entered)
			<-release
		}
		_, _ = io.WriteString(w, "{}")
	}))
	t.Cleanup(up.Close)
	fences := newMapFences()
	g, gw := startGate(t, up.URL, fences)
	t.Cleanup(unblock) // runs first, so a failed test does not hang in Close

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := g.Quiesce(ctx, "acme", "prod"); err == nil {
		t.Fatal("Quiesce returned before the fence was raised")
	}

	done := make(chan int)
	go func() {
		resp, err := http.Post(gw.URL+prodAdd, "application/json", strings.NewReader("{}"))
		if err != nil {
			done <- -1
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	<-entered
	if n := g.InFlightWrites("acme", "prod"); n != 1 {
		t.Fatalf("in flight %d, want 1", n)
	}
	fences.raise("acme", "prod", "op_q", "")
	qerr := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		qerr <- g.Quiesce(ctx, "acme", "prod")
	}()
	select {
	case err := <-qerr:
		t.Fatalf("Quiesce returned (%v) while an admitted write was in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	// Other databases' writes do not hold it back, new ones to prod are refused.
	if resp, _ := do(t, "POST", gw.URL+prodAdd, "{}", nil); resp.StatusCode != 503 {
		t.Fatalf("write after the fence: %d", resp.StatusCode)
	}
	unblock()
	if code := <-done; code != 200 {
		t.Fatalf("admitted write ended with %d", code)
	}
	if err := <-qerr; err != nil {
		t.Fatalf("Quiesce: %v", err)
	}
	if n := g.InFlightWrites("acme", "prod"); n != 0 {
		t.Fatalf("in flight %d after the write", n)
	}
}

func TestServe(t *testing.T) {
	up := newFakeChroma(t)
	g := New(mustURL(t, up.URL), newMapFences())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- g.ServeListener(ctx, ln) }()
	resp, body := do(t, "GET", "http://"+ln.Addr().String()+"/api/v2/heartbeat", "", nil)
	if resp.StatusCode != 200 || string(body) != `{"ok":true}` {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("ServeListener: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeListener did not return after cancel")
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Fatal("still listening after shutdown")
	}
	if err := g.Serve(context.Background(), "256.0.0.1:bad"); err == nil {
		t.Fatal("Serve on a bad address did not fail")
	}
}
