package chroma_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
)

func ptr(s string) *string { return &s }

// edgeBatch is n records covering every field's edge cases.
func edgeBatch(n, dim int) *record.Batch {
	b := &record.Batch{}
	for i := range n {
		id := fmt.Sprintf("doc.%d.a", i)
		switch i {
		case 1:
			id = "日本語-7"
		case 2:
			id = "emoji-🚀"
		case 3:
			id = "nul\x00id"
		}
		e := make([]float32, dim)
		for j := range e {
			e[j] = float32(math.Sin(float64(i*dim+j)+0.5)) * 3.7
		}
		if i == 4 {
			e[0] = float32(math.Copysign(0, -1))
			e[1] = math.SmallestNonzeroFloat32
			e[2] = math.MaxFloat32
			e[3] = math.Float32frombits(0x3dcccccd) // 0.1f
		}
		var doc *string
		switch i % 5 {
		case 0:
			doc = nil
		case 1:
			doc = ptr("")
		default:
			doc = ptr(strings.Repeat("ünïcödé \"q\" \\ <&> \n", 20) + fmt.Sprint(i))
		}
		var uri *string
		if i%2 == 0 {
			uri = ptr(fmt.Sprintf("s3://b/%d", i))
		}
		var md record.Metadata
		if i%3 != 0 {
			md = record.Metadata{
				"big":   int64(9007199254740993),
				"min":   int64(math.MinInt64),
				"one":   1.0,
				"tenth": 0.1,
				"flag":  i%2 == 0,
				"s":     "日本 🚀",
				"i":     int64(i),
			}
		}
		b.IDs = append(b.IDs, id)
		b.Embeddings = append(b.Embeddings, e)
		b.Documents = append(b.Documents, doc)
		b.URIs = append(b.URIs, uri)
		b.Metadatas = append(b.Metadatas, md)
	}
	return b
}

// readAll pages through a collection with all columns.
func readAll(t *testing.T, c *chroma.Client, tenant, db, id string, page int) *record.Batch {
	t.Helper()
	out := &record.Batch{}
	for off := 0; ; off += page {
		b, err := c.Get(t.Context(), tenant, db, id, chroma.GetRequest{Limit: page, Offset: off})
		if err != nil {
			t.Fatalf("get offset %d: %v", off, err)
		}
		out.IDs = append(out.IDs, b.IDs...)
		out.Embeddings = append(out.Embeddings, b.Embeddings...)
		out.Documents = append(out.Documents, b.Documents...)
		out.Metadatas = append(out.Metadatas, b.Metadatas...)
		out.URIs = append(out.URIs, b.URIs...)
		if b.Len() < page {
			return out
		}
	}
}

// compareBatches fails t at the first record that differs; embeddings are
// compared bit for bit.
func compareBatches(t *testing.T, got, want *record.Batch) {
	t.Helper()
	if got.Len() != want.Len() {
		t.Fatalf("got %d records, want %d", got.Len(), want.Len())
	}
	for i := range want.IDs {
		if got.IDs[i] != want.IDs[i] {
			t.Fatalf("record %d: id %q, want %q (get order must be insertion order)", i, got.IDs[i], want.IDs[i])
		}
		ge, we := got.Embeddings[i], want.Embeddings[i]
		if len(ge) != len(we) {
			t.Fatalf("record %q: embedding length %d, want %d", want.IDs[i], len(ge), len(we))
		}
		for j := range we {
			if math.Float32bits(ge[j]) != math.Float32bits(we[j]) {
				t.Fatalf("record %q: embedding[%d] = %v (%#x), want %v (%#x)", want.IDs[i], j, ge[j], math.Float32bits(ge[j]), we[j], math.Float32bits(we[j]))
			}
		}
		if !reflect.DeepEqual(got.Documents[i], want.Documents[i]) {
			t.Errorf("record %q: document %v, want %v", want.IDs[i], show(got.Documents[i]), show(want.Documents[i]))
		}
		if !reflect.DeepEqual(got.URIs[i], want.URIs[i]) {
			t.Errorf("record %q: uri %v, want %v", want.IDs[i], show(got.URIs[i]), show(want.URIs[i]))
		}
		if !reflect.DeepEqual(got.Metadatas[i], want.Metadatas[i]) {
			t.Errorf("record %q: metadata %#v, want %#v", want.IDs[i], got.Metadatas[i], want.Metadatas[i])
		}
	}
}

func show(s *string) string {
	if s == nil {
		return "null"
	}
	return fmt.Sprintf("%.30q", *s)
}

func TestRoundTripExact(t *testing.T) {
	c := server.Client(t)
	tenant, db := newDB(t, c)
	for _, space := range []string{"l2", "ip"} {
		t.Run(space, func(t *testing.T) {
			col, err := c.CreateCollection(t.Context(), tenant, db, chroma.CreateCollection{
				Name:          "rt." + space,
				Configuration: json.RawMessage(`{"hnsw":{"space":"` + space + `"}}`),
			})
			if err != nil {
				t.Fatal(err)
			}
			want := edgeBatch(53, 24)
			if err := c.Add(t.Context(), tenant, db, col.ID, want); err != nil {
				t.Fatalf("add: %v", err)
			}
			compareBatches(t, readAll(t, c, tenant, db, col.ID, 10), want)
			n, err := c.Count(t.Context(), tenant, db, col.ID)
			if err != nil || n != want.Len() {
				t.Errorf("Count = %d, %v; want %d", n, err, want.Len())
			}
			got, err := c.GetCollection(t.Context(), tenant, db, col.Name)
			if err != nil || got.Dimension == nil || *got.Dimension != 24 {
				t.Errorf("GetCollection = %+v, %v; want dimension 24", got, err)
			}
		})
	}
}

// TestJSONFloatFallback sends embeddings as decimal text, as the client
// does for a server without base64 support, and checks they stay exact.
func TestJSONFloatFallback(t *testing.T) {
	target, _ := url.Parse(server.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	var sawBase64 bool
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/pre-flight-checks") {
			io.WriteString(w, `{"max_batch_size":5461,"supports_base64_encoding":false}`)
			return
		}
		if strings.HasSuffix(r.URL.Path, "/add") {
			body, _ := io.ReadAll(r.Body)
			sawBase64 = sawBase64 || bytes.Contains(body, []byte(`"embeddings":["`))
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		proxy.ServeHTTP(w, r)
	}))
	defer s.Close()
	c, err := chroma.New(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	tenant, db := newDB(t, c)
	col, err := c.CreateCollection(t.Context(), tenant, db, chroma.CreateCollection{Name: "decimal"})
	if err != nil {
		t.Fatal(err)
	}
	want := edgeBatch(20, 16)
	if err := c.Add(t.Context(), tenant, db, col.ID, want); err != nil {
		t.Fatal(err)
	}
	if sawBase64 {
		t.Error("embeddings sent as base64 though the server said it does not support it")
	}
	compareBatches(t, readAll(t, c, tenant, db, col.ID, 100), want)
}

func TestAddSplitsByBytesAndCount(t *testing.T) {
	for _, tc := range []struct {
		name         string
		opts         []chroma.Option
		minRequests  int64
		maxRequests  int64
		records, dim int
	}{
		// Each record is about 2.7 KB encoded: 16 KiB fits 5 or 6.
		{"bytes", []chroma.Option{chroma.WithMaxRequestBytes(16 << 10)}, 15, 25, 90, 384},
		{"count", []chroma.Option{chroma.WithMaxBatchSize(7)}, 13, 13, 90, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, ct := countingClient(t, "/upsert", tc.opts...)
			tenant, db := newDB(t, c)
			col, err := c.CreateCollection(t.Context(), tenant, db, chroma.CreateCollection{Name: "split"})
			if err != nil {
				t.Fatal(err)
			}
			want := edgeBatch(tc.records, tc.dim)
			if err := c.Upsert(t.Context(), tenant, db, col.ID, want); err != nil {
				t.Fatal(err)
			}
			if n := ct.n.Load(); n < tc.minRequests || n > tc.maxRequests {
				t.Errorf("upsert requests = %d, want %d..%d", n, tc.minRequests, tc.maxRequests)
			}
			compareBatches(t, readAll(t, c, tenant, db, col.ID, 1000), want)
		})
	}
}

// TestAddEncodedRanges: a batch encoded once is added by ranges of
// records, each split into requests by bytes, and reads back whole.
func TestAddEncodedRanges(t *testing.T) {
	c, ct := countingClient(t, "/add", chroma.WithMaxRequestBytes(16<<10))
	ctx := t.Context()
	tenant, db := newDB(t, c)
	col, err := c.CreateCollection(ctx, tenant, db, chroma.CreateCollection{Name: "encoded"})
	if err != nil {
		t.Fatal(err)
	}
	want := edgeBatch(40, 384)
	e, err := c.Encode(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	if e.Len() != 40 {
		t.Fatalf("encoded %d records, want 40", e.Len())
	}
	for _, r := range [][2]int{{-1, 3}, {5, 41}, {7, 6}} {
		if err := c.AddEncoded(ctx, tenant, db, col.ID, e, r[0], r[1]); err == nil {
			t.Errorf("AddEncoded(%d, %d) of 40 records succeeded", r[0], r[1])
		}
	}
	if n := ct.n.Load(); n != 0 {
		t.Fatalf("%d add requests sent for bad ranges", n)
	}
	// The cut falls inside a request's worth of records: about 5 fit 16 KiB.
	for _, r := range [][2]int{{0, 33}, {33, 33}, {33, 40}} {
		if err := c.AddEncoded(ctx, tenant, db, col.ID, e, r[0], r[1]); err != nil {
			t.Fatalf("AddEncoded(%d, %d): %v", r[0], r[1], err)
		}
	}
	if n := ct.n.Load(); n < 8 || n > 12 {
		t.Errorf("add requests = %d, want 8..12", n)
	}
	compareBatches(t, readAll(t, c, tenant, db, col.ID, 100), want)
}

func TestAddRejectsUnsendableRecords(t *testing.T) {
	c, ct := countingClient(t, "/add", chroma.WithMaxRequestBytes(4096))
	ctx := t.Context()
	for name, b := range map[string]*record.Batch{
		"null embedding": {IDs: []string{"a", "b"}, Embeddings: [][]float32{{1}, nil}},
		"no embeddings":  {IDs: []string{"a"}, Documents: []*string{ptr("x")}},
		"ragged":         {IDs: []string{"a", "b"}, Embeddings: [][]float32{{1}}},
		"too big":        {IDs: []string{"a"}, Embeddings: [][]float32{make([]float32, 2000)}},
		"invalid utf8":   {IDs: []string{"a\xff"}, Embeddings: [][]float32{{1}}},
	} {
		if err := c.Add(ctx, "t", "d", "c", b); err == nil {
			t.Errorf("%s: Add succeeded", name)
		}
		if _, err := c.Encode(ctx, b); err == nil {
			t.Errorf("%s: Encode succeeded", name)
		}
	}
	if n := ct.n.Load(); n != 0 {
		t.Errorf("%d add requests sent for unsendable batches", n)
	}
}

func TestUpsertAndDelete(t *testing.T) {
	c := server.Client(t)
	ctx := t.Context()
	tenant, db := newDB(t, c)
	col, err := c.CreateCollection(ctx, tenant, db, chroma.CreateCollection{Name: "upsert-delete"})
	if err != nil {
		t.Fatal(err)
	}
	b := edgeBatch(10, 4)
	if err := c.Add(ctx, tenant, db, col.ID, b); err != nil {
		t.Fatal(err)
	}
	// Adding existing ids again is silently ignored: retried adds are safe.
	changed := edgeBatch(10, 4)
	changed.Documents[2] = ptr("changed")
	if err := c.Add(ctx, tenant, db, col.ID, changed); err != nil {
		t.Fatalf("re-add: %v", err)
	}
	compareBatches(t, readAll(t, c, tenant, db, col.ID, 100), b)
	if err := c.Upsert(ctx, tenant, db, col.ID, changed.Slice(2, 3)); err != nil {
		t.Fatal(err)
	}
	got, err := c.Get(ctx, tenant, db, col.ID, chroma.GetRequest{IDs: []string{changed.IDs[2]}, Include: []chroma.Include{chroma.IncludeDocuments}})
	if err != nil || got.Len() != 1 || *got.Documents[0] != "changed" || got.Embeddings != nil {
		t.Fatalf("get after upsert = %+v, %v", got, err)
	}
	if err := c.Delete(ctx, tenant, db, col.ID, []string{b.IDs[0], b.IDs[3], "no-such-id"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, tenant, db, col.ID, nil); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Count(ctx, tenant, db, col.ID); err != nil || n != 8 {
		t.Errorf("Count after delete = %d, %v; want 8", n, err)
	}
	ids, err := c.Get(ctx, tenant, db, col.ID, chroma.GetRequest{Include: []chroma.Include{}, Offset: 1, Limit: 2})
	if err != nil || !reflect.DeepEqual(ids.IDs, []string{b.IDs[2], b.IDs[4]}) || ids.Documents != nil {
		t.Errorf("ids-only page = %+v, %v; want [%q %q]", ids, err, b.IDs[2], b.IDs[4])
	}
}

// TestCosineReadBack checks cosine records read back: the server may
// return them as sent (still in its log) or normalized (after compaction),
// where a zero vector becomes null. Either must decode.
func TestCosineReadBack(t *testing.T) {
	c := server.Client(t)
	ctx := t.Context()
	tenant, db := newDB(t, c)
	col, err := c.CreateCollection(ctx, tenant, db, chroma.CreateCollection{Name: "cos", Configuration: json.RawMessage(`{"hnsw":{"space":"cosine"}}`)})
	if err != nil {
		t.Fatal(err)
	}
	b := &record.Batch{IDs: []string{"zero", "v"}, Embeddings: [][]float32{{0, 0, 0}, {3, 4, 0}}}
	if err := c.Add(ctx, tenant, db, col.ID, b); err != nil {
		t.Fatal(err)
	}
	got := readAll(t, c, tenant, db, col.ID, 10)
	if got.Len() != 2 {
		t.Fatalf("got %d records, want 2", got.Len())
	}
	if z := got.Embeddings[0]; z != nil && !reflect.DeepEqual(z, []float32{0, 0, 0}) {
		t.Errorf("zero vector came back as %v, want zeros or null", z)
	}
	v := got.Embeddings[1]
	exact := reflect.DeepEqual(v, []float32{3, 4, 0})
	normalized := len(v) == 3 && math.Abs(float64(v[0])-0.6) < 1e-6 && math.Abs(float64(v[1])-0.8) < 1e-6
	if !exact && !normalized {
		t.Errorf("cosine vector came back as %v, want [3 4 0] or about [0.6 0.8 0]", v)
	}
	t.Logf("cosine read back: %v (normalized: %v)", got.Embeddings, normalized)
}

func TestDecodeGetResponse(t *testing.T) {
	b, err := chroma.DecodeGetResponse(strings.NewReader(`{"ids":["a","b","c"],"embeddings":[[16777217,0.1,-0.0],null,[1e-45]],"documents":[null,"",""],"uris":["u",null,null],"metadatas":[{},null,{"i":9007199254740993,"f":1.0}],"include":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	e := b.Embeddings
	if e[1] != nil || math.Float32bits(e[0][0]) != math.Float32bits(16777216) || math.Float32bits(e[0][1]) != 0x3dcccccd ||
		math.Float32bits(e[0][2]) != 0x80000000 || math.Float32bits(e[2][0]) != 1 {
		t.Errorf("embeddings = %v, want float32-rounded values, -0, a subnormal and a null", e)
	}
	if b.Metadatas[0] != nil || b.Metadatas[1] != nil {
		t.Errorf("empty and null metadata = %#v, %#v; want nil", b.Metadatas[0], b.Metadatas[1])
	}
	if m := b.Metadatas[2]; m["i"] != int64(9007199254740993) || m["f"] != 1.0 {
		t.Errorf("metadata = %#v", m)
	}
	if b.Documents[0] != nil || b.Documents[1] == nil || *b.Documents[1] != "" {
		t.Errorf("documents = %v, want null then empty", b.Documents)
	}
}

func TestCreateCollectionKeepsConfiguration(t *testing.T) {
	c := server.Client(t)
	ctx := t.Context()
	tenant, db := newDB(t, c)
	hnswMeta := record.Metadata{"hnsw:space": "ip", "hnsw:M": int64(32), "owner": "app", "weight": 1.0}

	// The trap: a create with default configuration and hnsw:* metadata,
	// as Chroma's own clients send it, derives the configuration.
	legacy, err := c.CreateCollection(ctx, tenant, db, chroma.CreateCollection{Name: "legacy", Metadata: hnswMeta, MetadataOnCreate: true})
	if err != nil {
		t.Fatal(err)
	}
	if space := hnswSpace(t, legacy.Configuration); space != "ip" {
		t.Fatalf("legacy create: space %q, want ip derived from metadata (has the server changed?)", space)
	}

	// Restoring a default-configured collection whose metadata has hnsw:*
	// keys must keep the default configuration.
	def, err := c.CreateCollection(ctx, tenant, db, chroma.CreateCollection{Name: "plain"})
	if err != nil {
		t.Fatal(err)
	}
	for _, src := range []*chroma.Collection{legacy, def} {
		t.Run(src.Name, func(t *testing.T) {
			restored, err := c.CreateCollection(ctx, tenant, db, chroma.CreateCollection{
				Name: src.Name + ".restored", Configuration: src.Configuration, Metadata: hnswMeta,
			})
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.GetCollection(ctx, tenant, db, restored.Name)
			if err != nil {
				t.Fatal(err)
			}
			if !jsonEqual(t, got.Configuration, src.Configuration) {
				t.Errorf("configuration = %s, want %s", got.Configuration, src.Configuration)
			}
			if !reflect.DeepEqual(got.Metadata, hnswMeta) || !reflect.DeepEqual(restored.Metadata, hnswMeta) {
				t.Errorf("metadata = %#v (returned %#v), want %#v", got.Metadata, restored.Metadata, hnswMeta)
			}
		})
	}

	// GetOrCreate of an existing collection leaves its metadata alone.
	again, err := c.CreateCollection(ctx, tenant, db, chroma.CreateCollection{Name: "legacy", Metadata: record.Metadata{"other": "x"}, GetOrCreate: true})
	if err != nil || again.ID != legacy.ID || !reflect.DeepEqual(again.Metadata, hnswMeta) {
		t.Errorf("get-or-create = %+v, %v; want the existing collection unchanged", again, err)
	}
	if _, err := c.CreateCollection(ctx, tenant, db, chroma.CreateCollection{Name: "legacy"}); err == nil {
		t.Error("creating an existing collection succeeded")
	}
}

func hnswSpace(t *testing.T, cfg json.RawMessage) string {
	t.Helper()
	var v struct {
		HNSW struct {
			Space string `json:"space"`
		} `json:"hnsw"`
	}
	if err := json.Unmarshal(cfg, &v); err != nil {
		t.Fatalf("configuration %s: %v", cfg, err)
	}
	return v.HNSW.Space
}

func jsonEqual(t *testing.T, a, b json.RawMessage) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	return reflect.DeepEqual(x, y)
}

func TestCollectionsListModifyDelete(t *testing.T) {
	c, ct := countingClient(t, "/collections", chroma.WithListPageSize(2))
	ctx := t.Context()
	tenant, db := newDB(t, c)
	want := map[string]bool{}
	for i := range 5 {
		name := fmt.Sprintf("col.%d", i)
		if _, err := c.CreateCollection(ctx, tenant, db, chroma.CreateCollection{Name: name}); err != nil {
			t.Fatal(err)
		}
		want[name] = true
	}
	ct.n.Store(0)
	cols, err := c.ListCollections(ctx, tenant, db)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, col := range cols {
		got[col.Name] = true
	}
	if !reflect.DeepEqual(got, want) || len(cols) != 5 {
		t.Errorf("listed %v, want %v", got, want)
	}
	if n := ct.n.Load(); n != 3 {
		t.Errorf("list requests = %d, want 3 pages of 2", n)
	}
	if n, err := c.CountCollections(ctx, tenant, db); err != nil || n != 5 {
		t.Errorf("CountCollections = %d, %v; want 5", n, err)
	}

	col, err := c.GetCollection(ctx, tenant, db, "col.0")
	if err != nil {
		t.Fatal(err)
	}
	newName := "col.renamed"
	md := record.Metadata{"k": int64(1), "f": 2.0}
	if err := c.ModifyCollection(ctx, tenant, db, col.ID, &newName, md); err != nil {
		t.Fatal(err)
	}
	renamed, err := c.GetCollection(ctx, tenant, db, newName)
	if err != nil || renamed.ID != col.ID || !reflect.DeepEqual(renamed.Metadata, md) {
		t.Errorf("after modify: %+v, %v", renamed, err)
	}
	if err := c.ModifyCollection(ctx, tenant, db, col.ID, nil, record.Metadata{}); err == nil {
		t.Error("ModifyCollection with empty metadata succeeded; Chroma refuses it")
	}
	if err := c.DeleteCollection(ctx, tenant, db, newName); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetCollection(ctx, tenant, db, newName); err == nil {
		t.Error("collection still there after delete")
	}
}

// TestGetPageSize: GetPage gives the records Get gives and the size of
// Chroma's answer, by which the snapshotter sizes its pages.
func TestGetPageSize(t *testing.T) {
	target, _ := url.Parse(server.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	var answered atomic.Int64
	proxy.ModifyResponse = func(resp *http.Response) error {
		if !strings.HasSuffix(resp.Request.URL.Path, "/get") {
			return nil
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		answered.Store(int64(len(body)))
		resp.Body = io.NopCloser(bytes.NewReader(body))
		return nil
	}
	s := httptest.NewServer(proxy)
	defer s.Close()
	c, err := chroma.New(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	tenant, db := newDB(t, c)
	col, err := c.CreateCollection(t.Context(), tenant, db, chroma.CreateCollection{Name: "sized"})
	if err != nil {
		t.Fatal(err)
	}
	want := edgeBatch(30, 16)
	if err := c.Add(t.Context(), tenant, db, col.ID, want); err != nil {
		t.Fatal(err)
	}
	for _, include := range [][]chroma.Include{chroma.IncludeAll, {chroma.IncludeDocuments}} {
		b, size, err := c.GetPage(t.Context(), tenant, db, col.ID, chroma.GetRequest{Limit: 100, Include: include})
		if err != nil {
			t.Fatal(err)
		}
		if size <= 0 || int64(size) != answered.Load() {
			t.Errorf("include %v: size %d, Chroma answered %d bytes", include, size, answered.Load())
		}
		if b.Len() != want.Len() {
			t.Errorf("include %v: %d records, want %d", include, b.Len(), want.Len())
		}
	}
}

// TestAddRecordsAsLargeAsChromaTakes: Chroma takes any request body up to
// 40 MiB, so another client can store a record with a 36 MB document, and
// one with a 12 MB document of HTML's < > & characters (each escaped as
// \u003c by encoding/json, six times its size). A snapshot holds them, but
// Add refused the first as over its 32 MiB request target ("record encodes
// to 36000036 bytes, over the request limit") and the second as 72 MB: the
// rollback failed, the snapshot could not be restored. Both go back as
// they came, each in a request of its own.
func TestAddRecordsAsLargeAsChromaTakes(t *testing.T) {
	c := server.Client(t)
	ctx := t.Context()
	tenant, db := newDB(t, c)
	src, err := c.CreateCollection(ctx, tenant, db, chroma.CreateCollection{Name: "src"})
	if err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("abcdefghij", 3_600_000)
	html := strings.Repeat("<a>&</a>", 1_500_000)
	// Written the way a Python or JavaScript client writes them: plain
	// JSON, < > & as they are, the embeddings as numbers.
	for _, r := range []struct{ id, doc string }{{"small-1", "s"}, {"big", big}, {"html", html}, {"small-2", "t"}} {
		body, err := json.Marshal(map[string]any{"ids": []string{r.id}, "embeddings": [][]float32{{1, 2}}, "documents": []string{r.doc}})
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.ReplaceAll(body, []byte(`\u003c`), []byte("<"))
		body = bytes.ReplaceAll(body, []byte(`\u003e`), []byte(">"))
		body = bytes.ReplaceAll(body, []byte(`\u0026`), []byte("&"))
		if len(body) > 40<<20 {
			t.Fatalf("record %s: body of %d bytes, over Chroma's limit", r.id, len(body))
		}
		u := server.URL + "/api/v2/tenants/" + tenant + "/databases/" + db + "/collections/" + src.ID + "/add"
		resp, err := http.Post(u, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("add %s (%d bytes) as another client: %s %s", r.id, len(body), resp.Status, msg)
		}
	}
	want := readAll(t, c, tenant, db, src.ID, 1)
	dst, err := c.CreateCollection(ctx, tenant, db, chroma.CreateCollection{Name: "dst"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Add(ctx, tenant, db, dst.ID, want); err != nil {
		t.Fatalf("add what Chroma holds: %v", err)
	}
	compareBatches(t, readAll(t, c, tenant, db, dst.ID, 1), want)
}

// TestGetPageMaxBytes: an answer over MaxBytes is not read. When Chroma
// announces its size, GetPage says it; behind a proxy that streams it
// without a Content-Length, it stops reading past MaxBytes. An answer
// within MaxBytes, or a get without it, reads as before.
func TestGetPageMaxBytes(t *testing.T) {
	target, _ := url.Parse(server.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	var chunked atomic.Bool
	proxy.ModifyResponse = func(resp *http.Response) error {
		if chunked.Load() {
			resp.ContentLength = -1
			resp.Header.Del("Content-Length")
		}
		return nil
	}
	s := httptest.NewServer(proxy)
	defer s.Close()
	c, err := chroma.New(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	tenant, db := newDB(t, c)
	col, err := c.CreateCollection(ctx, tenant, db, chroma.CreateCollection{Name: "sized"})
	if err != nil {
		t.Fatal(err)
	}
	want := edgeBatch(60, 64)
	if err := c.Add(ctx, tenant, db, col.ID, want); err != nil {
		t.Fatal(err)
	}
	_, size, err := c.GetPage(ctx, tenant, db, col.ID, chroma.GetRequest{Limit: 60})
	if err != nil {
		t.Fatal(err)
	}
	for _, stream := range []bool{false, true} {
		chunked.Store(stream)
		_, _, err := c.GetPage(ctx, tenant, db, col.ID, chroma.GetRequest{Limit: 60, MaxBytes: size - 1})
		var tl *chroma.PageTooLargeError
		if !errors.As(err, &tl) || tl.MaxBytes != size-1 {
			t.Fatalf("streamed %v: get of a %d-byte answer with MaxBytes %d: %v, want a PageTooLargeError", stream, size, size-1, err)
		}
		if wantSize := map[bool]int64{false: int64(size), true: -1}[stream]; tl.Size != wantSize {
			t.Errorf("streamed %v: error says size %d, want %d", stream, tl.Size, wantSize)
		}
		got, n, err := c.GetPage(ctx, tenant, db, col.ID, chroma.GetRequest{Limit: 60, MaxBytes: size})
		if err != nil || n != size {
			t.Fatalf("streamed %v: get with MaxBytes of its size: %d bytes, %v", stream, n, err)
		}
		compareBatches(t, got, want)
	}
}

// TestListCollectionsCreatedWhilePaging: Chroma lists collections in UUID
// order by limit and offset, so a collection created between two pages
// with an id before the first page's last shifts the listing by one, and
// that last collection came back twice: a snapshot of the whole database
// would hold it twice. Each collection is listed once.
func TestListCollectionsCreatedWhilePaging(t *testing.T) {
	direct := server.Client(t)
	ctx := t.Context()
	tenant, db := newDB(t, direct)
	for i := range 6 {
		if _, err := direct.CreateCollection(ctx, tenant, db, chroma.CreateCollection{Name: fmt.Sprintf("before_%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	target, _ := url.Parse(server.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	var created atomic.Int64
	proxy.ModifyResponse = func(resp *http.Response) error {
		if !strings.HasSuffix(resp.Request.URL.Path, "/collections") || resp.Request.URL.Query().Get("offset") != "0" {
			return nil
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		var page []chroma.Collection
		if err := json.Unmarshal(body, &page); err != nil || len(page) == 0 {
			return fmt.Errorf("first page %s: %v", body, err)
		}
		// Created until one sorts before the page's last: the next page
		// then starts with that last one again.
		for i := 0; i < 50; i++ {
			c, err := direct.CreateCollection(ctx, tenant, db, chroma.CreateCollection{Name: fmt.Sprintf("during_%d", i)})
			if err != nil {
				return err
			}
			created.Add(1)
			if c.ID < page[len(page)-1].ID {
				return nil
			}
		}
		return errors.New("no collection created with an id before the first page's last")
	}
	s := httptest.NewServer(proxy)
	defer s.Close()
	c, err := chroma.New(s.URL, chroma.WithListPageSize(3))
	if err != nil {
		t.Fatal(err)
	}
	cols, err := c.ListCollections(ctx, tenant, db)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, col := range cols {
		seen[col.ID]++
		if seen[col.ID] == 2 {
			t.Errorf("collection %s (%s) listed twice", col.Name, col.ID)
		}
	}
	if created.Load() == 0 {
		t.Fatal("nothing was created while paging")
	}
}
