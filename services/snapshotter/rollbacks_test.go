package snapshotter_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/fence"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
)

// TestSnapshotDuringRollback: while a rollback restores a database (its
// lease held, its write fence raised, as the restorer does), a snapshot of
// that database would hold a half-restored state with its staging
// collections. It is refused, except the rollback's own safety snapshot;
// one that was reading when the rollback began fails and leaves nothing;
// a fence left by a rollback that has ended does not stop one.
func TestSnapshotDuringRollback(t *testing.T) {
	e := newEnv(t)
	const tenant, db, opID = "default_tenant", "restoring", "op_rb_test"
	e.seedSmall(t, tenant, db)
	e.startService(t, snapshotter.Config{})
	ctx := t.Context()
	kv := e.nats.Assets.State
	req := func(name, forOp string) []byte {
		return mustJSON(t, contract.SnapshotCreateRequest{Envelope: contract.NewEnvelope(contract.TypeSnapshotCreateRequest),
			Name: name, Tenant: tenant, Database: db, Actor: "test", ForOp: forOp})
	}
	rollback := func(t *testing.T, status string) (end func()) {
		t.Helper()
		l, err := fence.Acquire(ctx, kv, contract.Lease{Tenant: tenant, Database: db, Holder: opID, Kind: "rollback", Actor: "ops@example"}, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if err := fence.Raise(ctx, kv, contract.Fence{Tenant: tenant, Database: db, OpID: opID, Reason: "rollback", RaisedAt: time.Now().UTC()}); err != nil {
			t.Fatal(err)
		}
		e.putState(t, contract.OperationKey(opID), contract.Operation{Envelope: contract.NewEnvelope(contract.TypeOperation),
			OpID: opID, Kind: "rollback", Status: status, Tenant: tenant, Database: db})
		return func() {
			_ = l.Release(ctx)
			_ = fence.Lower(ctx, kv, tenant, db, opID)
		}
	}
	snapshots := func() int {
		n := 0
		for _, o := range e.objects(t) {
			if !strings.HasPrefix(o, "snap_") {
				continue
			}
			n++
		}
		return n
	}

	t.Run("refused while it runs", func(t *testing.T) {
		end := rollback(t, contract.StatusRunning)
		defer end()
		code, data := e.request(t, e.subj.API("snapshot", "create"), req("during", ""))
		var eb contract.ErrorBody
		_ = json.Unmarshal(data, &eb)
		if code != contract.CodeConflict || !strings.Contains(eb.Error, "rollback "+opID) || !strings.Contains(eb.Error, "half-restored") {
			t.Errorf("snapshot during a rollback: %d %s; want 409 naming %s", code, data, opID)
		}
		// The rollback's own safety snapshot is taken.
		rep := e.create(t, contract.SnapshotCreateRequest{Name: "safety", Tenant: tenant, Database: db, Actor: "test", ForOp: opID})
		if op := e.waitOp(t, rep.OpID, time.Minute); op.Status != contract.StatusCompleted {
			t.Errorf("the rollback's safety snapshot: %s %s", op.Status, op.Error)
		}
	})

	t.Run("a rollback begins while it reads", func(t *testing.T) {
		before := snapshots()
		reached, resume := snapshotter.PauseAt("exported")
		defer resume()
		rep := e.create(t, contract.SnapshotCreateRequest{Name: "overtaken", Tenant: tenant, Database: db, Actor: "test"})
		select {
		case <-reached:
		case <-time.After(time.Minute):
			t.Fatal("the snapshot did not get to the end of its export")
		}
		end := rollback(t, contract.StatusRunning)
		defer end()
		resume()
		op := e.waitOp(t, rep.OpID, time.Minute)
		if op.Status != contract.StatusFailed || !strings.Contains(op.Error, "rollback "+opID) {
			t.Errorf("snapshot overtaken by a rollback: %s %q; want failed naming %s", op.Status, op.Error, opID)
		}
		if _, ok := e.manifest(t, rep.SnapshotID); ok {
			t.Error("it left a manifest")
		}
		if n := snapshots(); n != before {
			t.Errorf("%d archives, want %d: it left its object", n, before)
		}
	})

	t.Run("a fence left by a rollback that failed", func(t *testing.T) {
		end := rollback(t, contract.StatusFailed)
		defer end()
		l, _ := fence.Current(ctx, kv, tenant, db)
		if err := fence.Release(ctx, kv, tenant, db, l.Holder); err != nil { // the lease lapsed; the fence stays
			t.Fatal(err)
		}
		rep := e.create(t, contract.SnapshotCreateRequest{Name: "half_restored", Tenant: tenant, Database: db, Actor: "test"})
		if op := e.waitOp(t, rep.OpID, time.Minute); op.Status != contract.StatusCompleted {
			t.Errorf("snapshot of a database fenced by an ended rollback: %s %s", op.Status, op.Error)
		}
	})
}
