package watchdog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/nats-io/nats.go/jetstream"
)

// incoming is one migration event as the stream delivered it.
type incoming struct {
	seq   uint64    // stream sequence: orders events, makes audit ids
	at    time.Time // when the stream stored it: the same for every instance
	job   string
	event string
	ev    *contract.MigrationEvent
}

// handleEvent validates and applies one event. A malformed or unknown
// event is audited as rejected and terminated (never redelivered); a
// failure to reach the state bucket leaves it for redelivery.
func (s *Service) handleEvent(ctx context.Context, msg jetstream.Msg) {
	in := incoming{}
	if md, err := msg.Metadata(); err == nil {
		in.seq, in.at = md.Sequence.Stream, md.Timestamp.UTC()
	} else {
		in.at = time.Now().UTC()
	}
	var reason string
	in.job, in.event, reason = s.parseSubject(msg.Subject())
	if reason == "" {
		reason = decodeEvent(msg.Data(), &in)
	}
	if reason != "" {
		s.reject(ctx, msg, &in, reason)
		return
	}
	var err error
	switch in.event {
	case contract.EventStarted:
		reason, err = s.onStarted(ctx, &in)
	case contract.EventHeartbeat:
		reason, err = s.onHeartbeat(ctx, &in)
	case contract.EventValidation:
		reason, err = s.onValidation(ctx, &in)
	case contract.EventCompleted, contract.EventFailed:
		reason, err = s.onEnded(ctx, &in)
	}
	if errors.Is(err, errUnreadable) {
		reason, err = err.Error(), nil // it would block every later event
	}
	if err != nil {
		s.log.Warn("migration event not handled; it will be redelivered", "subject", msg.Subject(), "seq", in.seq, "err", err)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	if reason != "" {
		s.reject(ctx, msg, &in, reason)
		return
	}
	if err := msg.Ack(); err != nil {
		s.log.Warn("ack of a migration event failed; its redelivery changes nothing", "seq", in.seq, "err", err)
	}
	if in.event == contract.EventStarted {
		s.pin(ctx, in.job, true) // the ticker looks again while it is not found
	}
}

// parseSubject splits <prefix>.migration.<job>.<event>.
func (s *Service) parseSubject(subject string) (job, event, reason string) {
	base := strings.TrimSuffix(s.subj.MigrationEvent("", ""), ".")
	rest, ok := strings.CutPrefix(subject, base)
	if ok {
		job, event, ok = strings.Cut(rest, ".")
	}
	if !ok || job == "" || event == "" {
		return job, event, fmt.Sprintf("subject %q is not %s<job>.<event>", subject, base)
	}
	return job, event, ""
}

// decodeEvent parses and validates the body; it returns why it is rejected.
func decodeEvent(data []byte, in *incoming) string {
	if len(data) > maxEventBytes {
		return fmt.Sprintf("event is %d bytes; at most %d", len(data), maxEventBytes)
	}
	if _, known := contract.MigrationEventTypes[in.event]; !known {
		// Say what is wrong with the subject before looking at the body.
		return contract.ValidateMigrationEvent(in.event, in.job, &contract.MigrationEvent{}).Error()
	}
	var ev contract.MigrationEvent
	if err := json.Unmarshal(data, &ev); err != nil {
		return fmt.Sprintf("malformed JSON: %v", err)
	}
	if in.event == contract.EventValidation {
		// Absent, either would read as 0: a misspelt valid_chunks as a
		// total loss, which rolls the database back.
		var present struct {
			Valid *int64 `json:"valid_chunks"`
			Total *int64 `json:"total_chunks"`
		}
		_ = json.Unmarshal(data, &present)
		switch {
		case present.Valid == nil:
			return "valid_chunks is missing (send 0 when no record is valid): a validation names both valid_chunks and total_chunks"
		case present.Total == nil:
			return "total_chunks is missing: a validation names both valid_chunks and total_chunks"
		}
	}
	if err := contract.ValidateMigrationEvent(in.event, in.job, &ev); err != nil {
		return err.Error()
	}
	if !jobNameRE.MatchString(in.job) {
		return fmt.Sprintf("job %q cannot name a state key: use 1-200 letters, digits, '-', '_' or '='", in.job)
	}
	in.ev = &ev
	return ""
}

// reject audits a rejected event and terminates it.
func (s *Service) reject(ctx context.Context, msg jetstream.Msg, in *incoming, reason string) {
	action := "migration.event"
	if _, known := contract.MigrationEventTypes[in.event]; known {
		action = "migration." + in.event
	}
	s.log.Warn("migration event rejected", "subject", msg.Subject(), "seq", in.seq, "reason", reason)
	id := ""
	if in.seq > 0 {
		id = fmt.Sprintf("ev%d_rejected", in.seq)
	}
	s.emit(ctx, id, contract.AuditEvent{Action: action, Outcome: contract.OutcomeRejected, Error: reason,
		Reason:  "migration event rejected: " + reason,
		Figures: map[string]any{"subject": msg.Subject(), "stream_seq": in.seq, "job": in.job, "event": in.event}})
	_ = msg.Term()
}

func noRun(job string) string {
	return fmt.Sprintf("no run of job %q is known: publish its started event first", job)
}

func (s *Service) onStarted(ctx context.Context, in *incoming) (string, error) {
	ev := in.ev
	limit := ev.TimeLimit(s.cfg.DefaultTimeLimit)
	var stale bool
	var inProgress *contract.MigrationRecord
	rec, _, err := s.update(ctx, in.job, func(cur *contract.MigrationRecord) *contract.MigrationRecord {
		stale, inProgress = false, nil
		if cur != nil {
			switch {
			case cur.Run == in.seq:
				return nil // redelivered: already recorded
			case cur.Run > in.seq:
				stale = true
				return nil
			case busy(cur):
				inProgress = cur
				return nil
			}
		}
		return &contract.MigrationRecord{
			Tenant: ev.Tenant, Database: ev.Database, Status: contract.MigrationRunning,
			SnapshotID: ev.SnapshotID, TakeSnapshot: ev.SnapshotID == "" && ev.TakeSnapshot,
			StartedAt: in.at, Deadline: in.at.Add(limit), Run: in.seq,
			TimeLimitSeconds: limit.Seconds(), Collections: ev.Collections,
		}
	})
	switch {
	case err != nil:
		return "", err
	case inProgress != nil:
		return fmt.Sprintf("job %q already has a run in progress (started %s, status %s, rollback %q): end it first (its job sends completed or failed; "+
			"if the job is gone, publish its failed event on %s in its place: docs/runbook.md, Ending a run), or use another job name",
			in.job, inProgress.StartedAt.Format(time.RFC3339), inProgress.Status, inProgress.RollbackStatus, s.subj.MigrationEvent(in.job, contract.EventFailed)), nil
	case stale:
		s.log.Info("started event of an earlier run ignored", "job", in.job, "seq", in.seq)
		return "", nil
	}
	// The snapshot the job names is pinned before the start is audited
	// when it can be found now, so that the event names its id, as every
	// later event of the run does: one audit-log --snapshot <id> query
	// finds the run. An unusable one is alerted after the event.
	if needsPin(rec) {
		rec.PinnedSnapshotID = s.pin(ctx, in.job, false)
	}
	snap := rec.SnapshotID
	switch {
	case rec.TakeSnapshot:
		snap = "(the watchdog takes " + snapshotName(in.job) + ")"
	case rec.PinnedSnapshotID != "" && rec.PinnedSnapshotID != rec.SnapshotID:
		snap = fmt.Sprintf("%s (%s)", rec.PinnedSnapshotID, rec.SnapshotID)
	}
	figures := map[string]any{"job": in.job, "run": rec.Run, "deadline": rec.Deadline, "time_limit_seconds": rec.TimeLimitSeconds,
		"take_snapshot": rec.TakeSnapshot, "collections": rec.Collections}
	if rec.SnapshotID != "" {
		figures["snapshot"] = rec.SnapshotID
	}
	s.emit(ctx, fmt.Sprintf("ev%d", in.seq), contract.AuditEvent{
		Action: "migration.started", Outcome: contract.OutcomeStarted, Tenant: rec.Tenant, Database: rec.Database, SnapshotID: restorePoint(rec),
		Reason: fmt.Sprintf("migration %s started on %s/%s; pre-migration snapshot %s; time limit %s, deadline %s",
			in.job, rec.Tenant, rec.Database, snap, limit, rec.Deadline.Format(time.RFC3339)),
		Figures: figures,
	})
	s.log.Info("migration started", "job", in.job, "run", rec.Run, "tenant", rec.Tenant, "database", rec.Database, "deadline", rec.Deadline)
	if others := s.othersOn(rec.Tenant, rec.Database, in.job); len(others) > 0 {
		s.log.Warn("another migration runs on the same database: a rollback for either undoes the other's writes too (status alert migrations_overlap)",
			"job", in.job, "tenant", rec.Tenant, "database", rec.Database, "others", others)
	}
	if rec.TakeSnapshot {
		s.startAct(ctx, in.job)
	}
	s.wake() // pauses in force apply to the new run too
	// A rollback that fences the database paused the runs it found there
	// when it raised the fence; this one came later and must not write
	// into the database being restored either. (Written before this read,
	// the record is seen by a rollback that raises its fence after it.)
	if err := s.pauseIfFenced(ctx, rec); err != nil {
		return "", err // redelivered: the record is kept, the check made again
	}
	return "", nil
}

func (s *Service) onHeartbeat(ctx context.Context, in *incoming) (string, error) {
	missing := false
	_, _, err := s.update(ctx, in.job, func(cur *contract.MigrationRecord) *contract.MigrationRecord {
		missing = cur == nil
		if cur == nil || in.seq < cur.Run || ended(cur) || !cur.LastHeartbeat.Before(in.at) {
			return nil
		}
		next := *cur
		next.LastHeartbeat, next.Phase, next.DoneRecords = in.at, in.ev.Phase, in.ev.DoneRecords
		return &next
	})
	if err != nil {
		return "", err
	}
	if missing {
		return noRun(in.job), nil
	}
	return "", nil
}

func (s *Service) onValidation(ctx context.Context, in *incoming) (string, error) {
	ev := in.ev
	th := s.cfg.ValidationThreshold
	ratio := float64(ev.ValidChunks) / float64(ev.TotalChunks)
	// A collection the job reports more than once (per batch or per
	// pass, say) is named once: the restorer refuses a rollback that
	// names a collection twice, which would leave the loss in place.
	var failedCols []string
	for _, c := range ev.PerCollection {
		if c.TotalChunks > 0 && float64(c.ValidChunks)/float64(c.TotalChunks) < th && !slices.Contains(failedCols, c.Collection) {
			failedCols = append(failedCols, c.Collection)
		}
	}
	// The validation is audited before the record that fires its trigger
	// is written: a tick (of this or another instance) acts on that record
	// and audits the trigger, which must come after the validation in the
	// audit stream. The verdict is read from the record as it was; the
	// event id makes a redelivered validation audited once.
	cur, _, err := s.get(ctx, in.job)
	if err != nil {
		return "", err
	}
	if cur != nil && in.seq > cur.Run && !cur.EndedAt.IsZero() {
		// Not acted on: the job said its run was over, its snapshot is no
		// longer held for it, and others may have written since.
		return validationAfterEnd(in.job, cur), nil
	}
	// With PartialOnCollectionFailure a reported collection under the
	// threshold fires the trigger too, for that collection, however well
	// the others did: a healthy total must not hide it.
	fires := ratio < th || (s.cfg.PartialOnCollectionFailure && len(failedCols) > 0)
	under := fmt.Sprintf("is under the threshold %g", th)
	if ratio >= th {
		under = fmt.Sprintf("meets the threshold %g, but %s under it", th, strings.Join(failedCols, ", "))
	}
	if cur != nil && in.seq >= cur.Run {
		verdict := fmt.Sprintf("meets the threshold %g", th)
		switch {
		case !fires:
		case cur.Trigger == "" && cur.Status != contract.MigrationRolledBack:
			verdict = fmt.Sprintf("%s: the validation trigger fires (rollback %s)", under, rollbackOpID(cur, contract.TriggerValidation))
		case cur.Trigger == contract.TriggerValidation:
			verdict = fmt.Sprintf("%s: the validation trigger fires (rollback %s)", under, cur.RollbackOpID)
		case cur.Trigger != "":
			verdict = fmt.Sprintf("%s, but the %s trigger already fired for this run", under, cur.Trigger)
		default:
			verdict = fmt.Sprintf("%s, but the run was already rolled back", under)
		}
		s.emit(ctx, fmt.Sprintf("ev%d", in.seq), contract.AuditEvent{
			Action: "migration.validation", Outcome: contract.OutcomeCompleted, Tenant: cur.Tenant, Database: cur.Database, SnapshotID: restorePoint(cur),
			Reason: fmt.Sprintf("migration %s: validation ratio %.4f (%d of %d chunks valid) %s", in.job, ratio, ev.ValidChunks, ev.TotalChunks, verdict),
			Figures: map[string]any{"job": in.job, "run": cur.Run, "valid_chunks": ev.ValidChunks, "total_chunks": ev.TotalChunks,
				"ratio": ratio, "threshold": th, "failed_collections": failedCols},
		})
	}
	var missing, stale bool
	var over *contract.MigrationRecord
	rec, _, err := s.update(ctx, in.job, func(cur *contract.MigrationRecord) *contract.MigrationRecord {
		missing, stale, over = cur == nil, false, nil
		if cur == nil {
			return nil
		}
		if in.seq < cur.Run {
			stale = true
			return nil
		}
		if in.seq > cur.Run && !cur.EndedAt.IsZero() {
			over = cur
			return nil
		}
		if cur.Validation != nil && !cur.Validation.At.Before(in.at) {
			return nil // redelivered, or older than the figures kept
		}
		next := *cur
		next.Validation = &contract.MigrationValidation{ValidChunks: ev.ValidChunks, TotalChunks: ev.TotalChunks, Ratio: ratio,
			Threshold: th, PerCollection: ev.PerCollection, FailedCollections: failedCols, At: in.at}
		if fires && next.Trigger == "" && next.Status != contract.MigrationRolledBack {
			reason := fmt.Sprintf("validation ratio %.4f (%d of %d chunks valid) %s", ratio, ev.ValidChunks, ev.TotalChunks, under)
			var cols []string
			if s.cfg.PartialOnCollectionFailure && len(failedCols) > 0 {
				if why := restUnder(ev, failedCols, th); why != "" {
					reason += fmt.Sprintf("; the whole database is rolled back, not only the collections under it (%s): %s",
						strings.Join(failedCols, ", "), why)
				} else {
					cols = failedCols
					reason += "; partial rollback of the collections under it: " + strings.Join(failedCols, ", ")
				}
			}
			s.fire(&next, contract.TriggerValidation, reason, cols)
		}
		return &next
	})
	switch {
	case err != nil:
		return "", err
	case missing:
		return noRun(in.job), nil
	case over != nil:
		return validationAfterEnd(in.job, over), nil
	case stale:
		s.log.Info("validation of an earlier run ignored", "job", in.job, "seq", in.seq)
		return "", nil
	}
	if rollbackPending(rec) {
		s.startAct(ctx, in.job)
	}
	return "", nil
}

// restUnder says why rolling back only the failed collections would leave
// a loss in place ("" when it would not): the run's figures without theirs
// are still under the threshold th (the loss is also in collections the job
// did not report, or under it), or do not add up.
func restUnder(ev *contract.MigrationEvent, failed []string, th float64) string {
	valid, total := ev.ValidChunks, ev.TotalChunks
	seen := map[string]bool{}
	for _, c := range ev.PerCollection {
		if slices.Contains(failed, c.Collection) && !seen[c.Collection] {
			seen[c.Collection] = true
			valid, total = valid-c.ValidChunks, total-c.TotalChunks
		}
	}
	switch {
	case valid == 0 && total == 0:
		return "" // they are the whole run
	case total <= 0 || valid < 0 || valid > total:
		return fmt.Sprintf("their figures do not add up with the total (%d of %d valid)", ev.ValidChunks, ev.TotalChunks)
	case float64(valid)/float64(total) < th:
		return fmt.Sprintf("without them the run is still under the threshold (%d of %d chunks valid)", valid, total)
	}
	return ""
}

// validationAfterEnd is why a validation published after its run's end is
// rejected: the protocol has it before completed or failed.
func validationAfterEnd(job string, r *contract.MigrationRecord) string {
	return fmt.Sprintf("the run of job %q already ended (%s at %s): a validation after completed or failed is not acted on, and triggers no rollback; "+
		"report the validation before the end (to roll back now, do it by hand: docs/runbook.md, Manual rollback)",
		job, r.Status, r.EndedAt.Format(time.RFC3339))
}

// onEnded records a completed or failed event.
func (s *Service) onEnded(ctx context.Context, in *incoming) (string, error) {
	failed := in.event == contract.EventFailed
	var missing, stale bool
	rec, written, err := s.update(ctx, in.job, func(cur *contract.MigrationRecord) *contract.MigrationRecord {
		missing, stale = cur == nil, false
		if cur == nil {
			return nil
		}
		if in.seq < cur.Run {
			stale = true
			return nil
		}
		if !cur.EndedAt.IsZero() {
			return nil // already ended: a duplicate or a late second end
		}
		next := *cur
		next.EndedAt, next.PausedBy = in.at, nil
		if next.Status != contract.MigrationRolledBack {
			next.Status = contract.MigrationCompleted
			if failed {
				next.Status = contract.MigrationFailed
			}
		}
		if failed {
			next.Error = in.ev.Error
			if s.cfg.RollbackOnFailure && next.Trigger == "" && cur.Status != contract.MigrationRolledBack {
				s.fire(&next, contract.TriggerFailure, "the job reported failed: "+in.ev.Error, nil)
			}
		}
		return &next
	})
	switch {
	case err != nil:
		return "", err
	case missing:
		return noRun(in.job), nil
	case stale:
		s.log.Info("end of an earlier run ignored", "job", in.job, "seq", in.seq)
		return "", nil
	}
	if !written && !rec.EndedAt.Equal(in.at) {
		// Not a redelivery of the end that was recorded: audited, so the
		// trail shows that the job contradicted or repeated itself.
		return fmt.Sprintf("the run of job %q already ended (%s at %s): this %s event changes nothing",
			in.job, rec.Status, rec.EndedAt.Format(time.RFC3339), in.event), nil
	}
	ev := contract.AuditEvent{Action: "migration." + in.event, Outcome: contract.OutcomeCompleted, Tenant: rec.Tenant, Database: rec.Database,
		SnapshotID: restorePoint(rec), Figures: map[string]any{"job": in.job, "run": rec.Run, "status": rec.Status}}
	if rec.Validation != nil {
		ev.Figures["ratio"], ev.Figures["threshold"] = rec.Validation.Ratio, rec.Validation.Threshold
	}
	var what string
	switch {
	case rec.Trigger == "" && failed:
		what = "no automatic rollback (a failed job is rolled back only with --rollback-on-failure)"
	case rec.Trigger == "" && rec.Validation != nil:
		what = fmt.Sprintf("no trigger fired (validation ratio %.4f, threshold %g)", rec.Validation.Ratio, rec.Validation.Threshold)
	case rec.Trigger == "":
		what = "no trigger fired (no validation was reported)"
	default:
		what = fmt.Sprintf("the %s trigger fired: %s; rollback %s is %s", rec.Trigger, rec.TriggerReason, rec.RollbackOpID, rec.RollbackStatus)
		ev.OpID = rec.RollbackOpID
	}
	if failed {
		ev.Outcome, ev.Error = contract.OutcomeFailed, in.ev.Error
		ev.Reason = fmt.Sprintf("migration %s failed: %s; %s", in.job, in.ev.Error, what)
	} else {
		ev.Reason = fmt.Sprintf("migration %s completed; %s", in.job, what)
	}
	s.emit(ctx, fmt.Sprintf("ev%d", in.seq), ev)
	if rollbackPending(rec) {
		s.startAct(ctx, in.job)
	}
	return "", nil
}

// fire records a trigger in r: at most one per run, decided by the
// compare-and-set that writes r. The rollback itself is asked for after.
func (s *Service) fire(r *contract.MigrationRecord, trigger, reason string, collections []string) {
	r.Trigger, r.TriggerReason, r.TriggeredAt = trigger, reason, time.Now().UTC()
	r.RollbackOpID = rollbackOpID(r, trigger)
	r.RollbackStatus = contract.RollbackRequested
	r.RollbackCollections = collections
}

// othersOn names the runs not yet ended on tenant/database other than
// job's, as the watched records have them (this is only a warning; status
// reads the bucket).
func (s *Service) othersOn(tenant, database, job string) []string {
	var out []string
	for _, r := range s.cached() {
		if r.Job != job && r.Tenant == tenant && r.Database == database && !ended(&r) {
			out = append(out, r.Job)
		}
	}
	return out
}
