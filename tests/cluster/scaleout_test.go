package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/migration"
	"github.com/chromadb-rollback/chromadb-rollback/services/auditor"
	"github.com/chromadb-rollback/chromadb-rollback/services/restorer"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
	"github.com/chromadb-rollback/chromadb-rollback/services/watchdog"
)

// fastWatchdog checks deadlines and pending work quickly; no disk or
// JetStream storage checks. Thresholds are the defaults (0.95).
func fastWatchdog() watchdog.Config {
	return watchdog.Config{
		TickInterval:      50 * time.Millisecond,
		RetryInterval:     200 * time.Millisecond,
		HeartbeatInterval: time.Second,
		DiskInterval:      time.Hour,
		JetStreamNear:     -1,
		RequestTimeout:    2 * time.Minute,
		AckWait:           5 * time.Second,
	}
}

// TestTwoInstancesOfEachService (issue 6, acceptance 3): two instances of
// every service on the 3-node cluster, streams, buckets and object store
// R3, each instance with its service's own user. An operator snapshots,
// a bad migration damages the database, the operator rolls back (with the
// safety snapshot): the database is exactly the snapshot again. Then a
// migration job asks the watchdogs for its pre-migration snapshot, loses
// 10% of the records and reports it: one watchdog fires the validation
// trigger and one restorer rolls back, exactly. Every command ran once:
// each snapshot and each rollback was started and completed once (audit
// events by snapshot and op id), one trigger fired, four manifests and
// their four objects exist and nothing else, and both auditors wrote
// every audit event into their own trail exactly once.
func TestTwoInstancesOfEachService(t *testing.T) {
	st := newStack(t, dbName(t), 2, 400, 32)
	ctx := t.Context()
	trails := []string{t.TempDir(), t.TempDir()}
	var snapshotters, restorers []*instance
	for i, n := range []string{"a", "b"} {
		snapshotters = append(snapshotters, st.snapshotter("snapshotter-"+n, snapshotter.Config{}))
		restorers = append(restorers, st.restorer("restorer-"+n, restorer.Config{AckWait: 10 * time.Second, LeaseTTL: 10 * time.Second}))
		st.watchdog("watchdog-"+n, fastWatchdog())
		st.auditor([]string{"auditor-0", "auditor-1"}[i], trails[i])
	}
	defer func() {
		for i := range snapshotters {
			t.Logf("%s fetched %d pages; %s sent %d adds", snapshotters[i].name, snapshotters[i].proxy.count("get"),
				restorers[i].name, restorers[i].proxy.count("add"))
		}
	}()
	// The watchdogs' consumer takes only the events stored after it exists.
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := st.js.Consumer(ctx, contract.StreamMigrations, watchdog.ConsumerName); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the watchdogs' consumer was not created")
		}
	}

	// Snapshot, damage, rollback.
	pre := st.dump()
	snap := st.createSnapshot("pre_migration")
	if op := st.waitOp(snap.OpID, time.Minute); op.Status != contract.StatusCompleted {
		t.Fatalf("snapshot: %s %s", op.Status, op.Error)
	}
	st.snapshotOK(snap.SnapshotID, pre)
	st.damage()
	code, data := st.request(subj.API("rollback", "plan"), contract.RollbackRequest{SnapshotID: "pre_migration"}, time.Minute)
	var planned contract.RollbackReply
	if code != 0 || json.Unmarshal(data, &planned) != nil || planned.Plan == nil || planned.Plan.SnapshotID != snap.SnapshotID {
		t.Fatalf("rollback plan: %d %s", code, data)
	}
	rb := st.startRollback(contract.RollbackRequest{SnapshotID: "pre_migration", Reason: "bad migration"})
	op := st.waitOp(rb.OpID, 2*time.Minute)
	if op.Status != contract.StatusCompleted {
		t.Fatalf("rollback: %s %s", op.Status, op.Error)
	}
	if d := st.dump().diff(pre); d != "" {
		t.Fatalf("after the rollback: %s", d)
	}
	if op.Restore == nil || !op.Restore.Verified || op.Restore.SafetySnapshotID == "" {
		t.Errorf("rollback report %+v: want verified, with a safety snapshot", op.Restore)
	}

	// The watchdog flow: a job that loses 10% of the records.
	job, err := migration.New(st.cl.Connect(t, st.pw.Config("job_reindex")), "reindex", migration.WithLogger(st.log))
	if err != nil {
		t.Fatal(err)
	}
	defer job.Close()
	if _, err := job.Start(ctx, migration.StartOptions{Tenant: tenant, Database: st.db, TakeSnapshot: true}); err != nil {
		t.Fatalf("job start: %v", err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	preJob, err := job.WaitForSnapshot(wctx)
	cancel()
	if err != nil {
		t.Fatalf("the pre-migration snapshot: %v", err)
	}
	before := st.dump()
	lost := 0
	for name, c := range before {
		coll, err := st.cc.GetCollection(ctx, tenant, st.db, name)
		if err != nil {
			t.Fatal(err)
		}
		ids := c.Records.IDs[:c.Records.Len()/10]
		if err := st.cc.Delete(ctx, tenant, st.db, coll.ID, ids); err != nil {
			t.Fatal(err)
		}
		lost += len(ids)
	}
	total := int64(before.records())
	if err := job.ReportValidation(ctx, total-int64(lost), total); err != nil {
		t.Fatal(err)
	}
	if err := job.Complete(ctx); err != nil {
		t.Fatal(err)
	}
	rec := st.waitMigration("reindex", 2*time.Minute, func(r contract.MigrationRecord) bool {
		return r.Status == contract.MigrationRolledBack || r.RollbackStatus == contract.StatusFailed
	})
	if rec.Status != contract.MigrationRolledBack || rec.Trigger != contract.TriggerValidation || rec.RollbackStatus != contract.StatusCompleted ||
		rec.SnapshotID != preJob {
		t.Fatalf("migration record %+v: want rolled back by the validation trigger to %s", rec, preJob)
	}
	if d := st.dump().diff(before); d != "" {
		t.Fatalf("after the triggered rollback: %s", d)
	}
	// The watchdog audits the run's end after recording it.
	msgs := st.audit()
	for deadline := time.Now().Add(10 * time.Second); events(msgs, "watchdog", "migration.rolled_back", contract.OutcomeCompleted, "", "") == 0; {
		if time.Now().After(deadline) {
			t.Fatal("no migration.rolled_back audit event")
		}
		time.Sleep(50 * time.Millisecond)
		msgs = st.audit()
	}

	// Every command ran once.
	keys, err := st.manifests.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	safetyJob := ""
	if o := st.operation(rec.RollbackOpID); o != nil && o.Restore != nil {
		safetyJob = o.Restore.SafetySnapshotID
	}
	wantSnaps := []string{snap.SnapshotID, op.Restore.SafetySnapshotID, preJob, safetyJob}
	slices.Sort(keys)
	slices.Sort(wantSnaps)
	if !slices.Equal(keys, wantSnaps) {
		t.Errorf("manifests %v, want the four snapshots %v (pre-migration, its rollback's safety snapshot, the job's, its rollback's)", keys, wantSnaps)
	}
	for _, id := range wantSnaps {
		for _, outcome := range []string{contract.OutcomeStarted, contract.OutcomeCompleted} {
			if n := events(msgs, "snapshotter", "snapshot.create", outcome, id, ""); n != 1 {
				t.Errorf("snapshot %s: %d %s audit events, want 1", id, n, outcome)
			}
		}
	}
	for _, id := range []string{rb.OpID, rec.RollbackOpID} {
		for _, outcome := range []string{contract.OutcomeStarted, contract.OutcomeCompleted} {
			if n := events(msgs, "restorer", "rollback", outcome, "", id); n != 1 {
				t.Errorf("rollback %s: %d %s audit events, want 1", id, n, outcome)
			}
		}
	}
	for _, a := range []struct{ action, outcome string }{
		{"migration.started", contract.OutcomeStarted},
		{"snapshot.pre_migration", contract.OutcomeStarted},
		{"snapshot.pre_migration", contract.OutcomeCompleted},
		{"trigger.validation", contract.OutcomeStarted},
		{"migration.rolled_back", contract.OutcomeCompleted},
	} {
		n := 0
		for _, m := range msgs {
			if e := m.Event; e.Service == "watchdog" && e.Action == a.action && e.Outcome == a.outcome && e.Figures["job"] == "reindex" {
				n++
			}
		}
		if n != 1 {
			t.Errorf("watchdog %s %s: %d audit events, want 1", a.action, a.outcome, n)
		}
	}
	if n := events(msgs, "snapshotter", "snapshot.create", contract.OutcomeFailed, "", "") + events(msgs, "restorer", "rollback", contract.OutcomeFailed, "", ""); n != 0 {
		t.Errorf("%d failed snapshots or rollbacks", n)
	}
	st.checkStore("after both flows")
	if t.Failed() {
		logAudit(t, msgs)
	}

	// Each auditor keeps a whole trail of its own: every event of the
	// stream, in order, once, on a chain that verifies.
	last := msgs[len(msgs)-1].Seq
	for i, dir := range trails {
		path := filepath.Join(dir, contract.AuditTrailFile)
		var seqs []uint64
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if seqs = trailSeqs(t, path); len(seqs) > 0 && seqs[len(seqs)-1] >= last {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("auditor-%d's trail ends at %v, the stream at %d", i, seqs[max(0, len(seqs)-1):], last)
			}
		}
		for k, seq := range seqs[:min(len(seqs), int(last))] {
			if seq != uint64(k+1) {
				t.Errorf("auditor-%d's trail: line %d holds seq %d, want %d", i, k+1, seq, k+1)
				break
			}
		}
		if rep := auditor.VerifyFile(path); !rep.OK {
			t.Errorf("auditor-%d's trail does not verify: %s", i, rep.Problem)
		}
	}
}

// waitMigration waits until the job's migration record satisfies ok.
func (st *stack) waitMigration(job string, timeout time.Duration, ok func(contract.MigrationRecord) bool) contract.MigrationRecord {
	st.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var r contract.MigrationRecord
		e, err := st.state.Get(context.Background(), contract.MigrationKey(job))
		if err == nil {
			if err := json.Unmarshal(e.Value(), &r); err != nil {
				st.t.Fatal(err)
			}
			if ok(r) {
				return r
			}
		}
		if time.Now().After(deadline) {
			st.t.Fatalf("migration %s: not there within %s; record %+v", job, timeout, r)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// trailSeqs lists the stream sequences of a trail's entries, in file order.
func trailSeqs(t *testing.T, path string) []uint64 {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var seqs []uint64
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
	for sc.Scan() {
		var e contract.AuditTrailEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			break // a line being written
		}
		seqs = append(seqs, e.Seq)
	}
	return seqs
}
