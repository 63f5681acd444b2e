package restorer_test

import (
	"encoding/json"
	"fmt"
	"math"
	"testing"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/legacy"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
	"github.com/chromadb-rollback/chromadb-rollback/services/restorer"
)

// TestRollbackOfFloatsChromaCannotStore: Chroma 1.0 parses JSON numbers
// with a float parser that is not correctly rounded, twice, so some float64
// values cannot be stored at all whatever their decimal text: 90.28571428571429
// (632/7) comes back as 90.28571428571428. An archive of the seed tool (whose
// Chroma stored Python's floats exactly) holds such values in its metadata;
// its rollback failed verification on them, leaving the archive impossible
// to restore. It must restore, the values within a few ULPs, and say how
// many Chroma changed.
func TestRollbackOfFloatsChromaCannotStore(t *testing.T) {
	e := newEnv(t)
	e.startSnapshotter(t)
	e.startRestorer(t, restorer.Config{}, nil)
	b := &record.Batch{}
	for i := 600; i < 700; i++ {
		b.IDs = append(b.IDs, fmt.Sprintf("r%04d", i))
		emb := make([]float32, 8)
		for j := range emb {
			emb[j] = float32(math.Sin(float64(i*8+j))) / 3
		}
		b.Embeddings = append(b.Embeddings, emb)
		doc := fmt.Sprintf("document %d", i)
		b.Documents = append(b.Documents, &doc)
		b.Metadatas = append(b.Metadatas, record.Metadata{"x": float64(i) / 7, "n": int64(i)})
		b.URIs = append(b.URIs, nil)
	}
	id := importSeed(t, e, "seedfloats", "main", legacy.SeedCollectionFromBatch("scores", b, 40))
	op := e.rollback(t, contract.RollbackRequest{SnapshotID: id})
	if op.Restore == nil || !op.Restore.Verified || len(op.Restore.Collections) != 1 {
		t.Fatalf("report %s", mustJSON(t, op.Restore))
	}
	if n := op.Restore.Collections[0].MetadataFloatsOff; n == 0 {
		t.Errorf("the report does not say Chroma changed some floats: %s", mustJSON(t, op.Restore))
	}
	got := e.dump(t, "seedfloats", "main")["scores"]
	if got == nil || got.Records.Len() != b.Len() {
		t.Fatalf("restored %+v", got)
	}
	idx := map[string]int{}
	for i, id := range got.Records.IDs {
		idx[id] = i
	}
	changed := 0
	for i, id := range b.IDs {
		g, ok := idx[id]
		if !ok {
			t.Fatalf("record %q missing", id)
		}
		want, have := b.Metadatas[i]["x"].(float64), got.Records.Metadatas[g]["x"].(float64)
		if have != want {
			changed++
		}
		if d := math.Abs(have-want) / math.Abs(want); d > 1e-15 {
			t.Errorf("record %q: x %v, want %v", id, have, want)
		}
		if got.Records.Metadatas[g]["n"] != b.Metadatas[i]["n"] {
			t.Errorf("record %q: n %v, want %v", id, got.Records.Metadatas[g]["n"], b.Metadatas[i]["n"])
		}
	}
	if int64(changed) != op.Restore.Collections[0].MetadataFloatsOff {
		t.Errorf("%d values changed, the report says %d", changed, op.Restore.Collections[0].MetadataFloatsOff)
	}
}

// importSeed imports an archive of the seed tool holding colls into
// tenant/db and returns the snapshot's id.
func importSeed(t *testing.T, e *env, tenant, db string, colls ...legacy.SeedCollection) string {
	t.Helper()
	return importSeedArchive(t, e, tenant, db, &legacy.SeedArchive{Dir: "snapshot_20251130_143022", ChromaVersion: "0.4.24",
		Timestamp: "2025-11-30T14:30:22", Collections: colls})
}

// importSeedArchive imports a, an archive of the seed tool, into tenant/db
// and returns the snapshot's id.
func importSeedArchive(t *testing.T, e *env, tenant, db string, a *legacy.SeedArchive) string {
	t.Helper()
	data, manifest, err := legacy.BuildSeedArchive(a, a.Dir, "pre_migration")
	if err != nil {
		t.Fatal(err)
	}
	staged := contract.ImportStagingPrefix + contract.NewID("")
	if _, err := e.nats.Assets.Snapshots.PutBytes(t.Context(), staged, data); err != nil {
		t.Fatal(err)
	}
	code, reply := e.request(t, e.subj.API("snapshot", "import"), contract.SnapshotImportRequest{
		Envelope: contract.NewEnvelope(contract.TypeImportRequest), Object: staged, Manifest: manifest,
		Tenant: tenant, Database: db, FileName: a.Dir + ".tar.gz"})
	var m contract.SnapshotManifest
	if code != 0 || json.Unmarshal(reply, &m) != nil || m.SnapshotID == "" {
		t.Fatalf("import: %d %s", code, reply)
	}
	return m.SnapshotID
}
