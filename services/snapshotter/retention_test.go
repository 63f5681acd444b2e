package snapshotter_test

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
	"github.com/nats-io/nats.go/jetstream"
)

const day = 24 * time.Hour

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
}

type fakeWaiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock(now time.Time) *fakeClock { return &fakeClock{now: now} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, fakeWaiter{at: c.now.Add(d), ch: ch})
	return ch
}

// Advance moves the clock and fires every waiter now due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if w.at.After(c.now) {
			kept = append(kept, w)
			continue
		}
		w.ch <- c.now
	}
	c.waiters = kept
}

// waitWaiters waits until n goroutines wait on the clock, each due at due.
func (c *fakeClock) waitWaiters(t *testing.T, n int, due time.Time) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		var got []time.Time
		for _, w := range c.waiters {
			got = append(got, w.at)
		}
		c.mu.Unlock()
		if len(got) >= n {
			for _, at := range got {
				if !at.Equal(due) {
					t.Fatalf("a waiter is due at %s, want %s (00:00 UTC)", at, due)
				}
			}
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("fewer than %d goroutines wait on the clock", n)
}

// seedSmall creates a tenant/database with one small collection.
func (e *env) seedSmall(t *testing.T, tenant, database string) {
	t.Helper()
	if err := testenv.SeedWorkload(t.Context(), e.cc, tenant, database, 1, 8, 4, 16); err != nil {
		t.Fatalf("seed %s/%s: %v", tenant, database, err)
	}
}

// snap takes a snapshot through the API and returns its manifest, with
// StartedAt moved to at (and the other times after it): that is how old
// the test makes it.
func (e *env) snap(t *testing.T, req contract.SnapshotCreateRequest, at time.Time) contract.SnapshotManifest {
	t.Helper()
	req.Envelope = contract.NewEnvelope(contract.TypeSnapshotCreateRequest)
	rep := e.create(t, req)
	if op := e.waitOp(t, rep.OpID, time.Minute); op.Status != contract.StatusCompleted {
		t.Fatalf("snapshot %s: %s %s", req.Name, op.Status, op.Error)
	}
	entry, err := e.nats.Assets.Manifests.Get(t.Context(), rep.SnapshotID)
	if err != nil {
		t.Fatal(err)
	}
	var m contract.SnapshotManifest
	if err := json.Unmarshal(entry.Value(), &m); err != nil {
		t.Fatal(err)
	}
	m.StartedAt, m.CompletedAt, m.VerifiedAt = at, at.Add(time.Second), at.Add(2*time.Second)
	if _, err := e.nats.Assets.Manifests.Update(t.Context(), m.SnapshotID, mustJSON(t, m), entry.Revision()); err != nil {
		t.Fatalf("backdate %s: %v", m.SnapshotID, err)
	}
	return m
}

// cleanup asks for a retention run and returns its report.
func (e *env) cleanup(t *testing.T, req contract.CleanupRequest) contract.CleanupReport {
	t.Helper()
	req.Envelope = contract.NewEnvelope(contract.TypeCleanupRequest)
	code, data := e.request(t, e.subj.API("snapshot", "cleanup"), mustJSON(t, req))
	if code != 0 {
		t.Fatalf("cleanup %+v: error %d: %s", req, code, data)
	}
	var rep contract.CleanupReport
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatalf("decode cleanup report: %v", err)
	}
	return rep
}

// storeState is every manifest (key -> revision and value) and every object.
type storeState struct {
	manifests map[string]string
	objects   []string
}

func (e *env) storeState(t *testing.T) storeState {
	t.Helper()
	st := storeState{manifests: map[string]string{}}
	lister, err := e.nats.Assets.Manifests.ListKeys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for key := range lister.Keys() {
		entry, err := e.nats.Assets.Manifests.Get(t.Context(), key)
		if err != nil {
			t.Fatal(err)
		}
		st.manifests[key] = string(entry.Value())
	}
	st.objects = e.objects(t)
	slices.Sort(st.objects)
	return st
}

// reasons maps snapshot id to the reason the report gives for it.
func reasons(items []contract.CleanupItem) map[string]string {
	out := map[string]string{}
	for _, it := range items {
		out[it.SnapshotID] = it.Reason
	}
	return out
}

func (e *env) putManifest(t *testing.T, m contract.SnapshotManifest) {
	t.Helper()
	m.Envelope = contract.NewEnvelope(contract.TypeSnapshotManifest)
	if _, err := e.nats.Assets.Manifests.Put(t.Context(), m.SnapshotID, mustJSON(t, m)); err != nil {
		t.Fatal(err)
	}
}

func (e *env) putState(t *testing.T, key string, v any) {
	t.Helper()
	if _, err := e.nats.Assets.State.Put(t.Context(), key, mustJSON(t, v)); err != nil {
		t.Fatal(err)
	}
}

func (e *env) keep(t *testing.T, ref string, keep bool) contract.SnapshotManifest {
	t.Helper()
	code, data := e.request(t, e.subj.API("snapshot", "keep"), mustJSON(t, contract.SnapshotKeepRequest{
		Envelope: contract.NewEnvelope(contract.TypeKeepRequest), Snapshot: ref, Keep: &keep, Actor: "test"}))
	if code != 0 {
		t.Fatalf("keep %s %v: error %d: %s", ref, keep, code, data)
	}
	var m contract.SnapshotManifest
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestRetention is acceptance 5: with the clock 100 days ahead of the
// snapshots' real time and their ages set by hand, a run deletes the expired
// snapshots and keeps the newest verified (and newest full) of each
// database, those a running migration or rollback uses, the pinned ones and
// the young ones; a dry run changes nothing; every deletion is audited and
// leaves neither manifest nor object.
func TestRetention(t *testing.T) {
	e := newEnv(t)
	const tenant, dbA, dbB = "default_tenant", "ret_a", "ret_b"
	e.seedSmall(t, tenant, dbA)
	e.seedSmall(t, tenant, dbB)
	// A second collection, so that b_partial, of workload_00 only, holds
	// some of dbB's collections.
	if _, err := e.cc.CreateCollection(t.Context(), tenant, dbB, chroma.CreateCollection{Name: "bystander"}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Add(100 * day).Truncate(time.Hour).Add(7 * time.Hour)
	clock := newFakeClock(now)
	e.startService(t, snapshotter.Config{Clock: clock}) // the default period, 7 days
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	a := func(name string) contract.SnapshotCreateRequest {
		return contract.SnapshotCreateRequest{Name: name, Tenant: tenant, Database: dbA, Actor: "test"}
	}

	unpinned := a("a_unpinned")
	unpinned.Keep = true
	aUnpinned := e.snap(t, unpinned, ago(21*day))
	pinned := a("a_keep")
	pinned.Keep = true // snapshot create --keep
	aKeep := e.snap(t, pinned, ago(20*day))
	aPinned := e.snap(t, a("a_pinned"), ago(19*day))
	aMig := e.snap(t, a("a_mig"), ago(18*day))
	aMigDone := e.snap(t, a("a_mig_done"), ago(17*day))
	aRB := e.snap(t, a("a_rb"), ago(16*day))
	aYoung := e.snap(t, a("a_young"), ago(2*day))
	bExpired := e.snap(t, contract.SnapshotCreateRequest{Name: "b_expired", Tenant: tenant, Database: dbB}, ago(30*day))
	bFull := e.snap(t, contract.SnapshotCreateRequest{Name: "b_full", Tenant: tenant, Database: dbB}, ago(10*day))
	bPartial := e.snap(t, contract.SnapshotCreateRequest{Name: "b_partial", Tenant: tenant, Database: dbB, Collections: []string{"workload_00"}}, ago(9*day))
	// Another database's snapshot under the name the running migration of
	// dbA uses, newer than the one it means; and the one a running
	// migration's name was pinned to.
	bMig := e.snap(t, contract.SnapshotCreateRequest{Name: "a_mig", Tenant: tenant, Database: dbB}, ago(17*day+12*time.Hour))
	aPinnedByMig := e.snap(t, a("a_pinned_by_mig"), ago(15*day))

	if !aKeep.Keep || !aUnpinned.Keep || aPinned.Keep {
		t.Fatalf("create did not record keep: a_keep %v, a_unpinned %v, a_pinned %v", aKeep.Keep, aUnpinned.Keep, aPinned.Keep)
	}
	if m := e.keep(t, aPinned.SnapshotID, true); !m.Keep {
		t.Fatalf("keep true answered a manifest without keep")
	}
	if m := e.keep(t, "a_unpinned", false); m.Keep || m.SnapshotID != aUnpinned.SnapshotID {
		t.Fatalf("keep false by name answered keep %v for %s", m.Keep, m.SnapshotID)
	}

	// A migration still running names a_mig by name (as a job's started
	// event may); a completed one names a_mig_done by id; a rollback still
	// running restores a_rb.
	e.putState(t, contract.MigrationKey("reindex"), contract.MigrationRecord{Envelope: contract.NewEnvelope(contract.TypeMigrationRecord),
		Job: "reindex", Tenant: tenant, Database: dbA, Status: contract.MigrationRunning, SnapshotID: "a_mig", StartedAt: ago(time.Hour)})
	e.putState(t, contract.MigrationKey("old-job"), contract.MigrationRecord{Envelope: contract.NewEnvelope(contract.TypeMigrationRecord),
		Job: "old-job", Tenant: tenant, Database: dbA, Status: contract.MigrationCompleted, SnapshotID: aMigDone.SnapshotID, StartedAt: ago(17 * day)})
	e.putState(t, contract.MigrationKey("pinned-job"), contract.MigrationRecord{Envelope: contract.NewEnvelope(contract.TypeMigrationRecord),
		Job: "pinned-job", Tenant: tenant, Database: dbA, Status: contract.MigrationRunning, SnapshotID: "nightly",
		PinnedSnapshotID: aPinnedByMig.SnapshotID, StartedAt: ago(time.Hour)})
	e.putState(t, contract.OperationKey("op_rb_test"), contract.Operation{Envelope: contract.NewEnvelope(contract.TypeOperation),
		OpID: "op_rb_test", Kind: "rollback", SnapshotID: aRB.SnapshotID, Status: contract.StatusRunning, Tenant: tenant, Database: dbA})

	wantDeleted := []string{bExpired.SnapshotID, aUnpinned.SnapshotID, bMig.SnapshotID, aMigDone.SnapshotID} // oldest first
	wantKept := map[string]string{
		aKeep.SnapshotID:        contract.KeepPinned,
		aPinned.SnapshotID:      contract.KeepPinned,
		aMig.SnapshotID:         contract.KeepMigration,
		aPinnedByMig.SnapshotID: contract.KeepMigration,
		aRB.SnapshotID:          contract.KeepRollback,
		aYoung.SnapshotID:       contract.KeepNewest,
		bFull.SnapshotID:        contract.KeepNewestFull,
		bPartial.SnapshotID:     contract.KeepNewest,
	}
	sizes := map[string]int64{}
	for _, m := range []contract.SnapshotManifest{aUnpinned, aKeep, aPinned, aMig, aMigDone, aRB, aYoung, bExpired, bFull, bPartial, bMig, aPinnedByMig} {
		sizes[m.SnapshotID] = m.Size
	}
	ids := func(items []contract.CleanupItem) []string {
		var out []string
		for _, it := range items {
			out = append(out, it.SnapshotID)
		}
		return out
	}

	before := e.storeState(t)
	if len(before.manifests) != 12 || len(before.objects) != 12 {
		t.Fatalf("before: %d manifests and %d objects, want 12 of each", len(before.manifests), len(before.objects))
	}

	t.Run("dry run scoped to one database", func(t *testing.T) {
		rep := e.cleanup(t, contract.CleanupRequest{DryRun: true, Tenant: tenant, Database: dbB, Actor: "test"})
		if got, want := ids(rep.Deleted), []string{bExpired.SnapshotID, bMig.SnapshotID}; !slices.Equal(got, want) {
			t.Errorf("would delete %v, want %v", got, want)
		}
		if got, want := reasons(rep.Kept), map[string]string{bFull.SnapshotID: contract.KeepNewestFull, bPartial.SnapshotID: contract.KeepNewest}; !maps.Equal(got, want) {
			t.Errorf("kept %v, want %v", got, want)
		}
	})

	t.Run("dry run", func(t *testing.T) {
		rep := e.cleanup(t, contract.CleanupRequest{DryRun: true, Actor: "test"})
		if !rep.DryRun || rep.OlderThan != "7d" || !rep.Now.Equal(now) || !rep.Cutoff.Equal(now.Add(-7*day)) {
			t.Errorf("report: dry_run %v, older_than %q, now %s, cutoff %s; want true, 7d, %s, 7 days before", rep.DryRun, rep.OlderThan, rep.Now, rep.Cutoff, now)
		}
		if got := ids(rep.Deleted); !slices.Equal(got, wantDeleted) {
			t.Errorf("would delete %v, want %v", got, wantDeleted)
		}
		if got := reasons(rep.Kept); !maps.Equal(got, wantKept) {
			t.Errorf("kept %v, want %v", got, wantKept)
		}
		var freed int64
		for _, it := range rep.Deleted {
			freed += sizes[it.SnapshotID]
			if it.Reason != contract.ReasonExpired || it.Size != sizes[it.SnapshotID] || it.AgeSeconds < (16*day).Seconds() {
				t.Errorf("would delete %s: reason %q, size %d, age %s; want expired, %d, over 16 days", it.SnapshotID, it.Reason, it.Size, it.Age, sizes[it.SnapshotID])
			}
		}
		if rep.BytesFreed != freed || len(rep.Failed) != 0 {
			t.Errorf("would free %d bytes with %d failures, want %d and none", rep.BytesFreed, len(rep.Failed), freed)
		}
		for _, it := range rep.Kept {
			if it.Detail == "" {
				t.Errorf("kept %s without a detail", it.SnapshotID)
			}
		}
		after := e.storeState(t)
		if !maps.Equal(after.manifests, before.manifests) || !slices.Equal(after.objects, before.objects) {
			t.Errorf("a dry run changed the store:\nmanifests before %v\nafter %v\nobjects before %v\nafter %v",
				slices.Sorted(maps.Keys(before.manifests)), slices.Sorted(maps.Keys(after.manifests)), before.objects, after.objects)
		}
		if evs := findAudit(e.auditEvents(t), "snapshot.delete", contract.OutcomeCompleted); len(evs) != 0 {
			t.Errorf("a dry run audited %d deletions", len(evs))
		}
	})

	t.Run("run", func(t *testing.T) {
		rep := e.cleanup(t, contract.CleanupRequest{Actor: "ops@example", Reason: "disk is filling"})
		if got := ids(rep.Deleted); !slices.Equal(got, wantDeleted) {
			t.Errorf("deleted %v, want %v", got, wantDeleted)
		}
		if got := reasons(rep.Kept); !maps.Equal(got, wantKept) {
			t.Errorf("kept %v, want %v", got, wantKept)
		}
		var freed int64
		for _, id := range wantDeleted {
			freed += sizes[id]
			if _, ok := e.manifest(t, id); ok {
				t.Errorf("deleted snapshot %s still has its manifest", id)
			}
		}
		if rep.BytesFreed != freed || len(rep.Failed) != 0 {
			t.Errorf("freed %d bytes with %d failures, want %d and none", rep.BytesFreed, len(rep.Failed), freed)
		}
		objects := e.objects(t)
		for _, id := range wantDeleted {
			if slices.Contains(objects, id+".tar.zst") {
				t.Errorf("deleted snapshot %s still has its object", id)
			}
		}
		for id := range wantKept {
			if _, ok := e.manifest(t, id); !ok || !slices.Contains(objects, id+".tar.zst") {
				t.Errorf("kept snapshot %s lost its manifest or object", id)
			}
		}

		evs := e.auditEvents(t)
		deletes := findAudit(evs, "snapshot.delete", contract.OutcomeCompleted)
		var audited []string
		for _, ev := range deletes {
			audited = append(audited, ev.SnapshotID)
			age, _ := ev.Figures["age_seconds"].(float64)
			size, _ := ev.Figures["size"].(float64)
			if ev.Reason != "retention" || ev.Actor != "ops@example" || ev.OpID != rep.RunID || age < (16*day).Seconds() || int64(size) != sizes[ev.SnapshotID] {
				t.Errorf("deletion event %+v: want reason retention, actor ops@example, op_id %s, age over 16 days, size %d", ev, rep.RunID, sizes[ev.SnapshotID])
			}
		}
		if !slices.Equal(audited, wantDeleted) {
			t.Errorf("deletions audited %v, want %v", audited, wantDeleted)
		}
		runs := findAudit(evs, "snapshot.cleanup", contract.OutcomeCompleted)
		if len(runs) != 3 {
			t.Fatalf("%d completed cleanup runs audited, want 3 (two dry runs and this one)", len(runs))
		}
		last := runs[2]
		if last.OpID != rep.RunID || last.Reason != "disk is filling" || last.Figures["deleted"] != float64(len(wantDeleted)) ||
			last.Figures["kept"] != float64(len(wantKept)) || last.Figures["bytes_freed"] != float64(freed) || last.Figures["dry_run"] != false {
			t.Errorf("run event %+v: want op_id %s, %d deleted, %d kept, %d bytes freed", last, rep.RunID, len(wantDeleted), len(wantKept), freed)
		}
		if dry := runs[1]; dry.Figures["dry_run"] != true || dry.Figures["would_delete"] != float64(len(wantDeleted)) {
			t.Errorf("dry run event figures %v: want dry_run and would_delete %d", dry.Figures, len(wantDeleted))
		}
		if keeps := findAudit(evs, "snapshot.keep", contract.OutcomeCompleted); len(keeps) != 2 {
			t.Errorf("%d keep events, want 2 (pin, unpin)", len(keeps))
		}
	})

	t.Run("ended work no longer keeps", func(t *testing.T) {
		// The migration completes and the rollback ends: their snapshots are
		// now expired like any other.
		e.putState(t, contract.MigrationKey("reindex"), contract.MigrationRecord{Envelope: contract.NewEnvelope(contract.TypeMigrationRecord),
			Job: "reindex", Tenant: tenant, Database: dbA, Status: contract.MigrationCompleted, SnapshotID: "a_mig"})
		e.putState(t, contract.OperationKey("op_rb_test"), contract.Operation{Envelope: contract.NewEnvelope(contract.TypeOperation),
			OpID: "op_rb_test", Kind: "rollback", SnapshotID: aRB.SnapshotID, Status: contract.StatusCompleted})
		rep := e.cleanup(t, contract.CleanupRequest{DryRun: true})
		if got, want := ids(rep.Deleted), []string{aMig.SnapshotID, aRB.SnapshotID}; !slices.Equal(got, want) {
			t.Errorf("would delete %v, want %v", got, want)
		}
	})

	t.Run("older_than", func(t *testing.T) {
		// 36 hours: a_young (2 days) is expired too, but stays the newest.
		rep := e.cleanup(t, contract.CleanupRequest{DryRun: true, OlderThan: "36h"})
		if rep.OlderThan != "1d12h" || reasons(rep.Kept)[aYoung.SnapshotID] != contract.KeepNewest {
			t.Errorf("older_than 36h: report says %q, a_young kept for %q; want 1d12h and newest_verified", rep.OlderThan, reasons(rep.Kept)[aYoung.SnapshotID])
		}
		rep = e.cleanup(t, contract.CleanupRequest{DryRun: true, OlderThan: "60d"})
		if len(rep.Deleted) != 0 {
			t.Errorf("older_than 60d would delete %v, want nothing", ids(rep.Deleted))
		}
	})
}

// TestCleanupRejectsBadRequests: each bad request is refused with the field
// to fix, audited, and deletes nothing.
func TestCleanupRejectsBadRequests(t *testing.T) {
	e := newEnv(t)
	e.startService(t, snapshotter.Config{Retention: snapshotter.RetentionOff})
	for _, tc := range []struct {
		name, subject, body string
		code                int
		field, says         string
	}{
		{"malformed", "cleanup", `{"dry_run":`, 400, "", "malformed JSON"},
		{"bad older_than", "cleanup", `{"older_than":"a week"}`, 400, "older_than", "7d"},
		{"negative older_than", "cleanup", `{"older_than":"-7d"}`, 400, "older_than", "whole number"},
		{"retention off needs older_than", "cleanup", `{"dry_run":true}`, 400, "older_than", "retention is off"},
		{"database without tenant", "cleanup", `{"older_than":"7d","database":"prod"}`, 400, "tenant", "give tenant too"},
		{"keep without keep", "keep", `{"snapshot":"x"}`, 400, "keep", "keep is required"},
		{"keep of an unknown snapshot", "keep", `{"snapshot":"nope","keep":true}`, 404, "snapshot", "no snapshot"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, data := e.request(t, e.subj.API("snapshot", tc.subject), []byte(tc.body))
			var body contract.ErrorBody
			_ = json.Unmarshal(data, &body)
			if code != tc.code || body.Field != tc.field || !strings.Contains(body.Error, tc.says) {
				t.Errorf("got %d field %q: %s; want %d field %q saying %q", code, body.Field, body.Error, tc.code, tc.field, tc.says)
			}
		})
	}
	evs := e.auditEvents(t)
	if n := len(findAudit(evs, "snapshot.cleanup", contract.OutcomeRejected)); n != 5 {
		t.Errorf("%d cleanup rejections audited, want 5", n)
	}
	if n := len(findAudit(evs, "snapshot.keep", contract.OutcomeRejected)); n != 2 {
		t.Errorf("%d keep rejections audited, want 2", n)
	}
	if n := len(findAudit(evs, "snapshot.cleanup", contract.OutcomeCompleted)); n != 0 {
		t.Errorf("%d cleanup runs happened, want none", n)
	}
}

// TestRetentionDailyRunOnce: two instances share a fake clock; the run
// fires at 00:00 UTC, not a second before, on exactly one of them, and
// again the next midnight.
func TestRetentionDailyRunOnce(t *testing.T) {
	e := newEnv(t)
	const tenant, db = "default_tenant", "daily"
	e.seedSmall(t, tenant, db)
	midnight := time.Now().UTC().Add(50 * day).Truncate(day)
	clock := newFakeClock(midnight.Add(-2 * time.Second))
	e.startService(t, snapshotter.Config{Clock: clock, Instance: "one", Retention: 3 * day})
	old := e.snap(t, contract.SnapshotCreateRequest{Name: "old", Tenant: tenant, Database: db}, midnight.Add(-5*day))
	newest := e.snap(t, contract.SnapshotCreateRequest{Name: "newest", Tenant: tenant, Database: db}, midnight.Add(-4*day))
	e.startService(t, snapshotter.Config{Clock: clock, Instance: "two", Retention: 3 * day})
	clock.waitWaiters(t, 2, midnight)

	runs := func() []contract.AuditEvent {
		return findAudit(e.auditEvents(t), "snapshot.cleanup", contract.OutcomeCompleted)
	}
	clock.Advance(time.Second) // 23:59:59: nothing yet
	time.Sleep(300 * time.Millisecond)
	if n := len(runs()); n != 0 {
		t.Fatalf("%d runs before midnight", n)
	}
	clock.Advance(time.Second) // 00:00:00
	waitFor(t, "the daily run", func() bool { return len(runs()) > 0 })
	clock.waitWaiters(t, 2, midnight.Add(day)) // both instances went back to waiting
	time.Sleep(300 * time.Millisecond)         // a second run, if any, would be audited by now
	got := runs()
	if len(got) != 1 {
		t.Fatalf("%d daily runs audited, want 1: %+v", len(got), got)
	}
	if got[0].Actor != "retention" || got[0].Figures["trigger"] != contract.CleanupTriggerSchedule || got[0].Figures["deleted"] != float64(1) {
		t.Errorf("daily run event %+v: want actor retention, trigger schedule, 1 deleted", got[0])
	}
	if _, ok := e.manifest(t, old.SnapshotID); ok {
		t.Errorf("the daily run kept the expired snapshot")
	}
	if _, ok := e.manifest(t, newest.SnapshotID); !ok {
		t.Errorf("the daily run deleted the newest snapshot")
	}
	entry, err := e.nats.Assets.State.Get(t.Context(), snapshotter.RetentionClaimKey(midnight))
	if err != nil {
		t.Fatalf("no claim of the day: %v", err)
	}
	var claim struct{ Instance string }
	if err := json.Unmarshal(entry.Value(), &claim); err != nil || (claim.Instance != "one" && claim.Instance != "two") {
		t.Errorf("claim %s: %v", entry.Value(), err)
	}

	clock.Advance(day)
	waitFor(t, "the next day's run", func() bool { return len(runs()) == 2 })
	clock.waitWaiters(t, 2, midnight.Add(2*day))
	time.Sleep(300 * time.Millisecond)
	if n := len(runs()); n != 2 {
		t.Errorf("%d runs after two midnights, want 2", n)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestRetentionSweepsOrphanChunks: a run over everything purges the chunks
// of snapshot objects that no object info names (a put killed outright,
// its command never delivered again) once their snapshot is a day old; it
// leaves younger ones (a put may still be running), live objects' chunks
// and chunk ids that are not a snapshot object's. So it does with archive
// objects that their snapshot's manifest does not name, and with the
// staging objects of killed imports. A dry run counts only.
func TestRetentionSweepsOrphanChunks(t *testing.T) {
	e := newEnv(t)
	e.startService(t, snapshotter.Config{})
	ctx := t.Context()
	now := time.Now().UTC()
	stamp := func(age time.Duration) string { return now.Add(-age).Format("20060102T150405Z") }
	id := func(age time.Duration, tail string) string { return "snap_" + stamp(age) + "_0123456789ab" + tail }
	orphan := func(chunkID string) {
		t.Helper()
		for range 2 {
			if _, err := e.nats.JS.Publish(ctx, bus.ChunkSubject(contract.ObjectSnapshots, chunkID), []byte("chunk of a killed put")); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Chunks of killed puts: snapshots' and imports' uploads, old and young.
	old, oldAttempt := id(48*time.Hour, "_tar_zst"), id(30*time.Hour, "_attempt2_tar_zst")
	young, foreign := id(time.Hour, "_tar_zst"), "Kj3mQ0pZx8VbN2sW4yT6uA"
	oldImport, youngImport := "import_"+stamp(48*time.Hour)+"_0123456789ab", "import_"+stamp(time.Hour)+"_0123456789ab"
	for _, c := range []string{old, oldAttempt, young, foreign, oldImport, youngImport} {
		orphan(c)
	}
	put := func(name string) {
		t.Helper()
		if _, err := bus.PutObject(ctx, e.nats.JS, contract.ObjectSnapshots, jetstream.ObjectMeta{Name: name}, strings.NewReader("archive"), bus.WithChunkID(bus.ChunkIDFor(name))); err != nil {
			t.Fatal(err)
		}
	}
	// A live object, two days old by its name, which its (pinned)
	// snapshot's manifest names: it and its chunks stay.
	liveName := id(48*time.Hour, "") + ".attempt3.tar.zst"
	put(liveName)
	e.putManifest(t, contract.SnapshotManifest{SnapshotID: id(48*time.Hour, ""), Name: "live", Tenant: "default_tenant", Database: "default_database",
		Object: liveName, StartedAt: now.Add(-48 * time.Hour), VerifiedAt: now.Add(-47 * time.Hour), Keep: true})
	// Archive objects no manifest names, as the last attempt of a command
	// given up on leaves them: an earlier attempt of the live snapshot's
	// command and one of a snapshot never made go; a young one stays.
	unnamed := []string{id(48*time.Hour, "") + ".attempt2.tar.zst", id(30*time.Hour, "") + ".tar.zst"}
	// Staging objects of imports whose client was killed after the
	// upload: the old one goes, the young one and one named by hand stay.
	staleStaging := contract.ImportStagingPrefix + stamp(48*time.Hour) + "_abcdef012345"
	kept := []string{liveName, contract.ImportStagingPrefix + stamp(time.Hour) + "_abcdef012345", contract.ImportStagingPrefix + "1",
		id(2*time.Hour, "") + ".tar.zst"}
	for _, name := range append(append([]string{staleStaging}, unnamed...), kept[1:]...) {
		put(name)
	}
	orphans := func() []string {
		t.Helper()
		o, err := bus.OrphanChunks(ctx, e.nats.JS, contract.ObjectSnapshots)
		if err != nil {
			t.Fatal(err)
		}
		return slices.Sorted(maps.Keys(o))
	}
	objects := func() []string {
		t.Helper()
		infos, err := e.nats.Assets.Snapshots.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, o := range infos {
			names = append(names, o.Name)
		}
		return slices.Sorted(slices.Values(names))
	}
	all, allObjects := orphans(), objects()
	// The record of a snapshot operation that ended 8 days ago: runs over
	// everything prune it (TestPruneState has the rules).
	oldOp := contract.OperationKey("op_ended")
	e.putState(t, oldOp, contract.Operation{OpID: "op_ended", Kind: "snapshot", Status: contract.StatusCompleted, UpdatedAt: now.Add(-8 * day)})
	opThere := func() bool {
		_, err := e.nats.Assets.State.Get(ctx, oldOp)
		return err == nil
	}
	pruned := func(rep contract.CleanupReport) int {
		t.Helper()
		if len(rep.StatePruned) != 3 {
			t.Errorf("state_pruned %v: want operations, migrations and retention_claims", rep.StatePruned)
		}
		return rep.StatePruned["operations"]
	}

	if rep := e.cleanup(t, contract.CleanupRequest{OlderThan: "7d", Tenant: "nobody"}); rep.StatePruned != nil || !opThere() {
		t.Errorf("a run over one tenant pruned records: %v", rep.StatePruned)
	}
	if n := pruned(e.cleanup(t, contract.CleanupRequest{OlderThan: "7d", DryRun: true})); n != 1 || !opThere() {
		t.Errorf("a dry run counted %d ended operations (want 1), and the record is there: %v", n, opThere())
	}
	if got := orphans(); !slices.Equal(got, all) {
		t.Errorf("a dry run purged chunks: %v left of %v", got, all)
	}
	if got := objects(); !slices.Equal(got, allObjects) {
		t.Errorf("a dry run deleted objects: %v left of %v", got, allObjects)
	}
	if n := pruned(e.cleanup(t, contract.CleanupRequest{OlderThan: "7d"})); n != 1 || opThere() {
		t.Errorf("the run pruned %d ended operations (want 1), and the record is there: %v", n, opThere())
	}
	want := []string{foreign, young, youngImport}
	slices.Sort(want)
	if got := orphans(); !slices.Equal(got, want) {
		t.Errorf("chunks no object names after the run: %v, want %v", got, want)
	}
	slices.Sort(kept)
	if got := objects(); !slices.Equal(got, kept) {
		t.Errorf("objects after the run: %v, want %v", got, kept)
	}
	if got, err := e.nats.Assets.Snapshots.GetBytes(ctx, liveName); err != nil || string(got) != "archive" {
		t.Errorf("the live object reads %q, %v", got, err)
	}
	var counted []any
	for _, ev := range findAudit(e.auditEvents(t), "snapshot.cleanup", contract.OutcomeCompleted) {
		counted = append(counted, ev.Figures["orphan_chunk_subjects"], ev.Figures["stale_staging_objects"], ev.Figures["unnamed_archive_objects"])
	}
	if !slices.Equal(counted, []any{nil, nil, nil, 3.0, 1.0, 2.0, 3.0, 1.0, 2.0}) {
		t.Errorf("orphan_chunk_subjects, stale_staging_objects and unnamed_archive_objects in the runs' audit events: %v, want none in the tenant's run, 3, 1 and 2 in the dry run and the run", counted)
	}
	var prunedOps []any
	for _, ev := range findAudit(e.auditEvents(t), "snapshot.cleanup", contract.OutcomeCompleted) {
		prunedOps = append(prunedOps, ev.Figures["pruned_operations"])
	}
	if !slices.Equal(prunedOps, []any{nil, 1.0, 1.0}) {
		t.Errorf("pruned_operations in the runs' audit events: %v, want none in the tenant's run, 1 in the dry run and the run", prunedOps)
	}
}

// TestRetentionKeepsTheNewestRestorable: when the archive of a database's
// newest full snapshot is gone from the object store (lost outside
// chromadb-rollback), that snapshot cannot be restored, and the newest full
// one whose archive is there is kept as newest_full: it is the restore
// point status shows. Retention used to keep only the one without an
// archive and delete the last snapshot that could be restored.
func TestRetentionKeepsTheNewestRestorable(t *testing.T) {
	e := newEnv(t)
	const tenant, db = "default_tenant", "ret_lost"
	e.seedSmall(t, tenant, db)
	e.startService(t, snapshotter.Config{})
	now := time.Now().UTC()
	req := createIn(tenant, db)
	older := e.snap(t, req("restorable"), now.Add(-20*day))
	lost := e.snap(t, req("archive_lost"), now.Add(-10*day))
	if err := e.nats.Assets.Snapshots.Delete(t.Context(), lost.Object); err != nil {
		t.Fatal(err)
	}

	rep := e.cleanup(t, contract.CleanupRequest{OlderThan: "7d", Tenant: tenant, Database: db})
	kept := reasons(rep.Kept)
	if kept[older.SnapshotID] != contract.KeepNewestFull || kept[lost.SnapshotID] != contract.KeepNewest {
		t.Errorf("kept %v, deleted %v; want %s kept as %s and %s as %s", kept, reasons(rep.Deleted),
			older.Name, contract.KeepNewestFull, lost.Name, contract.KeepNewest)
	}
	if _, ok := e.manifest(t, older.SnapshotID); !ok {
		t.Errorf("retention deleted %s, the newest snapshot of %s/%s that can be restored", older.Name, tenant, db)
	}
}

// TestRetentionKeepsTheNewestConsistent: a snapshot taken while writers
// were active (consistent: false) may hold half of what they wrote. When
// the newest full snapshots of a database are all such, the newest one
// taken while the counts held still is kept as newest_consistent, until a
// newer consistent one is taken; retention used to delete it once it was
// older than the retention period.
func TestRetentionKeepsTheNewestConsistent(t *testing.T) {
	e := newEnv(t)
	const tenant, db = "default_tenant", "ret_consistent"
	e.seedSmall(t, tenant, db)
	e.startService(t, snapshotter.Config{})
	now := time.Now().UTC()
	req := createIn(tenant, db)
	// As a snapshot taken while a migration wrote says (TestSnapshotWhileCollectionsChange
	// makes one for real): its counts moved during the export.
	busy := func(name string, at time.Time) contract.SnapshotManifest {
		m := e.snap(t, req(name), at)
		entry, err := e.nats.Assets.Manifests.Get(t.Context(), m.SnapshotID)
		if err != nil {
			t.Fatal(err)
		}
		m.Consistent, m.Inconsistency = false, "collection counts changed during the export (writers were active)"
		if _, err := e.nats.Assets.Manifests.Update(t.Context(), m.SnapshotID, mustJSON(t, m), entry.Revision()); err != nil {
			t.Fatal(err)
		}
		return m
	}
	good := e.snap(t, req("quiet"), now.Add(-20*day))
	busyOld := busy("busy_old", now.Add(-10*day))
	busyNew := busy("busy_new", now.Add(-9*day))

	rep := e.cleanup(t, contract.CleanupRequest{OlderThan: "7d", Tenant: tenant, Database: db})
	kept, deleted := reasons(rep.Kept), reasons(rep.Deleted)
	if kept[good.SnapshotID] != contract.KeepNewestConsistent || kept[busyNew.SnapshotID] != contract.KeepNewest || len(kept) != 2 {
		t.Errorf("kept %v; want %s as %s and %s as %s", kept, good.Name, contract.KeepNewestConsistent, busyNew.Name, contract.KeepNewest)
	}
	if _, ok := deleted[busyOld.SnapshotID]; !ok || len(deleted) != 1 {
		t.Errorf("deleted %v; want only %s", deleted, busyOld.Name)
	}
	for _, it := range rep.Kept {
		if it.SnapshotID == good.SnapshotID && !strings.Contains(it.Detail, "newer ones were taken while writers were active") {
			t.Errorf("kept %s: %q", good.Name, it.Detail)
		}
	}

	// A consistent snapshot taken since: the old one may go, and so may
	// the inconsistent one past the retention period.
	fresh := e.snap(t, req("quiet_again"), now.Add(-time.Hour))
	rep = e.cleanup(t, contract.CleanupRequest{OlderThan: "7d", Tenant: tenant, Database: db})
	kept, deleted = reasons(rep.Kept), reasons(rep.Deleted)
	if kept[fresh.SnapshotID] != contract.KeepNewest || len(kept) != 1 {
		t.Errorf("kept %v after a consistent snapshot; want only %s as %s", kept, fresh.Name, contract.KeepNewest)
	}
	for _, m := range []contract.SnapshotManifest{good, busyNew} {
		if _, ok := deleted[m.SnapshotID]; !ok {
			t.Errorf("deleted %v after a consistent snapshot; want %s among them", deleted, m.Name)
		}
	}
}

// TestRetentionKeepsWhatARollbackRestored: after a rollback the database
// holds the snapshot it restored from, while its newest snapshot is the
// rollback's safety snapshot, of the state the rollback undid. Retention
// used to let the restored snapshot expire, leaving the last good state
// only in the database. It is kept, with the rollback's record, until a
// snapshot of all the database's collections is taken after the rollback.
func TestRetentionKeepsWhatARollbackRestored(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	const tenant, db = "default_tenant", "ret_restored"
	e.seedSmall(t, tenant, db)
	e.startService(t, snapshotter.Config{})
	now := time.Now().UTC()
	req := createIn(tenant, db)
	good := e.snap(t, req("good"), now.Add(-20*day))
	safety := e.snap(t, req("safety"), now.Add(-10*day))
	rollback := func(id, snapshotID, chromaURL string, ended time.Time) string {
		key := contract.OperationKey(id)
		e.putState(t, key, contract.Operation{Envelope: contract.Envelope{Type: contract.TypeOperation, ID: id, Time: ended}, OpID: id, Kind: "rollback",
			SnapshotID: snapshotID, Status: contract.StatusCompleted, UpdatedAt: ended, Tenant: tenant, Database: db,
			Plan: &contract.RollbackPlan{SnapshotID: snapshotID, SourceTenant: tenant, SourceDatabase: db, Tenant: tenant, Database: db,
				ChromaURL: chromaURL, Mode: "full"}})
		return key
	}
	restoredOp := rollback("op_rb_restored", good.SnapshotID, "", now.Add(-9*day))
	// A later one into another Chroma's database of that name says nothing
	// of this one's.
	elsewhereOp := rollback("op_rb_elsewhere", safety.SnapshotID, "http://other-chroma:8000", now.Add(-8*day-12*time.Hour))
	there := func(key string) bool {
		_, err := e.nats.Assets.State.Get(ctx, key)
		return err == nil
	}

	rep := e.cleanup(t, contract.CleanupRequest{OlderThan: "7d"})
	kept := reasons(rep.Kept)
	if kept[good.SnapshotID] != contract.KeepRestored || kept[safety.SnapshotID] != contract.KeepNewest {
		t.Errorf("kept %v, deleted %v; want %s kept as %s and %s as %s", kept, reasons(rep.Deleted),
			good.Name, contract.KeepRestored, safety.Name, contract.KeepNewest)
	}
	for _, it := range rep.Kept {
		if it.SnapshotID == good.SnapshotID && !strings.Contains(it.Detail, "op_rb_restored") {
			t.Errorf("why %s is kept does not name the rollback: %s", good.Name, it.Detail)
		}
	}
	if !there(restoredOp) || there(elsewhereOp) {
		t.Errorf("after the run the record of the rollback that keeps %s is there: %v (want true); the other one's: %v (want false)",
			good.Name, there(restoredOp), there(elsewhereOp))
	}

	// A snapshot of all its collections taken after the rollback takes over.
	after := e.snap(t, req("after"), now.Add(-8*day))
	rep = e.cleanup(t, contract.CleanupRequest{OlderThan: "7d"})
	if got, want := reasons(rep.Deleted), map[string]string{good.SnapshotID: contract.ReasonExpired, safety.SnapshotID: contract.ReasonExpired}; !maps.Equal(got, want) {
		t.Errorf("deleted %v, want %v (kept %v)", got, want, reasons(rep.Kept))
	}
	if kept := reasons(rep.Kept); kept[after.SnapshotID] != contract.KeepNewest {
		t.Errorf("kept %v, want %s as %s", kept, after.Name, contract.KeepNewest)
	}
	if there(restoredOp) {
		t.Errorf("the rollback's record was not pruned once nothing needed it")
	}
}

// createIn returns a maker of snapshot create requests of tenant/db, by
// name, as the actor "test".
func createIn(tenant, db string) func(name string) contract.SnapshotCreateRequest {
	return func(name string) contract.SnapshotCreateRequest {
		return contract.SnapshotCreateRequest{Name: name, Tenant: tenant, Database: db, Actor: "test"}
	}
}
