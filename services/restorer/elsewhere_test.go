package restorer_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
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
		if !slices.ContainsFunc(p.Warnings, func(w string) bool { return strings.Contains(w, "gamma/copy does not exist") }) {
			t.Errorf("plan does not say the database will be created: %q", p.Warnings)
		}
		e.rollback(t, req)
		compareDB(t, "gamma/copy", e.dump(t, "gamma", "copy"), pre, rename)
		compareDB(t, "acme/prod", e.dump(t, "acme", "prod"), pre, nil)
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
		if code != contract.CodeBadRequest || body.Field != "no_safety_snapshot" {
			t.Errorf("overwrite on another Chroma without waiving the safety snapshot: %d %+v", code, body)
		}
		req.NoSafetySnapshot = true
		e.rollback(t, req)
		compareDB(t, "other Chroma after a second restore", dump(t, occ, "acme", "prod"), pre, nil)
		compareDB(t, "acme/prod", e.dump(t, "acme", "prod"), pre, nil)
	})
}
