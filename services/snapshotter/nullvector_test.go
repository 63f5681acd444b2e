package snapshotter_test

import (
	"math"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
)

// TestSnapshotOfVectorChromaCannotNormalize: in a cosine space Chroma
// normalizes what it stores, and a vector whose norm overflows float32
// (Chroma accepts it) comes back from a get as [null, null, null]. The
// snapshot failed on it ("want a JSON number"), so no snapshot of that
// database could ever be taken, nor a safety snapshot of it. Such a vector
// holds nothing Chroma can give back: it is archived as a null embedding,
// as Chroma's null vectors are, and the others as they are.
func TestSnapshotOfVectorChromaCannotNormalize(t *testing.T) {
	e := newEnv(t)
	e.startService(t, snapshotter.Config{})
	ctx := t.Context()
	col, err := e.cc.CreateCollection(ctx, "default_tenant", "default_database", chroma.CreateCollection{
		Name: "cos", Metadata: record.Metadata{"hnsw:space": "cosine"}, MetadataOnCreate: true})
	if err != nil {
		t.Fatal(err)
	}
	doc := "d"
	b := &record.Batch{IDs: []string{"huge", "ok"},
		Embeddings: [][]float32{{math.MaxFloat32, math.MaxFloat32, 0}, {0.25, 0.5, 1}},
		Documents:  []*string{&doc, &doc}}
	if err := e.cc.Add(ctx, "default_tenant", "default_database", col.ID, b); err != nil {
		t.Fatal(err)
	}
	r := e.create(t, contract.SnapshotCreateRequest{Name: "cos"})
	op := e.waitOp(t, r.OpID, time.Minute)
	if op.Status != contract.StatusCompleted {
		t.Fatalf("snapshot %s: %s", op.Status, op.Error)
	}
	m, ok := e.manifest(t, r.SnapshotID)
	if !ok {
		t.Fatal("no manifest")
	}
	_, batches := e.readArchive(t, m.Object)
	got := map[string][]float32{}
	for _, ab := range batches {
		for i, id := range ab.Records.IDs {
			got[id] = ab.Records.Embeddings[i]
		}
	}
	if len(got) != 2 || got["huge"] != nil || len(got["ok"]) != 3 {
		t.Errorf("archived embeddings %v", got)
	}
}
