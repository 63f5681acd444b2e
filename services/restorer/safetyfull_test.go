package restorer_test

import (
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/services/restorer"
)

// TestSafetySnapshotNoRoom: the object store has no room for the safety
// snapshot (its byte limit, as a full disk or an account limit would). The
// rollback fails saying so before it changes anything: the database is as
// it was, the fence lowered and the lease released, and no safety snapshot
// is left. Its report names no safety snapshot either. Found by hand with
// a JetStream account limit: the CLI printed "Safety snapshot: snap_...
// (the state before this rollback: roll back to it ...)" for a snapshot
// that had failed and did not exist.
func TestSafetySnapshotNoRoom(t *testing.T) {
	e := seeded(t)
	ctx := t.Context()
	snap := e.snapshot(t, "acme", "prod", "pre_migration")
	damage(t, e.cc, 1)
	damaged := e.dump(t, "acme", "prod")
	stopR := e.startRestorer(t, restorer.Config{Instance: "a"}, nil)
	defer stopR()

	// After the services started: their bootstrap sets the store's own limits.
	s, err := e.nats.JS.Stream(ctx, "OBJ_"+contract.ObjectSnapshots)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.Config
	cfg.MaxBytes = int64(info.State.Bytes) + 4<<10 // the safety snapshot needs far more
	if _, err := e.nats.JS.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}

	r := e.start(t, contract.RollbackRequest{SnapshotID: snap, Confirm: true})
	op := e.waitOp(t, r.OpID, 2*time.Minute)
	if op.Status != contract.StatusFailed || !strings.Contains(op.Error, "safety snapshot") ||
		!strings.Contains(op.Error, "nothing was changed") {
		t.Fatalf("rollback without room for its safety snapshot: %s: %s", op.Status, op.Error)
	}
	if op.Restore != nil && op.Restore.SafetySnapshotID != "" {
		t.Errorf("the report names safety snapshot %s, which failed: nothing can be rolled back to it", op.Restore.SafetySnapshotID)
	}
	compareDB(t, "after the failed rollback", e.dump(t, "acme", "prod"), damaged, nil)
	e.assertReleased(t)
	if n := e.safetySnapshots(t, r.OpID); n != 0 {
		t.Errorf("%d safety snapshots left by a rollback whose safety snapshot failed", n)
	}
}
