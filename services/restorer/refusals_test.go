package restorer_test

import (
	"context"
	"encoding/json"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/fence"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/metrics"
	"github.com/chromadb-rollback/chromadb-rollback/services/restorer"
)

// TestRefusalsAndFailures: bad requests, a held lease and a corrupt archive
// are refused before anything changes; a restore that does not verify, a
// cancel and a Chroma outage end the operation cleanly: the live data as
// it was, the fence lowered and the lease released.
func TestRefusalsAndFailures(t *testing.T) {
	e := seeded(t)
	ctx := t.Context()
	var hook atomic.Pointer[func(context.Context, restorer.HookPoint) error]
	e.startRestorer(t, restorer.Config{}, func(ctx context.Context, p restorer.HookPoint) error {
		if h := hook.Load(); h != nil {
			return (*h)(ctx, p)
		}
		return nil
	})
	setHook := func(h func(context.Context, restorer.HookPoint) error) { hook.Store(&h) }
	snap := e.snapshot(t, "acme", "prod", "pre_migration")
	damage(t, e.cc, 1)
	damaged := e.dump(t, "acme", "prod")

	t.Run("bad requests", func(t *testing.T) {
		plan, start := e.subj.API("rollback", "plan"), e.subj.API("rollback", "start")
		// A snapshot of one collection: it says nothing of the others.
		code, data := e.request(t, e.subj.API("snapshot", "create"), contract.SnapshotCreateRequest{Name: "only_empty", Tenant: "acme", Database: "prod", Collections: []string{"empty"}, Actor: "test"})
		var partial contract.SnapshotCreateReply
		if code != 0 || json.Unmarshal(data, &partial) != nil {
			t.Fatalf("partial snapshot: %d %s", code, data)
		}
		if op := e.waitOp(t, partial.OpID, time.Minute); op.Status != contract.StatusCompleted {
			t.Fatalf("partial snapshot: %s %s", op.Status, op.Error)
		}
		cases := []struct {
			name, subject string
			body          any
			code          int
			want          string
		}{
			{"malformed JSON", plan, []byte(`{"snapshot_id":`), contract.CodeBadRequest, "malformed JSON"},
			{"empty body", start, []byte{}, contract.CodeBadRequest, "empty request"},
			{"no snapshot", plan, []byte(`{}`), contract.CodeBadRequest, "snapshot_id is required"},
			{"unknown snapshot", start, contract.RollbackRequest{SnapshotID: "snap_nope", Confirm: true}, contract.CodeNotFound, `no snapshot with id or name "snap_nope"`},
			{"collections and batches", plan, contract.RollbackRequest{SnapshotID: snap, Collections: []string{"empty"}, Batches: map[string][]string{"empty": {"batch_000000"}}}, contract.CodeBadRequest, "not both"},
			{"drop_extra on partial", plan, contract.RollbackRequest{SnapshotID: snap, Collections: []string{"empty"}, DropExtra: true}, contract.CodeBadRequest, "full rollbacks only"},
			{"drop_extra from a partial snapshot", start, contract.RollbackRequest{SnapshotID: partial.SnapshotID, DropExtra: true, Confirm: true}, contract.CodeBadRequest, "holds only some collections of acme/prod (partial), so drop_extra would delete every other collection there"},
			{"in_place on batches", plan, contract.RollbackRequest{SnapshotID: snap, Batches: map[string][]string{"corpus.v1": {"batch_000000"}}, InPlace: true}, contract.CodeBadRequest, "always upserts"},
			{"collection twice", plan, contract.RollbackRequest{SnapshotID: snap, Collections: []string{"empty", "empty"}}, contract.CodeBadRequest, "named twice"},
			{"rename unknown", plan, contract.RollbackRequest{SnapshotID: snap, Rename: map[string]string{"ghost": "x_1"}}, contract.CodeBadRequest, `"ghost"`},
			{"rename invalid", plan, contract.RollbackRequest{SnapshotID: snap, Rename: map[string]string{"empty": "no/slash"}}, contract.CodeBadRequest, "not a valid Chroma collection name"},
			{"rename collision", plan, contract.RollbackRequest{SnapshotID: snap, Rename: map[string]string{"empty": "personality"}}, contract.CodeBadRequest, `would both be restored as "personality"`},
			{"rename of an untouched collection", plan, contract.RollbackRequest{SnapshotID: snap, Collections: []string{"empty"}, Rename: map[string]string{"personality": "personality_copy"}}, contract.CodeBadRequest, `rename names "personality", which this rollback does not restore`},
			{"rename onto untouched", plan, contract.RollbackRequest{SnapshotID: snap, Collections: []string{"empty"}, Rename: map[string]string{"empty": "personality"}}, contract.CodeBadRequest, "does not restore"},
			{"chroma_url not allowed", plan, contract.RollbackRequest{SnapshotID: snap, ChromaURL: "http://elsewhere.example:8000"}, contract.CodeBadRequest, "is not allowed"},
			{"chroma_url not a URL", plan, contract.RollbackRequest{SnapshotID: snap, ChromaURL: "ftp:/x"}, contract.CodeBadRequest, "chroma_url"},
			{"bad target tenant", plan, contract.RollbackRequest{SnapshotID: snap, TargetTenant: "a/b"}, contract.CodeBadRequest, "'/'"},
			{"bad op id", start, contract.RollbackRequest{SnapshotID: snap, OpID: "op.with.dots", Confirm: true}, contract.CodeBadRequest, "op_id"},
			{"oversized", plan, []byte(`{"reason":"` + strings.Repeat("a", contract.MaxRequestBytes) + `"}`), contract.CodeTooLarge, "at most"},
			{"status without op", e.subj.API("rollback", "status"), []byte(`{}`), contract.CodeBadRequest, "op_id is required"},
			{"status of unknown op", e.subj.API("rollback", "status"), contract.OperationRef{OpID: "op_nope"}, contract.CodeNotFound, `no rollback operation "op_nope" (records of ended operations are pruned by retention; ` + "`audit-log --op op_nope`"},
			{"status of a snapshot op", e.subj.API("rollback", "status"), contract.OperationRef{OpID: "op_snap"}, contract.CodeNotFound, "it is a snapshot operation (completed, of snapshot snap_x; see `snapshot info snap_x`)"},
			{"cancel of unknown op", e.subj.API("rollback", "cancel"), contract.OperationRef{OpID: "op_nope"}, contract.CodeNotFound, `no rollback operation "op_nope"`},
		}
		snapOp, _ := json.Marshal(contract.Operation{OpID: "op_snap", Kind: "snapshot", SnapshotID: "snap_x", Status: contract.StatusCompleted})
		if _, err := e.nats.Assets.State.Put(ctx, contract.OperationKey("op_snap"), snapOp); err != nil {
			t.Fatal(err)
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				code, body := e.requestError(t, tc.subject, tc.body)
				if code != tc.code || !strings.Contains(body.Error, tc.want) {
					t.Errorf("got %d %q, want %d saying %q", code, body.Error, tc.code, tc.want)
				}
				// Only a snapshot that is not there is one that cannot be
				// restored: a 404 has other causes.
				want := ""
				if tc.name == "unknown snapshot" {
					want = contract.ErrorArchiveUnusable
				}
				if body.ErrorCode != want {
					t.Errorf("error_code %q, want %q", body.ErrorCode, want)
				}
			})
		}
		if n := e.commands(t, "rollback"); n != 0 {
			t.Errorf("bad requests enqueued %d rollbacks", n)
		}
		evs := e.auditEvents(t)
		wantRejected := map[string]int{}
		for _, tc := range cases {
			switch tc.subject {
			case plan:
				wantRejected["rollback.plan"]++
			case start:
				wantRejected["rollback"]++
			}
		}
		for action, n := range wantRejected {
			if got := len(findAudit(evs, action, contract.OutcomeRejected)); got != n {
				t.Errorf("%d %s rejected audit events, want %d", got, action, n)
			}
		}
		compareDB(t, "after bad requests", e.dump(t, "acme", "prod"), damaged, nil)
	})

	t.Run("in-place warnings", func(t *testing.T) {
		// What keeps the old data is said right: the safety snapshot, or
		// nothing with no_safety_snapshot.
		inPlace := func(p *contract.RollbackPlan) string {
			for _, w := range p.Warnings {
				if strings.HasPrefix(w, "in_place:") {
					return w
				}
			}
			return ""
		}
		if w := inPlace(e.plan(t, contract.RollbackRequest{SnapshotID: snap, InPlace: true})); !strings.HasSuffix(w, "(the safety snapshot holds what was there)") {
			t.Errorf("in-place plan warns %q; want it to name the safety snapshot", w)
		}
		if w := inPlace(e.plan(t, contract.RollbackRequest{SnapshotID: snap, InPlace: true, NoSafetySnapshot: true})); strings.Contains(w, "safety snapshot holds") ||
			!strings.HasSuffix(w, "and nothing keeps what was there (no_safety_snapshot)") {
			t.Errorf("in-place plan without a safety snapshot warns %q; want it to say nothing keeps the old data", w)
		}
	})

	t.Run("held lease", func(t *testing.T) {
		l, err := fence.Acquire(ctx, e.nats.Assets.State, contract.Lease{Tenant: "acme", Database: "prod", Holder: "op_other", Kind: "import", Actor: "carol"}, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		p := e.plan(t, contract.RollbackRequest{SnapshotID: snap})
		if !slices.ContainsFunc(p.Warnings, func(w string) bool { return strings.Contains(w, "op_other") }) {
			t.Errorf("plan does not warn of the held lease: %q", p.Warnings)
		}
		code, body := e.requestError(t, e.subj.API("rollback", "start"), contract.RollbackRequest{SnapshotID: snap, Confirm: true})
		for _, want := range []string{"import op_other", "carol", "acme/prod"} {
			if code != contract.CodeConflict || !strings.Contains(body.Error, want) {
				t.Errorf("start under a held lease: %d %q, want 409 saying %q", code, body.Error, want)
			}
		}
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("corrupt archive", func(t *testing.T) {
		bad := e.snapshot(t, "acme", "prod", "to_corrupt")
		e.corrupt(t, bad)
		// Both digests in hex, so an operator can compare them.
		digests := regexp.MustCompile(`was stored with sha256 [0-9a-f]{64}, its manifest says sha256 ` + e.storedManifest(t, bad).SHA256 + ` \(replaced\)`)
		for _, subject := range []string{e.subj.API("rollback", "plan"), e.subj.API("rollback", "start")} {
			code, body := e.requestError(t, subject, contract.RollbackRequest{SnapshotID: bad, Confirm: true})
			if code != contract.CodeVerificationFailed || body.ErrorCode != contract.ErrorArchiveUnusable ||
				!strings.Contains(body.Error, "nothing was changed") || !digests.MatchString(body.Error) {
				t.Errorf("%s of a corrupt archive: %d %q (error_code %q)", subject, code, body.Error, body.ErrorCode)
			}
		}
		if n := e.commands(t, "rollback"); n != 0 {
			t.Errorf("a corrupt archive enqueued %d rollbacks", n)
		}
		compareDB(t, "after refusing a corrupt archive", e.dump(t, "acme", "prod"), damaged, nil)
		e.assertReleased(t)
	})

	t.Run("archive damaged in storage", func(t *testing.T) {
		// The object's recorded size and digest still match the manifest,
		// so the start's quick check passes; the restore verifies every
		// byte while it stages, finds the damage at the archive's end, and
		// must swap nothing in.
		bad := e.snapshot(t, "acme", "prod", "damaged_in_storage")
		e.corruptChunks(t, bad, func(size int) int { return size - 20 })
		before := e.collectionIDs(t, "acme", "prod")
		r := e.start(t, contract.RollbackRequest{SnapshotID: bad, Confirm: true, NoSafetySnapshot: true})
		if r.Plan == nil || r.Plan.Verification != contract.VerifyWhileStaging {
			t.Errorf("start plan: %s", mustJSON(t, r.Plan))
		}
		op := e.waitOp(t, r.OpID, time.Minute)
		if op.Status != contract.StatusFailed || op.ErrorCode != contract.ErrorArchiveUnusable || !strings.Contains(op.Error, "archive failed verification") ||
			op.FailureReason != metrics.ReasonVerification {
			t.Fatalf("op of an archive damaged in storage: %s %q (%s, error_code %q)", op.Status, op.Error, op.FailureReason, op.ErrorCode)
		}
		if op.Restore == nil || op.Restore.RecordsWritten == 0 || op.Restore.Verified {
			t.Errorf("the damage should be found after staging: %s", mustJSON(t, op.Restore))
		}
		// Every collection is the one that was there: none was swapped in,
		// not even one the damage came after.
		if got := e.collectionIDs(t, "acme", "prod"); !maps.Equal(got, before) {
			t.Errorf("collections after an archive damaged in storage: %v, before: %v", got, before)
		}
		compareDB(t, "after an archive damaged in storage", e.dump(t, "acme", "prod"), damaged, nil)
		e.assertReleased(t)
	})

	t.Run("archive damaged before the collection restored", func(t *testing.T) {
		// A partial rollback of the archive's last collection: its staging
		// collection is made at once, while the archive is read. The damage,
		// early in the archive, is found there when it breaks the stream,
		// or at the archive's end when it only changes bytes of a batch
		// (the entry checksums are in the manifest, last); either way the
		// staging collection goes and nothing changes.
		bad := e.snapshot(t, "acme", "prod", "damaged_early")
		m := e.storedManifest(t, bad)
		last := m.Collections[len(m.Collections)-1].Name
		e.corruptChunks(t, bad, func(size int) int { return size / 10 })
		before := e.collectionIDs(t, "acme", "prod")
		r := e.start(t, contract.RollbackRequest{SnapshotID: bad, Confirm: true, NoSafetySnapshot: true, Collections: []string{last}})
		op := e.waitOp(t, r.OpID, time.Minute)
		if op.Status != contract.StatusFailed || op.ErrorCode != contract.ErrorArchiveUnusable || !strings.Contains(op.Error, "archive failed verification") {
			t.Fatalf("op of an archive damaged early: %s %q (error_code %q)", op.Status, op.Error, op.ErrorCode)
		}
		if got := e.collectionIDs(t, "acme", "prod"); !maps.Equal(got, before) {
			t.Errorf("collections after an archive damaged early: %v, before: %v", got, before)
		}
		compareDB(t, "after an archive damaged early", e.dump(t, "acme", "prod"), damaged, nil)
		e.assertReleased(t)
	})

	t.Run("restore that does not verify", func(t *testing.T) {
		var once atomic.Bool
		setHook(func(ctx context.Context, p restorer.HookPoint) error {
			if p.Name == "batch" && p.Collection == "corpus.v1" && once.CompareAndSwap(false, true) {
				// Damage the staging collection behind the restorer's back.
				b, err := p.Client.Get(ctx, p.Tenant, p.Database, p.WorkID, chroma.GetRequest{Limit: 1, Include: []chroma.Include{}})
				if err != nil {
					return err
				}
				return p.Client.Delete(ctx, p.Tenant, p.Database, p.WorkID, b.IDs)
			}
			return nil
		})
		defer setHook(nil)
		r := e.start(t, contract.RollbackRequest{SnapshotID: snap, Confirm: true, NoSafetySnapshot: true})
		op := e.waitOp(t, r.OpID, time.Minute)
		// The restore, not the archive, failed verification: asking again
		// can work.
		if op.Status != contract.StatusFailed || !strings.Contains(op.Error, "does not match the snapshot") || !strings.Contains(op.Error, "corpus.v1") ||
			op.FailureReason != metrics.ReasonVerification || op.ErrorCode != contract.ErrorOther {
			t.Fatalf("op %s: %s (%s, error_code %q)", op.Status, op.Error, op.FailureReason, op.ErrorCode)
		}
		var listed bool
		for _, c := range op.Restore.Collections {
			if c.Collection == "corpus.v1" {
				listed = !c.Verified && len(c.Differences) > 0 && strings.Contains(c.Differences[0], "records, the snapshot has 400")
			}
		}
		if !listed || op.Restore.Verified {
			t.Errorf("report does not list the difference: %s", mustJSON(t, op.Restore))
		}
		want := damaged.clone()
		after := e.dump(t, "acme", "prod")
		// Collections before corpus.v1 in the archive were restored; the
		// failed one is untouched, and no staging collection is left.
		for _, c := range op.Restore.Collections {
			if c.Verified {
				want[c.Target] = after[c.Target]
			}
		}
		compareCollection(t, "corpus.v1 after a failed restore", after["corpus.v1"], damaged["corpus.v1"])
		compareDB(t, "after a failed restore", after, want, nil)
		e.assertReleased(t)
		damage(t, e.cc, 2)
		damaged = e.dump(t, "acme", "prod")
	})

	t.Run("cancel", func(t *testing.T) {
		reached, release := make(chan struct{}), make(chan struct{})
		var once atomic.Bool
		setHook(func(ctx context.Context, p restorer.HookPoint) error {
			if p.Name == "batch" && p.Collection == "corpus.v1" && once.CompareAndSwap(false, true) {
				close(reached)
				<-release
			}
			return nil
		})
		defer setHook(nil)
		r := e.start(t, contract.RollbackRequest{SnapshotID: snap, Confirm: true, NoSafetySnapshot: true, Collections: []string{"corpus.v1"}})
		<-reached
		code, data := e.request(t, e.subj.API("rollback", "cancel"), contract.OperationRef{OpID: r.OpID, Actor: "dave"})
		var op contract.Operation
		if code != 0 || json.Unmarshal(data, &op) != nil || !slices.ContainsFunc(op.Warnings, func(w string) bool { return strings.Contains(w, "cancel requested by dave") }) {
			t.Errorf("cancel reply %d %s", code, data)
		}
		close(release)
		op = e.waitOp(t, r.OpID, time.Minute)
		if op.Status != contract.StatusCancelled || !strings.Contains(op.Error, "by dave") || !op.Restore.Cancelled || op.FailureReason != metrics.ReasonCancelled ||
			op.ErrorCode != contract.ErrorOther {
			t.Errorf("cancelled op: %s %q (%s, error_code %q) %s", op.Status, op.Error, op.FailureReason, op.ErrorCode, mustJSON(t, op.Restore))
		}
		compareDB(t, "after a cancelled rollback", e.dump(t, "acme", "prod"), damaged, nil)
		e.assertReleased(t)
		code, body := e.requestError(t, e.subj.API("rollback", "cancel"), contract.OperationRef{OpID: r.OpID})
		if code != contract.CodeConflict || !strings.Contains(body.Error, "already ended: cancelled") {
			t.Errorf("second cancel: %d %q", code, body.Error)
		}
	})

	t.Run("chroma outage", func(t *testing.T) {
		var once atomic.Bool
		setHook(func(ctx context.Context, p restorer.HookPoint) error {
			if p.Name == "batch" && p.Collection == "corpus.v1" && once.CompareAndSwap(false, true) {
				e.chroma.Stop()
			}
			return nil
		})
		defer setHook(nil)
		r := e.start(t, contract.RollbackRequest{SnapshotID: snap, Confirm: true, NoSafetySnapshot: true, Collections: []string{"corpus.v1"}})
		op := e.waitOp(t, r.OpID, time.Minute)
		// Not a verification failure, however far the restore got: the
		// CLI exits 1 for it, not 3.
		if op.Status != contract.StatusFailed || !strings.Contains(op.Error, "chroma") || op.FailureReason != metrics.ReasonChroma || op.Restore == nil {
			t.Errorf("op during an outage: %s %q (%s), report %s", op.Status, op.Error, op.FailureReason, mustJSON(t, op.Restore))
		}
		e.assertReleased(t)
		e.chroma.Restart(t)
		// The live collection was never touched; only the staging one may
		// be left behind (Chroma was down for the cleanup), and the op says so.
		after := e.dump(t, "acme", "prod")
		compareCollection(t, "corpus.v1 after an outage", after["corpus.v1"], damaged["corpus.v1"])
		for name := range after {
			if strings.Contains(name, "__rb_") && !slices.ContainsFunc(op.Warnings, func(w string) bool { return strings.Contains(w, name) }) {
				t.Errorf("staging collection %q left behind without a warning naming it: %q", name, op.Warnings)
			}
		}
	})
}

// corrupt flips one byte in the middle of a snapshot's stored archive.
func (e *env) corrupt(t *testing.T, snapshotID string) {
	t.Helper()
	e.nats.ReplaceStoredArchive(t, e.storedManifest(t, snapshotID).Object)
}

// collectionIDs maps the names of tenant/db's collections to their ids.
func (e *env) collectionIDs(t *testing.T, tenant, db string) map[string]string {
	t.Helper()
	cs, err := e.cc.ListCollections(t.Context(), tenant, db)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, c := range cs {
		out[c.Name] = c.ID
	}
	return out
}

// corruptChunks flips one byte of a snapshot's stored archive (at offset
// at(size)) in its chunks, leaving the object's size and digest as they
// were (testenv.NATS.DamageStoredChunks).
func (e *env) corruptChunks(t *testing.T, snapshotID string, at func(size int) int) {
	t.Helper()
	e.nats.DamageStoredChunks(t, e.storedManifest(t, snapshotID).Object, at)
}
