package restorer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/fence"
	"github.com/nats-io/nats.go/jetstream"
)

// Phases of a rollback, in its operation record and progress messages.
const (
	phaseVerifying        = "verifying"
	phaseSafetySnapshot   = "safety_snapshot"
	phaseRestoring        = "restoring"
	phaseSwapping         = "swapping"
	phaseDropping         = "dropping"
	phaseVerifyingRestore = "verifying_restore"
)

// Job-ending errors with their own handling.
var (
	errCancelled = errors.New("rollback cancelled")
	errVerify    = errors.New("restored data does not match the snapshot")
	errLeaseLost = errors.New("lease lost")
	// errSuperseded: a newer delivery of the same command took the lease;
	// this attempt stops and leaves everything to it.
	errSuperseded = errors.New("superseded by a newer attempt")
)

// job is one attempt at a rollback command.
type job struct {
	s        *Service
	cmd      contract.RollbackCommand
	attempt  int
	log      *slog.Logger
	progress *bus.ProgressPublisher
	ev       contract.AuditEvent

	sp    *spec
	lease *fence.Lease

	mu       sync.Mutex // guards op, ck and report
	op       contract.Operation
	ck       *checkpoint
	report   contract.RestoreReport
	canceler *contract.OperationRef
	current  *collWriter // the collection being written
	// finishing is the collection verified and swapped in behind current.
	finishing *collWriter
	// staged are collections staged and verified, waiting for the end of a
	// streamed archive to be swapped in (spec.streamed).
	staged []*collWriter
	saveMu sync.Mutex       // serializes checkpoint saves
	mark   time.Time        // when write time was last counted
	diffs  map[int][]string // differences found, by archive collection index
}

// handleJob runs one rollback command to its end: ack when it completed,
// failed or was cancelled; a nak when the service shuts down, so the
// command is redelivered at once and resumed from its checkpoint.
func (s *Service) handleJob(ctx context.Context, msg jetstream.Msg) {
	var cmd contract.RollbackCommand
	if err := json.Unmarshal(msg.Data(), &cmd); err != nil || contract.ValidToken(cmd.OpID) != nil {
		if err == nil {
			err = fmt.Errorf("op id %q is not a valid token", cmd.OpID)
		}
		s.log.Error("malformed rollback command dropped", "err", err, "subject", msg.Subject())
		_ = s.audit.Emit(ctx, contract.AuditEvent{Action: "rollback", Outcome: contract.OutcomeRejected,
			Error: fmt.Sprintf("malformed rollback command on %s: %v", msg.Subject(), err)})
		_ = msg.Term()
		return
	}
	delivered := 1 // deliveries of this copy of the command
	if md, err := msg.Metadata(); err == nil {
		delivered = int(md.NumDelivered)
	}
	attempt := cmd.PriorAttempts + delivered
	j := &job{
		s: s, cmd: cmd, attempt: attempt,
		log:      s.log.With("op_id", cmd.OpID, "attempt", attempt),
		progress: bus.NewProgressPublisher(s.nc, s.subj, cmd.OpID),
		ev: contract.AuditEvent{Action: "rollback", Actor: cmd.Request.Actor, Reason: cmd.Request.Reason, OpID: cmd.OpID,
			SnapshotID: cmd.Request.SnapshotID},
	}
	op, err := s.getOperation(ctx, cmd.OpID)
	if err != nil {
		j.log.Warn("cannot read the operation; the command will be redelivered", "err", err)
		_ = msg.NakWithDelay(s.cfg.AckWait)
		return
	}
	if op != nil && contract.Ended(op.Status) {
		j.log.Info("rollback already ended; redelivered command acknowledged", "status", op.Status)
		_ = msg.Ack()
		return
	}
	if op == nil {
		op = &contract.Operation{OpID: cmd.OpID, SnapshotID: cmd.Request.SnapshotID, Actor: cmd.Request.Actor}
	}
	j.op = *op
	j.op.Attempt, j.op.Instance = attempt, s.cfg.Instance

	// Keep the job and the lease while it runs; a dead worker stops both.
	jobCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go j.keepAlive(jobCtx, cancel, msg)

	start := time.Now()
	err = j.run(jobCtx)
	if ctx.Err() != nil {
		// A graceful stop (SIGTERM: a rolling restart, a drain) gives the
		// command back now, so another instance resumes it from the
		// checkpoint at once instead of after AckWait; the lease and fence
		// are kept for it. A worker killed outright cannot: its command
		// comes back after AckWait.
		if delivered >= s.cfg.MaxDeliver && s.handOver(msg, cmd, attempt, j.log) {
			return
		}
		_ = msg.Nak()
		_ = s.nc.FlushTimeout(time.Second)
		j.log.Warn("rollback interrupted by shutdown; handed back to be resumed by another instance", "err", err)
		return
	}
	if cause := context.Cause(jobCtx); cause != nil && (err == nil || errors.Is(cause, errLeaseLost)) {
		err = cause // the lease was lost: say so rather than "context canceled"
	}
	if cause := context.Cause(jobCtx); errors.Is(cause, errSuperseded) {
		// The work queue gave the command to another attempt (this one
		// looked dead), which holds the lease now: finishing here would
		// lower its fence and undo its staging. Its delivery acks.
		j.log.Warn("a newer attempt of this rollback took over; this one stops without touching its work", "err", cause)
		return
	}
	if retryable(err) && delivered < s.cfg.MaxDeliver {
		// JetStream did not answer for longer than a call retries (a
		// leader election that dragged on): keep the lease, the fence and
		// what is staged, and let the next delivery, here or on another
		// instance, resume from the checkpoint.
		delay := min(time.Duration(attempt)*2*time.Second, s.cfg.AckWait)
		j.log.Warn("rollback attempt interrupted; it will be redelivered and resumed", "err", err, "retry_in", delay)
		_ = msg.NakWithDelay(delay)
		return
	}
	j.finish(ctx, err, time.Since(start))
	if err != nil && !errors.Is(err, errCancelled) {
		_ = msg.Term()
		return
	}
	if err := msg.DoubleAck(ctx); err != nil {
		j.log.Warn("ack failed; a redelivery will find the operation ended", "err", err)
	}
}

// handOver enqueues a new copy of cmd that goes on from attempt, then acks
// msg, its last delivery the work queue allows (bus.HandOver).
func (s *Service) handOver(msg jetstream.Msg, cmd contract.RollbackCommand, attempt int, log *slog.Logger) bool {
	next := cmd
	next.Envelope = contract.NewEnvelope(contract.TypeRollbackCommand)
	next.PriorAttempts = attempt
	data, _ := json.Marshal(next)
	return bus.HandOver(s.assets.JS, msg, s.subj.Command("rollback"), fmt.Sprintf("%s.after%d", cmd.OpID, attempt), data, "rollback", attempt, log)
}

// retryable says a job that failed with err may succeed when its command
// is delivered again and resumes from its checkpoint: JetStream did not
// answer for longer than a call retries (bus.Retry). A Chroma failure is
// final here (its client already retried it for a while), as are a damaged
// archive, a restore that does not verify, a cancel or a lost lease.
func retryable(err error) bool {
	if err == nil || errors.Is(err, errCancelled) || errors.Is(err, errVerify) || errors.Is(err, errArchive) ||
		errors.Is(err, errLeaseLost) {
		return false
	}
	var ae *chroma.APIError
	var ue *url.Error // a request to Chroma that got no answer
	if errors.As(err, &ae) || errors.As(err, &ue) {
		return false
	}
	return bus.Transient(err)
}

// errorCode is the contract.Operation.ErrorCode of a rollback that ended
// with err: the one of the refusal it met (resolve's apiError), else
// whether its archive is unusable, else ErrorOther. Never empty: an
// operation without one was recorded by an older restorer.
func errorCode(err error) string {
	var ae *apiError
	if errors.As(err, &ae) && ae.errorCode != "" {
		return ae.errorCode
	}
	if archiveUnusable(err) {
		return contract.ErrorArchiveUnusable
	}
	return contract.ErrorOther
}

// keepAlive sends in-progress acks and renews the lease until ctx ends. A
// lost lease cancels the job.
func (j *job) keepAlive(ctx context.Context, cancel context.CancelCauseFunc, msg jetstream.Msg) {
	ack := time.NewTicker(j.s.cfg.AckWait / 3)
	defer ack.Stop()
	renew := time.NewTicker(j.s.cfg.LeaseTTL / 3)
	defer renew.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ack.C:
			_ = msg.InProgress()
		case <-renew.C:
			j.mu.Lock()
			l := j.lease
			j.mu.Unlock()
			if l == nil {
				continue
			}
			if err := l.Renew(ctx, j.s.cfg.LeaseTTL); err != nil {
				if errors.Is(err, fence.ErrSuperseded) {
					cancel(fmt.Errorf("%w: %v", errSuperseded, err))
					return
				}
				if errors.Is(err, fence.ErrLost) {
					cancel(fmt.Errorf("%w: %v", errLeaseLost, err))
					return
				}
				j.log.Warn("lease renewal failed; retrying", "err", err)
			}
		}
	}
}

// run does the rollback; every step is idempotent, so a redelivered
// command runs it again from its checkpoint.
func (j *job) run(ctx context.Context) error {
	s := j.s
	ck, err := s.loadCheckpoint(ctx, j.cmd.OpID)
	if err != nil {
		return err
	}
	j.mu.Lock()
	j.ck = ck
	j.mu.Unlock()
	if err := j.checkCancel(ctx); err != nil {
		return err
	}
	req := j.cmd.Request
	if req.SnapshotID == "" {
		req.SnapshotID = j.op.SnapshotID
	}
	// The lease first: verifying a large archive can outlast the lease
	// taken when the rollback was started.
	if p := j.op.Plan; p != nil {
		if err := j.takeLease(ctx, p.ChromaURL, p.Tenant, p.Database); err != nil {
			return err
		}
	}
	j.setPhase(ctx, phaseVerifying)
	sp, e := s.resolve(ctx, &req, true, true)
	if e != nil {
		return e // its errorCode is the operation's
	}
	j.sp = sp
	defer sp.closeStream() // when the restore did not take it
	j.ev.SnapshotID, j.ev.Tenant, j.ev.Database = sp.m.SnapshotID, sp.tenant, sp.database
	if err := j.takeLease(ctx, sp.server(), sp.tenant, sp.database); err != nil {
		return err
	}

	if ck == nil {
		// The first attempt fixes the plan against what it finds now; a
		// redelivered one must not re-plan over its own half-done work.
		// The plan the API answered with is what it found now when it was
		// made moments ago: the lease was taken right after it.
		plan := j.freshPlan(sp)
		if plan == nil {
			var e *apiError
			if plan, e = s.plan(ctx, sp); e != nil {
				return e
			}
		}
		ck = &checkpoint{OpID: j.cmd.OpID, Plan: plan, Collections: map[int]*collCheckpoint{}, StartedAt: time.Now().UTC()}
		if err := s.saveCheckpoint(ctx, ck); err != nil {
			return err
		}
	}
	j.mu.Lock()
	j.ck = ck
	j.op.Status, j.op.Plan = contract.StatusRunning, ck.Plan
	j.op.SnapshotID, j.op.Tenant, j.op.Database = sp.m.SnapshotID, sp.tenant, sp.database
	j.op.Warnings = ck.Plan.Warnings
	j.report.SafetySnapshotID = ck.SafetySnapshotID
	j.mu.Unlock()
	j.putOp(ctx)
	ev := j.ev
	ev.Outcome = contract.OutcomeStarted
	ev.Figures = j.figures(map[string]any{"attempt": j.attempt, "mode": ck.Plan.Mode, "write_records": ck.Plan.WriteRecords,
		"in_place": ck.Plan.InPlace, "drop_extra": ck.Plan.DropExtra})
	_ = s.audit.Emit(ctx, ev)

	// The fence and the migrations paused are those of the restorer's own
	// Chroma: the gate stands in front of it and the jobs write into it.
	// Into another server, raising it would make the own database of the
	// same name read-only and pause its migrations, guarding nothing.
	if sp.own {
		if err := fence.Raise(ctx, s.assets.State, contract.Fence{Tenant: sp.tenant, Database: sp.database, OpID: j.cmd.OpID,
			Reason: fmt.Sprintf("rollback %s to snapshot %s (%s)", j.cmd.OpID, sp.m.SnapshotID, sp.m.Name), Actor: req.Actor}); err != nil {
			return err
		}
		if err := j.pauseJobs(ctx); err != nil {
			return err
		}
		j.step(ctx, "fence raised", map[string]any{"paused_jobs": ck.Paused})
		if q := s.cfg.Quiesce; q != nil {
			qctx, cancel := context.WithTimeout(ctx, quiesceWait)
			err := q(qctx, sp.tenant, sp.database)
			cancel()
			if err != nil {
				return fmt.Errorf("the read-only gate did not quiesce %s/%s after the fence was raised (%w): writes it admitted may still land, so nothing was changed", sp.tenant, sp.database, err)
			}
		}
	}

	if ck.Plan.SafetySnapshot && !ck.SafetyDone {
		// Not kept open through a snapshot of unknown length.
		sp.closeStream()
		j.setPhase(ctx, phaseSafetySnapshot)
		if err := j.safetySnapshot(ctx); err != nil {
			return err
		}
	}
	if err := j.ensureDatabase(ctx); err != nil {
		return err
	}
	if err := j.restoreAll(ctx); err != nil {
		return err
	}
	if err := j.dropExtras(ctx); err != nil {
		return err
	}
	return j.verifyRestore(ctx)
}

// planReuseAge is how old the plan made when a rollback was started may be
// for its job to carry it out as it is, rather than plan again.
const planReuseAge = 2 * time.Second

// quiesceWait bounds Config.Quiesce: the gate sees a fence within
// milliseconds, and a write it admitted ends with Chroma's answer.
const quiesceWait = 2 * time.Minute

// freshPlan returns the plan the op was started with if it was made less
// than planReuseAge ago for the snapshot and target sp resolves to, nil
// otherwise.
func (j *job) freshPlan(sp *spec) *contract.RollbackPlan {
	p := j.op.Plan
	if p == nil || p.SnapshotID != sp.m.SnapshotID || p.Tenant != sp.tenant || p.Database != sp.database || p.Mode != sp.mode {
		return nil
	}
	if age := time.Since(p.Time); age < 0 || age > planReuseAge {
		return nil
	}
	return p
}

// takeLease takes (or re-takes) the lease of tenant/database on the Chroma
// at server ("" for the own) for the op.
func (j *job) takeLease(ctx context.Context, server, tenant, database string) error {
	j.mu.Lock()
	held := j.lease
	j.mu.Unlock()
	if held != nil {
		if v := held.Value(); v.Tenant != tenant || v.Database != database || v.Server != server {
			return fmt.Errorf("the rollback was planned for %s/%s but now resolves to %s/%s", v.Tenant, v.Database, tenant, database)
		}
		return nil
	}
	lease, err := fence.Acquire(ctx, j.s.assets.State, contract.Lease{Tenant: tenant, Database: database, Holder: j.cmd.OpID,
		Kind: "rollback", Actor: j.cmd.Request.Actor, Server: server}, j.s.cfg.LeaseTTL)
	if err != nil {
		return fmt.Errorf("take the lease: %w", err)
	}
	j.mu.Lock()
	j.lease = lease
	j.mu.Unlock()
	return nil
}

// scope is the tenant/database the job guards, as far as it is known.
func (j *job) scope() (tenant, database string, ok bool) {
	tenant, database, _, ok = j.scopeOn()
	return tenant, database, ok
}

// scopeOn is scope with the Chroma it is on: "" for the restorer's own,
// else the other server's URL (the plan's chroma_url).
func (j *job) scopeOn() (tenant, database, server string, ok bool) {
	switch {
	case j.sp != nil:
		return j.sp.tenant, j.sp.database, j.sp.server(), true
	case j.ck != nil && j.ck.Plan != nil:
		return j.ck.Plan.Tenant, j.ck.Plan.Database, j.ck.Plan.ChromaURL, true
	case j.op.Plan != nil:
		return j.op.Plan.Tenant, j.op.Plan.Database, j.op.Plan.ChromaURL, true
	}
	return "", "", "", false
}

// finish records how the job ended, then lowers the fence, resumes the
// paused jobs and releases the lease.
func (j *job) finish(ctx context.Context, jobErr error, took time.Duration) {
	s := j.s
	status, outcome := contract.StatusCompleted, contract.OutcomeCompleted
	switch {
	case errors.Is(jobErr, errCancelled):
		status, outcome = contract.StatusCancelled, contract.OutcomeFailed
		j.cleanup(ctx)
	case jobErr != nil:
		status, outcome = contract.StatusFailed, contract.OutcomeFailed
		j.cleanup(ctx)
	}
	// Only now: with Chroma away, the cleanup spends all of its own time
	// on retries, and what follows must still be done.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.finishTimeout)
	defer cancel()
	j.mu.Lock()
	tenant, database, server, scoped := j.scopeOn()
	ck := j.ck
	if ck != nil {
		if j.report.SafetySnapshotID == "" { // an attempt that stopped before it read the checkpoint's
			j.report.SafetySnapshotID = ck.SafetySnapshotID
		}
		if !ck.SafetyDone {
			// Asked for but not made (it failed, as with no room in the
			// object store, or the rollback stopped first): there is
			// nothing to roll back to, and nothing was changed. The
			// error names it.
			j.report.SafetySnapshotID = ""
		}
		j.report.RecordsWritten = ck.RecordsWritten
		if ck.WriteSeconds > 0 {
			j.report.AddRate = float64(ck.RecordsWritten) / ck.WriteSeconds
		}
		j.report.Seconds = time.Since(ck.StartedAt).Seconds()
		if j.sp != nil { // an attempt that stopped before reading the snapshot cannot name its collections
			j.report.Collections = j.collectionReports()
		}
	}
	j.report.Verified = status == contract.StatusCompleted
	j.report.Cancelled = status == contract.StatusCancelled
	rep := j.report
	j.op.Status, j.op.Phase = status, status
	if ck != nil {
		j.op.Restore = &rep
	}
	if jobErr != nil {
		j.op.Error, j.op.FailureReason, j.op.ErrorCode = jobErr.Error(), failureReason(jobErr), errorCode(jobErr)
		if status == contract.StatusCancelled && j.canceler != nil && j.canceler.Actor != "" {
			j.op.Error = fmt.Sprintf("%v by %s", jobErr, j.canceler.Actor)
		}
	}
	opErr := j.op.Error
	lease := j.lease
	j.mu.Unlock()

	// Everything else first: whoever sees the final status sees the fence
	// lowered, the lease released and the outcome audited.
	if scoped && server == "" { // never raised into another server
		// Lower only removes this op's own fence: a no-op if it was never raised.
		if err := fence.Lower(cctx, s.assets.State, tenant, database, j.cmd.OpID); err != nil {
			j.log.Warn("could not lower the fence", "err", err)
		}
	}
	j.resumeJobs(cctx)
	switch {
	case lease != nil:
		if err := lease.Release(cctx); err != nil {
			j.log.Warn("could not release the lease", "err", err)
		}
	case scoped:
		// The lease taken when the rollback was started.
		_ = fence.ReleaseOn(cctx, s.assets.State, server, tenant, database, j.cmd.OpID)
	}
	if status == contract.StatusCompleted && ck != nil && j.sp != nil {
		var values int64 // the plan's, for the records written
		if w := ck.Plan.WriteRecords; w > 0 {
			values = int64(math.Round(float64(writeValues(ck.Plan)) * float64(ck.RecordsWritten) / float64(w)))
		}
		s.recordAddRate(cctx, j.sp.targetURL, writeCollections(ck.Plan), ck.RecordsWritten, values, ck.WriteSeconds)
	}
	ev := j.ev
	ev.Outcome, ev.Error = outcome, opErr
	ev.Figures = j.figures(map[string]any{"attempt": j.attempt, "status": status, "records_written": rep.RecordsWritten,
		"seconds": took.Seconds(), "collections": len(rep.Collections), "verified": rep.Verified})
	if rep.SafetySnapshotID != "" {
		ev.Figures["safety_snapshot_id"] = rep.SafetySnapshotID
	}
	if rep.AddRate > 0 {
		ev.Figures["records_per_second"] = rep.AddRate
	}
	if d := maxDiff(rep.Collections); d > 0 {
		ev.Figures["cosine_max_abs_diff"] = d
	}
	if n := floatsOff(rep.Collections); n > 0 {
		ev.Figures["metadata_floats_off"] = n
	}
	_ = s.audit.Emit(cctx, ev)
	s.observeJob(tenant, database, status, took, j.sp, &rep, jobErr)
	j.progress.Update(contract.Progress{Phase: status, Done: true, Error: opErr, DoneRecords: rep.RecordsWritten, TotalRecords: planWrite(j.op.Plan)})
	j.putOp(cctx)
	// Only once the operation is final: a redelivery now finds it ended
	// instead of starting over without a checkpoint.
	s.dropJobState(cctx, j.cmd.OpID)
	if jobErr != nil {
		j.log.Error("rollback ended", "status", status, "err", jobErr)
	} else {
		j.log.Info("rollback completed", "records", rep.RecordsWritten, "seconds", took.Seconds())
	}
}

func planWrite(p *contract.RollbackPlan) int64 {
	if p == nil {
		return 0
	}
	return p.WriteRecords
}

func floatsOff(cs []contract.RestoreCollectionReport) int64 {
	n := int64(0)
	for _, c := range cs {
		n += c.MetadataFloatsOff
	}
	return n
}

func maxDiff(cs []contract.RestoreCollectionReport) float64 {
	d := 0.0
	for _, c := range cs {
		d = max(d, c.MaxAbsDiff)
	}
	return d
}

// collectionReports lists every written collection, in archive order, then
// the drops. Callers hold j.mu.
func (j *job) collectionReports() []contract.RestoreCollectionReport {
	var out []contract.RestoreCollectionReport
	for i := range j.sp.m.Collections {
		cs, ok := j.ck.Collections[i]
		if !ok {
			continue
		}
		info := j.sp.arc.md.Collections[i]
		r := contract.RestoreCollectionReport{Collection: cs.Collection, Target: cs.Target, Action: cs.Action, Records: cs.Records,
			Verified: cs.Stage == stageDone && len(j.diffs[i]) == 0, MaxAbsDiff: cs.MaxDiff, MetadataFloatsOff: cs.FloatsOff,
			Differences: j.diffs[i]}
		// How the embeddings were compared, once they were: a collection a
		// cancel or failure stopped before its check names none.
		switch {
		case cs.Stage != stageDone && len(j.diffs[i]) == 0:
		case cs.Records == 0: // no embedding to compare: neither claim holds
			r.EmbeddingCheck = "none"
		case spaceOf(info.Configuration, info.Metadata) == "cosine":
			r.EmbeddingCheck = "tolerance"
		default:
			r.EmbeddingCheck = "bit-exact"
		}
		out = append(out, r)
	}
	for _, name := range j.ck.Dropped {
		out = append(out, contract.RestoreCollectionReport{Target: name, Action: contract.PlanDrop, Verified: true})
	}
	return out
}

// addDiffs keeps the differences found in archive collection i.
func (j *job) addDiffs(i int, diffs []string, total int) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.diffs == nil {
		j.diffs = map[int][]string{}
	}
	d := append(j.diffs[i], diffs...)
	if len(d) > maxListedDiffs {
		d = d[:maxListedDiffs]
	}
	if total > len(diffs) {
		d = append(d, fmt.Sprintf("... %d differences in all", total))
	}
	j.diffs[i] = d
}

// cleanup, after a failure or cancel, takes back what would leave the
// target worse than before: a staging collection is deleted and a swap cut
// short is undone. Collections already swapped in stay restored.
//
// A redelivered attempt (its restorer died) holds no writer for what the
// earlier attempts staged until it takes that collection up again: one
// that stops before (a cancel found at its start, an archive it cannot
// read) takes that back from the checkpoint, as a rollback given up on does.
//
// Taking back has its own time (Service.finishTimeout): with Chroma away,
// each collection spends the client's whole retry budget, and a rollback of
// many would otherwise leave no time to record what is left (keepLeftovers).
func (j *job) cleanup(ctx context.Context) {
	ctx = context.WithoutCancel(ctx)
	uctx, cancel := context.WithTimeout(ctx, j.s.finishTimeout)
	defer cancel()
	j.mu.Lock()
	ws := append([]*collWriter{j.finishing, j.current}, j.staged...)
	ck := j.ck
	op := j.op
	j.mu.Unlock()
	if op.Tenant == "" || op.Database == "" {
		if t, d, ok := j.scope(); ok {
			op.Tenant, op.Database = t, d
		}
	}
	undone := map[string]bool{}
	var left []contract.LeftoverCollection
	var warnings []string
	if j.sp != nil {
		for _, w := range ws {
			if w == nil || undone[w.cs.Target] {
				continue
			}
			undone[w.cs.Target] = true
			if err := w.undo(uctx); err != nil {
				j.log.Error("cleanup after the rollback stopped failed", "collection", w.cs.Target, "err", err)
				l := w.leftover()
				left = append(left, l)
				warnings = append(warnings, leftoverWarning(err, l, j.sp.tenant, j.sp.database))
			}
		}
	}
	if ck != nil {
		w, l := j.s.undoCheckpointed(uctx, &j.cmd, &op, ck, undone)
		if len(w) > 0 {
			j.log.Error("cleanup after the rollback stopped failed", "left", w)
		}
		warnings, left = append(warnings, w...), append(left, l...)
	}
	if len(left) > 0 {
		kctx, cancel := context.WithTimeout(ctx, j.s.finishTimeout)
		warnings = append(warnings, j.s.keepLeftovers(kctx, j.cmd, op.Tenant, op.Database, left))
		cancel()
	}
	j.mu.Lock()
	j.op.Warnings = append(j.op.Warnings, warnings...)
	j.mu.Unlock()
}

// leftoverWarning says what the cleanup of l could not do, and what the
// collections then hold.
func leftoverWarning(err error, l contract.LeftoverCollection, tenant, database string) string {
	if l.Swapped {
		return fmt.Sprintf("cleanup failed: %v; %q in %s/%s is restored; delete the replaced collection %q if it is left", err, l.Target, tenant, database, l.Old)
	}
	return fmt.Sprintf("cleanup failed: %v; %q in %s/%s holds what it held before unless it is missing and %q exists (rename that back); delete the staging collection %q if it is left",
		err, l.Target, tenant, database, l.Old, l.Staging)
}

// checkCancel returns errCancelled once a cancel was requested.
func (j *job) checkCancel(ctx context.Context) error {
	c, err := j.s.cancelRequest(ctx, j.cmd.OpID)
	if err != nil || c == nil {
		return nil // a read failure must not stop a restore; the next check will see it
	}
	j.mu.Lock()
	j.canceler = c
	j.mu.Unlock()
	return errCancelled
}

func (j *job) setPhase(ctx context.Context, phase string) {
	j.mu.Lock()
	if j.op.Phase == phase {
		j.mu.Unlock()
		return
	}
	j.op.Phase = phase
	if j.op.Status == "" || j.op.Status == contract.StatusQueued {
		j.op.Status = contract.StatusRunning
	}
	p := contract.Progress{Phase: phase}
	if j.ck != nil {
		p.DoneRecords, p.TotalRecords = j.ck.RecordsWritten, j.ck.Plan.WriteRecords
	}
	j.mu.Unlock()
	j.log.Debug("rollback phase", "phase", phase)
	j.putOp(ctx)
	j.progress.Update(p)
}

func (j *job) putOp(ctx context.Context) {
	j.mu.Lock()
	op := j.op
	j.mu.Unlock()
	if err := j.s.putOperation(ctx, op); err != nil {
		j.log.Warn("could not record the operation", "err", err)
	}
}

// step audits a completed step of the rollback.
func (j *job) step(ctx context.Context, what string, figures map[string]any) {
	ev := j.ev
	ev.Action, ev.Outcome, ev.Reason = "rollback.step", contract.OutcomeCompleted, what
	ev.Figures = j.figures(figures)
	_ = j.s.audit.Emit(ctx, ev)
}

// figures adds to an audit event's figures the job (withJob) and, for a
// rollback into another Chroma than the restorer's own, its chroma_url:
// without it the event of a copy restored into another server reads as
// one of the own tenant/database of the same name.
func (j *job) figures(figures map[string]any) map[string]any {
	if _, _, server, ok := j.scopeOn(); ok && server != "" {
		figures["chroma_url"] = chroma.RedactURL(server)
	}
	return withJob(figures, j.cmd.Request.Job)
}

// withJob adds to an audit event's figures the migration job whose
// trigger asked for the rollback, if one did: `audit-log --job` then shows
// the whole rollback with the job's own events.
func withJob(figures map[string]any, job string) map[string]any {
	if job != "" {
		figures["job"] = job
	}
	return figures
}

// ensureDatabase creates the target tenant and database when missing.
func (j *job) ensureDatabase(ctx context.Context) error {
	c, sp := j.sp.target, j.sp
	if _, err := c.GetDatabase(ctx, sp.tenant, sp.database); err == nil {
		return nil
	}
	if err := c.CreateTenant(ctx, sp.tenant); err != nil && !errors.Is(err, chroma.ErrAlreadyExists) {
		return fmt.Errorf("create tenant %q: %w", sp.tenant, err)
	}
	if err := c.CreateDatabase(ctx, sp.tenant, sp.database); err != nil && !errors.Is(err, chroma.ErrAlreadyExists) {
		return fmt.Errorf("create database %s/%s: %w", sp.tenant, sp.database, err)
	}
	return nil
}

// dropExtras deletes the collections the plan drops.
func (j *job) dropExtras(ctx context.Context) error {
	var names []string
	for _, it := range j.ck.Plan.Items {
		if it.Action == contract.PlanDrop {
			names = append(names, it.Target)
		}
	}
	if len(names) == 0 {
		return nil
	}
	j.setPhase(ctx, phaseDropping)
	for _, name := range names {
		if slices.Contains(j.ck.Dropped, name) {
			continue
		}
		if err := j.checkCancel(ctx); err != nil {
			return err
		}
		err := j.sp.target.DeleteCollection(ctx, j.sp.tenant, j.sp.database, name)
		if err != nil && !errors.Is(err, chroma.ErrNotFound) {
			return fmt.Errorf("drop extra collection %q: %w", name, err)
		}
		j.mu.Lock()
		j.ck.Dropped = append(j.ck.Dropped, name)
		ck := *j.ck
		j.mu.Unlock()
		if err := j.s.saveCheckpoint(ctx, &ck); err != nil {
			return err
		}
	}
	j.step(ctx, "extra collections dropped", map[string]any{"dropped": names})
	return nil
}

// shortID is a short, name-safe token of an op id for staging names.
func shortID(opID string) string {
	var h uint32 = 2166136261
	for i := 0; i < len(opID); i++ {
		h ^= uint32(opID[i])
		h *= 16777619
	}
	return fmt.Sprintf("%08x", h)
}

// workName returns "<target><sep><short>", cutting the target so the name
// stays within Chroma's 512 characters.
func workName(target, sep, opID string) string {
	suffix := sep + shortID(opID)
	if len(target)+len(suffix) > 512 {
		// Cut to fit Chroma's 512 characters, and told apart from other
		// names cut to the same prefix by a hash of the whole name.
		suffix = "_" + shortID(target) + suffix
		target = strings.TrimRight(target[:512-len(suffix)], "._-")
	}
	return target + suffix
}

// givenUp fails the operation of a rollback command that the work queue
// gave up on: every delivery ended without an answer, each restorer that
// took it dying, hanging or stopping on it. Nobody else would end it: the
// operation would stay "running" for ever, a waiting client would wait to
// its limit, and the watchdog would not learn that its rollback failed.
// Its staging collections, which are not live data, are taken back, as a
// failed attempt does (undoCheckpointed). Nothing else is undone: the data may
// be half restored, so a fence it raised stays raised (and paused jobs
// paused) until an operator has looked; its lease lapses by itself.
func (s *Service) givenUp(ctx context.Context, u bus.Undelivered) {
	var cmd contract.RollbackCommand
	if err := json.Unmarshal(u.Data, &cmd); err != nil || contract.ValidToken(cmd.OpID) != nil {
		s.log.Error("a rollback command was given up on after its last delivery, and is unreadable", "seq", u.Seq, "err", err)
		return
	}
	log := s.log.With("op_id", cmd.OpID, "deliveries", u.Deliveries)
	op, err := s.getOperation(ctx, cmd.OpID)
	if err != nil {
		log.Error("a rollback was given up on after its last delivery; its operation cannot be read to say so", "err", err)
		return
	}
	if op != nil && contract.Ended(op.Status) {
		return // it ended after all, or another instance saw to it
	}
	if op != nil && op.Attempt > cmd.PriorAttempts+u.Deliveries {
		// A later copy of the command (handOver: its last delivery was
		// stopped, not crashed, and its ack was lost) has taken it on.
		log.Warn("a rollback command was given up on, but a later copy of it has taken the rollback on", "attempt", op.Attempt)
		return
	}
	if op == nil {
		op = &contract.Operation{OpID: cmd.OpID, SnapshotID: cmd.Request.SnapshotID, Actor: cmd.Request.Actor}
	}
	what := "no write fence of it is raised"
	if op.Tenant != "" && op.Database != "" {
		note, err := fence.LeftRaised(ctx, s.assets.State, op.Tenant, op.Database, cmd.OpID)
		switch {
		case err != nil:
			what = fmt.Sprintf("whether its write fence of %s/%s is raised could not be read (%v): see `status`", op.Tenant, op.Database, err)
		case note != "":
			what = note
		}
	}
	jobErr := fmt.Errorf("%w after %d deliveries of its command: the restorer that took it died, hung or was stopped each time (see its logs). The data may be half restored; %s",
		bus.ErrGivenUp, u.Deliveries, what)
	log.Error("rollback given up", "err", jobErr)

	var written int64
	var colls int
	ck, err := s.loadCheckpoint(ctx, cmd.OpID)
	if err != nil {
		log.Warn("cannot read the checkpoint of the rollback given up", "err", err)
	}
	if ck != nil {
		written, colls = ck.RecordsWritten, len(ck.Collections)
		// Staging collections are not live data: take them back, as a
		// failed attempt does, so that they do not linger beside the
		// collections; what cannot be now is retried (keepLeftovers).
		// Bounded as a job's cleanup is: with Chroma away each collection
		// spends the client's whole retry budget.
		uctx, cancel := context.WithTimeout(ctx, s.finishTimeout)
		warnings, left := s.undoCheckpointed(uctx, &cmd, op, ck, nil)
		cancel()
		op.Warnings = append(op.Warnings, warnings...)
		if len(left) > 0 {
			op.Warnings = append(op.Warnings, s.keepLeftovers(ctx, cmd, op.Tenant, op.Database, left))
		}
	}
	took := time.Since(u.Queued)
	op.Status, op.Phase, op.Error, op.Attempt = contract.StatusFailed, contract.StatusFailed, jobErr.Error(), cmd.PriorAttempts+u.Deliveries
	op.ErrorCode = contract.ErrorOther
	// As finish does: audited, counted and announced before the operation
	// says it failed, so whoever sees it failed finds all three. The
	// event's id is the operation's, should the advisory be handled twice.
	ev := contract.AuditEvent{Envelope: contract.NewEnvelope(contract.TypeAuditEvent), Action: "rollback", Outcome: contract.OutcomeFailed,
		Actor: cmd.Request.Actor, Reason: cmd.Request.Reason, OpID: cmd.OpID, SnapshotID: cmd.Request.SnapshotID,
		Tenant: op.Tenant, Database: op.Database, Error: jobErr.Error(),
		Figures: withJob(map[string]any{"attempt": u.Deliveries, "status": contract.StatusFailed, "records_written": written,
			"seconds": took.Seconds(), "collections": colls, "verified": false}, cmd.Request.Job)}
	if op.Plan != nil && op.Plan.ChromaURL != "" {
		ev.Figures["chroma_url"] = chroma.RedactURL(op.Plan.ChromaURL)
	}
	ev.ID = cmd.OpID + "_given_up"
	_ = s.audit.Emit(ctx, ev)
	s.observeJob(op.Tenant, op.Database, contract.StatusFailed, took, nil, &contract.RestoreReport{RecordsWritten: written}, jobErr)
	bus.NewProgressPublisher(s.nc, s.subj, cmd.OpID).Update(contract.Progress{Phase: contract.StatusFailed, Done: true, Error: jobErr.Error(), DoneRecords: written})
	if err := s.putOperation(ctx, *op); err != nil {
		log.Error("could not record that the rollback was given up", "err", err)
	} else if ck != nil {
		// As finish does, once the operation is final.
		s.dropJobState(ctx, cmd.OpID)
	}
}

// undoCheckpointed takes back the stage and swap of each collection of the
// checkpoint ck whose target done does not name (those an attempt's own
// writers took back already): see takeBack. In place and batch-level
// writes cannot be undone. It returns what it could not do: a warning for
// each, and what each left.
func (s *Service) undoCheckpointed(ctx context.Context, cmd *contract.RollbackCommand, op *contract.Operation, ck *checkpoint, done map[string]bool) ([]string, []contract.LeftoverCollection) {
	if cmd.Request.InPlace || op.Tenant == "" || op.Database == "" {
		return nil, nil
	}
	c, _, apiErr := s.targetClient(cmd.Request.ChromaURL)
	if apiErr != nil {
		return []string{fmt.Sprintf("cleanup not done: %s", apiErr.msg)}, nil
	}
	var warnings []string
	var left []contract.LeftoverCollection
	for _, i := range slices.Sorted(maps.Keys(ck.Collections)) {
		cs := ck.Collections[i]
		if cs == nil || cs.Action == contract.PlanUpsert || cs.Stage == stageDone || done[cs.Target] {
			continue
		}
		l := contract.LeftoverCollection{Target: cs.Target, Staging: workName(cs.Target, stagingSep, cmd.OpID), Old: workName(cs.Target, oldSep, cmd.OpID),
			WorkID: cs.WorkID, Swapped: cs.Stage == stageSwapped}
		if _, err := takeBack(ctx, c, op.Tenant, op.Database, l); err != nil {
			warnings = append(warnings, leftoverWarning(err, l, op.Tenant, op.Database))
			left = append(left, l)
		}
	}
	return warnings, left
}

// dropJobState deletes the checkpoint and cancel request of an operation
// that ended.
func (s *Service) dropJobState(ctx context.Context, opID string) {
	_ = s.assets.State.Purge(ctx, contract.CheckpointKey(opID))
	_ = s.assets.State.Purge(ctx, contract.CancelKey(opID))
}
