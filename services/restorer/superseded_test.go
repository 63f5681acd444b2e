package restorer_test

import (
	"context"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/fence"
	"github.com/chromadb-rollback/chromadb-rollback/services/restorer"
)

// TestSupersededAttemptStops: while an attempt restores, a newer delivery
// of the same command takes the lease (the work queue thought the first
// worker dead). The older attempt must stop without finishing: no failed
// outcome, the fence still up, nothing undone. The next delivery then
// resumes and ends in the exact snapshot state.
func TestSupersededAttemptStops(t *testing.T) {
	e := seeded(t)
	pre, snap, damaged := e.snapshotThenDamage(t)

	reached, stopped := make(chan struct{}), make(chan error, 1)
	e.startRestorer(t, restorer.Config{Instance: "a", LeaseTTL: 3 * time.Second, AckWait: 2 * time.Second},
		func(ctx context.Context, p restorer.HookPoint) error {
			if p.Attempt == 1 && p.Name == "batch" && p.Collection == "corpus.v1" && p.Batch == 1 {
				close(reached)
				<-ctx.Done() // renewing the lease finds it taken again
				stopped <- context.Cause(ctx)
				return ctx.Err()
			}
			return nil
		})
	r := e.start(t, contract.RollbackRequest{SnapshotID: snap, Confirm: true, NoSafetySnapshot: true})
	select {
	case <-reached:
	case <-time.After(time.Minute):
		t.Fatal("the rollback never reached corpus.v1")
	}
	// What a second delivery of the command does first: take its lease.
	if _, err := fence.Acquire(t.Context(), e.nats.Assets.State, contract.Lease{Tenant: "acme", Database: "prod", Holder: r.OpID, Kind: "rollback"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	select {
	case cause := <-stopped:
		t.Logf("attempt 1 stopped: %v", cause)
	case <-time.After(30 * time.Second):
		t.Fatal("attempt 1 did not notice that its lease was taken again")
	}
	if op, _ := e.op(t, r.OpID); op.Status != contract.StatusRunning {
		t.Errorf("after the superseded attempt stopped the op is %s (%s), want running", op.Status, op.Error)
	}
	if keys := e.stateKeys(t, "fence."); len(keys) != 1 {
		t.Errorf("fence keys %v: the superseded attempt must leave the fence up", keys)
	}
	op := e.waitOp(t, r.OpID, 2*time.Minute)
	if op.Status != contract.StatusCompleted || op.Attempt < 2 {
		t.Fatalf("rollback after the superseded attempt: %s, attempt %d: %s", op.Status, op.Attempt, op.Error)
	}
	if failed := findAudit(e.auditEvents(t), "rollback", contract.OutcomeFailed); len(failed) > 0 {
		t.Errorf("the superseded attempt reported a failure: %+v", failed)
	}
	want := pre.clone()
	want["migration_added"] = damaged["migration_added"]
	compareDB(t, "after the resumed rollback", e.dump(t, "acme", "prod"), want, nil)
	e.assertReleased(t)
}
