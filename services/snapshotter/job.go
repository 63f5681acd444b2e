package snapshotter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/nats-io/nats.go/jetstream"
)

// handleJob runs one snapshot command to its end: ack on success or when the
// snapshot already exists, term on failure, nak when the service shuts
// down. A job whose worker dies is not acked and comes back to the next
// instance after AckWait.
func (s *Service) handleJob(ctx context.Context, msg jetstream.Msg) {
	var cmd contract.SnapshotCommand
	if err := json.Unmarshal(msg.Data(), &cmd); err != nil || cmd.SnapshotID == "" || contract.ValidToken(cmd.SnapshotID) != nil {
		s.log.Error("malformed snapshot command dropped", "err", err, "subject", msg.Subject())
		_ = s.audit.Emit(ctx, contract.AuditEvent{Action: "snapshot.create", Outcome: contract.OutcomeRejected,
			Error: fmt.Sprintf("malformed snapshot command on %s: %v", msg.Subject(), err)})
		_ = msg.Term()
		return
	}
	delivered := 1 // deliveries of this copy of the command
	if md, err := msg.Metadata(); err == nil {
		delivered = int(md.NumDelivered)
	}
	attempt := cmd.PriorAttempts + delivered
	log := s.log.With("snapshot_id", cmd.SnapshotID, "op_id", cmd.OpID, "attempt", attempt)
	ev := snapshotEvent(&cmd, "", "", nil)

	if m := s.storedManifest(ctx, cmd.SnapshotID); m != nil {
		log.Info("snapshot already exists; redelivered command acknowledged")
		s.discardEarlier(cmd.SnapshotID, attempt+1, m.Object, log) // what a worker that died after the manifest left
		// The worker that wrote the manifest may have stopped before it
		// reported the snapshot: report it now.
		if cur := s.operation(ctx, cmd.OpID); cur == nil || !contract.Ended(cur.Status) {
			if err := s.completed(ctx, &cmd, m, attempt, bus.NewProgressPublisher(s.nc, s.subj, cmd.OpID)); err != nil {
				log.Warn("could not report the snapshot made; the command is left for a later delivery", "err", err)
				return
			}
		}
		_ = msg.Ack()
		return
	}

	// Keep the job while it runs; a dead worker stops these and loses it.
	jobCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		t := time.NewTicker(s.cfg.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-jobCtx.Done():
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()

	_ = s.putOperation(ctx, s.workerOp(&cmd, contract.StatusRunning, attempt))
	ev.Outcome = contract.OutcomeStarted
	ev.Figures = map[string]any{"attempt": attempt, "collections": cmd.Collections}
	_ = s.audit.Emit(ctx, ev)
	progress := bus.NewProgressPublisher(s.nc, s.subj, cmd.OpID)

	start := time.Now()
	obj := attemptObjectName(cmd.SnapshotID, attempt)
	m, err := s.snapshot(jobCtx, &cmd, obj, progress, log)
	if ctx.Err() != nil {
		// Shutting down gracefully (SIGTERM: a rolling restart, a drain):
		// give the job back now, so another instance redoes it at once
		// instead of after AckWait; it deletes what this attempt stored. A
		// worker killed outright cannot: its job comes back after AckWait.
		if delivered >= s.cfg.MaxDeliver && s.handOver(msg, cmd, attempt, log) {
			return
		}
		_ = msg.Nak()
		_ = s.nc.FlushTimeout(time.Second)
		log.Warn("snapshot interrupted by shutdown; handed back to be redone by another instance", "err", err)
		return
	}
	if err != nil {
		// The manifest decides. One written by this attempt whose answer
		// was lost makes the snapshot; one written by another delivery of
		// this command (this one was too slow to keep it) stands, and
		// this attempt goes away quietly.
		if cur := s.storedManifest(ctx, cmd.SnapshotID); cur != nil {
			if cur.Object == obj {
				log.Warn("the manifest was written after all", "err", err)
				m, err = cur, nil
			} else {
				log.Warn("another attempt completed this snapshot; this one stops", "object", cur.Object, "err", err)
				s.discard(obj, log)
				_ = msg.Ack()
				return
			}
		}
	}
	if err != nil {
		log.Error("snapshot failed", "err", err)
		// This attempt's object, and what earlier attempts left.
		s.discard(obj, log)
		s.discardEarlier(cmd.SnapshotID, attempt, "", log)
		s.failed(ctx, &cmd, attempt, time.Since(start), progress, err)
		_ = msg.Term()
		return
	}
	s.observeJob(&cmd, m, time.Since(start), nil)
	// What earlier attempts left goes first: whoever sees the snapshot
	// completed finds only its own archive.
	s.discardEarlier(cmd.SnapshotID, attempt, m.Object, log)
	if err := s.completed(ctx, &cmd, m, attempt, progress); err != nil {
		log.Warn("could not report the snapshot made; the command is left for a later delivery", "err", err)
		return
	}
	if err := msg.DoubleAck(ctx); err != nil {
		log.Warn("ack failed; a redelivery will find the manifest and stop", "err", err)
	}
	log.Info("snapshot completed", "records", m.TotalRecords, "size", m.Size, "consistent", m.Consistent)
}

// completed reports the snapshot of cmd made, m its manifest: first the
// audit event, then the operation and the final progress, so that whoever
// sees the operation completed finds it audited. A worker stopped after
// the manifest was written and before this leaves the command unacked;
// the delivery that follows finds the manifest and calls this again, as
// does the give-up. The event's id is the snapshot's, so the stream
// stores it once whoever sends it (within its dedup window). An error says
// the operation was not recorded: the command must stay unacked, so that
// a later delivery reports it.
func (s *Service) completed(ctx context.Context, cmd *contract.SnapshotCommand, m *contract.SnapshotManifest, attempt int, progress *bus.ProgressPublisher) error {
	ev := snapshotEvent(cmd, contract.OutcomeCompleted, "", map[string]any{"records": m.TotalRecords, "size": m.Size,
		"raw_bytes": m.RawBytes, "collections": len(m.Collections), "consistent": m.Consistent,
		"seconds": max(0, m.CompletedAt.Sub(m.StartedAt).Seconds()), "attempt": attempt}) // wall clock: never below 0
	ev.Envelope = contract.NewEnvelope(contract.TypeAuditEvent)
	ev.ID = cmd.SnapshotID + "_completed"
	var warnings []string
	if !m.Consistent {
		ev.Reason = m.Inconsistency
		warnings = append(warnings, "snapshot is not consistent: "+m.Inconsistency)
	}
	_ = s.audit.Emit(ctx, ev)
	holdAt(ctx, "audited")
	if err := s.putOperation(ctx, withWarnings(s.workerOp(cmd, contract.StatusCompleted, attempt), warnings)); err != nil {
		return err
	}
	progress.Update(contract.Progress{Phase: "completed", Done: true, DoneRecords: m.TotalRecords, TotalRecords: m.TotalRecords, Bytes: m.Size})
	return nil
}

// storedManifest is the manifest of snapshotID, nil if there is none or it
// cannot be read.
func (s *Service) storedManifest(ctx context.Context, snapshotID string) *contract.SnapshotManifest {
	e, err := s.assets.Manifests.Get(ctx, snapshotID)
	if err != nil {
		return nil
	}
	var m contract.SnapshotManifest
	if json.Unmarshal(e.Value(), &m) != nil {
		return nil
	}
	return &m
}

// givenUp ends the operation of a snapshot command that the work queue
// gave up on: every delivery ended without an answer, each snapshotter
// that took it dying, hanging or stopping on it. Nobody else would say so:
// the operation would stay "running" and a waiting client would wait for
// it to the end. The manifest decides, as for a failed attempt: if one was
// written (the last ack was lost), the snapshot is made; if the last
// attempt's worker finishes after all, it records the snapshot completed.
func (s *Service) givenUp(ctx context.Context, u bus.Undelivered) {
	var cmd contract.SnapshotCommand
	if err := json.Unmarshal(u.Data, &cmd); err != nil || cmd.SnapshotID == "" || cmd.OpID == "" || contract.ValidToken(cmd.SnapshotID) != nil {
		s.log.Error("a snapshot command was given up on after its last delivery, and is unreadable", "seq", u.Seq, "err", err)
		return
	}
	log := s.log.With("snapshot_id", cmd.SnapshotID, "op_id", cmd.OpID, "deliveries", u.Deliveries)
	last := cmd.PriorAttempts + u.Deliveries // the attempt of its last delivery
	cur := s.operation(ctx, cmd.OpID)
	if cur != nil && contract.Ended(cur.Status) {
		return // it ended after all, or another instance saw to it
	}
	if cur != nil && cur.Attempt > last {
		// A later copy of the command (handOver: its last delivery was
		// stopped, not crashed, and its ack was lost) has taken it on.
		log.Warn("a snapshot command was given up on, but a later copy of it has taken the snapshot on", "attempt", cur.Attempt)
		return
	}
	if m := s.storedManifest(ctx, cmd.SnapshotID); m != nil {
		log.Warn("the last delivery of a snapshot command went unanswered, but its manifest was written")
		s.discardEarlier(cmd.SnapshotID, last+1, m.Object, log)
		_ = s.completed(ctx, &cmd, m, last, bus.NewProgressPublisher(s.nc, s.subj, cmd.OpID))
		return
	}
	err := fmt.Errorf("%w after %d deliveries of its command: the snapshotter that took it died, hung or was stopped each time (see its logs); nothing was kept", bus.ErrGivenUp, u.Deliveries)
	log.Error("snapshot given up", "err", err)
	// What earlier attempts left, as a failed attempt deletes it. The
	// last attempt's worker may only have lost touch and still finish:
	// what it leaves is retention's, a day on (sweepOrphanChunks).
	s.discardEarlier(cmd.SnapshotID, last, "", log)
	s.failed(ctx, &cmd, last, time.Since(u.Queued), bus.NewProgressPublisher(s.nc, s.subj, cmd.OpID), err)
}

// handOver enqueues a new copy of cmd that goes on from attempt, then acks
// msg, its last delivery the work queue allows (bus.HandOver).
func (s *Service) handOver(msg jetstream.Msg, cmd contract.SnapshotCommand, attempt int, log *slog.Logger) bool {
	next := cmd
	next.Envelope = contract.NewEnvelope(contract.TypeSnapshotCommand)
	next.PriorAttempts = attempt
	data, _ := json.Marshal(next)
	return bus.HandOver(s.assets.JS, msg, s.subj.Command("snapshot"), fmt.Sprintf("%s.after%d", cmd.SnapshotID, attempt), data, "snapshot", attempt, log)
}

// failed records that attempt of cmd failed with err after took: the
// metrics, the audit event, the final progress, then the operation.
func (s *Service) failed(ctx context.Context, cmd *contract.SnapshotCommand, attempt int, took time.Duration, progress *bus.ProgressPublisher, err error) {
	// Counted, audited and announced before the operation says it failed,
	// so whoever sees it failed finds all three.
	s.observeJob(cmd, nil, took, err)
	_ = s.audit.Emit(ctx, snapshotEvent(cmd, contract.OutcomeFailed, err.Error(), map[string]any{"attempt": attempt, "seconds": took.Seconds()}))
	progress.Update(contract.Progress{Phase: "failed", Done: true, Error: err.Error()})
	_ = s.putOperation(ctx, withError(s.workerOp(cmd, contract.StatusFailed, attempt), err))
}

// operation reads an operation record; nil when it is missing or unreadable.
func (s *Service) operation(ctx context.Context, opID string) *contract.Operation {
	_, op, ok := getState[contract.Operation](ctx, s.assets.State, contract.OperationKey(opID))
	if !ok {
		return nil
	}
	return &op
}

// discardEarlier deletes the objects that the deliveries of a command
// before attempt may have left (a worker that died mid-put), except keep,
// the object the manifest names.
func (s *Service) discardEarlier(snapshotID string, attempt int, keep string, log interface{ Warn(string, ...any) }) {
	for a := 1; a < attempt; a++ {
		if name := attemptObjectName(snapshotID, a); name != keep {
			s.discard(name, log)
		}
	}
}

// discard deletes a half-written or unverified archive object, and the
// chunks a put of it cut short left without an object (stored under
// bus.ChunkIDFor(name), so that a later attempt finds them too).
func (s *Service) discard(name string, log interface{ Warn(string, ...any) }) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.assets.Snapshots.Delete(ctx, name); err != nil && !bus.IsNotFound(err) {
		log.Warn("could not delete archive object", "object", name, "err", err)
	}
	if err := bus.PurgeChunks(ctx, s.assets.JS, contract.ObjectSnapshots, bus.ChunkIDFor(name)); err != nil {
		log.Warn("could not purge the chunks of archive object", "object", name, "err", err)
	}
}

func objectName(snapshotID string) string { return snapshotID + ".tar.zst" }

// attemptObjectName is the object that delivery attempt of a snapshot
// command writes: each delivery its own, so a delivery that outlived its
// hold on the command (its in-progress acks lost in a leader election, say)
// never overwrites or deletes the archive of the one that replaced it. The
// manifest names the one that won.
func attemptObjectName(snapshotID string, attempt int) string {
	if attempt <= 1 {
		return objectName(snapshotID)
	}
	return fmt.Sprintf("%s.attempt%d.tar.zst", snapshotID, attempt)
}

var (
	errNotConsistent      = errors.New("collection counts changed during the export")
	errCollectionsChanged = errors.New("the database's collections changed during the export")
)

// snapshotOp is the operation record of a snapshot command: its tenant,
// database and name say what it makes (the watchdog waits for a snapshot
// of a name still being made before it takes an older one of that name).
func snapshotOp(cmd *contract.SnapshotCommand, status string, attempt int) contract.Operation {
	return contract.Operation{OpID: cmd.OpID, Kind: "snapshot", SnapshotID: cmd.SnapshotID, Status: status, Attempt: attempt,
		Tenant: cmd.Tenant, Database: cmd.Database, Name: cmd.Name, Actor: cmd.Actor}
}

// workerOp is snapshotOp as this instance, working on attempt, writes it.
func (s *Service) workerOp(cmd *contract.SnapshotCommand, status string, attempt int) contract.Operation {
	op := snapshotOp(cmd, status, attempt)
	op.Instance = s.cfg.Instance
	return op
}

func withWarnings(op contract.Operation, warnings []string) contract.Operation {
	op.Warnings = warnings
	return op
}

func withError(op contract.Operation, err error) contract.Operation {
	op.Error, op.FailureReason = err.Error(), failureReason(err)
	return op
}

// snapshotEvent is the snapshot.create audit event of cmd.
func snapshotEvent(cmd *contract.SnapshotCommand, outcome, errText string, figures map[string]any) contract.AuditEvent {
	return contract.AuditEvent{Action: "snapshot.create", Outcome: outcome, Error: errText, Figures: figures, Actor: cmd.Actor, Reason: cmd.Reason,
		SnapshotID: cmd.SnapshotID, OpID: cmd.OpID, Tenant: cmd.Tenant, Database: cmd.Database}
}
