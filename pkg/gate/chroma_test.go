package gate

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
)

const tenant = "default_tenant"

func sp(s string) *string { return &s }

func batch(prefix string, n int) *record.Batch {
	b := &record.Batch{}
	for i := range n {
		id := prefix + string(rune('a'+i))
		b.IDs = append(b.IDs, id)
		b.Embeddings = append(b.Embeddings, []float32{float32(i), 1, 0.5})
		b.Documents = append(b.Documents, sp("doc "+id))
		b.Metadatas = append(b.Metadatas, record.Metadata{"i": int64(i)})
	}
	return b
}

// expect503 checks that err is the gate's refusal naming op.
func expect503(t *testing.T, what string, err error, op string) {
	t.Helper()
	var ae *chroma.APIError
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusServiceUnavailable || ae.Type != ErrorWriteFenced ||
		!strings.Contains(ae.Message, op) {
		t.Errorf("%s through the fenced gate: %v, want 503 %s naming %s", what, err, ErrorWriteFenced, op)
	}
}

// raw sends a JSON request and returns the status, Retry-After and body.
func raw(t *testing.T, method, url, body string) (int, string, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Retry-After"), b
}

// state is what a database holds, read straight from Chroma.
type state struct {
	Collections []string
	Records     map[string]*record.Batch
	Metadata    map[string]record.Metadata
}

func readState(t *testing.T, c *chroma.Client, db string) state {
	t.Helper()
	ctx := context.Background()
	cols, err := c.ListCollections(ctx, tenant, db)
	if err != nil {
		t.Fatalf("list %s: %v", db, err)
	}
	s := state{Records: map[string]*record.Batch{}, Metadata: map[string]record.Metadata{}}
	for _, col := range cols {
		s.Collections = append(s.Collections, col.Name)
		s.Metadata[col.Name] = col.Metadata
		b, err := c.Get(ctx, tenant, db, col.ID, chroma.GetRequest{})
		if err != nil {
			t.Fatalf("get %s/%s: %v", db, col.Name, err)
		}
		s.Records[col.Name] = b
	}
	return s
}

// Through the gate, with a real Chroma and the fence in a real KV bucket:
// reads always pass; writes to the fenced database get 503 + Retry-After and
// change nothing; other databases stay writable; lowering the fence opens
// the database again.
func TestGateWithChroma(t *testing.T) {
	chr := testenv.StartChroma(t)
	n := testenv.StartNATS(t)
	kv := n.Assets.State
	ctx := context.Background()
	fences := watch(t, kv, FencesConn(n.Conn))

	g := New(mustURL(t, chr.URL), fences, WithRetryAfter(3),
		WithLogger(testenv.Logger(t, t.Output())))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- g.ServeListener(sctx, ln) }()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("ServeListener: %v", err)
		}
	})
	gateURL := "http://" + ln.Addr().String()
	// Apps retry 503s; here each refusal must come back at once.
	via, err := chroma.New(gateURL, chroma.WithRetryMaxElapsed(0), chroma.WithToken(testenv.Secret("app")))
	if err != nil {
		t.Fatal(err)
	}
	direct := chr.Client(t)

	// No fence: the gate is transparent, for writes too.
	if err := via.Heartbeat(ctx); err != nil {
		t.Fatalf("heartbeat through the gate: %v", err)
	}
	if v, err := via.Version(ctx); err != nil || v != "1.0.0" {
		t.Fatalf("version through the gate: %q %v", v, err)
	}
	cols := map[string]map[string]*chroma.Collection{}
	for _, db := range []string{"prod", "stage"} {
		if err := via.CreateDatabase(ctx, tenant, db); err != nil {
			t.Fatalf("create database %s through the gate: %v", db, err)
		}
		cols[db] = map[string]*chroma.Collection{}
		for _, name := range []string{"docs", "notes"} {
			col, err := via.CreateCollection(ctx, tenant, db, chroma.CreateCollection{
				Name: name, Metadata: record.Metadata{"owner": "app"},
			})
			if err != nil {
				t.Fatalf("create %s/%s through the gate: %v", db, name, err)
			}
			if err := via.Add(ctx, tenant, db, col.ID, batch(name+"-", 5)); err != nil {
				t.Fatalf("add to %s/%s through the gate: %v", db, name, err)
			}
			cols[db][name] = col
		}
	}
	prodDocs := cols["prod"]["docs"]
	collURL := gateURL + "/api/v2/tenants/" + tenant + "/databases/prod/collections/" + prodDocs.ID
	if code, _, body := raw(t, "POST", collURL+"/update", `{"ids":["docs-a"],"documents":["updated"]}`); code != 200 {
		t.Fatalf("update through the gate: %d %s", code, body)
	}
	if b, err := direct.Get(ctx, tenant, "prod", prodDocs.ID, chroma.GetRequest{IDs: []string{"docs-a"}}); err != nil ||
		b.Len() != 1 || *b.Documents[0] != "updated" {
		t.Fatalf("update did not reach Chroma: %+v %v", b, err)
	}

	// Raise the fence of prod as a rollback does.
	before := readState(t, direct, "prod")
	putFence(t, kv, tenant, "prod", "op_gate_1", "validation 0.80 < 0.95")
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	if err := g.Quiesce(qctx, tenant, "prod"); err != nil {
		t.Fatalf("Quiesce: %v", err)
	}
	cancel()

	// Every kind of write to prod is refused.
	const op = "op_gate_1"
	expect503(t, "add", via.Add(ctx, tenant, "prod", prodDocs.ID, batch("new-", 3)), op)
	expect503(t, "upsert", via.Upsert(ctx, tenant, "prod", prodDocs.ID, batch("docs-", 2)), op)
	expect503(t, "delete records", via.Delete(ctx, tenant, "prod", prodDocs.ID, []string{"docs-a"}), op)
	_, err = via.CreateCollection(ctx, tenant, "prod", chroma.CreateCollection{Name: "intruder"})
	expect503(t, "create collection", err, op)
	newName := "renamed"
	expect503(t, "rename collection", via.ModifyCollection(ctx, tenant, "prod", prodDocs.ID, &newName, nil), op)
	expect503(t, "modify metadata", via.ModifyCollection(ctx, tenant, "prod", prodDocs.ID, nil, record.Metadata{"x": "y"}), op)
	expect503(t, "delete collection", via.DeleteCollection(ctx, tenant, "prod", "notes"), op)
	expect503(t, "delete database", via.DeleteDatabase(ctx, tenant, "prod"), op)
	for _, w := range []struct{ method, url, body string }{
		{"POST", collURL + "/update", `{"ids":["docs-b"],"documents":["changed"]}`},
		{"POST", collURL + "/fork", `{"new_name":"forked"}`},
		{"POST", collURL + "/add", `{"ids":["raw"],"embeddings":[[1,2,3]]}`},
	} {
		code, ra, body := raw(t, w.method, w.url, w.body)
		var ref Refusal
		_ = json.Unmarshal(body, &ref)
		if code != 503 || ra != "3" || ref.OpID != op || ref.Reason != "validation 0.80 < 0.95" {
			t.Errorf("%s %s: %d Retry-After=%q %s", w.method, w.url, code, ra, body)
		}
	}

	// Reads of prod still work, through the gate.
	if b, err := via.Get(ctx, tenant, "prod", prodDocs.ID, chroma.GetRequest{}); err != nil || b.Len() != 5 {
		t.Errorf("get through the fenced gate: %v (%d records)", err, b.Len())
	}
	if c, err := via.Count(ctx, tenant, "prod", prodDocs.ID); err != nil || c != 5 {
		t.Errorf("count through the fenced gate: %d %v", c, err)
	}
	if l, err := via.ListCollections(ctx, tenant, "prod"); err != nil || len(l) != 2 {
		t.Errorf("list collections through the fenced gate: %d %v", len(l), err)
	}
	if c, err := via.CountCollections(ctx, tenant, "prod"); err != nil || c != 2 {
		t.Errorf("count collections through the fenced gate: %d %v", c, err)
	}
	if _, err := via.GetCollection(ctx, tenant, "prod", "docs"); err != nil {
		t.Errorf("get collection through the fenced gate: %v", err)
	}
	if _, err := via.GetDatabase(ctx, tenant, "prod"); err != nil {
		t.Errorf("get database through the fenced gate: %v", err)
	}
	code, _, body := raw(t, "POST", collURL+"/query",
		`{"query_embeddings":[[0,1,0.5]],"n_results":2,"include":["documents","distances"]}`)
	var qr struct {
		IDs [][]string `json:"ids"`
	}
	if code != 200 || json.Unmarshal(body, &qr) != nil || len(qr.IDs) != 1 || len(qr.IDs[0]) != 2 || qr.IDs[0][0] != "docs-a" {
		t.Errorf("query through the fenced gate: %d %s", code, body)
	}

	// Nothing changed in prod (read straight from Chroma).
	if after := readState(t, direct, "prod"); !reflect.DeepEqual(before, after) {
		t.Fatalf("prod changed behind the fence:\nbefore %+v\nafter  %+v", before, after)
	}

	// Another database stays writable.
	stageDocs := cols["stage"]["docs"]
	if err := via.Add(ctx, tenant, "stage", stageDocs.ID, batch("more-", 2)); err != nil {
		t.Fatalf("add to stage while prod is fenced: %v", err)
	}
	if c, err := direct.Count(ctx, tenant, "stage", stageDocs.ID); err != nil || c != 7 {
		t.Fatalf("stage count %d %v, want 7", c, err)
	}
	if err := via.CreateDatabase(ctx, tenant, "third"); err != nil {
		t.Fatalf("create another database while prod is fenced: %v", err)
	}

	// Lower the fence: prod is writable again.
	deleteFence(t, kv, tenant, "prod")
	eventually(t, 5*time.Second, "fence lowered", func() bool { _, ok := fences.Fenced(tenant, "prod"); return !ok })
	if err := via.Add(ctx, tenant, "prod", prodDocs.ID, batch("new-", 3)); err != nil {
		t.Fatalf("add after the fence was lowered: %v", err)
	}
	if c, err := direct.Count(ctx, tenant, "prod", prodDocs.ID); err != nil || c != 8 {
		t.Fatalf("prod count %d %v, want 8", c, err)
	}
	if err := via.DeleteCollection(ctx, tenant, "prod", "notes"); err != nil {
		t.Fatalf("delete collection after the fence was lowered: %v", err)
	}
}
