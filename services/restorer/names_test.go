package restorer_test

import (
	"strings"
	"testing"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/legacy"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
	"github.com/chromadb-rollback/chromadb-rollback/services/restorer"
)

// TestPlanRefusesNamesChromaCannotCreate: the seed tool's Chroma allowed
// collection names this Chroma refuses ("with space", two characters). The
// plan said nothing of them; the rollback created the tenant and database,
// wrote the collections before, and failed at the first such name. The plan
// must refuse them (400), naming each and the rename that restores it, and
// the rollback with the renames must restore everything.
func TestPlanRefusesNamesChromaCannotCreate(t *testing.T) {
	e := newEnv(t)
	e.startSnapshotter(t)
	e.startRestorer(t, restorer.Config{}, nil)
	doc := "d"
	one := &record.Batch{IDs: []string{"i1"}, Embeddings: [][]float32{{0.5, 0.25}}, Documents: []*string{&doc},
		Metadatas: []record.Metadata{{"a": int64(1)}}, URIs: []*string{nil}}
	id := importSeed(t, e, "seednames", "main",
		legacy.SeedCollectionFromBatch("ok_name", one, 10),
		legacy.SeedCollectionFromBatch("with space", one, 10),
		legacy.SeedCollectionFromBatch("xy", one, 10))

	for _, req := range []contract.RollbackRequest{
		{SnapshotID: id},
		{SnapshotID: id, Rename: map[string]string{"xy": "xy_restored"}},
	} {
		code, eb := e.requestError(t, e.subj.API("rollback", "plan"), req)
		if code != contract.CodeBadRequest || eb.Field != "rename" || !strings.Contains(eb.Error, `"with space"`) ||
			(req.Rename == nil) != strings.Contains(eb.Error, `"xy"`) {
			t.Errorf("plan %+v: %d %+v", req.Rename, code, eb)
		}
	}
	req := contract.RollbackRequest{SnapshotID: id, Rename: map[string]string{"with space": "with_space", "xy": "xy_restored"}}
	code, eb := e.requestError(t, e.subj.API("rollback", "start"), contract.RollbackRequest{SnapshotID: id, Confirm: true})
	if code != contract.CodeBadRequest {
		t.Errorf("start without renames: %d %+v", code, eb)
	}
	if st := e.dump(t, "seednames", "main"); len(st) != 0 {
		t.Errorf("a refused rollback created %q", st.names())
	}
	// Chroma cannot create a tenant or database of fewer than 3 characters
	// either: the rollback failed at the create.
	for field, r := range map[string]contract.RollbackRequest{
		"target_database": {SnapshotID: id, Rename: req.Rename, TargetDatabase: "x"},
		"target_tenant":   {SnapshotID: id, Rename: req.Rename, TargetTenant: "ab", TargetDatabase: "main"},
	} {
		code, eb := e.requestError(t, e.subj.API("rollback", "plan"), r)
		// The name was given already: "restore elsewhere" would not help.
		if code != contract.CodeBadRequest || eb.Field != field || !strings.Contains(eb.Error, "at least 3 characters") ||
			strings.Contains(eb.Error, "restore elsewhere") {
			t.Errorf("plan into %s/%s: %d %+v", r.TargetTenant, r.TargetDatabase, code, eb)
		}
	}
	e.rollback(t, req)
	if got := e.dump(t, "seednames", "main").names(); strings.Join(got, ",") != "ok_name,with_space,xy_restored" {
		t.Errorf("restored %q", got)
	}
}

// TestPlanRefusesCollectionWithoutEmbeddings: a seed archive may hold a
// collection whose records have no embedding at all (the import accepts a
// missing or null "embedding"); the snapshot then records no dimension, and
// no zero vector can stand in for them. The plan warned of zero vectors and
// the rollback failed at the write, after the lease, the fence and the
// safety snapshot. The plan must refuse it (400), naming it, and a partial
// rollback of the other collections must restore them. Found by hand.
func TestPlanRefusesCollectionWithoutEmbeddings(t *testing.T) {
	e := newEnv(t)
	e.startSnapshotter(t)
	e.startRestorer(t, restorer.Config{}, nil)
	doc := "d"
	with := &record.Batch{IDs: []string{"i1"}, Embeddings: [][]float32{{0.5, 0.25}}, Documents: []*string{&doc},
		Metadatas: []record.Metadata{{"a": int64(1)}}, URIs: []*string{nil}}
	without := &record.Batch{IDs: []string{"n1", "n2"}, Embeddings: [][]float32{nil, nil}, Documents: []*string{&doc, nil},
		Metadatas: []record.Metadata{nil, {"b": "x"}}, URIs: []*string{nil, nil}}
	id := importSeed(t, e, "seednoemb", "main",
		legacy.SeedCollectionFromBatch("with_embeddings", with, 10),
		legacy.SeedCollectionFromBatch("no_embeddings", without, 10))

	for _, api := range []string{"plan", "start"} {
		code, eb := e.requestError(t, e.subj.API("rollback", api), contract.RollbackRequest{SnapshotID: id, Confirm: true})
		if code != contract.CodeBadRequest || !strings.Contains(eb.Error, `collection "no_embeddings": none of its 2 records has an embedding`) ||
			!strings.Contains(eb.Error, "--partial --failed-collections") {
			t.Errorf("%s: %d %+v", api, code, eb)
		}
	}
	if st := e.dump(t, "seednoemb", "main"); len(st) != 0 {
		t.Errorf("a refused rollback created %q", st.names())
	}
	e.rollback(t, contract.RollbackRequest{SnapshotID: id, Collections: []string{"with_embeddings"}})
	if names := e.dump(t, "seednoemb", "main").names(); len(names) != 1 || names[0] != "with_embeddings" {
		t.Errorf("partial rollback of the others: %q", names)
	}
}
