package restorer_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
)

// damage does to acme/prod what a bad migration does: deletes records,
// overwrites documents, metadata and embeddings, changes a collection's
// metadata, fills an empty collection, drops a collection and creates a
// new one. round makes each call's damage differ.
func damage(t *testing.T, cc *chroma.Client, round int) {
	t.Helper()
	ctx := t.Context()
	const tenant, db = "acme", "prod"
	get := func(name string) *chroma.Collection {
		c, err := cc.GetCollection(ctx, tenant, db, name)
		if err != nil {
			t.Fatalf("damage: %v", err)
		}
		return c
	}
	ids := func(c *chroma.Collection) *record.Batch {
		b, err := testenv.ReadAll(ctx, cc, tenant, db, c.ID, 1000)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("damage: %v", err)
		}
	}

	corpus := get("corpus.v1")
	all := ids(corpus)
	must(cc.Delete(ctx, tenant, db, corpus.ID, all.IDs[10:40]))
	over := all.Slice(50, 70)
	docs := make([]*string, over.Len())
	metas := make([]record.Metadata, over.Len())
	for i := range docs {
		d := fmt.Sprintf("migrated text %d round %d", i, round)
		docs[i] = &d
		metas[i] = record.Metadata{"migrated": true, "round": int64(round), "chunk": 1.5}
	}
	must(cc.Upsert(ctx, tenant, db, corpus.ID, &record.Batch{IDs: over.IDs, Embeddings: over.Embeddings, Documents: docs, Metadatas: metas}))
	must(cc.ModifyCollection(ctx, tenant, db, corpus.ID, nil, record.Metadata{"description": "migrated corpus", "schema": int64(3 + round)}))

	pers := get("personality")
	p := ids(pers)
	emb := make([][]float32, 20)
	for i := range emb {
		emb[i] = make([]float32, 16)
		emb[i][i%16] = float32(round + 1)
	}
	must(cc.Upsert(ctx, tenant, db, pers.ID, &record.Batch{IDs: p.IDs[100:120], Embeddings: emb}))

	cos := get("cosine_768")
	cb := ids(cos)
	must(cc.Delete(ctx, tenant, db, cos.ID, cb.IDs[:50]))

	empty := get("empty")
	must(cc.Add(ctx, tenant, db, empty.ID, &record.Batch{IDs: []string{"not-empty-anymore"}, Embeddings: [][]float32{{1, 2, 3}}}))

	if err := cc.DeleteCollection(ctx, tenant, db, "hnsw_meta"); err != nil && !errors.Is(err, chroma.ErrNotFound) {
		t.Fatalf("damage: %v", err)
	}
	added, err := cc.CreateCollection(ctx, tenant, db, chroma.CreateCollection{Name: "migration_added", GetOrCreate: true,
		Metadata: record.Metadata{"created_by": "migration"}})
	must(err)
	must(cc.Upsert(ctx, tenant, db, added.ID, &record.Batch{IDs: []string{"m1", "m2"}, Embeddings: [][]float32{{1, 2}, {3, 4}}}))
}
