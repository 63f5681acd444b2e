package restorer_test

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/legacy"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/chromadb-rollback/chromadb-rollback/services/restorer"
)

// TestRestoreElsewhere restores a snapshot into another tenant and
// database under new collection names, and into another Chroma server,
// leaving the source as it was.
func TestRestoreElsewhere(t *testing.T) {
	e := seeded(t)
	other := testenv.StartChroma(t)
	e.startRestorer(t, restorer.Config{AllowedChromaURLs: []string{other.URL + "/"}}, nil)
	pre := e.dump(t, "acme", "prod")
	snap := e.snapshot(t, "acme", "prod", "pre_migration")

	t.Run("another tenant and database, renamed", func(t *testing.T) {
		rename := map[string]string{"corpus.v1": "corpus_restored", "hnsw_meta": "legacy.meta"}
		req := contract.RollbackRequest{SnapshotID: snap, TargetTenant: "gamma", TargetDatabase: "copy", Rename: rename}
		p := e.plan(t, req)
		if p.Tenant != "gamma" || p.Database != "copy" || p.SafetySnapshot || p.WriteRecords != 800 {
			t.Errorf("plan %s", mustJSON(t, p))
		}
		for _, it := range p.Items {
			if it.Action != contract.PlanCreate || (rename[it.Collection] != "" && it.Target != rename[it.Collection]) {
				t.Errorf("plan item %+v", it)
			}
		}
		if !slices.ContainsFunc(p.Warnings, func(w string) bool {
			return strings.Contains(w, `tenant "gamma" does not exist`) && strings.Contains(w, "database gamma/copy will be created")
		}) {
			t.Errorf("plan does not say the tenant and the database will be created: %q", p.Warnings)
		}
		// An existing tenant: only the database is new.
		if p := e.plan(t, contract.RollbackRequest{SnapshotID: snap, TargetDatabase: "copy"}); !slices.ContainsFunc(p.Warnings, func(w string) bool {
			return strings.Contains(w, "database acme/copy does not exist") && !strings.Contains(w, "tenant")
		}) {
			t.Errorf("plan into a new database of tenant acme: %q", p.Warnings)
		}
		// A partial rollback into another database may rename onto the
		// name of a snapshot collection it leaves alone: the plan says
		// that the target is written, though that row reads untouched.
		pp := e.plan(t, contract.RollbackRequest{SnapshotID: snap, TargetDatabase: "copy", Collections: []string{"corpus.v1"},
			Rename: map[string]string{"corpus.v1": "personality"}})
		if !slices.ContainsFunc(pp.Warnings, func(w string) bool {
			return strings.Contains(w, `collection "personality" in acme/copy is written with the snapshot's "corpus.v1"`)
		}) {
			t.Errorf("plan renaming onto an untouched collection's name: %q", pp.Warnings)
		}
		e.rollback(t, req)
		compareDB(t, "gamma/copy", e.dump(t, "gamma", "copy"), pre, rename)
		compareDB(t, "acme/prod", e.dump(t, "acme", "prod"), pre, nil)
		e.assertReleased(t)
	})

	t.Run("a database whose name cannot stand in a NATS key", func(t *testing.T) {
		// Chroma takes "prød eu" as a database name; its lease and fence
		// keys must still be valid keys, or the rollback cannot start.
		db := "prød eu"
		req := contract.RollbackRequest{SnapshotID: snap, TargetDatabase: db}
		e.rollback(t, req)
		compareDB(t, "acme/"+db, e.dump(t, "acme", db), pre, nil)
		e.assertReleased(t)
		// Again, now replacing what is there: the safety snapshot of that
		// database reads its lease and fence too.
		op := e.rollback(t, req)
		if op.Restore == nil || op.Restore.SafetySnapshotID == "" {
			t.Errorf("no safety snapshot replacing acme/%s: %s", db, mustJSON(t, op))
		}
		compareDB(t, "acme/"+db+" replaced", e.dump(t, "acme", db), pre, nil)
		e.assertReleased(t)
	})

	t.Run("another Chroma", func(t *testing.T) {
		occ := other.Client(t)
		req := contract.RollbackRequest{SnapshotID: snap, ChromaURL: other.URL}
		if p := e.plan(t, req); p.ChromaURL != other.URL || p.SafetySnapshot {
			t.Errorf("plan %s", mustJSON(t, p))
		}
		e.rollback(t, req)
		compareDB(t, "other Chroma acme/prod", dump(t, occ, "acme", "prod"), pre, nil)

		// Overwriting collections there needs a safety snapshot this
		// restorer cannot take: it must be waived explicitly.
		req.Collections = []string{"personality"}
		req.Confirm = true
		code, body := e.requestError(t, e.subj.API("rollback", "start"), req)
		if code != contract.CodeBadRequest || body.Field != "no_safety_snapshot" || !strings.Contains(body.Error, "--no-safety-snapshot") {
			t.Errorf("overwrite on another Chroma without waiving the safety snapshot: %d %+v", code, body)
		}
		req.NoSafetySnapshot = true
		e.rollback(t, req)
		compareDB(t, "other Chroma after a second restore", dump(t, occ, "acme", "prod"), pre, nil)
		compareDB(t, "acme/prod", e.dump(t, "acme", "prod"), pre, nil)
	})

	t.Run("archive imported from the seed tool", func(t *testing.T) {
		want := map[string]*record.Batch{}
		a := &legacy.SeedArchive{Dir: "snapshot_20251130_143022", ChromaVersion: "0.3.21", Timestamp: "2025-11-30T14:30:22", Indent: 2}
		for k, name := range []string{"sergio_corpus", "sergio_personality"} {
			b := &record.Batch{}
			for i := range 120 - 100*k {
				b.IDs = append(b.IDs, fmt.Sprintf("chunk_%d_%04d_é", k, i))
				e := make([]float32, 16)
				for j := range e {
					e[j] = float32(math.Sin(float64(i*16+j))) / 3
				}
				if i%17 == 5 {
					e = nil // the seed tool kept records without an embedding
				}
				b.Embeddings = append(b.Embeddings, e)
				doc := fmt.Sprintf("document %d of %s", i, name)
				b.Documents = append(b.Documents, &doc)
				var md record.Metadata
				if i%4 != 0 {
					md = record.Metadata{"source": fmt.Sprintf("file_%d.md", i%9), "chunk": int64(i), "score": float64(i) / 8}
				}
				b.Metadatas = append(b.Metadatas, md)
				b.URIs = append(b.URIs, nil)
			}
			want[name] = b
			a.Collections = append(a.Collections, legacy.SeedCollectionFromBatch(name, b, 50))
		}
		id := importSeedArchive(t, e, "seed", "main", a)
		p := e.plan(t, contract.RollbackRequest{SnapshotID: id})
		if !slices.ContainsFunc(p.Warnings, func(w string) bool { return strings.Contains(w, "zero vectors") }) {
			t.Errorf("plan does not warn of records without embeddings: %q", p.Warnings)
		}
		e.rollback(t, contract.RollbackRequest{SnapshotID: id})
		got := e.dump(t, "seed", "main")
		if names := got.names(); !slices.Equal(names, []string{"sergio_corpus", "sergio_personality"}) {
			t.Fatalf("collections %q", names)
		}
		for name, b := range want {
			// Records without an embedding come back with zero vectors.
			w := *b
			w.Embeddings = slices.Clone(b.Embeddings)
			for i, v := range w.Embeddings {
				if v == nil {
					w.Embeddings[i] = make([]float32, 16)
				}
			}
			compareCollection(t, "seed/main/"+name, got[name], &collState{Metadata: got[name].Metadata, Configuration: got[name].Configuration, Records: &w})
		}
	})
}

// TestRestoreElsewhereLeavesOwnDatabase: restoring a copy into another
// Chroma neither fences nor locks the database of the same name on the
// restorer's own Chroma: while the copy is written, the own database takes
// snapshots and its writes are not fenced.
func TestRestoreElsewhereLeavesOwnDatabase(t *testing.T) {
	e := seeded(t)
	other := testenv.StartChroma(t)
	hook, reached, release := holdFirstBatch()
	e.startRestorer(t, restorer.Config{AllowedChromaURLs: []string{other.URL}}, hook)
	snap := e.snapshot(t, "acme", "prod", "pre_migration")
	req := contract.RollbackRequest{SnapshotID: snap, ChromaURL: other.URL}
	if p := e.plan(t, req); !slices.ContainsFunc(p.Warnings, func(w string) bool { return strings.Contains(w, "no write fence on "+other.URL) }) {
		t.Errorf("the plan into another Chroma does not say nothing fences it: %q", p.Warnings)
	}
	req.Confirm = true
	r := e.start(t, req)
	awaitFirstBatch(t, reached)
	if _, err := e.nats.Assets.State.Get(t.Context(), contract.FenceKey("acme", "prod")); err == nil {
		t.Error("a rollback into another Chroma raised the fence of the own acme/prod")
	}
	if p := e.plan(t, contract.RollbackRequest{SnapshotID: snap}); slices.ContainsFunc(p.Warnings, func(w string) bool { return strings.Contains(w, "is locked by") }) {
		t.Errorf("a rollback of the own acme/prod is locked out by the copy into another Chroma: %q", p.Warnings)
	}
	code, data := e.request(t, e.subj.API("snapshot", "create"), contract.SnapshotCreateRequest{Name: "during_copy", Tenant: "acme", Database: "prod", Actor: "test"})
	var snapReply contract.SnapshotCreateReply
	if code != 0 || json.Unmarshal(data, &snapReply) != nil {
		t.Errorf("a snapshot of the own acme/prod during a copy into another Chroma: %d %s", code, data)
	}
	close(release)
	if snapReply.OpID != "" {
		if op := e.waitOp(t, snapReply.OpID, time.Minute); op.Status != contract.StatusCompleted {
			t.Errorf("snapshot during the copy: %s %s", op.Status, op.Error)
		}
	}
	if op := e.waitOp(t, r.OpID, 2*time.Minute); op.Status != contract.StatusCompleted {
		t.Fatalf("rollback into another Chroma: %s %s", op.Status, op.Error)
	}
	e.assertReleased(t)
	// Its audit events name the server: without it they read as a
	// rollback of the own acme/prod.
	n := 0
	for _, m := range testenv.ReadAudit(t, e.nats.JS) {
		if m.Event.OpID != r.OpID || (m.Event.Action != "rollback" && m.Event.Action != "rollback.step") {
			continue
		}
		n++
		if u, _ := m.Event.Figures["chroma_url"].(string); u != other.URL {
			t.Errorf("audit event %s %s %q of the rollback into %s has chroma_url %q", m.Event.Action, m.Event.Outcome, m.Event.Reason, other.URL, u)
		}
	}
	if n < 2 {
		t.Errorf("%d audit events of the rollback, want its start and end at least", n)
	}
}

// TestRestoreElsewhereAliasURL: another URL of the same server (another
// host name for its address, a trailing slash) is that server. A rollback
// given an alias of the restorer's own Chroma takes its lease, raises its
// fence and takes a safety snapshot like one given no URL, and aliases of
// another allowed server share its lease; before, an alias in
// --allow-chroma-url was another server: no fence, no safety snapshot and
// a lease of its own, so two rollbacks could write one database at once.
func TestRestoreElsewhereAliasURL(t *testing.T) {
	e := seeded(t)
	other := testenv.StartChroma(t)
	ownAlias := strings.Replace(e.chroma.URL, "127.0.0.1", "localhost", 1) + "/"
	otherAlias := strings.Replace(other.URL, "127.0.0.1", "localhost", 1)
	hook, reached, release := holdFirstBatch()
	e.startRestorer(t, restorer.Config{AllowedChromaURLs: []string{other.URL, ownAlias, otherAlias}}, hook)
	snap := e.snapshot(t, "acme", "prod", "pre_migration")

	if p := e.plan(t, contract.RollbackRequest{SnapshotID: snap, ChromaURL: otherAlias}); p.ChromaURL != other.URL {
		t.Errorf("plan into %s names the server %q, not %s: its lease would not be %s's", otherAlias, p.ChromaURL, other.URL, other.URL)
	}
	req := contract.RollbackRequest{SnapshotID: snap, ChromaURL: ownAlias, Collections: []string{"personality"}}
	p := e.plan(t, req)
	if p.ChromaURL != "" || !p.SafetySnapshot || slices.ContainsFunc(p.Warnings, func(w string) bool { return strings.Contains(w, "no write fence") }) {
		t.Fatalf("plan into %s, the restorer's own Chroma, is not one into its own: %s", ownAlias, mustJSON(t, p))
	}
	req.Confirm = true
	r := e.start(t, req)
	awaitFirstBatch(t, reached)
	if _, err := e.nats.Assets.State.Get(t.Context(), contract.FenceKey("acme", "prod")); err != nil {
		t.Errorf("a rollback into %s did not raise the fence of acme/prod: %v", ownAlias, err)
	}
	if keys := e.stateKeys(t, "lease."); !slices.Equal(keys, []string{contract.LeaseKey("acme", "prod")}) {
		t.Errorf("leases %q, want the own acme/prod's", keys)
	}
	if p := e.plan(t, contract.RollbackRequest{SnapshotID: snap}); !slices.ContainsFunc(p.Warnings, func(w string) bool { return strings.Contains(w, "is locked by") }) {
		t.Errorf("a rollback of acme/prod is not locked out while one into %s runs: %q", ownAlias, p.Warnings)
	}
	close(release)
	op := e.waitOp(t, r.OpID, 2*time.Minute)
	if op.Status != contract.StatusCompleted || op.Restore == nil || op.Restore.SafetySnapshotID == "" {
		t.Fatalf("rollback into %s: %s %s (want completed with a safety snapshot)", ownAlias, op.Status, mustJSON(t, op))
	}
	e.assertReleased(t)
}
