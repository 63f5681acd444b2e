package watchdog_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
)

// TestAutomaticRollbackFails: when the watchdog cannot take a migration's
// pre-migration snapshot, or cannot roll the migration back, it records
// why in the run's record, raises an alert that says what an operator can
// do, and changes nothing: the seed's "automatic rollback failed - manual
// intervention required". The alert names the command that rolls back by
// hand when asking again can work (a restorer without the key); when the
// snapshot itself cannot be restored (its archive is damaged or gone) it
// says so and points at the snapshots that can, never at a command that
// would fail the same way. The job the failed rollback was for stays
// paused for the operator.
func TestAutomaticRollbackFails(t *testing.T) {
	e := newEnv(t, false)
	e.services(t)
	e.watchdog(t, e.fast("wd"))
	const db = "main"

	// lossy publishes a validation that fires the trigger.
	lossy := func(t *testing.T, job string) {
		e.publish(t, job, contract.EventValidation, "", validation(270, 300))
	}
	failed := func(t *testing.T, job string) contract.MigrationRecord {
		return e.waitRecord(t, job, time.Minute, "rollback failed", func(r contract.MigrationRecord) bool {
			return r.RollbackStatus == contract.StatusFailed || r.Status == contract.MigrationRolledBack
		})
	}
	alerted := func(t *testing.T, job string) auditEntry {
		return e.waitAudit(t, 30*time.Second, "alert.rollback", byWatchdog(job, "alert.rollback"))
	}

	// unrestorable checks an alert about a snapshot that cannot be
	// restored: it says so and names no rollback to it.
	unrestorable := func(t *testing.T, a auditEntry, tenant string) {
		t.Helper()
		if !strings.Contains(a.Reason, "the pre-migration snapshot cannot be restored") ||
			!strings.Contains(a.Reason, "`chromadb-rollback status` lists the newest restorable snapshot of "+tenant+"/"+db) ||
			strings.Contains(a.Reason, "chromadb-rollback rollback ") {
			t.Errorf("alert: %q; want no rollback command, and where to find a restorable snapshot", a.Reason)
		}
	}

	t.Run("no pre-migration snapshot", func(t *testing.T) {
		const job = "nosnap"
		tenant := e.tenant("wd_nosnap")
		e.seed(t, tenant, db)
		before := e.dump(t, tenant, db)
		ev := started(tenant, db, "", time.Hour)
		ev.Collections = []string{"workload_00", "no_such_collection"} // the job named one that is not there
		e.publish(t, job, contract.EventStarted, "", ev)

		rec := e.waitRecord(t, job, time.Minute, "snapshot failed", func(r contract.MigrationRecord) bool {
			return r.SnapshotID != "" || r.SnapshotError != ""
		})
		if rec.SnapshotID != "" || !strings.Contains(rec.SnapshotError, "the snapshotter refused it") || !strings.Contains(rec.SnapshotError, "no_such_collection") {
			t.Fatalf("record: %s", mustJSON(t, rec))
		}
		a := e.waitAudit(t, 30*time.Second, "pre-migration snapshot alert", func(a auditEntry) bool {
			return byWatchdog(job, "snapshot.pre_migration")(a) && a.Outcome == contract.OutcomeAlert
		})
		if !strings.Contains(a.Reason, "could not be taken") || !strings.Contains(a.Reason, "must not go on") || !strings.Contains(a.Error, "no_such_collection") {
			t.Errorf("alert: reason %q, error %q", a.Reason, a.Error)
		}

		// The job went on anyway and lost data: there is nothing to roll
		// back to, and the alert says so.
		lossy(t, job)
		rec = failed(t, job)
		if rec.RollbackStatus != contract.StatusFailed || !strings.Contains(rec.RollbackError, "no verified pre-migration snapshot") ||
			!strings.Contains(rec.RollbackError, "no_such_collection") || rec.RollbackCommand != "" {
			t.Fatalf("record: %s", mustJSON(t, rec))
		}
		a = alerted(t, job)
		if a.Outcome != contract.OutcomeAlert || !strings.Contains(a.Reason, "its rollback cannot run") {
			t.Errorf("alert: %q (outcome %s)", a.Reason, a.Outcome)
		}
		unrestorable(t, a, tenant)
		if ops := e.rollbackOps(t); len(ops) != 0 {
			t.Errorf("rollbacks started: %+v", ops)
		}
		compareDB(t, e.dump(t, tenant, db), before)
	})

	// lossyRun runs job on a new database whose pre-migration snapshot
	// spoil damages, loses 10% of its records and reports it: the trigger
	// fires. It returns the snapshot, the database as the migration left
	// it, and the job's control messages.
	lossyRun := func(t *testing.T, job string, spoil func(m contract.SnapshotManifest)) (string, func() dbState, dbState, *controlLog) {
		tenant := e.tenant("wd_" + job)
		e.seed(t, tenant, db)
		snap := e.snapshot(t, tenant, db, "before_"+job)
		spoil(e.manifest(t, snap))
		ctl := e.controls(t, job)
		e.publish(t, job, contract.EventStarted, "", started(tenant, db, snap, time.Hour))
		e.waitRecord(t, job, 30*time.Second, "running", func(r contract.MigrationRecord) bool { return r.Status == contract.MigrationRunning })
		e.migrate(t, tenant, db, 0.10, "workload_00", "workload_01")
		damaged := e.dump(t, tenant, db)
		lossy(t, job)
		return snap, func() dbState { return e.dump(t, tenant, db) }, damaged, ctl
	}

	// unusableRefusal checks that the restorer refuses a rollback to snap
	// as one of a snapshot that cannot be restored: the signal the
	// watchdog goes by, not the refusal's text.
	unusableRefusal := func(t *testing.T, snap string, code int) {
		t.Helper()
		b := e.refusal(t, e.subj.API("rollback", "plan"), contract.RollbackRequest{SnapshotID: snap})
		if b.Code != code || b.ErrorCode != contract.ErrorArchiveUnusable {
			t.Errorf("the restorer's refusal: %+v; want %d with error_code %s", b, code, contract.ErrorArchiveUnusable)
		}
	}

	t.Run("restorer refuses the archive", func(t *testing.T) {
		const job = "refused"
		snap, now, damaged, ctl := lossyRun(t, job, func(m contract.SnapshotManifest) {
			e.nats.ReplaceStoredArchive(t, m.Object) // its digest is no longer the manifest's
		})
		rec := failed(t, job)
		if rec.RollbackStatus != contract.StatusFailed || !strings.Contains(rec.RollbackError, "the restorer refused the rollback") ||
			!strings.Contains(rec.RollbackError, "nothing was changed") || rec.RollbackCommand != "" {
			t.Fatalf("record: %s", mustJSON(t, rec))
		}
		unusableRefusal(t, snap, contract.CodeVerificationFailed)
		a := alerted(t, job)
		if a.Outcome != contract.OutcomeAlert || !strings.Contains(a.Reason, "its rollback cannot run") {
			t.Errorf("alert: %q (outcome %s)", a.Reason, a.Outcome)
		}
		unrestorable(t, a, rec.Tenant)
		// The status lists the run among its alerts while it is not ended,
		// with why and what to do.
		if al := e.rollbackAlert(t, job); al == nil || !strings.Contains(al.Detail, "migration "+job+" of "+rec.Tenant+"/"+db) ||
			!strings.Contains(al.Detail, "the validation trigger fired (validation ratio 0.9") || !strings.Contains(al.Detail, rec.RollbackError) ||
			!strings.Contains(al.Detail, "The pre-migration snapshot cannot be restored") || strings.Contains(al.Detail, "chromadb-rollback rollback ") ||
			!strings.Contains(al.Detail, "; the job is paused. ") ||
			!strings.Contains(al.Detail, "then end the run: send abort on chroma.control."+job+" if the job still runs, or publish its failed event on chroma.migration."+job+".failed in its place") ||
			al.Figures["command"] != nil || al.Figures["op_id"] != rec.RollbackOpID || al.Figures["snapshot_id"] != rec.PinnedSnapshotID {
			t.Errorf("status alert: %+v", al)
		}
		compareDB(t, now(), damaged)
		// No rollback paused the job: the watchdog does, as a failed
		// rollback would have left it, and tells it why.
		c := ctl.wait(t, contract.ControlPause, 10*time.Second)
		if c.OpID != rec.RollbackOpID || !strings.Contains(c.Reason, "its rollback cannot run") || !strings.Contains(c.Reason, "validation ratio 0.9") {
			t.Errorf("pause: op %q, reason %q", c.OpID, c.Reason)
		}
		time.Sleep(300 * time.Millisecond) // another control would come within a few ticks
		if got := ctl.commands(); !slices.Equal(got, []string{contract.ControlPause}) {
			t.Errorf("controls sent: %v; want pause only", got)
		}
		p := e.waitAudit(t, 10*time.Second, "control.pause", byWatchdog(job, "control.pause"))
		if p.OpID != rec.RollbackOpID {
			t.Errorf("pause audited with op %q", p.OpID)
		}
	})

	// encrypted marks a snapshot as encrypted to a key no restorer holds.
	encrypted := func(t *testing.T, m contract.SnapshotManifest) {
		m.Encryption, m.Recipients = contract.EncryptionAge, []string{"age1nokey"}
		if _, err := e.nats.Assets.Manifests.Put(t.Context(), m.SnapshotID, []byte(mustJSON(t, m))); err != nil {
			t.Fatal(err)
		}
	}
	// keyed checks a run whose rollback only lacks a restorer holding the
	// snapshot's key: the archive is whole, and a restorer given the key
	// restores it, so the alert names the command to run once it has.
	keyed := func(t *testing.T, job, snap, why string) contract.MigrationRecord {
		t.Helper()
		rec := failed(t, job)
		cmd := "chromadb-rollback rollback " + snap + " --reason 'validation trigger of migration " + job + "' --yes"
		if rec.RollbackStatus != contract.StatusFailed || !strings.Contains(rec.RollbackError, why) || rec.RollbackCommand != cmd {
			t.Fatalf("record: %s; want %q and the command %q", mustJSON(t, rec), why, cmd)
		}
		a := alerted(t, job)
		if !strings.Contains(a.Reason, "its rollback cannot run") || !strings.Contains(a.Reason, "roll back by hand: "+cmd) ||
			strings.Contains(a.Reason, "cannot be restored") {
			t.Errorf("alert: %q", a.Reason)
		}
		if al := e.rollbackAlert(t, job); al == nil || !strings.Contains(al.Detail, why) ||
			!strings.Contains(al.Detail, "Roll back by hand: "+cmd) || al.Figures["command"] != cmd {
			t.Errorf("status alert: %+v", al)
		}
		return rec
	}

	// pinnedRun seeds a tenant of its own for job, snapshots it and starts
	// a run that pins that snapshot.
	pinnedRun := func(t *testing.T, job string) (tenant, snap string) {
		t.Helper()
		tenant = e.tenant("wd_" + job)
		e.seed(t, tenant, db)
		snap = e.snapshot(t, tenant, db, "before_"+job)
		e.publish(t, job, contract.EventStarted, "", started(tenant, db, snap, time.Hour))
		e.waitRecord(t, job, 30*time.Second, "pinned", func(r contract.MigrationRecord) bool { return r.PinnedSnapshotID == snap })
		return tenant, snap
	}

	t.Run("restorer has no key", func(t *testing.T) {
		// Encrypted after the run pinned it: the restorer refuses it.
		const job = "nokey_restorer"
		tenant, snap := pinnedRun(t, job)
		encrypted(t, e.manifest(t, snap))
		e.migrate(t, tenant, db, 0.10, "workload_00", "workload_01")
		damaged := e.dump(t, tenant, db)
		lossy(t, job)
		keyed(t, job, snap, "this restorer has no identity")
		// Refused with the code a damaged archive gets, but not as one:
		// a restorer given the key restores it.
		if b := e.refusal(t, e.subj.API("rollback", "plan"), contract.RollbackRequest{SnapshotID: snap}); b.Code != contract.CodeVerificationFailed || b.ErrorCode != "" {
			t.Errorf("the restorer's refusal: %+v; want %d without error_code", b, contract.CodeVerificationFailed)
		}
		compareDB(t, e.dump(t, tenant, db), damaged)
		e.publish(t, job, contract.EventFailed, "", contract.MigrationEvent{Error: "ended by the test"})
	})

	t.Run("no restorer holds the key", func(t *testing.T) {
		// Encrypted before the start: the watchdog, asking the restorers,
		// finds at once that none holds the key (snapshot_error), and at
		// the trigger.
		const job = "nokey"
		snap, now, damaged, _ := lossyRun(t, job, func(m contract.SnapshotManifest) { encrypted(t, m) })
		rec := keyed(t, job, snap, "no restorer holds an identity for it")
		compareDB(t, now(), damaged)

		// The job is gone and will send nothing more. Its run holds the
		// job's name: a new start is refused, saying how to end the run.
		e.publish(t, job, contract.EventStarted, "", started(rec.Tenant, db, snap, time.Hour))
		r := e.waitAudit(t, 10*time.Second, "the second start refused", func(a auditEntry) bool {
			return byWatchdog(job, "migration.started")(a) && a.Outcome == contract.OutcomeRejected
		})
		if !strings.Contains(r.Error, "already has a run in progress") ||
			!strings.Contains(r.Error, "if the job is gone, publish its failed event on chroma.migration."+job+".failed in its place") {
			t.Errorf("second start: %q", r.Error)
		}
		// The operator publishes the job's failed event in its place: the
		// run ends, with its rollback's state audited, and leaves the
		// status and its alerts.
		e.publish(t, job, contract.EventFailed, "", contract.MigrationEvent{Error: "ended by an operator: the job process is gone"})
		ended := e.waitRecord(t, job, 10*time.Second, "ended", func(r contract.MigrationRecord) bool { return !r.EndedAt.IsZero() })
		if ended.Run != rec.Run || ended.Status != contract.MigrationFailed || ended.RollbackStatus != contract.StatusFailed {
			t.Errorf("record: %s", mustJSON(t, ended))
		}
		f := e.waitAudit(t, 10*time.Second, "migration.failed", func(a auditEntry) bool {
			return byWatchdog(job, "migration.failed")(a) && a.Outcome == contract.OutcomeFailed
		})
		if !strings.Contains(f.Reason, "ended by an operator") || !strings.Contains(f.Reason, "rollback "+rec.RollbackOpID+" is failed") {
			t.Errorf("migration.failed: %q", f.Reason)
		}
		if al := e.rollbackAlert(t, job); al != nil {
			t.Errorf("status alert after the run ended: %+v", al)
		}
		for _, m := range e.status(t).Migrations {
			if m.Job == job {
				t.Errorf("status lists the ended run: %s", mustJSON(t, m))
			}
		}
		// The job's name is free again.
		e.publish(t, job, contract.EventStarted, "", started(rec.Tenant, db, snap, time.Hour))
		e.waitRecord(t, job, 10*time.Second, "a new run", func(r contract.MigrationRecord) bool {
			return r.Run > rec.Run && r.Status == contract.MigrationRunning
		})
		e.publish(t, job, contract.EventCompleted, "", contract.MigrationEvent{})
	})

	t.Run("snapshot deleted after the start", func(t *testing.T) {
		// Pinned at the start, then deleted by force: the restorer finds
		// no such snapshot, and no command naming it can help.
		const job = "deleted"
		tenant, snap := pinnedRun(t, job)
		var del contract.SnapshotManifest
		if al := e.snapshotDeletedAlert(t, job); al != nil {
			t.Errorf("status alert while the snapshot is there: %+v", al)
		}
		before := time.Now()
		e.request(t, e.subj.API("snapshot", "delete"), contract.SnapshotRef{Snapshot: snap, Actor: "test", Force: true}, &del)
		after := time.Now()
		// Before any trigger: the status says the run lost its restore
		// point, and since when.
		if al := e.snapshotDeletedAlert(t, job); al == nil || al.Figures["snapshot_id"] != snap ||
			!strings.Contains(al.Detail, "its pre-migration snapshot "+snap+" was deleted") || !strings.Contains(al.Detail, "Ending a run") {
			t.Errorf("status alert after the snapshot was deleted: %+v", al)
		} else if al.Since.Before(before.Add(-time.Second)) || al.Since.After(after.Add(time.Second)) {
			t.Errorf("alert since %s, want the delete's time (%s to %s)", al.Since, before, after)
		}
		lossy(t, job)
		rec := failed(t, job)
		// The rollback's own alert says it from then on.
		if al := e.snapshotDeletedAlert(t, job); al != nil {
			t.Errorf("snapshot_deleted alert besides the rollback's: %+v", al)
		}
		if rec.RollbackStatus != contract.StatusFailed || !strings.Contains(rec.RollbackError, "the restorer refused the rollback") || rec.RollbackCommand != "" {
			t.Fatalf("record: %s", mustJSON(t, rec))
		}
		unusableRefusal(t, snap, contract.CodeNotFound)
		unrestorable(t, alerted(t, job), tenant)
		e.publish(t, job, contract.EventFailed, "", contract.MigrationEvent{Error: "ended by the test"})
	})

	t.Run("rollback fails", func(t *testing.T) {
		const job = "fails"
		_, now, damaged, ctl := lossyRun(t, job, func(m contract.SnapshotManifest) {
			// Damage in storage, near the archive's end: the start's check
			// of the object passes; the restore finds it while staging.
			e.nats.DamageStoredChunks(t, m.Object, func(size int) int { return size - 20 })
		})
		rec := failed(t, job)
		if rec.RollbackStatus != contract.StatusFailed || !strings.Contains(rec.RollbackError, "rollback "+rec.RollbackOpID+" failed") ||
			rec.RollbackCommand != "" {
			t.Fatalf("record: %s", mustJSON(t, rec))
		}
		op, ok := e.op(t, rec.RollbackOpID)
		if !ok || op.Status != contract.StatusFailed || op.FailureReason != "verification" || op.ErrorCode != contract.ErrorArchiveUnusable {
			t.Errorf("rollback operation: %s", mustJSON(t, op))
		}
		a := alerted(t, job)
		if a.Outcome != contract.OutcomeAlert || a.OpID != rec.RollbackOpID || !strings.Contains(a.Reason, "did not complete") ||
			!strings.Contains(a.Reason, "check the data, then the pre-migration snapshot cannot be restored") || figure(a, "verified") != "false" {
			t.Errorf("alert: %q (outcome %s, op %s, figures %v)", a.Reason, a.Outcome, a.OpID, a.Figures)
		}
		unrestorable(t, a, rec.Tenant)
		compareDB(t, now(), damaged)
		if al := e.rollbackAlert(t, job); al == nil || !strings.Contains(al.Detail, "its rollback "+rec.RollbackOpID+" is failed") ||
			!strings.Contains(al.Detail, "The pre-migration snapshot cannot be restored") {
			t.Errorf("status alert: %+v", al)
		}
		// The restorer paused the job for the rollback; a failed rollback
		// leaves it paused for the operator: no resume, no abort.
		ctl.wait(t, contract.ControlPause, 10*time.Second)
		time.Sleep(300 * time.Millisecond)
		if got := ctl.commands(); !slices.Equal(got, []string{contract.ControlPause}) {
			t.Errorf("controls sent: %v; want pause only", got)
		}
	})

	t.Run("rollback fails after the run ended", func(t *testing.T) {
		// The time trigger aborts the job and rolls back once it has
		// ended: no run is left for an operator to end, which is what
		// clears the alert of a run still going. The status lists it all
		// the same.
		const job = "ended_fails"
		tenant := e.tenant("wd_" + job)
		e.seed(t, tenant, db)
		snap := e.snapshot(t, tenant, db, "before_"+job)
		m := e.manifest(t, snap)
		e.nats.DamageStoredChunks(t, m.Object, func(size int) int { return size - 20 })
		ctl := e.controls(t, job)
		e.publish(t, job, contract.EventStarted, "", started(tenant, db, snap, time.Second))
		abort := ctl.wait(t, contract.ControlAbort, 30*time.Second)
		e.publish(t, job, contract.EventFailed, "", contract.MigrationEvent{Error: "aborted: " + abort.Reason})
		rec := failed(t, job)
		if rec.RollbackStatus != contract.StatusFailed || rec.Trigger != contract.TriggerTime || rec.EndedAt.IsZero() || !rec.RollbackEndedAt.After(rec.EndedAt) {
			t.Fatalf("record: %s", mustJSON(t, rec))
		}
		rep := e.status(t)
		for _, r := range rep.Migrations {
			if r.Job == job {
				t.Errorf("status lists the ended run as a migration: %s", mustJSON(t, r))
			}
		}
		al := e.rollbackAlert(t, job)
		if al == nil || al.Figures["ended"] != true || !al.Since.Equal(rec.RollbackEndedAt) ||
			!strings.Contains(al.Detail, "migration "+job+" of "+tenant+"/"+db+" ended (failed), then the time trigger's rollback did not complete: its rollback "+rec.RollbackOpID+" is failed") ||
			!strings.Contains(al.Detail, "The pre-migration snapshot cannot be restored") {
			t.Errorf("status alert of the ended run: %+v", al)
		}
	})
}
