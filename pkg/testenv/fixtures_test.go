package testenv_test

import (
	"encoding/json"
	"math"
	"reflect"
	"testing"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
)

func TestSeedFixture(t *testing.T) {
	srv := testenv.StartChroma(t)
	c := srv.Client(t)
	ctx := t.Context()
	fx, err := testenv.SeedFixture(ctx, c)
	if err != nil {
		t.Fatalf("seed: %v", err)
	}
	if len(fx.Databases) != 3 {
		t.Fatalf("databases = %d, want 3", len(fx.Databases))
	}
	byName := map[string]*chroma.Collection{}
	for _, db := range fx.Databases {
		cols, err := c.ListCollections(ctx, db.Tenant, db.Database)
		if err != nil {
			t.Fatal(err)
		}
		if len(cols) != len(db.Collections) {
			t.Errorf("%s/%s: %d collections, want %d", db.Tenant, db.Database, len(cols), len(db.Collections))
		}
		for i := range cols {
			col := &cols[i]
			n, err := c.Count(ctx, db.Tenant, db.Database, col.ID)
			if err != nil || n != db.Records[col.Name] {
				t.Errorf("%s/%s/%s: count %d, %v; want %d", db.Tenant, db.Database, col.Name, n, err, db.Records[col.Name])
			}
			byName[db.Tenant+"/"+db.Database+"/"+col.Name] = col
		}
	}

	corpus := byName["acme/prod/corpus.v1"]
	if corpus == nil {
		t.Fatal("acme/prod/corpus.v1 missing")
	}
	var cfg struct {
		HNSW map[string]any `json:"hnsw"`
	}
	if err := json.Unmarshal(corpus.Configuration, &cfg); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"space": "l2", "ef_construction": 150.0, "max_neighbors": 24.0, "ef_search": 80.0} {
		if cfg.HNSW[k] != want {
			t.Errorf("corpus.v1 hnsw %s = %v, want %v", k, cfg.HNSW[k], want)
		}
	}
	legacy := byName["acme/prod/hnsw_meta"]
	if err := json.Unmarshal(legacy.Configuration, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.HNSW["space"] != "ip" || cfg.HNSW["max_neighbors"] != 32.0 || legacy.Metadata["hnsw:M"] != int64(32) {
		t.Errorf("hnsw_meta: configuration %s metadata %v, want space and M derived from hnsw:* keys", legacy.Configuration, legacy.Metadata)
	}
	if empty := byName["acme/prod/empty"]; empty.Metadata["version"] != int64(3) {
		t.Errorf("empty: metadata %v", empty.Metadata)
	}

	b, err := testenv.ReadAll(ctx, c, "acme", "prod", corpus.ID, 150)
	if err != nil {
		t.Fatal(err)
	}
	if b.Len() != 400 || len(b.Embeddings[0]) != 384 {
		t.Fatalf("corpus.v1: %d records of dim %d, want 400 of 384", b.Len(), len(b.Embeddings[0]))
	}
	seen := map[string]bool{}
	var nullDocs, emptyDocs, uris, nilMeta int
	for i, id := range b.IDs {
		seen[id] = true
		switch {
		case b.Documents[i] == nil:
			nullDocs++
		case *b.Documents[i] == "":
			emptyDocs++
		}
		if b.URIs[i] != nil {
			uris++
		}
		if b.Metadatas[i] == nil {
			nilMeta++
		}
	}
	for _, id := range []string{"doc.1.a", "日本語-7", "emoji-🚀", "nul\x00id"} {
		if !seen[id] {
			t.Errorf("id %q missing", id)
		}
	}
	if nullDocs == 0 || emptyDocs == 0 || uris == 0 || nilMeta == 0 {
		t.Errorf("null docs %d, empty docs %d, uris %d, nil metadata %d: want some of each", nullDocs, emptyDocs, uris, nilMeta)
	}
	md := b.Metadatas[0]
	want := record.Metadata{"big": int64(9007199254740993), "min": int64(math.MinInt64), "one": 1.0, "tenth": 0.1, "flag": true}
	for k, v := range want {
		if !reflect.DeepEqual(md[k], v) {
			t.Errorf("metadata %s = %#v, want %#v", k, md[k], v)
		}
	}
	e := b.Embeddings[3]
	if math.Float32bits(e[0]) != 0x80000000 || e[1] != math.SmallestNonzeroFloat32 || e[2] != math.MaxFloat32 {
		t.Errorf("edge embedding = %v, want -0, smallest subnormal, max float32", e[:5])
	}

	// Seeding is deterministic: a second server gets identical records.
	srv2 := testenv.StartChroma(t)
	c2 := srv2.Client(t)
	if _, err := testenv.SeedFixture(ctx, c2); err != nil {
		t.Fatal(err)
	}
	col2, err := c2.GetCollection(ctx, "acme", "prod", "corpus.v1")
	if err != nil {
		t.Fatal(err)
	}
	b2, err := testenv.ReadAll(ctx, c2, "acme", "prod", col2.ID, 1000)
	if err != nil {
		t.Fatal(err)
	}
	d1, d2 := record.NewDigest(), record.NewDigest()
	if err := d1.Add(b); err != nil {
		t.Fatal(err)
	}
	if err := d2.Add(b2); err != nil {
		t.Fatal(err)
	}
	if d1.Sum() != d2.Sum() {
		t.Error("two seeds of the fixture differ")
	}
}

func TestSeedWorkload(t *testing.T) {
	srv := testenv.StartChroma(t)
	c := srv.Client(t)
	ctx := t.Context()
	if err := testenv.SeedWorkload(ctx, c, "bench", "work", 3, 1100, 8, 50); err != nil {
		t.Fatal(err)
	}
	cols, err := c.ListCollections(ctx, "bench", "work")
	if err != nil || len(cols) != 3 {
		t.Fatalf("collections = %d, %v; want 3", len(cols), err)
	}
	total := 0
	for _, col := range cols {
		n, err := c.Count(ctx, "bench", "work", col.ID)
		if err != nil {
			t.Fatal(err)
		}
		total += n
	}
	if total != 1100 {
		t.Errorf("records = %d, want 1100", total)
	}
}
