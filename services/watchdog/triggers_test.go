package watchdog_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
)

// TestValidationLossRollsBack: a migration loses 10% of its records; its
// validation (0.90 < 0.95) makes the watchdog roll back to the snapshot it
// took for the job, and the database equals the pre-migration state
// record by record. The audit trail reads started -> validation -> trigger
// -> rollback completed, with the ratio and the reason.
func TestValidationLossRollsBack(t *testing.T) {
	e := newEnv(t, false)
	const db, job = "main", "loss-10"
	tenant := e.tenant("wd_loss")
	e.seed(t, tenant, db)
	e.services(t)
	e.watchdog(t, e.fast("wd"))
	ctl := e.controls(t, job)
	pre := e.dump(t, tenant, db)

	e.publish(t, job, contract.EventStarted, "", started(tenant, db, "", time.Hour))
	// The job waits for the pre-migration snapshot the watchdog takes.
	rec := e.waitRecord(t, job, time.Minute, "pre-migration snapshot", func(r contract.MigrationRecord) bool {
		return r.SnapshotID != "" || r.SnapshotError != ""
	})
	if rec.SnapshotError != "" {
		t.Fatalf("pre-migration snapshot: %s", rec.SnapshotError)
	}
	lost := e.migrate(t, tenant, db, 0.10, "workload_00", "workload_01")
	e.publish(t, job, contract.EventHeartbeat, "", contract.MigrationEvent{Phase: "copy", DoneRecords: 300})
	e.publish(t, job, contract.EventValidation, "", validation(int64(300-lost), 300))

	rec = e.waitRecord(t, job, 2*time.Minute, "rolled back", func(r contract.MigrationRecord) bool {
		return r.Status == contract.MigrationRolledBack || r.RollbackStatus == contract.StatusFailed
	})
	if rec.Status != contract.MigrationRolledBack || rec.Trigger != contract.TriggerValidation || rec.RollbackStatus != contract.StatusCompleted {
		t.Fatalf("record after the rollback: %s", mustJSON(t, rec))
	}
	if rec.LastHeartbeat.IsZero() || rec.Phase != "copy" {
		t.Errorf("heartbeat not recorded: last %v phase %q", rec.LastHeartbeat, rec.Phase)
	}
	compareDB(t, e.dump(t, tenant, db), pre)

	evs := e.audit(t)
	start := find(evs, byWatchdog(job, "migration.started"))
	val := find(evs, byWatchdog(job, "migration.validation"))
	trig := find(evs, byWatchdog(job, "trigger.validation"))
	done := find(evs, func(a auditEntry) bool {
		return a.Service == "restorer" && a.Action == "rollback" && a.OpID == rec.RollbackOpID && a.Outcome == contract.OutcomeCompleted
	})
	if len(start) != 1 || len(val) != 1 || len(trig) != 1 || len(done) != 1 {
		t.Fatalf("audit: %d started, %d validation, %d trigger, %d rollback completed events; want one each", len(start), len(val), len(trig), len(done))
	}
	if !(start[0].Seq < val[0].Seq && val[0].Seq < trig[0].Seq && trig[0].Seq < done[0].Seq) {
		t.Errorf("audit order: started %d, validation %d, trigger %d, rollback completed %d", start[0].Seq, val[0].Seq, trig[0].Seq, done[0].Seq)
	}
	if figure(trig[0], "ratio") != "0.9" || figure(trig[0], "threshold") != "0.95" || !strings.Contains(trig[0].Reason, "under the threshold") {
		t.Errorf("trigger event: reason %q, figures %v", trig[0].Reason, trig[0].Figures)
	}
	if figure(val[0], "ratio") != "0.9" {
		t.Errorf("validation event figures %v", val[0].Figures)
	}
	if got := find(evs, byWatchdog(job, "migration.rolled_back")); len(got) != 1 || got[0].Seq < done[0].Seq {
		t.Errorf("migration.rolled_back events: %+v", got)
	}
	// The restorer paused the job; the watchdog told it its run is over.
	ctl.wait(t, contract.ControlAbort, 10*time.Second)
}

// TestSmallLossCompletes: 3% loss stays above the threshold: no rollback,
// and the completed migration is recorded.
func TestSmallLossCompletes(t *testing.T) {
	e := newEnv(t, false)
	const db, job = "main", "loss-3"
	tenant, snap := e.seededDB(t, "wd_small", db, e.fast("wd"), "before_loss_3")

	e.publish(t, job, contract.EventStarted, "", started(tenant, db, snap, time.Hour))
	lost := e.migrate(t, tenant, db, 0.03, "workload_00", "workload_01")
	e.publish(t, job, contract.EventValidation, "", validation(int64(300-lost), 300))
	e.publish(t, job, contract.EventCompleted, "", contract.MigrationEvent{})

	rec := e.waitRecord(t, job, 30*time.Second, "completed", func(r contract.MigrationRecord) bool { return r.Status == contract.MigrationCompleted })
	ratio := float64(300-lost) / 300
	if rec.Trigger != "" || rec.RollbackOpID != "" || rec.Validation == nil || rec.Validation.Ratio != ratio || rec.EndedAt.IsZero() {
		t.Errorf("record: %s", mustJSON(t, rec))
	}
	a := e.waitAudit(t, 10*time.Second, "migration.completed", byWatchdog(job, "migration.completed"))
	if !strings.Contains(a.Reason, "no trigger fired") || a.Figures["ratio"] != ratio {
		t.Errorf("completed event: %q %v", a.Reason, a.Figures)
	}
	time.Sleep(300 * time.Millisecond) // a wrong trigger would act within a few ticks
	if ops := e.rollbackOps(t); len(ops) != 0 {
		t.Errorf("rollbacks started: %+v", ops)
	}
	if got := find(e.audit(t), func(a auditEntry) bool { return strings.HasPrefix(a.Action, "trigger.") }); len(got) != 0 {
		t.Errorf("trigger events: %+v", got)
	}
	if rep := e.status(t); len(rep.Migrations) != 0 {
		t.Errorf("status lists ended migrations: %+v", rep.Migrations)
	}
}

// TestTimeLimitAbortsThenRollsBack: a run past its time limit gets abort on
// chroma.control.<job> on time, then the rollback restores its database.
// The status report shows the run with its deadline meanwhile.
func TestTimeLimitAbortsThenRollsBack(t *testing.T) {
	e := newEnv(t, false)
	const db, job = "main", "slow-job"
	tenant := e.tenant("wd_time")
	e.seed(t, tenant, db)
	e.services(t)
	cfg := e.fast("wd")
	cfg.AbortGrace = 10 * time.Second // the job's failed event cuts it short
	e.watchdog(t, cfg)
	ctl := e.controls(t, job)
	pre := e.dump(t, tenant, db)
	snap := e.snapshot(t, tenant, db, "before_slow_job")

	const limit = 2 * time.Second
	e.publish(t, job, contract.EventStarted, "", started(tenant, db, snap, limit))
	rec := e.waitRecord(t, job, 10*time.Second, "recorded", func(r contract.MigrationRecord) bool { return r.Run > 0 })
	if got := rec.Deadline.Sub(rec.StartedAt); got != limit {
		t.Errorf("deadline %s after the start, want %s", got, limit)
	}
	e.migrate(t, tenant, db, 0.5, "workload_00")

	rep := e.status(t)
	if len(rep.Migrations) != 1 || rep.Migrations[0].Job != job || !rep.Migrations[0].Deadline.Equal(rec.Deadline) ||
		rep.Migrations[0].Status != contract.MigrationRunning {
		t.Errorf("status migrations: %s", mustJSON(t, rep.Migrations))
	}
	if len(rep.Snapshots) != 1 || rep.Snapshots[0].SnapshotID != snap || rep.Snapshots[0].Tenant != tenant {
		t.Errorf("status snapshots: %s", mustJSON(t, rep.Snapshots))
	}

	abort := ctl.wait(t, contract.ControlAbort, limit+10*time.Second)
	if late := abort.At.Sub(rec.Deadline); late < 0 || late > time.Second {
		t.Errorf("abort %s after the deadline; want within 1s", late)
	}
	if abort.OpID == "" || !strings.Contains(abort.Reason, "time limit") {
		t.Errorf("abort: %+v", abort.Control)
	}
	// The job stops and says so; the rollback need not wait for the grace.
	e.publish(t, job, contract.EventFailed, "", contract.MigrationEvent{Error: "aborted: " + abort.Reason})

	rec = e.waitRecord(t, job, 2*time.Minute, "rolled back", func(r contract.MigrationRecord) bool {
		return r.Status == contract.MigrationRolledBack || r.RollbackStatus == contract.StatusFailed
	})
	if rec.Status != contract.MigrationRolledBack || rec.Trigger != contract.TriggerTime {
		t.Fatalf("record: %s", mustJSON(t, rec))
	}
	if since := time.Since(abort.At); since > cfg.AbortGrace+time.Minute {
		t.Errorf("rollback ended %s after the abort", since)
	}
	compareDB(t, e.dump(t, tenant, db), pre)
	// The rollback's safety snapshot, of the collections it overwrote, is
	// now the newest; as those were all the database's, it holds the whole
	// database, and no older one is listed after it.
	if rep := e.status(t); len(rep.Snapshots) != 1 || rep.Snapshots[0].Partial || !strings.HasPrefix(rep.Snapshots[0].Name, "safety_") {
		t.Errorf("status snapshots after the rollback: %s", mustJSON(t, rep.Snapshots))
	}
	trig := e.waitAudit(t, time.Second, "trigger.time", byWatchdog(job, "trigger.time"))
	if trig.Figures["time_limit_seconds"] != 2.0 || trig.OpID != rec.RollbackOpID {
		t.Errorf("trigger event: %+v", trig.AuditEvent)
	}
	if n := ctl.count(contract.ControlAbort); n != 1 {
		t.Errorf("%d abort commands, want 1", n)
	}
}

// TestAutomaticRollbackDisabled: the same 10% loss, with automatic rollback
// off, gives an alert naming the command an operator would run (partial:
// only the collection under the threshold) and no rollback.
func TestAutomaticRollbackDisabled(t *testing.T) {
	e := newEnv(t, false)
	const db, job = "main", "manual-10"
	cfg := e.fast("wd")
	cfg.AutomaticRollbackDisabled = true
	cfg.PartialOnCollectionFailure = true
	tenant, snap := e.seededDB(t, "wd_manual", db, cfg, "before_manual")

	e.publish(t, job, contract.EventStarted, "", started(tenant, db, snap, time.Hour))
	lost := e.migrate(t, tenant, db, 0.20, "workload_00")
	damaged := e.dump(t, tenant, db)
	e.publish(t, job, contract.EventValidation, "", validation(int64(300-lost), 300,
		contract.CollectionValidation{Collection: "workload_00", ValidChunks: int64(150 - lost), TotalChunks: 150},
		contract.CollectionValidation{Collection: "workload_01", ValidChunks: 150, TotalChunks: 150}))

	alert := e.waitAudit(t, 30*time.Second, "alert.rollback", func(a auditEntry) bool {
		return a.Action == "alert.rollback" && a.Figures["job"] == job
	})
	want := "chromadb-rollback rollback " + snap + " --partial --failed-collections workload_00 --reason 'validation trigger of migration " + job + "' --yes"
	if alert.Outcome != contract.OutcomeAlert || !strings.Contains(alert.Reason, want) || !strings.Contains(alert.Reason, "AUTOMATIC_ROLLBACK_ENABLED=false") {
		t.Errorf("alert %q (outcome %s); want it to name %q", alert.Reason, alert.Outcome, want)
	}
	rec := e.waitRecord(t, job, 10*time.Second, "alerted", func(r contract.MigrationRecord) bool {
		return r.RollbackStatus == contract.RollbackAlerted
	})
	if rec.RollbackCommand != want || rec.Trigger != contract.TriggerValidation {
		t.Errorf("record: %s", mustJSON(t, rec))
	}
	// Until the run ends, the status lists it among the alerts with the
	// command.
	if a := e.rollbackAlert(t, job); a == nil || !strings.Contains(a.Detail, "automatic rollback is disabled") ||
		!strings.Contains(a.Detail, "Roll back by hand: "+want) || a.Figures["command"] != want || !a.Since.Equal(rec.TriggeredAt) {
		t.Errorf("status alert: %+v", a)
	}
	e.publish(t, job, contract.EventCompleted, "", contract.MigrationEvent{})
	e.waitRecord(t, job, 10*time.Second, "completed", func(r contract.MigrationRecord) bool { return r.Status == contract.MigrationCompleted })
	if a := e.rollbackAlert(t, job); a != nil {
		t.Errorf("status alert after the run ended: %+v", a)
	}
	time.Sleep(300 * time.Millisecond)
	if ops := e.rollbackOps(t); len(ops) != 0 {
		t.Errorf("rollbacks started: %+v", ops)
	}
	compareDB(t, e.dump(t, tenant, db), damaged)
}

// TestCollectionUnderThresholdFiresPartial: with
// --partial-on-collection-failure, one reported collection under the
// threshold fires the validation trigger although the total meets it, and
// only that collection is rolled back; every other one keeps what the
// migration wrote. The job reports that collection twice (per pass, say):
// it is named once, not refused by the restorer as named twice, which
// left the loss in place.
func TestCollectionUnderThresholdFiresPartial(t *testing.T) {
	e := newEnv(t, false)
	const db, job = "main", "coll-10"
	cfg := e.fast("wd")
	cfg.PartialOnCollectionFailure = true
	tenant, snap := e.seededDB(t, "wd_coll", db, cfg, "before_coll_10")
	pre := e.dump(t, tenant, db)

	e.publish(t, job, contract.EventStarted, "", started(tenant, db, snap, time.Hour))
	n0, n1 := int64(pre["workload_00"].Len()), int64(pre["workload_01"].Len())
	lost := int64(e.migrate(t, tenant, db, 0.10, "workload_00"))
	e.migrate(t, tenant, db, 0, "workload_01") // written, nothing lost
	damaged := e.dump(t, tenant, db)
	total := n0 + n1
	if float64(total-lost)/float64(total) < 0.95 || float64(n0-lost)/float64(n0) >= 0.95 {
		t.Fatalf("the fixture does not give a total over the threshold and a collection under it: %d lost of %d, %d", lost, n0, n1)
	}
	e.publish(t, job, contract.EventValidation, "", validation(total-lost, total,
		contract.CollectionValidation{Collection: "workload_00", ValidChunks: n0 - lost, TotalChunks: n0},
		contract.CollectionValidation{Collection: "workload_01", ValidChunks: n1, TotalChunks: n1},
		contract.CollectionValidation{Collection: "workload_00", ValidChunks: n0 - lost, TotalChunks: n0}))

	rec := e.waitRecord(t, job, 2*time.Minute, "rolled back", func(r contract.MigrationRecord) bool {
		return r.Status == contract.MigrationRolledBack || r.RollbackStatus == contract.StatusFailed
	})
	if rec.Status != contract.MigrationRolledBack || rec.Trigger != contract.TriggerValidation || !slices.Equal(rec.RollbackCollections, []string{"workload_00"}) {
		t.Fatalf("record after the rollback: %s", mustJSON(t, rec))
	}
	if !strings.Contains(rec.TriggerReason, "meets the threshold 0.95, but workload_00 under it") {
		t.Errorf("trigger reason %q", rec.TriggerReason)
	}
	compareDB(t, e.dump(t, tenant, db), withRestored(damaged, pre, "workload_00"))
}

// TestAutomaticRollbackDisabledAfterEndListed: with automatic rollback off,
// the failure trigger (--rollback-on-failure) fires on the job's failed
// event, so its run has ended when the alert naming the command is raised.
// The status listed alerted runs only while they had not ended: this one
// never, and nothing but the audit trail told an operator to roll back.
// It is listed as a failed rollback of an ended run is, for 24 hours.
func TestAutomaticRollbackDisabledAfterEndListed(t *testing.T) {
	e := newEnv(t, false)
	const db, job = "main", "manual-failed"
	cfg := e.fast("wd")
	cfg.AutomaticRollbackDisabled = true
	cfg.RollbackOnFailure = true
	tenant, snap := e.seededDB(t, "wd_manual_failed", db, cfg, "before_manual_failed")

	e.publish(t, job, contract.EventStarted, "", started(tenant, db, snap, time.Hour))
	e.publish(t, job, contract.EventFailed, "", contract.MigrationEvent{Error: "out of memory"})
	rec := e.waitRecord(t, job, 10*time.Second, "alerted", func(r contract.MigrationRecord) bool {
		return r.RollbackStatus == contract.RollbackAlerted
	})
	want := "chromadb-rollback rollback " + snap + " --reason 'failure trigger of migration " + job + "' --yes"
	if rec.Trigger != contract.TriggerFailure || rec.RollbackCommand != want || rec.EndedAt.IsZero() {
		t.Fatalf("record: %s", mustJSON(t, rec))
	}
	al := e.rollbackAlert(t, job)
	if al == nil || al.Figures["ended"] != true || al.Figures["command"] != want ||
		!strings.Contains(al.Detail, "automatic rollback is disabled") || !strings.Contains(al.Detail, "Roll back by hand: "+want) {
		t.Errorf("status alert of the ended run: %+v", al)
	}
	if ops := e.rollbackOps(t); len(ops) != 0 {
		t.Errorf("rollbacks started: %+v", ops)
	}
}

// TestPartialRollbackNotWhenLossIsElsewhere: with
// --partial-on-collection-failure, a total under the threshold whose loss
// the collections reported under it do not explain (here a collection the
// job did not report lost 30%) rolled back only the reported ones, and the
// run was recorded rolled back with the rest of the loss in place. The
// whole database is rolled back then.
func TestPartialRollbackNotWhenLossIsElsewhere(t *testing.T) {
	e := newEnv(t, false)
	const db, job = "main", "coll-elsewhere"
	cfg := e.fast("wd")
	cfg.PartialOnCollectionFailure = true
	tenant, snap := e.seededDB(t, "wd_collelse", db, cfg, "before_coll_else")
	pre := e.dump(t, tenant, db)

	e.publish(t, job, contract.EventStarted, "", started(tenant, db, snap, time.Hour))
	n0, n1 := int64(pre["workload_00"].Len()), int64(pre["workload_01"].Len())
	lost0 := int64(e.migrate(t, tenant, db, 0.10, "workload_00"))
	lost1 := int64(e.migrate(t, tenant, db, 0.30, "workload_01"))
	total := n0 + n1
	if lost1 == 0 || float64(total-lost0-lost1)/float64(total) >= 0.95 {
		t.Fatalf("the fixture does not lose enough: %d and %d of %d", lost0, lost1, total)
	}
	e.publish(t, job, contract.EventValidation, "", validation(total-lost0-lost1, total,
		contract.CollectionValidation{Collection: "workload_00", ValidChunks: n0 - lost0, TotalChunks: n0}))

	rec := e.waitRecord(t, job, 2*time.Minute, "rolled back", func(r contract.MigrationRecord) bool {
		return r.Status == contract.MigrationRolledBack || r.RollbackStatus == contract.StatusFailed
	})
	if rec.Status != contract.MigrationRolledBack || len(rec.RollbackCollections) != 0 {
		t.Fatalf("record after the rollback: %s", mustJSON(t, rec))
	}
	if !strings.Contains(rec.TriggerReason, "whole database") {
		t.Errorf("trigger reason %q does not say why the whole database is rolled back", rec.TriggerReason)
	}
	compareDB(t, e.dump(t, tenant, db), pre)
}

// TestOperatorRollbackSupersedes: an operator rolls the database back
// after the time trigger fired and before the watchdog's own rollback ran
// (it waits out the abort grace, or is refused while the operator's
// holds the lease). The watchdog rolled back again afterwards, over what
// the operator chose to restore. It now leaves the run to the operator,
// naming that rollback, as one whose rollback could not run.
func TestOperatorRollbackSupersedes(t *testing.T) {
	e := newEnv(t, false)
	const db, job = "main", "operator-first"
	tenant := e.tenant("wd_operator")
	e.seed(t, tenant, db)
	e.services(t)
	cfg := e.fast("wd")
	cfg.AbortGrace = 8 * time.Second // the job never says it stopped
	e.watchdog(t, cfg)
	ctl := e.controls(t, job)
	pre := e.dump(t, tenant, db)
	snap := e.snapshot(t, tenant, db, "before_operator_first")

	const limit = 2 * time.Second
	e.publish(t, job, contract.EventStarted, "", started(tenant, db, snap, limit))
	e.waitRecord(t, job, 10*time.Second, "recorded", func(r contract.MigrationRecord) bool { return r.Run > 0 })
	e.migrate(t, tenant, db, 0.5, "workload_00")
	ctl.wait(t, contract.ControlAbort, limit+10*time.Second)

	var reply contract.RollbackReply
	e.request(t, e.subj.API("rollback", "start"), contract.RollbackRequest{Envelope: contract.NewEnvelope(contract.TypeRollbackRequest),
		SnapshotID: snap, Confirm: true, NoSafetySnapshot: true, Actor: "ops@example", Reason: "saw the loss first"}, &reply)
	deadline := time.Now().Add(time.Minute)
	for {
		if op, ok := e.op(t, reply.OpID); ok && contract.Ended(op.Status) {
			if op.Status != contract.StatusCompleted {
				t.Fatalf("the operator's rollback: %s %s", op.Status, op.Error)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the operator's rollback did not end")
		}
		time.Sleep(100 * time.Millisecond)
	}
	restored := e.dump(t, tenant, db)
	compareDB(t, restored, pre)

	rec := e.waitRecord(t, job, cfg.AbortGrace+time.Minute, "left to the operator", func(r contract.MigrationRecord) bool {
		return r.RollbackStatus == contract.StatusFailed || r.RollbackStatus == contract.StatusCompleted
	})
	if rec.RollbackStatus != contract.StatusFailed || !strings.Contains(rec.RollbackError, reply.OpID) || rec.RollbackCommand == "" {
		t.Errorf("record: %s; want the rollback left to the operator, naming %s, with the command", mustJSON(t, rec), reply.OpID)
	}
	if op, ok := e.op(t, rec.RollbackOpID); ok {
		t.Errorf("the watchdog rolled back over the operator's rollback: %s %s", op.OpID, op.Status)
	}
	if a := e.rollbackAlert(t, job); a == nil || !strings.Contains(a.Detail, reply.OpID) {
		t.Errorf("status alert: %+v; want one naming %s", a, reply.OpID)
	}
	compareDB(t, e.dump(t, tenant, db), restored)
}

// TestPartialSkipsCollectionsTheMigrationCreated: a collection the
// migration created, reported under the threshold, is not in the
// snapshot. The partial rollback named it, the restorer refused it, and
// the loss stayed in the collection that the snapshot does hold (the
// command the alert offered was refused too). That one is rolled back now,
// and the trigger's reason says the other is left to the operator.
func TestPartialSkipsCollectionsTheMigrationCreated(t *testing.T) {
	e := newEnv(t, false)
	const db, job = "main", "coll-new"
	cfg := e.fast("wd")
	cfg.PartialOnCollectionFailure = true
	tenant, snap := e.seededDB(t, "wd_collnew", db, cfg, "before_coll_new")
	pre := e.dump(t, tenant, db)

	e.publish(t, job, contract.EventStarted, "", started(tenant, db, snap, time.Hour))
	n0, n1 := int64(pre["workload_00"].Len()), int64(pre["workload_01"].Len())
	lost := int64(e.migrate(t, tenant, db, 0.10, "workload_00"))
	// The migration creates a collection and gets none of it right.
	col, err := e.cc.CreateCollection(t.Context(), tenant, db, chroma.CreateCollection{Name: "workload_new"})
	if err != nil {
		t.Fatal(err)
	}
	doc := "made by the migration"
	if err := e.cc.Add(t.Context(), tenant, db, col.ID, &record.Batch{IDs: []string{"new-1"}, Embeddings: [][]float32{{1, 2, 3}}, Documents: []*string{&doc}}); err != nil {
		t.Fatal(err)
	}
	damaged := e.dump(t, tenant, db)
	const nNew = 10
	e.publish(t, job, contract.EventValidation, "", validation(n0+n1-lost, n0+n1+nNew,
		contract.CollectionValidation{Collection: "workload_00", ValidChunks: n0 - lost, TotalChunks: n0},
		contract.CollectionValidation{Collection: "workload_01", ValidChunks: n1, TotalChunks: n1},
		contract.CollectionValidation{Collection: "workload_new", ValidChunks: 0, TotalChunks: nNew}))

	rec := e.waitRecord(t, job, 2*time.Minute, "rolled back", func(r contract.MigrationRecord) bool {
		return r.Status == contract.MigrationRolledBack || r.RollbackStatus == contract.StatusFailed
	})
	if rec.Status != contract.MigrationRolledBack || !slices.Equal(rec.RollbackCollections, []string{"workload_00"}) ||
		!strings.Contains(rec.TriggerReason, "does not hold workload_new (the migration created them)") {
		t.Fatalf("record after the rollback: %s", mustJSON(t, rec))
	}
	compareDB(t, e.dump(t, tenant, db), withRestored(damaged, pre, "workload_00"))
}

// withRestored is the state after a partial rollback of the named
// collections: theirs from pre, every other as in damaged.
func withRestored(damaged, pre dbState, names ...string) dbState {
	want := dbState{}
	for name, b := range damaged {
		want[name] = b
	}
	for _, name := range names {
		want[name] = pre[name]
	}
	return want
}
