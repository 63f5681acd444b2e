package watchdog

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// tick fires the time trigger of runs past their deadline, starts the
// pending work of every run and applies pauses and resumes. Deadlines are
// absolute times in the records, so a restarted watchdog (or another
// instance) fires them as punctually as the one that recorded them.
func (s *Service) tick(ctx context.Context) {
	now := time.Now()
	recs := s.cached()
	for i := range recs {
		r := &recs[i]
		if r.Trigger == "" && !ended(r) && !r.Deadline.IsZero() && !now.Before(r.Deadline) {
			if !s.endPending(ctx, r) {
				s.fireTime(ctx, r.Job)
			}
			continue
		}
		if needsAct(r) || (needsPin(r) && s.pinDue(r.Job)) {
			s.startAct(ctx, r.Job)
		}
	}
	s.reconcilePauses(ctx, recs)
}

// needsAct says a run has work pending: a snapshot to take or to wait for,
// or a triggered rollback to ask for or to follow.
func needsAct(r *contract.MigrationRecord) bool {
	return rollbackPending(r) || (r.TakeSnapshot && r.SnapshotID == "" && r.SnapshotError == "" && !ended(r))
}

// endPending says run r's job reported completed or failed before r's
// deadline, in an event the watchdogs have not handled yet (it waits
// behind others, as after a watchdog was down while jobs published): the
// run ended in time, and the time trigger waits for that event instead of
// rolling back a migration that had finished. When that cannot be read
// (a watchdog user without the permission accounts.conf now gives it), it
// says no: the trigger fires as it did before.
func (s *Service) endPending(ctx context.Context, r *contract.MigrationRecord) bool {
	if s.events == nil || s.cons == nil {
		return false
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	info, err := s.cons.Info(cctx)
	if err != nil {
		s.log.Warn("cannot read the migration consumer; the time trigger does not wait for events not handled yet", "job", r.Job, "err", err)
		return false
	}
	for _, event := range []string{contract.EventCompleted, contract.EventFailed} {
		m, err := s.events.GetLastMsgForSubject(cctx, s.subj.MigrationEvent(r.Job, event))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			s.log.Warn("cannot look for a pending end of the run; the time trigger does not wait for it", "job", r.Job, "err", err)
			return false
		}
		if m.Sequence > r.Run && m.Sequence > info.AckFloor.Stream && m.Time.Before(r.Deadline) {
			s.log.Info("time limit passed, but the job's end event stored before it is not handled yet: waiting for it",
				"job", r.Job, "event", event, "seq", m.Sequence, "deadline", r.Deadline)
			return true
		}
	}
	return false
}

// fireTime records the time trigger of a run past its deadline.
func (s *Service) fireTime(ctx context.Context, job string) {
	_, written, err := s.update(ctx, job, func(cur *contract.MigrationRecord) *contract.MigrationRecord {
		if cur == nil || cur.Trigger != "" || ended(cur) || cur.Deadline.IsZero() || time.Now().Before(cur.Deadline) {
			return nil
		}
		next := *cur
		limit := time.Duration(cur.TimeLimitSeconds * float64(time.Second))
		s.fire(&next, contract.TriggerTime, fmt.Sprintf("the run exceeded its time limit of %s (deadline %s)",
			limit, cur.Deadline.Format(time.RFC3339Nano)), nil)
		return &next
	})
	if err != nil {
		s.log.Warn("cannot record the time trigger; retrying at the next tick", "job", job, "err", err)
		return
	}
	if written {
		s.startAct(ctx, job)
	}
}

// startAct runs act for job in the background unless it already runs here
// or waits for a retry.
func (s *Service) startAct(ctx context.Context, job string) {
	s.mu.Lock()
	if s.inflight[job] || time.Now().Before(s.retryAt[job]) || ctx.Err() != nil {
		s.mu.Unlock()
		return
	}
	s.inflight[job] = true
	s.mu.Unlock()
	s.acts.Go(func() {
		defer func() {
			if p := recover(); p != nil {
				s.log.Error("act panic", "job", job, "panic", p)
			}
			s.mu.Lock()
			delete(s.inflight, job)
			s.mu.Unlock()
		}()
		s.act(ctx, job)
	})
}

// maxRetryDelay caps the backoff between failed requests: a rollback
// start verifies the whole archive before the restorer can refuse it (for
// a lease held by another operation, say), so retries must not hammer it.
const maxRetryDelay = 2 * time.Minute

// later holds off the next request for job: RetryInterval after the first
// failure, doubling with each further one up to maxRetryDelay.
func (s *Service) later(job string) {
	s.mu.Lock()
	n := s.retries[job]
	s.retries[job] = n + 1
	d := s.cfg.RetryInterval
	for range min(n, 10) {
		d *= 2
	}
	s.retryAt[job] = time.Now().Add(min(d, maxRetryDelay))
	s.mu.Unlock()
}

// succeeded resets job's backoff.
func (s *Service) succeeded(job string) {
	s.mu.Lock()
	delete(s.retries, job)
	delete(s.retryAt, job)
	s.mu.Unlock()
}

// act moves a run's pending work one step on. Every step re-reads the
// record and writes it by compare-and-set, and every request it sends is
// idempotent or claimed in the record first, so running it again (after a
// crash, from another instance) repeats nothing.
func (s *Service) act(ctx context.Context, job string) {
	rec, _, err := s.get(ctx, job)
	if err != nil || rec == nil {
		if err != nil {
			s.log.Warn("cannot read the migration record", "job", job, "err", err)
		}
		return
	}
	if needsPin(rec) {
		s.pin(ctx, job, true)
		if rec, _, err = s.get(ctx, job); err != nil || rec == nil {
			return
		}
	}
	if rec.TakeSnapshot && rec.SnapshotID == "" && rec.SnapshotError == "" {
		s.actSnapshot(ctx, rec)
		if rec, _, err = s.get(ctx, job); err != nil || rec == nil {
			return
		}
	}
	if rollbackPending(rec) {
		s.actRollback(ctx, rec)
	}
}

// claimable says a request claim (at, by) may be taken by this instance:
// nobody holds it, this instance does (a restarted instance of the same
// name; act runs once per job here), or the holder has gone quiet.
func (s *Service) claimable(at time.Time, by string) bool {
	return at.IsZero() || by == s.cfg.Instance || time.Since(at) > s.cfg.RequestTimeout+time.Minute
}

// runningFor is how long a micro discovery of the watchdog instances is
// taken as current.
const runningFor = 5 * time.Second

// claimHolderGone says the instance by, which claimed a request it has not
// reported on, no longer runs: the micro discovery finds this instance but
// not by. A serve stopped while its request was in flight (a rollback start
// verifies the whole archive first; Chroma may not answer) comes back as a
// new instance, and the claim would hold the request back until
// claimable's RequestTimeout and a minute had passed. Asked twice, the
// services answer with the operation they already have.
func (s *Service) claimHolderGone(ctx context.Context, by string) bool {
	if by == "" || by == s.cfg.Instance {
		return false
	}
	s.mu.Lock()
	running, at := s.running, s.runningAt
	s.mu.Unlock()
	if time.Since(at) > runningFor {
		var err error
		if running, err = s.runningInstances(ctx); err != nil {
			s.log.Warn("cannot list the running watchdog instances; a claim of a stopped one waits for its timeout", "err", err)
			return false
		}
		s.mu.Lock()
		s.running, s.runningAt = running, time.Now()
		s.mu.Unlock()
	}
	return running[s.cfg.Instance] && !running[by]
}

// actSnapshot asks for the pre-migration snapshot a started event asked
// the watchdog to take, then follows it until it is verified.
func (s *Service) actSnapshot(ctx context.Context, rec *contract.MigrationRecord) {
	job, run := rec.Job, rec.Run
	same := func(cur *contract.MigrationRecord) bool {
		return cur != nil && cur.Run == run && cur.SnapshotID == "" && cur.SnapshotError == ""
	}
	if rec.SnapshotOpID == "" {
		holder := rec.SnapshotRequestedBy
		gone := !s.claimable(rec.SnapshotRequestedAt, holder) && s.claimHolderGone(ctx, holder)
		_, claimed, err := s.update(ctx, job, func(cur *contract.MigrationRecord) *contract.MigrationRecord {
			if !same(cur) || cur.SnapshotOpID != "" ||
				!(s.claimable(cur.SnapshotRequestedAt, cur.SnapshotRequestedBy) || (gone && cur.SnapshotRequestedBy == holder)) {
				return nil
			}
			next := *cur
			next.SnapshotRequestedAt, next.SnapshotRequestedBy = time.Now().UTC(), s.cfg.Instance
			return &next
		})
		if err != nil || !claimed {
			return
		}
		req := contract.SnapshotCreateRequest{Envelope: contract.NewEnvelope(contract.TypeSnapshotCreateRequest), Name: snapshotName(job),
			Tenant: rec.Tenant, Database: rec.Database, Collections: rec.Collections, Actor: "watchdog",
			Reason: "pre-migration snapshot of migration " + job}
		var reply contract.SnapshotCreateReply
		code, err := s.request(ctx, s.subj.API("snapshot", "create"), req, &reply, s.cfg.RequestTimeout)
		if err != nil && !permanent(code) {
			s.log.Warn("pre-migration snapshot request failed; retrying", "job", job, "err", err)
			_, _, _ = s.update(ctx, job, func(cur *contract.MigrationRecord) *contract.MigrationRecord {
				if !same(cur) || cur.SnapshotOpID != "" || cur.SnapshotRequestedBy != s.cfg.Instance {
					return nil
				}
				next := *cur
				next.SnapshotRequestedAt, next.SnapshotRequestedBy = time.Time{}, ""
				return &next
			})
			s.later(job)
			return
		}
		if err != nil {
			s.snapshotFailed(ctx, rec, "could not be taken", "the snapshotter refused it: "+err.Error())
			return
		}
		s.succeeded(job)
		_, _, err = s.update(ctx, job, func(cur *contract.MigrationRecord) *contract.MigrationRecord {
			if !same(cur) || cur.SnapshotOpID != "" {
				return nil
			}
			next := *cur
			next.SnapshotOpID, next.SnapshotPendingID = reply.OpID, reply.SnapshotID
			return &next
		})
		if err != nil {
			s.log.Warn("cannot record the snapshot operation", "job", job, "op_id", reply.OpID, "err", err)
			return
		}
		s.emit(ctx, fmt.Sprintf("snap_%s_%d", job, run), contract.AuditEvent{Action: "snapshot.pre_migration", Outcome: contract.OutcomeStarted,
			Tenant: rec.Tenant, Database: rec.Database, SnapshotID: reply.SnapshotID, OpID: reply.OpID,
			Reason:  fmt.Sprintf("pre-migration snapshot %s of %s/%s requested for migration %s", snapshotName(job), rec.Tenant, rec.Database, job),
			Figures: map[string]any{"job": job, "run": run}})
		return
	}
	op, err := s.getOperation(ctx, rec.SnapshotOpID)
	if err != nil || op == nil {
		return // not recorded yet, or unreadable now: the next tick looks again
	}
	switch op.Status {
	case contract.StatusCompleted:
		// Encrypted to keys no restorer holds: as unusable as one that
		// failed, for the rollback would be refused.
		if m, err := s.manifestOf(ctx, rec.SnapshotPendingID); err == nil && m != nil {
			if why := s.decryptProblem(ctx, m); why != "" {
				s.snapshotFailed(ctx, rec, "cannot be used", why)
				return
			}
		}
		ev := contract.AuditEvent{Action: "snapshot.pre_migration", Outcome: contract.OutcomeCompleted,
			Tenant: rec.Tenant, Database: rec.Database, SnapshotID: rec.SnapshotPendingID, OpID: op.OpID,
			Reason:  fmt.Sprintf("pre-migration snapshot %s of migration %s is verified", rec.SnapshotPendingID, job),
			Figures: map[string]any{"job": job, "run": run}}
		_, _, _ = s.updateAudited(ctx, fmt.Sprintf("snap_%s_%d_done", job, run), ev, job, func(cur *contract.MigrationRecord) *contract.MigrationRecord {
			if !same(cur) || cur.SnapshotOpID != rec.SnapshotOpID {
				return nil
			}
			next := *cur
			next.SnapshotID, next.PinnedSnapshotID = cur.SnapshotPendingID, cur.SnapshotPendingID
			return &next
		})
	case contract.StatusFailed, contract.StatusCancelled:
		s.snapshotFailed(ctx, rec, "could not be taken", fmt.Sprintf("snapshot operation %s %s: %s", op.OpID, op.Status, op.Error))
	}
}

// snapshotSettled says the run's pre-migration snapshot is known (taken by
// the watchdog, or pinned) or known to be unusable.
func snapshotSettled(r *contract.MigrationRecord) bool {
	return (r.TakeSnapshot && r.SnapshotID != "") || r.PinnedSnapshotID != "" || r.SnapshotError != ""
}

// snapshotFailed records that the pre-migration snapshot cannot be had and
// raises an alert: the job should not go on, and no rollback is possible.
// problem says what happened to it ("could not be taken").
func (s *Service) snapshotFailed(ctx context.Context, rec *contract.MigrationRecord, problem, why string) {
	if snapshotSettled(rec) {
		return
	}
	ev := contract.AuditEvent{Action: "snapshot.pre_migration", Outcome: contract.OutcomeAlert,
		Tenant: rec.Tenant, Database: rec.Database, Error: why,
		Reason:  fmt.Sprintf("the pre-migration snapshot of migration %s %s (%s): the job must not go on, and no rollback to it is possible", rec.Job, problem, why),
		Figures: map[string]any{"job": rec.Job, "run": rec.Run}}
	_, written, err := s.updateAudited(ctx, fmt.Sprintf("snap_%s_%d_failed", rec.Job, rec.Run), ev, rec.Job, func(cur *contract.MigrationRecord) *contract.MigrationRecord {
		if cur == nil || cur.Run != rec.Run || snapshotSettled(cur) {
			return nil
		}
		next := *cur
		next.SnapshotError = why
		return &next
	})
	if err == nil && written {
		s.observeFailure("snapshot.pre_migration")
	}
}

// actRollback takes a triggered rollback one step on: audit the trigger,
// abort the job (time trigger), ask the restorer (or raise the alert when
// automatic rollback is disabled), then follow the operation to its end.
func (s *Service) actRollback(ctx context.Context, rec *contract.MigrationRecord) {
	job, opID := rec.Job, rec.RollbackOpID
	same := func(cur *contract.MigrationRecord) bool {
		return cur != nil && cur.Run == rec.Run && cur.RollbackOpID == opID
	}
	switch rec.RollbackStatus {
	case contract.RollbackRequested:
		s.emitTrigger(ctx, rec)
		if rec.Trigger == contract.TriggerTime && rec.AbortSentAt.IsZero() {
			// Claimed in the record first: one abort, whichever instance.
			next, written, err := s.update(ctx, job, func(cur *contract.MigrationRecord) *contract.MigrationRecord {
				if !same(cur) || !cur.AbortSentAt.IsZero() || cur.RollbackStatus != contract.RollbackRequested {
					return nil
				}
				n := *cur
				n.AbortSentAt = time.Now().UTC()
				return &n
			})
			if err != nil || next == nil {
				return
			}
			if written {
				s.control(ctx, next, contract.ControlAbort, next.TriggerReason+": the job is aborted and the migration rolled back", opID)
			}
			rec = next
		}
		if rec.Trigger == contract.TriggerTime && rec.EndedAt.IsZero() && time.Since(rec.AbortSentAt) < s.cfg.AbortGrace {
			return // the job has AbortGrace to stop; the ticker comes back
		}
		if rec.SnapshotID == "" && rec.TakeSnapshot && rec.SnapshotError == "" {
			return // the pre-migration snapshot is still being taken
		}
		if rec.SnapshotID == "" {
			why := "the run has no verified pre-migration snapshot"
			if rec.SnapshotError != "" {
				why += ": " + rec.SnapshotError
			}
			s.rollbackFailed(ctx, rec, why, true)
			return
		}
		if rec.PinnedSnapshotID == "" {
			// Not found before the trigger: the one the name stands for
			// now, in the migrated database only.
			res, err := s.resolveSnapshot(ctx, rec)
			if err != nil {
				s.log.Warn("cannot look up the pre-migration snapshot; retrying", "job", job, "snapshot", rec.SnapshotID, "err", err)
				s.later(job)
				return
			}
			if res.pending {
				return // the ticker comes back once it is made
			}
			if res.id == "" {
				// A missing key is fixed by giving a restorer the
				// identity: then the command works as it is.
				s.rollbackFailed(ctx, rec, res.why, !res.keyMissing)
				return
			}
			id := res.id
			next, _, err := s.update(ctx, job, func(cur *contract.MigrationRecord) *contract.MigrationRecord {
				if !same(cur) || cur.PinnedSnapshotID != "" {
					return nil
				}
				n := *cur
				n.PinnedSnapshotID = id
				return &n
			})
			if err != nil || next == nil || next.PinnedSnapshotID == "" {
				return // the next tick tries again
			}
			rec = next
		}
		if len(rec.RollbackCollections) > 0 {
			// A collection the migration created is not in the snapshot:
			// a partial rollback naming it is refused, and the loss in the
			// others would stay. The others are rolled back.
			next, done := s.keepSnapshotCollections(ctx, rec)
			if done {
				return
			}
			rec = next
		}
		if s.cfg.AutomaticRollbackDisabled {
			s.alertDisabled(ctx, rec)
			return
		}
		// Another rollback of the database ended after the trigger fired
		// (an operator's, whose lease refused this one's request): the
		// database holds what it restored, and rolling back again would
		// undo that choice. The run is left to the operator, as one whose
		// rollback failed: its job paused, the command offered.
		if op, err := s.supersededBy(ctx, rec); err != nil {
			s.log.Warn("cannot tell whether another rollback of the database ended after the trigger; retrying", "job", job, "err", err)
			s.later(job)
			return
		} else if op != nil {
			s.rollbackFailed(ctx, rec, fmt.Sprintf("rollback %s of %s/%s (by %s, from snapshot %s) completed at %s, after the trigger fired, so the watchdog did not roll back over it",
				op.OpID, rec.Tenant, rec.Database, cmp.Or(op.Actor, "-"), op.Plan.SnapshotID, op.UpdatedAt.UTC().Format(time.RFC3339)), false)
			return
		}
		s.requestRollback(ctx, rec)
	case contract.StatusQueued, contract.StatusRunning:
		s.followRollback(ctx, rec)
	}
}

// keepSnapshotCollections drops from run rec's partial rollback the
// collections its snapshot does not hold (the migration created them), and
// says so in the trigger's reason. With none left, the rollback cannot run
// (done). done also when the record changed or the snapshot could not be
// read: the ticker comes back.
func (s *Service) keepSnapshotCollections(ctx context.Context, rec *contract.MigrationRecord) (*contract.MigrationRecord, bool) {
	id := restorePoint(rec)
	m, _, err := bus.GetJSON[contract.SnapshotManifest](ctx, s.assets.Manifests, id, "manifest "+id)
	if err != nil {
		s.log.Warn("cannot read the snapshot of a partial rollback; retrying", "job", rec.Job, "snapshot", id, "err", err)
		s.later(rec.Job)
		return nil, true
	}
	if m == nil {
		return rec, false // the restorer says what is wrong with it
	}
	var keep, created []string
	for _, c := range rec.RollbackCollections {
		if slices.ContainsFunc(m.Collections, func(mc contract.CollectionSummary) bool { return mc.Name == c }) {
			keep = append(keep, c)
		} else {
			created = append(created, c)
		}
	}
	if len(created) == 0 {
		return rec, false
	}
	why := fmt.Sprintf("snapshot %s does not hold %s (the migration created them): there is nothing to roll them back to; repair or delete them by hand",
		id, strings.Join(created, ", "))
	if len(keep) == 0 {
		s.rollbackFailed(ctx, rec, why, true)
		return nil, true
	}
	next, _, err := s.update(ctx, rec.Job, func(cur *contract.MigrationRecord) *contract.MigrationRecord {
		if cur == nil || cur.Run != rec.Run || cur.RollbackOpID != rec.RollbackOpID || cur.RollbackStatus != contract.RollbackRequested ||
			!slices.Equal(cur.RollbackCollections, rec.RollbackCollections) {
			return nil
		}
		n := *cur
		n.RollbackCollections = keep
		n.TriggerReason += "; only " + strings.Join(keep, ", ") + " rolled back: " + why
		return &n
	})
	if err != nil || next == nil || !slices.Equal(next.RollbackCollections, keep) {
		return nil, true // changed meanwhile: the ticker comes back
	}
	s.log.Warn("partial rollback without the collections its snapshot does not hold", "job", rec.Job, "snapshot", id, "created", created, "rolled_back", keep)
	return next, false
}

// supersededBy returns the newest other rollback into run rec's database
// (of the configured Chroma) that completed after rec's trigger fired, nil
// when none did.
func (s *Service) supersededBy(ctx context.Context, rec *contract.MigrationRecord) (*contract.Operation, error) {
	var newest *contract.Operation
	err := bus.EachValue(ctx, s.assets.State, contract.OperationKey(">"), func(_ string, data []byte) error {
		var op contract.Operation
		if json.Unmarshal(data, &op) != nil {
			return nil // not this run's business; retention reports it
		}
		tenant, database, ok := op.RestoredInto()
		if !ok || op.OpID == rec.RollbackOpID || tenant != rec.Tenant || database != rec.Database || !op.UpdatedAt.After(rec.TriggeredAt) {
			return nil
		}
		if newest == nil || op.UpdatedAt.After(newest.UpdatedAt) {
			newest = &op
		}
		return nil
	})
	return newest, err
}

// requestRollback asks the restorer for the run's rollback with its
// deterministic op id: asked twice, the restorer answers with the
// operation it already has, and the command's message id is the op id.
func (s *Service) requestRollback(ctx context.Context, rec *contract.MigrationRecord) {
	job, opID := rec.Job, rec.RollbackOpID
	same := func(cur *contract.MigrationRecord) bool {
		return cur != nil && cur.Run == rec.Run && cur.RollbackOpID == opID && cur.RollbackStatus == contract.RollbackRequested
	}
	holder := rec.RollbackRequestedBy
	gone := !s.claimable(rec.RollbackRequestedAt, holder) && s.claimHolderGone(ctx, holder)
	_, claimed, err := s.update(ctx, job, func(cur *contract.MigrationRecord) *contract.MigrationRecord {
		if !same(cur) || !(s.claimable(cur.RollbackRequestedAt, cur.RollbackRequestedBy) || (gone && cur.RollbackRequestedBy == holder)) {
			return nil
		}
		next := *cur
		next.RollbackRequestedAt, next.RollbackRequestedBy = time.Now().UTC(), s.cfg.Instance
		return &next
	})
	if err != nil || !claimed {
		return
	}
	req := contract.RollbackRequest{Envelope: contract.NewEnvelope(contract.TypeRollbackRequest), SnapshotID: restorePoint(rec),
		Collections: rec.RollbackCollections, Confirm: true, Actor: "watchdog", Job: job, OpID: opID,
		Reason: fmt.Sprintf("watchdog %s trigger of migration %s: %s", rec.Trigger, job, rec.TriggerReason)}
	var reply contract.RollbackReply
	code, err := s.request(ctx, s.subj.API("rollback", "start"), req, &reply, s.cfg.RequestTimeout)
	if err == nil && reply.Refused != "" {
		code, err = contract.CodeBadRequest, errors.New(reply.Refused)
	}
	if err != nil {
		if permanent(code) {
			s.rollbackFailed(ctx, rec, "the restorer refused the rollback: "+err.Error(), refusedUnusable(err))
			return
		}
		s.log.Warn("rollback request failed; retrying", "job", job, "op_id", opID, "code", code, "err", err)
		_, _, _ = s.update(ctx, job, func(cur *contract.MigrationRecord) *contract.MigrationRecord {
			if !same(cur) || cur.RollbackRequestedBy != s.cfg.Instance {
				return nil
			}
			next := *cur
			next.RollbackRequestedAt, next.RollbackRequestedBy = time.Time{}, ""
			return &next
		})
		s.later(job)
		return
	}
	s.succeeded(job)
	status := reply.Status
	if status == "" {
		status = contract.StatusQueued
	}
	_, _, err = s.update(ctx, job, func(cur *contract.MigrationRecord) *contract.MigrationRecord {
		if !same(cur) {
			return nil
		}
		next := *cur
		next.RollbackStatus = contract.StatusQueued
		if status == contract.StatusRunning {
			next.RollbackStatus = status
		}
		return &next
	})
	if err != nil {
		s.log.Warn("cannot record the queued rollback; following it at the next tick", "job", job, "err", err)
	}
	s.log.Info("rollback requested", "job", job, "op_id", opID, "status", status, "snapshot_id", restorePoint(rec))
	s.wake()
}

// followRollback follows the restorer's operation and records how it ended.
func (s *Service) followRollback(ctx context.Context, rec *contract.MigrationRecord) {
	job, opID := rec.Job, rec.RollbackOpID
	op, err := s.getOperation(ctx, opID)
	if err != nil {
		s.log.Warn("cannot read the rollback operation", "op_id", opID, "err", err)
		return
	}
	same := func(cur *contract.MigrationRecord) bool {
		return cur != nil && cur.Run == rec.Run && cur.RollbackOpID == opID && rollbackPending(cur) && cur.RollbackStatus != contract.RollbackRequested
	}
	if op == nil {
		// The restorer drops an operation it could not enqueue: ask again.
		_, _, _ = s.update(ctx, job, func(cur *contract.MigrationRecord) *contract.MigrationRecord {
			if !same(cur) {
				return nil
			}
			next := *cur
			next.RollbackStatus, next.RollbackRequestedAt, next.RollbackRequestedBy = contract.RollbackRequested, time.Time{}, ""
			return &next
		})
		return
	}
	if !contract.Ended(op.Status) {
		if op.Status == contract.StatusRunning && rec.RollbackStatus != contract.StatusRunning {
			_, _, _ = s.update(ctx, job, func(cur *contract.MigrationRecord) *contract.MigrationRecord {
				if !same(cur) {
					return nil
				}
				next := *cur
				next.RollbackStatus = contract.StatusRunning
				return &next
			})
		}
		return
	}
	change := func(cur *contract.MigrationRecord) *contract.MigrationRecord {
		if !same(cur) {
			return nil
		}
		n := *cur
		n.RollbackStatus, n.PausedBy, n.RollbackEndedAt = op.Status, nil, time.Now().UTC()
		if op.Status == contract.StatusCompleted {
			n.Status = contract.MigrationRolledBack
		} else {
			n.RollbackError = fmt.Sprintf("rollback %s %s: %s", opID, op.Status, op.Error)
			n.RollbackCommand = ""
			if !failedUnusable(op) {
				n.RollbackCommand = s.operatorCommand(cur)
			}
		}
		return &n
	}
	would := change(rec) // the event says what the change will record
	if would == nil {
		return
	}
	ev := contract.AuditEvent{Tenant: would.Tenant, Database: would.Database, SnapshotID: restorePoint(would), OpID: opID,
		Figures: map[string]any{"job": job, "run": would.Run, "trigger": would.Trigger}}
	if op.Restore != nil {
		ev.Figures["records_written"], ev.Figures["verified"] = op.Restore.RecordsWritten, op.Restore.Verified
	}
	id := "rolled_back_" + opID
	if op.Status == contract.StatusCompleted {
		ev.Action, ev.Outcome = "migration.rolled_back", contract.OutcomeCompleted
		ev.Reason = fmt.Sprintf("migration %s rolled back to snapshot %s by %s (%s trigger: %s)", job, restorePoint(would), opID, would.Trigger, would.TriggerReason)
	} else {
		id = "rollback_failed_" + opID
		ev.Action, ev.Outcome, ev.Error = "alert.rollback", contract.OutcomeAlert, would.RollbackError
		ev.Reason = fmt.Sprintf("the %s trigger's rollback of migration %s did not complete (%s); check the data, then %s",
			would.Trigger, job, would.RollbackError, byHand(would))
	}
	next, written, err := s.updateAudited(ctx, id, ev, job, change)
	if err != nil || !written {
		return
	}
	if op.Status == contract.StatusCompleted && next.EndedAt.IsZero() && next.AbortSentAt.IsZero() {
		// The restorer paused the job and does not resume the job it
		// rolled back: tell it that its run is over.
		s.control(ctx, next, contract.ControlAbort, fmt.Sprintf("migration %s was rolled back (%s trigger: %s)", job, next.Trigger, next.TriggerReason), opID)
	}
}

// rollbackFailed records that the run's rollback cannot be run and alerts
// with what an operator can do: the command that runs it by hand, unless
// the pre-migration snapshot itself cannot be restored (unusable: none was
// found, or its archive is missing or damaged), which no command naming it
// can fix.
func (s *Service) rollbackFailed(ctx context.Context, rec *contract.MigrationRecord, why string, unusable bool) {
	change := func(cur *contract.MigrationRecord) *contract.MigrationRecord {
		if cur == nil || cur.Run != rec.Run || cur.RollbackOpID != rec.RollbackOpID || cur.RollbackStatus != contract.RollbackRequested {
			return nil
		}
		n := *cur
		n.RollbackStatus, n.RollbackError, n.RollbackCommand, n.RollbackEndedAt = contract.StatusFailed, why, "", time.Now().UTC()
		if !unusable {
			n.RollbackCommand = s.operatorCommand(cur)
		}
		return &n
	}
	would := change(rec) // the event says what the change will record
	if would == nil {
		return
	}
	ev := contract.AuditEvent{Action: "alert.rollback", Outcome: contract.OutcomeAlert,
		Tenant: would.Tenant, Database: would.Database, SnapshotID: restorePoint(would), OpID: would.RollbackOpID, Error: why,
		Reason: fmt.Sprintf("the %s trigger fired for migration %s (%s), but its rollback cannot run: %s; %s",
			would.Trigger, would.Job, would.TriggerReason, why, byHand(would)),
		Figures: triggerFigures(would, false)}
	next, written, err := s.updateAudited(ctx, "rollback_failed_"+rec.RollbackOpID, ev, rec.Job, change)
	if err != nil || !written {
		return
	}
	s.observeFailure("rollback")
	if next.EndedAt.IsZero() && next.AbortSentAt.IsZero() {
		// A rollback that runs and fails leaves the job paused by its
		// fence; one that cannot run must not leave it writing on top of
		// the loss the trigger found. (An abort would end the run; the
		// operator decides that. The time trigger has aborted it already.)
		s.control(ctx, next, contract.ControlPause, fmt.Sprintf("the %s trigger fired (%s) and its rollback cannot run: write nothing more until an operator has rolled back by hand or ended the run",
			next.Trigger, next.TriggerReason), next.RollbackOpID)
	}
}

// alertDisabled turns a triggered rollback into an alert naming the
// command an operator would run (automatic rollback disabled).
func (s *Service) alertDisabled(ctx context.Context, rec *contract.MigrationRecord) {
	cmd := s.operatorCommand(rec)
	ev := contract.AuditEvent{Action: "alert.rollback", Outcome: contract.OutcomeAlert,
		Tenant: rec.Tenant, Database: rec.Database, SnapshotID: restorePoint(rec),
		Reason: fmt.Sprintf("automatic rollback is disabled (AUTOMATIC_ROLLBACK_ENABLED=false): the %s trigger fired for migration %s (%s); to roll back, run: %s",
			rec.Trigger, rec.Job, rec.TriggerReason, cmd),
		Figures: triggerFigures(rec, false)}
	_, _, err := s.updateAudited(ctx, "alert_"+rec.RollbackOpID, ev, rec.Job, func(cur *contract.MigrationRecord) *contract.MigrationRecord {
		if cur == nil || cur.Run != rec.Run || cur.RollbackOpID != rec.RollbackOpID || cur.RollbackStatus != contract.RollbackRequested {
			return nil
		}
		n := *cur
		// The rollback will not run by itself: it ends here, which is
		// when the status's clock for a run already ended starts.
		n.RollbackStatus, n.RollbackCommand, n.RollbackEndedAt = contract.RollbackAlerted, cmd, time.Now().UTC()
		return &n
	})
	if err != nil {
		s.log.Warn("cannot record the rollback alert", "job", rec.Job, "err", err)
	}
}

// emitTrigger audits a fired trigger; its id is the op id's, so it is
// stored once however often it is emitted.
func (s *Service) emitTrigger(ctx context.Context, rec *contract.MigrationRecord) {
	s.mu.Lock()
	done := s.audited[rec.RollbackOpID]
	s.audited[rec.RollbackOpID] = true
	s.mu.Unlock()
	if done {
		return
	}
	s.observeTrigger(rec.Trigger)
	s.emit(ctx, "trigger_"+rec.RollbackOpID, contract.AuditEvent{Action: "trigger." + rec.Trigger, Outcome: contract.OutcomeStarted,
		Tenant: rec.Tenant, Database: rec.Database, SnapshotID: restorePoint(rec), OpID: rec.RollbackOpID,
		Reason:  fmt.Sprintf("migration %s: %s", rec.Job, rec.TriggerReason),
		Figures: triggerFigures(rec, !s.cfg.AutomaticRollbackDisabled)})
}

func triggerFigures(rec *contract.MigrationRecord, automatic bool) map[string]any {
	f := map[string]any{"job": rec.Job, "run": rec.Run, "trigger": rec.Trigger, "automatic_rollback": automatic}
	if len(rec.RollbackCollections) > 0 {
		f["collections"] = rec.RollbackCollections
	}
	switch rec.Trigger {
	case contract.TriggerValidation:
		if v := rec.Validation; v != nil {
			f["ratio"], f["threshold"], f["valid_chunks"], f["total_chunks"] = v.Ratio, v.Threshold, v.ValidChunks, v.TotalChunks
			if len(v.FailedCollections) > 0 {
				f["failed_collections"] = v.FailedCollections
			}
		}
	case contract.TriggerTime:
		f["deadline"], f["time_limit_seconds"] = rec.Deadline, rec.TimeLimitSeconds
		f["late_seconds"] = rec.TriggeredAt.Sub(rec.Deadline).Seconds()
	case contract.TriggerFailure:
		f["error"] = rec.Error
	}
	return f
}

var plainArg = regexp.MustCompile(`^[A-Za-z0-9._/:=@,+-]+$`)

func shellQuote(s string) string {
	if plainArg.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// operatorCommand is the CLI command that runs the rollback a trigger asks for.
func (s *Service) operatorCommand(rec *contract.MigrationRecord) string {
	parts := []string{"chromadb-rollback"}
	if s.subj.Prefix != "" && s.subj.Prefix != contract.DefaultPrefix {
		parts = append(parts, "--prefix", shellQuote(s.subj.Prefix))
	}
	snap := restorePoint(rec)
	if snap == "" {
		snap = "SNAPSHOT" // none is known: the operator must pick one
	}
	parts = append(parts, "rollback", shellQuote(snap))
	if len(rec.RollbackCollections) > 0 {
		parts = append(parts, "--partial", "--failed-collections", shellQuote(strings.Join(rec.RollbackCollections, ",")))
	}
	parts = append(parts, "--reason", shellQuote(fmt.Sprintf("%s trigger of migration %s", rec.Trigger, rec.Job)), "--yes")
	return strings.Join(parts, " ")
}

// refusedUnusable says the restorer refused a rollback (err, from
// request) because the snapshot itself cannot be restored: its error reply
// says contract.ErrorArchiveUnusable. Asking again for the same snapshot
// cannot help. A reply without error_code comes from a restorer older than
// it (during an upgrade): that one is told by its text, as an old
// operation record is.
func refusedUnusable(err error) bool {
	var re *replyError
	if !errors.As(err, &re) {
		return false
	}
	if re.body.ErrorCode != "" {
		return re.body.ErrorCode == contract.ErrorArchiveUnusable
	}
	return oldUnusableText(re.body.Error)
}

// failedUnusable says a rollback operation failed (or was cancelled)
// because the snapshot itself cannot be restored, as refusedUnusable does
// for a refusal: by its ErrorCode, which the restorer sets on every
// rollback it ends without completing.
func failedUnusable(op *contract.Operation) bool {
	if op.ErrorCode != "" {
		return op.ErrorCode == contract.ErrorArchiveUnusable
	}
	// The fallback for operations without error_code only: those recorded
	// by restorers from before it.
	return oldUnusableText(op.Error)
}

// oldUnusableText says an error of a restorer from before error_code is
// about an unusable snapshot, by the texts it gave a damaged archive (its
// errArchive) and a snapshot that is gone. A newer restorer sets
// error_code wherever it gives them.
func oldUnusableText(msg string) bool {
	return strings.Contains(msg, "archive failed verification") || strings.Contains(msg, "no snapshot with id or name")
}

// byHand says what an operator does about a run whose rollback did not run
// or did not complete: the command that rolls back by hand, or, when the
// pre-migration snapshot cannot be restored (no command recorded), where
// to find another restore point.
func byHand(r *contract.MigrationRecord) string {
	if r.RollbackCommand != "" {
		return "roll back by hand: " + r.RollbackCommand
	}
	return fmt.Sprintf("the pre-migration snapshot cannot be restored, so no command can roll back to it: "+
		"`chromadb-rollback status` lists the newest restorable snapshot of %s/%s (`chromadb-rollback snapshot list` all of them); "+
		"make sure the one you pick predates the migration before rolling back to it by hand", r.Tenant, r.Database)
}

// control sends a command to a migration job and audits it. Jobs that do
// not listen miss it; the record and the restorer's fence are what count.
func (s *Service) control(ctx context.Context, rec *contract.MigrationRecord, command, reason, opID string) {
	c := contract.Control{Envelope: contract.NewEnvelope(contract.TypeControl), Job: rec.Job, Command: command, Reason: reason, OpID: opID}
	data, _ := json.Marshal(c)
	if err := s.nc.Publish(s.subj.Control(rec.Job), data); err != nil {
		s.log.Warn("could not send a control command", "job", rec.Job, "command", command, "err", err)
	}
	_ = s.nc.Flush()
	s.log.Info("migration job told", "job", rec.Job, "command", command, "reason", reason)
	s.emit(ctx, "", contract.AuditEvent{Action: "control." + command, Outcome: contract.OutcomeCompleted, Tenant: rec.Tenant, Database: rec.Database,
		OpID: opID, Reason: fmt.Sprintf("%s sent to migration %s: %s", command, rec.Job, reason),
		Figures: map[string]any{"job": rec.Job, "run": rec.Run, "command": command}})
}

// permanent says an error code will not change by asking again.
func permanent(code int) bool {
	switch code {
	case contract.CodeBadRequest, contract.CodeNotFound, contract.CodeTooLarge, contract.CodeVerificationFailed:
		return true
	}
	return false
}

// replyError is a service's error reply: its body, or what the headers
// said when the body is not an ErrorBody.
type replyError struct{ body contract.ErrorBody }

func (e *replyError) Error() string { return e.body.Error }

// request sends a request to a service and decodes the reply into out; an
// error reply returns its code (0 when there was no reply) and a
// *replyError.
func (s *Service) request(ctx context.Context, subject string, req, out any, timeout time.Duration) (int, error) {
	data, err := json.Marshal(req)
	if err != nil {
		return 0, err
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	msg, err := s.nc.RequestWithContext(rctx, subject, data)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return 0, fmt.Errorf("no service answers on %s", subject)
		}
		return 0, fmt.Errorf("request %s: %w", subject, err)
	}
	if h := msg.Header.Get("Nats-Service-Error-Code"); h != "" {
		code, _ := strconv.Atoi(h)
		var body contract.ErrorBody
		if json.Unmarshal(msg.Data, &body) != nil || body.Error == "" {
			body = contract.ErrorBody{Error: msg.Header.Get("Nats-Service-Error")}
		}
		body.Code = code
		return code, &replyError{body: body}
	}
	if err := json.Unmarshal(msg.Data, out); err != nil {
		return 0, fmt.Errorf("decode reply from %s: %w", subject, err)
	}
	return 0, nil
}

// getOperation reads op.<opID>; nil when there is none.
func (s *Service) getOperation(ctx context.Context, opID string) (*contract.Operation, error) {
	return bus.GetOperation(ctx, s.assets.State, opID)
}
