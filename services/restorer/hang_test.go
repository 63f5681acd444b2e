package restorer_test

import (
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/chromadb-rollback/chromadb-rollback/services/restorer"
)

// TestPlanWhileChromaHangs: a Chroma that takes connections and answers
// nothing (stopped, overloaded) gets a plan and a start refused with
// "Chroma did not answer in time", not a bare "context deadline exceeded",
// and nothing is enqueued or fenced. Once it answers, the same start runs.
func TestPlanWhileChromaHangs(t *testing.T) {
	e := seeded(t)
	snap := e.snapshot(t, "acme", "prod", "pre_migration")
	pre := e.dump(t, "acme", "prod")
	// The lookups give up after 1 s (20 s by default); an attempt of the
	// client stays the default 2 min.
	e.cc = e.chroma.Client(t)
	e.lookupTimeout = time.Second
	other := testenv.StartChroma(t)
	e.startRestorer(t, restorer.Config{AllowedChromaURLs: []string{other.URL}}, nil)

	resume := e.chroma.Freeze(t)

	req := contract.RollbackRequest{SnapshotID: snap, Confirm: true, NoSafetySnapshot: true}
	for _, verb := range []string{"plan", "start"} {
		begin := time.Now()
		code, body := e.requestError(t, e.subj.API("rollback", verb), req)
		if took := time.Since(begin); took > 20*time.Second {
			t.Errorf("%s answered after %s, with lookups bounded by 1s", verb, took)
		}
		if code != contract.CodeUnavailable || !strings.Contains(body.Error, "Chroma did not answer in time") || !strings.Contains(body.Error, "nothing was changed") {
			t.Errorf("%s while Chroma hangs: %d %+v", verb, code, body)
		}
	}
	if keys := e.stateKeys(t, "fence."); len(keys) != 0 {
		t.Errorf("a refused start left fences %v", keys)
	}
	if info, err := e.nats.Assets.Commands.Info(t.Context()); err != nil || info.State.Msgs != 0 {
		t.Errorf("a refused start enqueued a command (%v)", err)
	}

	resume()
	op := e.rollback(t, req)
	if op.Status != contract.StatusCompleted {
		t.Fatalf("rollback once Chroma answers: %s %s", op.Status, op.Error)
	}
	compareDB(t, "acme/prod", e.dump(t, "acme", "prod"), pre, nil)

	// Another Chroma that hangs: health-check does not check that one, so
	// the error points at its heartbeat instead.
	resumeOther := other.Freeze(t)
	defer resumeOther()
	code, body := e.requestError(t, e.subj.API("rollback", "plan"), contract.RollbackRequest{SnapshotID: snap, ChromaURL: other.URL})
	if code != contract.CodeUnavailable || !strings.Contains(body.Error, "Chroma did not answer in time") ||
		!strings.Contains(body.Error, "GET "+other.URL+"/api/v2/heartbeat") || strings.Contains(body.Error, "health-check checks it") {
		t.Errorf("plan while another Chroma hangs: %d %+v", code, body)
	}
}
