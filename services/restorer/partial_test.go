package restorer_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
	"github.com/chromadb-rollback/chromadb-rollback/services/restorer"
)

// TestPartialAndBatchRollback: a partial rollback restores exactly the
// collections it names and a batch-level one exactly the records of the
// batches it names; every other collection and record keeps its content,
// compared in full before and after.
func TestPartialAndBatchRollback(t *testing.T) {
	e := seeded(t)
	// Two adders: batches complete out of order and are checkpointed in
	// order. The last batch written is split in two parts (as a large one
	// would be) that are verified and checkpointed as one batch.
	e.splitMin = 2
	var parts atomic.Int32
	e.startRestorer(t, restorer.Config{AddWorkers: 2}, func(_ context.Context, p restorer.HookPoint) error {
		if p.Name == "part" {
			parts.Add(1)
		}
		return nil
	})
	pre := e.dump(t, "acme", "prod")
	staging, beta := e.dump(t, "acme", "staging"), e.dump(t, "beta", "main")
	snap := e.snapshot(t, "acme", "prod", "pre_migration")
	damage(t, e.cc, 1)
	damaged := e.dump(t, "acme", "prod")

	t.Run("partial", func(t *testing.T) {
		p := e.plan(t, contract.RollbackRequest{SnapshotID: snap, Collections: []string{"personality", "hnsw_meta"}})
		for _, it := range p.Items {
			want := contract.PlanUntouched
			switch it.Collection {
			case "personality":
				want = contract.PlanReplace
			case "hnsw_meta":
				want = contract.PlanCreate
			}
			if it.Action != want {
				t.Errorf("plan item %+v, want %s", it, want)
			}
		}
		if p.Mode != "partial" || p.WriteRecords != 250 {
			t.Errorf("plan mode %s writes %d, want partial and 250", p.Mode, p.WriteRecords)
		}
		e.rollback(t, contract.RollbackRequest{SnapshotID: snap, Collections: []string{"personality", "hnsw_meta"}})
		if parts.Load() == 0 {
			t.Error("the last batch written was not split in parts")
		}
		want := damaged.clone()
		want["personality"], want["hnsw_meta"] = pre["personality"], pre["hnsw_meta"]
		compareDB(t, "after partial rollback", e.dump(t, "acme", "prod"), want, nil)
		compareDB(t, "acme/staging", e.dump(t, "acme", "staging"), staging, nil)
		compareDB(t, "beta/main", e.dump(t, "beta", "main"), beta, nil)
		e.assertReleased(t)
	})

	t.Run("batch-level", func(t *testing.T) {
		batches := e.archiveBatches(t, snap)["corpus.v1"]
		if len(batches) < 3 {
			t.Fatalf("corpus.v1 has %d batches; the test needs 3 or more", len(batches))
		}
		// damage deleted records 10..39 and overwrote 50..69, all in
		// batch_000000; batch_000001 is damaged here.
		corpus, err := e.cc.GetCollection(t.Context(), "acme", "prod", "corpus.v1")
		if err != nil {
			t.Fatal(err)
		}
		b1 := batches["batch_000001"]
		if err := e.cc.Delete(t.Context(), "acme", "prod", corpus.ID, b1[:5]); err != nil {
			t.Fatal(err)
		}
		sel := []string{"batch_000000", "batch_000002"}
		p := e.plan(t, contract.RollbackRequest{SnapshotID: snap, Batches: map[string][]string{"corpus.v1": sel}})
		if p.Mode != "batches" || p.WriteRecords != int64(len(batches["batch_000000"])+len(batches["batch_000002"])) {
			t.Errorf("plan %s", mustJSON(t, p))
		}
		for _, it := range p.Items {
			if it.Collection == "corpus.v1" && (it.Action != contract.PlanUpsert || !slices.Equal(it.Batches, sel)) {
				t.Errorf("plan item %+v", it)
			}
			// Each named batch's records, as the archive holds them.
			if want := []int64{int64(len(batches["batch_000000"])), int64(len(batches["batch_000002"]))}; it.Collection == "corpus.v1" && !slices.Equal(it.BatchCounts, want) {
				t.Errorf("plan item %+v: batch counts %v, want %v", it, it.BatchCounts, want)
			}
			if it.Collection != "corpus.v1" && it.BatchCounts != nil {
				t.Errorf("plan item %+v: batch counts of a collection not rolled back", it)
			}
		}
		before := e.dump(t, "acme", "prod")
		op := e.rollback(t, contract.RollbackRequest{SnapshotID: snap, Batches: map[string][]string{"corpus.v1": sel}})
		if !op.Restore.Verified || op.Restore.RecordsWritten != p.WriteRecords {
			t.Errorf("report %s", mustJSON(t, op.Restore))
		}
		after := e.dump(t, "acme", "prod")
		// Every other collection is as it was.
		for name := range before {
			if name != "corpus.v1" {
				compareCollection(t, "after batch rollback/"+name, after[name], before[name])
			}
		}
		// In corpus.v1, the records of the named batches are the
		// snapshot's; every other record is as it was, metadata included.
		restored := map[string]bool{}
		for _, b := range sel {
			for _, id := range batches[b] {
				restored[id] = true
			}
		}
		want := mixRecords(pre["corpus.v1"].Records, before["corpus.v1"].Records, restored)
		wantColl := *before["corpus.v1"]
		wantColl.Records = want
		compareCollection(t, "after batch rollback/corpus.v1", after["corpus.v1"], &wantColl)
		if after["corpus.v1"].ID != before["corpus.v1"].ID {
			t.Errorf("corpus.v1 is %s after a batch-level rollback, %s before; upserts keep the collection", after["corpus.v1"].ID, before["corpus.v1"].ID)
		}
		for _, id := range b1[:5] {
			if slices.Contains(after["corpus.v1"].Records.IDs, id) {
				t.Errorf("record %q of an unnamed batch came back", id)
			}
		}
		e.assertReleased(t)
	})

	t.Run("unknown names are refused", func(t *testing.T) {
		for _, tc := range []struct {
			req  contract.RollbackRequest
			want string
		}{
			{contract.RollbackRequest{SnapshotID: snap, Collections: []string{"personality", "ghost", "phantom"}}, `"ghost", "phantom"`},
			{contract.RollbackRequest{SnapshotID: snap, Batches: map[string][]string{"ghost": {"batch_000000"}}}, `"ghost"`},
			{contract.RollbackRequest{SnapshotID: snap, Batches: map[string][]string{"corpus.v1": {"batch_000000", "batch_999999"}}}, `"corpus.v1:batch_999999"`},
		} {
			code, body := e.requestError(t, e.subj.API("rollback", "plan"), tc.req)
			if code != contract.CodeBadRequest || !strings.Contains(body.Error, tc.want) {
				t.Errorf("plan %+v: %d %q; want 400 naming %s", tc.req, code, body.Error, tc.want)
			}
		}
	})
}

// mixRecords is base with the records whose ids are in take replaced by
// (or, if missing, added from) from's.
func mixRecords(from, base *record.Batch, take map[string]bool) *record.Batch {
	out := &record.Batch{IDs: []string{}, Embeddings: [][]float32{}, Documents: []*string{}, Metadatas: []record.Metadata{}, URIs: []*string{}}
	add := func(b *record.Batch, i int) {
		out.IDs = append(out.IDs, b.IDs[i])
		out.Embeddings = append(out.Embeddings, b.Embeddings[i])
		out.Documents = append(out.Documents, b.Documents[i])
		out.Metadatas = append(out.Metadatas, b.Metadatas[i])
		out.URIs = append(out.URIs, b.URIs[i])
	}
	for i, id := range base.IDs {
		if !take[id] {
			add(base, i)
		}
	}
	for i, id := range from.IDs {
		if take[id] {
			add(from, i)
		}
	}
	return out
}

// TestBatchRollbackIntoReembeddedCollection: a migration that re-embedded
// a collection (recreated it with embeddings of another dimension) leaves
// one the snapshot's batches cannot be upserted into. The plan refuses the
// batch-level rollback, naming the partial rollback that restores it, and
// nothing is written; the partial rollback then does.
func TestBatchRollbackIntoReembeddedCollection(t *testing.T) {
	e := seeded(t)
	e.startRestorer(t, restorer.Config{}, nil)
	ctx := t.Context()
	pre := e.dump(t, "acme", "prod")
	snap := e.snapshot(t, "acme", "prod", "pre_migration")

	if err := e.cc.DeleteCollection(ctx, "acme", "prod", "personality"); err != nil {
		t.Fatal(err)
	}
	c, err := e.cc.CreateCollection(ctx, "acme", "prod", chroma.CreateCollection{Name: "personality", Configuration: json.RawMessage(`{"hnsw":{"space":"ip"}}`)})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.cc.Add(ctx, "acme", "prod", c.ID, &record.Batch{IDs: []string{"reembedded"}, Embeddings: [][]float32{make([]float32, 32)}}); err != nil {
		t.Fatal(err)
	}
	migrated := e.dump(t, "acme", "prod")

	req := contract.RollbackRequest{SnapshotID: snap, Batches: map[string][]string{"personality": {"batch_000000"}}, Confirm: true}
	code, body := e.requestError(t, e.subj.API("rollback", "start"), req)
	if code != contract.CodeBadRequest || body.Field != "batches" ||
		!strings.Contains(body.Error, "now holds 32-dimensional embeddings and the snapshot's \"personality\" 16-dimensional ones") ||
		!strings.Contains(body.Error, "--partial --failed-collections personality") {
		t.Errorf("batch-level rollback into the re-embedded collection: %d %+v", code, body)
	}
	compareDB(t, "after the refusal", e.dump(t, "acme", "prod"), migrated, nil)

	e.rollback(t, contract.RollbackRequest{SnapshotID: snap, Collections: []string{"personality"}})
	got := e.dump(t, "acme", "prod")
	compareCollection(t, "personality", got["personality"], pre["personality"])
}
