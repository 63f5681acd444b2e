package restorer_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/metrics"
	"github.com/chromadb-rollback/chromadb-rollback/services/restorer"
)

// TestRestorerKilledMidRestore stops a restorer at chosen points of a full
// rollback (its context cancelled and its connection closed, unacked, as a
// killed process), starts another, and checks that the redelivered command
// resumes from the checkpoint and ends in the exact pre-migration state
// with no duplicates, after one safety snapshot.
func TestRestorerKilledMidRestore(t *testing.T) {
	e := seeded(t)
	e.splitMin = 2 // the last batch written is added and verified in two parts
	pre := e.dump(t, "acme", "prod")
	snap := e.snapshot(t, "acme", "prod", "pre_migration")
	cases := []struct {
		name    string
		inPlace bool
		stopAt  func(p restorer.HookPoint) bool
	}{
		{"in the middle of a collection", false, func(p restorer.HookPoint) bool {
			return p.Name == "batch" && p.Collection == "corpus.v1" && p.Batch == 3
		}},
		{"between collections", false, func(p restorer.HookPoint) bool { return p.Name == "collection" && p.Batch > 0 }},
		{"between the parts of the last batch", false, func(p restorer.HookPoint) bool { return p.Name == "part" }},
		{"between the renames of a swap", false, func(p restorer.HookPoint) bool {
			return p.Name == "swap_renamed_old" && p.Collection == "corpus.v1"
		}},
		{"in place, in the middle of a collection", true, func(p restorer.HookPoint) bool {
			return p.Name == "batch" && p.Collection == "corpus.v1" && p.Batch == 2
		}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			damage(t, e.cc, i+1)
			damaged := e.dump(t, "acme", "prod")
			ids := e.collectionIDs(t, "acme", "prod")
			reached := make(chan restorer.HookPoint, 1)
			var once atomic.Bool
			stopA := e.startRestorer(t, restorer.Config{Instance: "a"}, func(ctx context.Context, p restorer.HookPoint) error {
				if p.Attempt == 1 && tc.stopAt(p) && once.CompareAndSwap(false, true) {
					reached <- p
					<-ctx.Done()
					return ctx.Err()
				}
				return nil
			})
			r := e.start(t, contract.RollbackRequest{SnapshotID: snap, Confirm: true, InPlace: tc.inPlace})
			var stop restorer.HookPoint
			select {
			case stop = <-reached:
				t.Logf("stopping instance a at %s of %q (batch %d)", stop.Name, stop.Collection, stop.Batch)
			case <-time.After(time.Minute):
				t.Fatal("the rollback never reached the stop point")
			}
			stopA()
			if op, _ := e.op(t, r.OpID); op.Status != contract.StatusRunning {
				t.Fatalf("after the kill the op is %s, want running", op.Status)
			}
			if keys := e.stateKeys(t, "fence."); len(keys) != 1 {
				t.Errorf("fence keys after the kill: %v; the fence must stay raised", keys)
			}

			var mu sync.Mutex
			var seen []restorer.HookPoint
			stopB := e.startRestorer(t, restorer.Config{Instance: "b", AddWorkers: 2}, func(_ context.Context, p restorer.HookPoint) error {
				mu.Lock()
				seen = append(seen, p)
				mu.Unlock()
				return nil
			})
			defer stopB()
			op := e.waitOp(t, r.OpID, 2*time.Minute)
			if op.Status != contract.StatusCompleted || op.Attempt < 2 {
				t.Fatalf("resumed rollback: %s attempt %d: %s", op.Status, op.Attempt, op.Error)
			}
			if op.Restore.RecordsWritten != op.Plan.WriteRecords || !op.Restore.Verified {
				t.Errorf("report after resume: %s", mustJSON(t, op.Restore))
			}
			want := pre.clone()
			want["migration_added"] = damaged["migration_added"]
			compareDB(t, "after the resumed rollback", e.dump(t, "acme", "prod"), want, nil)
			e.assertReleased(t)
			// A replaced collection, staged and swapped in or recreated in
			// place, is a new collection with a new id (the README says so:
			// clients that hold the old id must get it again by name).
			after := e.collectionIDs(t, "acme", "prod")
			replaced := 0
			for _, it := range op.Plan.Items {
				if it.Action != contract.PlanReplace {
					continue
				}
				replaced++
				if after[it.Target] == "" || after[it.Target] == ids[it.Target] {
					t.Errorf("%q is %q after the rollback, %s before; want a new collection", it.Target, after[it.Target], ids[it.Target])
				}
			}
			if replaced == 0 {
				t.Errorf("the plan replaces no collection: %s", mustJSON(t, op.Plan))
			}
			// Instance b resumed: it wrote nothing instance a had finished.
			mu.Lock()
			for _, p := range seen {
				switch {
				case stop.Name == "batch" && p.Name == "batch" && p.Collection == stop.Collection && p.Batch <= stop.Batch:
					t.Errorf("instance b wrote batch %d of %q again; a had checkpointed %d", p.Batch-1, p.Collection, stop.Batch)
				case stop.Name == "collection" && p.Collection == stop.Collection && (p.Name == "batch" || p.Name == "collection"):
					// a staged and checked it; b only swaps it in.
					t.Errorf("instance b wrote %q again (%s %d) after a had finished it", p.Collection, p.Name, p.Batch)
				case stop.Name == "part" && p.Name == "batch" && p.Collection == stop.Collection && p.Batch < stop.Batch:
					t.Errorf("instance b wrote batch %d of %q again; a had checkpointed %d", p.Batch-1, p.Collection, stop.Batch)
				case stop.Name == "swap_renamed_old" && p.Name == "batch" && p.Collection == stop.Collection:
					t.Errorf("instance b wrote batch %d of %q again; it was staged", p.Batch, p.Collection)
				}
			}
			mu.Unlock()
			if n := e.safetySnapshots(t, r.OpID); n != 1 {
				t.Errorf("%d safety snapshots for one rollback, want 1", n)
			}
		})
	}
}

// TestRedeliveredRollbackCancelled: a restorer dies in the middle of a
// rollback, having staged collections; the operator cancels it before
// another restorer takes the redelivered command (serve killed and
// restarted: its API answers before the command's AckWait ran out). The
// new attempt finds the cancel before it read the snapshot, so it holds no
// writer for what the dead one staged: it must still take the staging
// collections back, as the README promises of a cancel ("staged
// collections are discarded and the live ones keep what they held"), and
// report what was written rather than no collections at all.
func TestRedeliveredRollbackCancelled(t *testing.T) {
	e := seeded(t)
	snap := e.snapshot(t, "acme", "prod", "pre_migration")
	damage(t, e.cc, 1)
	damaged := e.dump(t, "acme", "prod")

	reached := make(chan struct{})
	var once atomic.Bool
	stopA := e.startRestorer(t, restorer.Config{Instance: "a"}, func(ctx context.Context, p restorer.HookPoint) error {
		if p.Attempt == 1 && p.Name == "batch" && p.Collection == "corpus.v1" && p.Batch == 3 && once.CompareAndSwap(false, true) {
			close(reached)
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	})
	r := e.start(t, contract.RollbackRequest{SnapshotID: snap, Confirm: true})
	select {
	case <-reached:
	case <-time.After(time.Minute):
		t.Fatal("the rollback never reached the stop point")
	}
	stopA()
	staged := 0
	for name := range e.dump(t, "acme", "prod") {
		if strings.Contains(name, "__rb_") {
			staged++
		}
	}
	if staged == 0 {
		t.Fatal("no staging collection when the first restorer died")
	}
	// The cancel as chroma.api.rollback.cancel records it.
	ref, _ := json.Marshal(contract.OperationRef{Envelope: contract.NewEnvelope(contract.TypeOperationRef), OpID: r.OpID, Actor: "carol"})
	if _, err := e.nats.Assets.State.Put(t.Context(), contract.CancelKey(r.OpID), ref); err != nil {
		t.Fatal(err)
	}

	e.startRestorer(t, restorer.Config{Instance: "b"}, nil)
	op := e.waitOp(t, r.OpID, 2*time.Minute)
	if op.Status != contract.StatusCancelled || op.Attempt < 2 {
		t.Fatalf("cancelled redelivered rollback: %s attempt %d: %s", op.Status, op.Attempt, op.Error)
	}
	compareDB(t, "after the cancel", e.dump(t, "acme", "prod"), damaged, nil) // a staging collection is an extra one
	e.assertReleased(t)
	if op.Restore == nil || op.Restore.RecordsWritten == 0 || op.Restore.SafetySnapshotID == "" {
		t.Errorf("report of the cancelled rollback: %s; want the records the first attempt wrote and its safety snapshot", mustJSON(t, op.Restore))
	}
}

// safetySnapshots counts the safety snapshots taken for a rollback.
func (e *env) safetySnapshots(t *testing.T, opID string) int {
	t.Helper()
	keys, err := e.nats.Assets.Manifests.Keys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, k := range keys {
		entry, err := e.nats.Assets.Manifests.Get(t.Context(), k)
		if err != nil {
			t.Fatal(err)
		}
		var m contract.SnapshotManifest
		if err := json.Unmarshal(entry.Value(), &m); err != nil {
			t.Fatal(err)
		}
		if m.Name == "safety_"+strings.TrimPrefix(opID, "op_") {
			n++
		}
	}
	return n
}

// TestRollbackGivenUpAfterMaxDeliver: every delivery of a rollback command
// dies mid-restore (MaxDeliver 2: two restorers stopped in turn). The work
// queue gives up on it; a running restorer hears so and fails the
// operation, saying why and what to do, instead of leaving it "running"
// for ever. The data may be half restored, so the fence stays raised; once
// the dead attempts' lease lapses, rolling back again restores the
// pre-migration state and lowers the fence.
func TestRollbackGivenUpAfterMaxDeliver(t *testing.T) {
	e := seeded(t)
	pre, snap, damaged := e.snapshotThenDamage(t)

	// Each attempt stops at its first batch, as a worker that dies there.
	reached := make(chan int, 2)
	var mu sync.Mutex
	stopped := map[int]bool{}
	hook := func(ctx context.Context, p restorer.HookPoint) error {
		mu.Lock()
		first := p.Name == "batch" && !stopped[p.Attempt]
		stopped[p.Attempt] = stopped[p.Attempt] || first
		mu.Unlock()
		if first {
			reached <- p.Attempt
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	}
	cfg := restorer.Config{MaxDeliver: 2}
	cfg.Instance = "a"
	stop := e.startRestorer(t, cfg, hook)
	r := e.start(t, contract.RollbackRequest{SnapshotID: snap, Confirm: true, Actor: "test"})
	for _, instance := range []string{"a", "b"} {
		select {
		case a := <-reached:
			t.Logf("stopping instance %s in attempt %d", instance, a)
		case <-time.After(time.Minute):
			t.Fatalf("instance %s never reached a batch", instance)
		}
		stop()
		if instance == "a" {
			cfg.Instance = "b"
			stop = e.startRestorer(t, cfg, hook)
		}
	}
	cfg.Instance, cfg.Metrics = "c", metrics.New()
	e.startRestorer(t, cfg, nil)

	op := e.waitOp(t, r.OpID, time.Minute)
	if n, _ := cfg.Metrics.Value(metrics.Namespace+"_operation_failures_total",
		map[string]string{"service": "restorer", "operation": "rollback", "reason": metrics.ReasonGivenUp}); n != 1 {
		t.Errorf("operation_failures_total given_up: %v, want 1", n)
	}
	if op.Status != contract.StatusFailed || op.Attempt != 2 || op.ErrorCode != contract.ErrorOther || !strings.Contains(op.Error, "given up after 2 deliveries of its command") ||
		!strings.Contains(op.Error, "the write fence of acme/prod stays raised") || !strings.Contains(op.Error, "nats kv del CHROMA_STATE fence.acme/prod") {
		t.Fatalf("operation: %s, attempt %d, %q (error_code %q); want failed after 2 deliveries, naming the fence", op.Status, op.Attempt, op.Error, op.ErrorCode)
	}
	if keys := e.stateKeys(t, "fence."); len(keys) != 1 {
		t.Errorf("fence keys after giving up: %v; the fence must stay raised", keys)
	}
	// Its staging collections are taken back; the live ones hold what the
	// migration left.
	got := e.dump(t, "acme", "prod")
	compareDB(t, "after giving up", got, damaged, nil)
	if keys := e.stateKeys(t, "checkpoint."); len(keys) != 0 {
		t.Errorf("checkpoints after giving up: %v", keys)
	}
	var failed []contract.AuditEvent
	for _, ev := range e.auditEvents(t) {
		if ev.Action == "rollback" && ev.Outcome == contract.OutcomeFailed {
			failed = append(failed, ev)
		}
	}
	if len(failed) != 1 || failed[0].OpID != r.OpID || failed[0].Figures["attempt"] != 2.0 || !strings.Contains(failed[0].Error, "given up") {
		t.Errorf("failed rollback audit events: %+v; want one, of attempt 2, saying it was given up", failed)
	}

	// Roll back again, once the lease of the dead attempts lapsed.
	var again contract.RollbackReply
	for deadline := time.Now().Add(30 * time.Second); ; {
		code, data := e.request(t, e.subj.API("rollback", "start"), contract.RollbackRequest{SnapshotID: snap, Confirm: true, Actor: "test"})
		if code == 0 {
			if err := json.Unmarshal(data, &again); err != nil {
				t.Fatal(err)
			}
			break
		}
		if code != contract.CodeConflict || time.Now().After(deadline) {
			t.Fatalf("rollback again: %d %s", code, data)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if op := e.waitOp(t, again.OpID, 2*time.Minute); op.Status != contract.StatusCompleted {
		t.Fatalf("rollback again: %s %s", op.Status, op.Error)
	}
	want := pre.clone()
	want["migration_added"] = damaged["migration_added"]
	compareDB(t, "after rolling back again", e.dump(t, "acme", "prod"), want, nil)
	e.assertReleased(t)
}
