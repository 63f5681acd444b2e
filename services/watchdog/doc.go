// Package watchdog follows migration jobs and fires the automatic
// triggers of DESIGN.md: validation loss, time limit, Chroma connectivity
// and disk space. It answers chroma.api.status (micro service
// "chromadb-watchdog") and commands the other services only through their
// APIs: chroma.api.snapshot.create and chroma.api.rollback.start.
//
// # Events and records
//
// Jobs publish on chroma.migration.<job>.<event> (stream
// CHROMA_MIGRATIONS). Every instance shares the durable consumer
// "watchdog", which hands out one event at a time, so a job's events are
// handled in the order it published them. A new consumer starts with the
// events stored after it, never replaying old runs. An event that is not
// JSON, has the wrong type, an unknown event name, a job name that cannot
// name a key, or no run to belong to is audited as "rejected" with the
// reason and terminated; an event that could not be applied (the state
// bucket unreachable) is redelivered.
//
// Each job has a contract.MigrationRecord at migration.<job> in
// CHROMA_STATE. It is only ever written by compare-and-set on its
// revision: a decision (a trigger, a pause, a claim) is taken by the one
// writer whose write went in, and only that writer acts on it. The run is
// numbered by the stream sequence of its started event (Run), which also
// tells a redelivered or stale event from a new one. started records the
// run with an absolute Deadline (the stream's time of the event plus its
// time limit, default 1 h). With take_snapshot the watchdog asks the
// snapshotter for "pre_migration_<job>" and sets SnapshotID once the
// snapshot is verified (SnapshotError if it failed): the job waits for
// one of the two in the record. A run holds its job's name until the job
// reports completed or failed (or its rollback completes): a started
// meanwhile is rejected, so a job whose rollback failed is not run again
// on top of the loss unseen. An operator ends a run whose job is gone by
// publishing its failed event in its place (docs/runbook.md).
//
// # Triggers
//
// Validation: valid/total under the threshold (0.95) fires a rollback to
// the run's pre-migration snapshot; partial (the reported collections under
// the threshold) with PartialOnCollectionFailure, with which one reported
// collection under the threshold fires it even when the total meets it. Time: a ticker reads the
// deadlines from the records, so a restarted instance, or another one,
// fires them on time; the job gets abort on chroma.control.<job>, and the
// rollback follows once the job reports failed or completed, or after
// AbortGrace. Failure: a failed event rolls back only with
// RollbackOnFailure (a failed job may have written nothing; by default its
// operator decides). At most one trigger fires per run.
//
// A trigger is first recorded (Trigger, RollbackOpID, RollbackStatus
// "requested"); only then is the rollback asked for, with confirm true,
// the job's name and a deterministic op id "op_rb_<job>_<run>_<trigger>":
// the restorer answers a second request for that id with the operation it
// has, and the command's Nats-Msg-Id is the op id. The request itself is
// claimed in the record, so one instance asks at a time; a claim left by a
// dead instance is taken over by the instance of the same name when it
// starts again, or by any after RequestTimeout. The watchdog follows the
// operation to its end: rolled_back, or an alert naming the CLI command
// to run by hand (unless the snapshot itself cannot be restored: its
// archive missing or damaged; then the alert says so and points at
// `chromadb-rollback status` for a restore point that can). After a rollback it tells a job still running (which
// the restorer paused) that its run is over, with abort. With automatic
// rollback disabled, the trigger ends in an alert naming the exact command
// (RollbackStatus "alerted").
//
// Connectivity and disk: Chroma's heartbeat every HeartbeatInterval,
// HeartbeatFailures failures in a row; free space on DiskPaths under
// DiskMinFree; JetStream storage at JetStreamNear of an account or stream
// limit. Each raises an alert and pauses every running job (one pause per
// job, whichever instance records it first; PausedBy keeps the reasons);
// when the condition clears the reason is lifted and a job is resumed when
// its last reason is gone, unless a rollback's write fence is raised on
// its database (then when the fence is lowered). Only jobs the watchdog
// paused are resumed.
// Disk reasons name the instance ("disk@<instance>") because each watches
// its own paths; only that instance lifts them, or, once it no longer runs
// (missing from the micro discovery at two disk checks in a row), any.
//
// The status report's alerts are those conditions, the archives found
// missing, and every run not yet ended whose trigger fired but whose
// rollback could not run, failed or was left to an operator (alert
// "rollback", read from the records, so every instance lists it).
//
// # Audit
//
// Every started, validation, completed and failed event, trigger, alert,
// pause, resume, abort and pre-migration snapshot is an audit event of
// service "watchdog" with its reason and figures (ratio, threshold,
// deadline, free bytes...). The events of a run name the snapshot its
// rollback restores (restorePoint): the pinned id once it is known, which
// the started event already has when the snapshot is found at the start,
// so a query by snapshot id finds the run with the restorer's events.
// Events that stand for a decision carry a deterministic id, so audited
// again after a crash or by a second instance they are stored once.
//
// # What a crash leaves
//
// Nothing that a restart does not finish: the records say which triggers
// fired and what is pending, and the ticker continues from them. Two
// windows are accepted: an abort or pause claimed in the record but not
// yet sent when the process died is not sent again (the restorer's fence
// and pause still hold the job during the rollback); a snapshot requested
// but not yet recorded when the process died is requested again, leaving
// one unused snapshot.
package watchdog
