package restorer_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/services/restorer"
	"github.com/nats-io/nats.go"
)

// TestLeftoversTakenBackWhenChromaReturns: Chroma goes away in the middle
// of a swap, after the live collection was renamed aside and before the
// restored one took its name. The rollback fails, and its cleanup cannot
// put the live collection back: readers would find no collection of that
// name. Once Chroma answers again the restorer puts it back and deletes the
// staging collection by itself, record for record as it was, and the
// operation says so. A collection made again under the name meanwhile is
// neither deleted nor overwritten: both are left, and the note says so.
func TestLeftoversTakenBackWhenChromaReturns(t *testing.T) {
	oe := newOutageEnv(t, restorer.Config{LeftoverRetry: 200 * time.Millisecond}, 0)
	e, o, damaged := oe.env, oe.o, oe.damaged
	const coll = "corpus.v1"

	// fail runs a partial rollback of coll that Chroma leaves mid-swap,
	// and checks what it left while Chroma is away.
	fail := func(t *testing.T) contract.Operation {
		t.Helper()
		op := oe.failMidSwap(t, coll)
		if op.LeftoversCleared != nil {
			t.Fatalf("leftovers cleared while Chroma is away: %+v", op)
		}
		// What readers of the real Chroma see meanwhile.
		now := e.dump(t, "acme", "prod")
		if now[coll] != nil {
			t.Fatalf("%q is live although the swap was cut after it was renamed aside", coll)
		}
		var aside, staging int
		for name := range now {
			aside += btoi(strings.HasPrefix(name, coll+"__old_"))
			staging += btoi(strings.HasPrefix(name, coll+"__rb_"))
		}
		if aside != 1 || staging != 1 {
			t.Fatalf("while Chroma is away: %d collection(s) renamed aside and %d staging, want 1 and 1: %v", aside, staging, now.names())
		}
		if keys := e.stateKeys(t, contract.LeftoversPrefix); len(keys) != 1 {
			t.Fatalf("leftover records: %v, want one", keys)
		}
		// Retried, and still there, while Chroma does not answer.
		deadline := time.Now().Add(30 * time.Second)
		for {
			var rec contract.Leftovers
			if entry, err := e.nats.Assets.State.Get(t.Context(), contract.LeftoversKey(op.OpID)); err != nil {
				t.Fatalf("leftover record: %v", err)
			} else if err := json.Unmarshal(entry.Value(), &rec); err != nil {
				t.Fatal(err)
			}
			if rec.Attempts >= 2 {
				if rec.LastError == "" || len(rec.Collections) != 1 || rec.Collections[0].Target != coll {
					t.Fatalf("leftover record after %d tries: %+v", rec.Attempts, rec)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the leftovers were not retried: %+v", rec)
			}
			time.Sleep(50 * time.Millisecond)
		}
		return op
	}

	// waitCleared brings Chroma back and waits until the leftovers of op
	// are taken back.
	waitCleared := func(t *testing.T, op contract.Operation) contract.Operation {
		t.Helper()
		o.down.Store(false)
		deadline := time.Now().Add(time.Minute)
		for {
			got, _ := e.op(t, op.OpID)
			if got.LeftoversCleared != nil {
				if keys := e.stateKeys(t, contract.LeftoversPrefix); len(keys) > 0 {
					t.Errorf("leftover records kept after they were cleared: %v", keys)
				}
				if got.Status != contract.StatusFailed || got.Error != op.Error {
					t.Errorf("clearing the leftovers changed how the rollback ended: %s %q, was %s %q", got.Status, got.Error, op.Status, op.Error)
				}
				e.assertReleased(t)
				return got
			}
			if time.Now().After(deadline) {
				t.Fatalf("the leftovers were not taken back after Chroma returned: %+v", got)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	t.Run("put back", func(t *testing.T) {
		op := fail(t)
		got := waitCleared(t, op)
		compareDB(t, "after the leftovers were taken back", e.dump(t, "acme", "prod"), damaged, nil)
		if len(got.LeftoverNotes) != 1 || !strings.Contains(got.LeftoverNotes[0], "holds what it held before this rollback again") {
			t.Errorf("leftover notes: %q", got.LeftoverNotes)
		}
	})

	t.Run("made again meanwhile", func(t *testing.T) {
		op := fail(t)
		// A migration makes the collection again while the restorer
		// cannot reach Chroma.
		if _, err := e.cc.CreateCollection(t.Context(), "acme", "prod", chroma.CreateCollection{Name: coll}); err != nil {
			t.Fatal(err)
		}
		got := waitCleared(t, op)
		now := e.dump(t, "acme", "prod")
		var aside string
		for name := range now {
			if strings.HasPrefix(name, coll+"__rb_") {
				t.Errorf("staging collection %q left", name)
			}
			if strings.HasPrefix(name, coll+"__old_") {
				aside = name
			}
		}
		if aside == "" {
			t.Fatalf("the collection renamed aside was not kept: %v", now.names())
		}
		if c := now[coll]; c == nil || c.Records.Len() != 0 {
			t.Errorf("the collection made again meanwhile was changed: %+v", c)
		}
		compareCollection(t, "the collection renamed aside", now[aside], damaged[coll])
		if len(got.LeftoverNotes) != 1 || !strings.Contains(got.LeftoverNotes[0], "made again meanwhile") || !strings.Contains(got.LeftoverNotes[0], aside) {
			t.Errorf("leftover notes do not say both were kept: %q", got.LeftoverNotes)
		}
	})
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestLeftoversWaitForTheirRollback: what a rollback left is kept before
// its operation is final, while its job still holds the database's lease
// in the same name; the restorer leaves it alone until the operation has
// ended, then takes it back (here a staging collection a restorer that
// died left, as a record found at start would be).
func TestLeftoversWaitForTheirRollback(t *testing.T) {
	e := newEnv(t)
	e.startRestorer(t, restorer.Config{LeftoverRetry: 100 * time.Millisecond, Instance: "restorer"}, nil)
	ctx := t.Context()
	if err := e.cc.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if err := e.cc.CreateDatabase(ctx, "acme", "prod"); err != nil {
		t.Fatal(err)
	}
	staging, err := e.cc.CreateCollection(ctx, "acme", "prod", chroma.CreateCollection{Name: "notes__rb_1a2b3c4d"})
	if err != nil {
		t.Fatal(err)
	}
	const opID = "op_20261129T120000Z_1a2b3c4d5e6f"
	putJSON := func(key string, v any) {
		t.Helper()
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.nats.Assets.State.Put(ctx, key, data); err != nil {
			t.Fatal(err)
		}
	}
	op := contract.Operation{Envelope: contract.NewEnvelope(contract.TypeOperation), OpID: opID, Kind: "rollback", Status: contract.StatusRunning, Tenant: "acme", Database: "prod"}
	putJSON(contract.OperationKey(opID), op)
	putJSON(contract.LeftoversKey(opID), contract.Leftovers{Envelope: contract.NewEnvelope(contract.TypeLeftovers), OpID: opID, Tenant: "acme", Database: "prod",
		Since: time.Now().UTC(), Collections: []contract.LeftoverCollection{{Target: "notes", Staging: staging.Name, Old: "notes__old_1a2b3c4d", WorkID: staging.ID}}})

	time.Sleep(time.Second) // ten retry intervals
	if got := e.dump(t, "acme", "prod"); got[staging.Name] == nil {
		t.Fatalf("the staging collection of a rollback still running was taken back: %v", got.names())
	}
	if keys := e.stateKeys(t, contract.LeftoversPrefix); len(keys) != 1 {
		t.Fatalf("leftover records: %v", keys)
	}

	op.Status, op.Error = contract.StatusFailed, "chroma: connection refused"
	putJSON(contract.OperationKey(opID), op)
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, _ := e.op(t, opID)
		if got.LeftoversCleared != nil {
			if len(got.LeftoverNotes) != 1 || !strings.Contains(got.LeftoverNotes[0], `neither "notes" nor "notes__old_1a2b3c4d" exists`) ||
				!strings.Contains(got.LeftoverNotes[0], `staging collection "notes__rb_1a2b3c4d" deleted`) {
				t.Errorf("leftover notes: %q", got.LeftoverNotes)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the leftovers of the ended rollback were not taken back: %+v", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if names := e.dump(t, "acme", "prod").names(); len(names) != 0 {
		t.Errorf("collections left: %v", names)
	}
	if keys := e.stateKeys(t, contract.LeftoversPrefix); len(keys) != 0 {
		t.Errorf("leftover records kept: %v", keys)
	}
	e.assertReleased(t)
}

// TestLeftoversKeptWhenCleanupOutlastsItsBudget: with Chroma away, the
// cleanup of each collection a rollback staged spends the client's whole
// retry budget before it gives up. Several collections together outlast
// the time the end of a job is given: what they left must still be kept
// to be taken back, and the operation must still end (failed, fence
// lowered, lease released), not stay "running" for ever beside staging
// collections nothing will ever take back.
func TestLeftoversKeptWhenCleanupOutlastsItsBudget(t *testing.T) {
	// Each cleanup of one collection fails after about 2 s; the end of the
	// job has 3 s: the second collection's runs it out.
	oe := newOutageEnv(t, restorer.Config{LeftoverRetry: 200 * time.Millisecond}, 3*time.Second)
	e, o, snap, damaged := oe.env, oe.o, oe.snap, oe.damaged
	colls := []string{"corpus.v1", "personality", "cosine_768"}
	oe.goDown.Store(true)

	r := e.start(t, contract.RollbackRequest{SnapshotID: snap, Collections: colls, NoSafetySnapshot: true, Confirm: true})
	op := e.waitOp(t, r.OpID, 2*time.Minute)
	if op.Status != contract.StatusFailed {
		t.Fatalf("rollback through a Chroma that went away ended %s: %s", op.Status, op.Error)
	}
	if !slices.ContainsFunc(op.Warnings, func(w string) bool { return strings.Contains(w, "takes the 3 collection(s) above back itself") }) {
		t.Fatalf("the failed rollback does not say that what it left is taken back: %q", op.Warnings)
	}
	if keys := e.stateKeys(t, contract.LeftoversPrefix); len(keys) != 1 {
		t.Fatalf("leftover records: %v, want one", keys)
	}
	e.assertReleased(t)

	o.down.Store(false)
	deadline := time.Now().Add(time.Minute)
	for {
		got, _ := e.op(t, op.OpID)
		if got.LeftoversCleared != nil {
			if len(got.LeftoverNotes) != len(colls) {
				t.Errorf("leftover notes: %q, want one for each of %v", got.LeftoverNotes, colls)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the leftovers were not taken back after Chroma returned: %+v", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	compareDB(t, "after the leftovers were taken back", e.dump(t, "acme", "prod"), damaged, nil)
}

// TestRollbackTakesBackLeftoversFirst: a rollback started while what an
// earlier one left is still there (Chroma answered again before the next
// retry) takes that back first, then plans: the collection renamed aside
// is replaced, not taken for missing, and the staging collection is not
// kept as an extra one. A dry-run and an unconfirmed start only warn of it
// and change nothing.
func TestRollbackTakesBackLeftoversFirst(t *testing.T) {
	// Retried at start and then hourly: it stays until the next rollback.
	oe := newOutageEnv(t, restorer.Config{LeftoverRetry: time.Hour}, 0)
	e := oe.env
	const coll = "corpus.v1"
	first := oe.failMidSwap(t, coll)
	oe.o.down.Store(false)
	left := e.dump(t, "acme", "prod")
	if left[coll] != nil || len(e.stateKeys(t, contract.LeftoversPrefix)) != 1 {
		t.Fatalf("not left mid-swap: %v, %v", left.names(), e.stateKeys(t, contract.LeftoversPrefix))
	}

	req := contract.RollbackRequest{SnapshotID: oe.snap, NoSafetySnapshot: true}
	warned := func(ws []string) bool {
		return slices.ContainsFunc(ws, func(w string) bool {
			return strings.Contains(w, "rollback "+first.OpID+" left 1 collection(s) here") && strings.Contains(w, coll+"__rb_") && strings.Contains(w, "takes them back first")
		})
	}
	if p := e.plan(t, req); !warned(p.Warnings) {
		t.Errorf("the plan does not warn of what the earlier rollback left: %q", p.Warnings)
	}
	if r := e.start(t, req); r.OpID != "" || r.Plan == nil || !warned(r.Plan.Warnings) {
		t.Errorf("an unconfirmed start: %s", mustJSON(t, r))
	}
	compareDB(t, "after a dry-run and an unconfirmed start", e.dump(t, "acme", "prod"), left, nil)

	op := e.rollback(t, req)
	for _, it := range op.Plan.Items {
		if it.Target == coll && it.Action != contract.PlanReplace || strings.Contains(it.Target, "__") {
			t.Errorf("the rollback planned over what was left: %+v", it)
		}
	}
	if got, _ := e.op(t, first.OpID); got.LeftoversCleared == nil {
		t.Errorf("the earlier rollback does not say its leftovers were taken back: %+v", got)
	}
	if keys := e.stateKeys(t, contract.LeftoversPrefix); len(keys) > 0 {
		t.Errorf("leftover records kept: %v", keys)
	}
	want := oe.pre.clone()
	want["migration_added"] = oe.damaged["migration_added"] // extra collections are kept
	compareDB(t, "after the rollback", e.dump(t, "acme", "prod"), want, nil)
	e.assertReleased(t)
}

// outageEnv is a seeded env whose restorer writes through an alterer that
// goDown makes go down at a swap, after the live collection was renamed
// aside: Chroma away between the two renames. snap is a snapshot of
// acme/prod, taken before it was damaged (damaged).
type outageEnv struct {
	*env
	o            *alterer
	goDown       atomic.Bool
	snap         string
	pre, damaged dbState
}

// newOutageEnv starts it, with a restorer of cfg and, when finish is set,
// that time for the end of a job.
func newOutageEnv(t *testing.T, cfg restorer.Config, finish time.Duration) *outageEnv {
	t.Helper()
	oe := &outageEnv{env: seeded(t)}
	e := oe.env
	oe.o = startAlterer(t, e.chroma.URL) // never armed: only taken down
	target, err := chroma.New(oe.o.url, chroma.WithRetryMaxElapsed(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ChromaURL, cfg.AckWait, cfg.LeaseTTL, cfg.Instance = e.chroma.URL, 2*time.Second, 5*time.Second, "restorer"
	e.run(t, "restorer", func(nc *nats.Conn) (interface{ Run(context.Context) error }, error) {
		svc, err := restorer.New(cfg, nc, e.subj, target, testLogger(t))
		if err == nil {
			if finish > 0 {
				restorer.SetFinishTimeout(svc, finish)
			}
			restorer.SetHook(svc, func(ctx context.Context, p restorer.HookPoint) error {
				if p.Name == "swap_renamed_old" && oe.goDown.Load() {
					oe.o.down.Store(true)
				}
				return nil
			})
		}
		return svc, err
	})
	waitForService(t, e.nats.Conn, e.subj.API("rollback", "status"))
	oe.pre = e.dump(t, "acme", "prod")
	oe.snap = e.snapshot(t, "acme", "prod", "pre_migration")
	damage(t, e.cc, 1)
	oe.damaged = e.dump(t, "acme", "prod")
	return oe
}

// failMidSwap runs a partial rollback of coll that Chroma leaves between
// the two renames of its swap, and checks that it failed saying what it
// left and that the restorer takes it back.
func (oe *outageEnv) failMidSwap(t *testing.T, coll string) contract.Operation {
	t.Helper()
	if oe.damaged[coll] == nil {
		t.Fatalf("the fixture has no %q to roll back", coll)
	}
	oe.goDown.Store(true)
	r := oe.start(t, contract.RollbackRequest{SnapshotID: oe.snap, Collections: []string{coll}, NoSafetySnapshot: true, Confirm: true})
	op := oe.waitOp(t, r.OpID, 2*time.Minute)
	oe.goDown.Store(false)
	if op.Status != contract.StatusFailed {
		t.Fatalf("rollback through a Chroma that went away ended %s: %s", op.Status, op.Error)
	}
	if !oe.o.down.Load() {
		t.Fatal("the rollback never reached its swap")
	}
	if !slices.ContainsFunc(op.Warnings, func(w string) bool {
		return strings.Contains(w, "cleanup failed") && strings.Contains(w, coll+"__rb_")
	}) || !slices.ContainsFunc(op.Warnings, func(w string) bool { return strings.Contains(w, "takes the 1 collection(s) above back itself") }) {
		t.Fatalf("the failed rollback does not say what it left and that it will be taken back: %q", op.Warnings)
	}
	return op
}
