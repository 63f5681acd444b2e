package watchdog_test

import (
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// noRollback checks that no trigger fired for jobs and no rollback started.
func (e *env) noRollback(t *testing.T, jobs ...string) {
	t.Helper()
	time.Sleep(time.Second) // a wrong trigger acts within a few ticks
	for _, job := range jobs {
		if rec, ok := e.record(t, job); ok && rec.Trigger != "" {
			t.Errorf("a trigger fired for %s: %s", job, mustJSON(t, rec))
		}
	}
	if got := find(e.audit(t), func(a auditEntry) bool { return strings.HasPrefix(a.Action, "trigger.") }); len(got) != 0 {
		t.Errorf("trigger events: %s", mustJSON(t, got))
	}
	if ops := e.rollbackOps(t); len(ops) != 0 {
		t.Errorf("rollbacks started: %s", mustJSON(t, ops))
	}
}

// TestTimeLimitTooLongRejected: a time limit longer than a Go duration
// holds (1e12 s, 31,700 years) is rejected. It wrapped to a negative
// duration, a deadline in 1734, and the time trigger aborted the job and
// rolled the database back at once.
func TestTimeLimitTooLongRejected(t *testing.T) {
	e := newEnv(t, false)
	const db, job = "main", "forever"
	tenant, snap := e.seededDB(t, "wd_forever", db, e.fast("wd"), "before_forever")

	ev := started(tenant, db, snap, 0)
	ev.TimeLimitSeconds = 1e12
	e.publish(t, job, contract.EventStarted, "", ev)
	a := e.waitAudit(t, 10*time.Second, "started rejected", func(a auditEntry) bool {
		return a.Action == "migration.started" && a.Outcome == contract.OutcomeRejected && figure(a, "job") == job
	})
	if !strings.Contains(a.Error, "time_limit_seconds") {
		t.Errorf("rejection of a time limit too long: %q", a.Error)
	}
	e.noRollback(t, job)
}

// TestValidationAfterEndRejected: a validation published after the job
// reported completed is rejected and rolls nothing back. It fired the
// validation trigger, and the whole database was rolled back after the
// run was over, over what others had written since.
func TestValidationAfterEndRejected(t *testing.T) {
	e := newEnv(t, false)
	const db, job = "main", "late"
	tenant, snap := e.seededDB(t, "wd_late", db, e.fast("wd"), "before_late")

	e.publish(t, job, contract.EventStarted, "", started(tenant, db, snap, time.Hour))
	e.publish(t, job, contract.EventValidation, "", validation(300, 300))
	e.publish(t, job, contract.EventCompleted, "", contract.MigrationEvent{})
	e.waitRecord(t, job, 10*time.Second, "completed", func(r contract.MigrationRecord) bool { return r.Status == contract.MigrationCompleted })
	e.publish(t, job, contract.EventValidation, "", validation(30, 300))
	a := e.waitAudit(t, 10*time.Second, "late validation rejected", func(a auditEntry) bool {
		return a.Action == "migration.validation" && a.Outcome == contract.OutcomeRejected && figure(a, "job") == job
	})
	if !strings.Contains(a.Error, "already ended") {
		t.Errorf("rejection of a validation after the end: %q", a.Error)
	}
	e.noRollback(t, job)
	if rec, _ := e.record(t, job); rec.Validation == nil || rec.Validation.ValidChunks != 300 {
		t.Errorf("the late validation changed the record: %s", mustJSON(t, rec))
	}
}

// TestSecondEndRejected: an end event of a run that already ended (a
// duplicate completed with a new id, a failed after completed) is audited
// as rejected, saying the run had ended, and changes nothing. It was only
// logged, so the trail did not show that the job contradicted itself.
func TestSecondEndRejected(t *testing.T) {
	e := newEnv(t, false)
	e.watchdog(t, e.fast("wd"))
	const job = "twice"
	e.publish(t, job, contract.EventStarted, "", started("acme", "prod", "snap_x", time.Hour))
	e.publish(t, job, contract.EventCompleted, "end-1", contract.MigrationEvent{})
	e.publish(t, job, contract.EventCompleted, "end-1", contract.MigrationEvent{}) // the same event resent: stored once
	e.publish(t, job, contract.EventCompleted, "end-2", contract.MigrationEvent{})
	e.publish(t, job, contract.EventFailed, "end-3", contract.MigrationEvent{Error: "late"})
	for _, action := range []string{"migration.completed", "migration.failed"} {
		a := e.waitAudit(t, 10*time.Second, action+" rejected", func(a auditEntry) bool {
			return a.Action == action && a.Outcome == contract.OutcomeRejected && figure(a, "job") == job
		})
		if !strings.Contains(a.Error, "already ended") {
			t.Errorf("%s rejected: %q", action, a.Error)
		}
	}
	if got := find(e.audit(t), func(a auditEntry) bool {
		return a.Action == "migration.completed" && a.Outcome == contract.OutcomeCompleted
	}); len(got) != 1 {
		t.Errorf("%d migration.completed completed events, want 1", len(got))
	}
	if rec, _ := e.record(t, job); rec.Status != contract.MigrationCompleted || rec.Error != "" {
		t.Errorf("record: %s", mustJSON(t, rec))
	}
}

// TestCompletedInTimeNotRolledBack: the watchdog was down while a job
// heartbeated and completed before its deadline; restarted after the
// deadline, its ticker fired the time trigger (the record says running)
// before its consumer had reached the completed event behind the backlog,
// and rolled back a migration that had ended in time. An end event stored
// before the deadline and not handled yet holds the time trigger.
func TestCompletedInTimeNotRolledBack(t *testing.T) {
	e := newEnv(t, false)
	const db, job = "main", "in-time"
	cfg := e.fast("wd")
	tenant := e.tenant("wd_intime")
	e.seed(t, tenant, db)
	e.services(t)
	_, stop := e.watchdog(t, cfg)
	snap := e.snapshot(t, tenant, db, "before_in_time")
	e.publish(t, job, contract.EventStarted, "", started(tenant, db, snap, 3*time.Second))
	e.waitRecord(t, job, 10*time.Second, "recorded", func(r contract.MigrationRecord) bool { return r.Run > 0 })
	stop()

	ctl := e.controls(t, job)
	for i := range 2000 {
		ev := contract.MigrationEvent{Envelope: contract.NewEnvelope(contract.TypeMigrationHeartbeat), Job: job, Phase: "copy", DoneRecords: int64(i)}
		msg := nats.NewMsg(e.subj.MigrationEvent(job, contract.EventHeartbeat))
		msg.Data = []byte(mustJSON(t, ev))
		msg.Header.Set(jetstream.MsgIDHeader, ev.ID)
		if _, err := e.nats.JS.PublishMsgAsync(msg); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-e.nats.JS.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal("heartbeats not stored within 30s")
	}
	e.publish(t, job, contract.EventCompleted, "", contract.MigrationEvent{})
	rec, _ := e.record(t, job)
	time.Sleep(time.Until(rec.Deadline) + 200*time.Millisecond)

	e.watchdog(t, cfg)
	rec = e.waitRecord(t, job, 30*time.Second, "ended", func(r contract.MigrationRecord) bool { return !r.EndedAt.IsZero() || r.Trigger != "" })
	time.Sleep(500 * time.Millisecond)
	rec, _ = e.record(t, job)
	if rec.Trigger != "" || rec.Status != contract.MigrationCompleted {
		t.Errorf("a run that completed before its deadline: %s", mustJSON(t, rec))
	}
	if n := ctl.count(contract.ControlAbort); n != 0 {
		t.Errorf("abort sent to a run that completed in time: %v", ctl.commands())
	}
	if ops := e.rollbackOps(t); len(ops) != 0 {
		t.Errorf("rollbacks started: %+v", ops)
	}
}
