package snapshotter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/nats-io/nats.go/jetstream"
)

// handleJob runs one snapshot command to its end: ack on success or when the
// snapshot already exists, term on failure. A job whose worker dies is not
// acked and comes back to the next instance after AckWait.
func (s *Service) handleJob(ctx context.Context, msg jetstream.Msg) {
	var cmd contract.SnapshotCommand
	if err := json.Unmarshal(msg.Data(), &cmd); err != nil || cmd.SnapshotID == "" || contract.ValidToken(cmd.SnapshotID) != nil {
		s.log.Error("malformed snapshot command dropped", "err", err, "subject", msg.Subject())
		_ = s.audit.Emit(ctx, contract.AuditEvent{Action: "snapshot.create", Outcome: contract.OutcomeRejected,
			Error: fmt.Sprintf("malformed snapshot command on %s: %v", msg.Subject(), err)})
		_ = msg.Term()
		return
	}
	attempt := 1
	if md, err := msg.Metadata(); err == nil {
		attempt = int(md.NumDelivered)
	}
	log := s.log.With("snapshot_id", cmd.SnapshotID, "op_id", cmd.OpID, "attempt", attempt)
	ev := contract.AuditEvent{Action: "snapshot.create", Actor: cmd.Actor, Reason: cmd.Reason, SnapshotID: cmd.SnapshotID,
		OpID: cmd.OpID, Tenant: cmd.Tenant, Database: cmd.Database}

	if _, err := s.assets.Manifests.Get(ctx, cmd.SnapshotID); err == nil {
		log.Info("snapshot already exists; redelivered command acknowledged")
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

	_ = s.putOperation(ctx, contract.Operation{OpID: cmd.OpID, Kind: "snapshot", SnapshotID: cmd.SnapshotID, Status: contract.StatusRunning, Attempt: attempt})
	ev.Outcome = contract.OutcomeStarted
	ev.Figures = map[string]any{"attempt": attempt, "collections": cmd.Collections}
	_ = s.audit.Emit(ctx, ev)
	progress := bus.NewProgressPublisher(s.nc, s.subj, cmd.OpID)

	start := time.Now()
	m, err := s.snapshot(jobCtx, &cmd, progress, log)
	if ctx.Err() != nil {
		// Shutting down: leave the job unacked so another instance redoes it.
		log.Warn("snapshot interrupted by shutdown; it will be redelivered", "err", err)
		return
	}
	s.observeJob(&cmd, m, time.Since(start), err)
	if err != nil {
		log.Error("snapshot failed", "err", err)
		s.discard(objectName(cmd.SnapshotID), log)
		progress.Update(contract.Progress{Phase: "failed", Done: true, Error: err.Error()})
		_ = s.putOperation(ctx, contract.Operation{OpID: cmd.OpID, Kind: "snapshot", SnapshotID: cmd.SnapshotID, Status: contract.StatusFailed, Error: err.Error(), Attempt: attempt})
		ev.Outcome, ev.Error = contract.OutcomeFailed, err.Error()
		ev.Figures = map[string]any{"attempt": attempt, "seconds": time.Since(start).Seconds()}
		_ = s.audit.Emit(ctx, ev)
		_ = msg.Term()
		return
	}
	var warnings []string
	if !m.Consistent {
		warnings = append(warnings, "snapshot is not consistent: "+m.Inconsistency)
	}
	_ = s.putOperation(ctx, contract.Operation{OpID: cmd.OpID, Kind: "snapshot", SnapshotID: cmd.SnapshotID, Status: contract.StatusCompleted, Attempt: attempt, Warnings: warnings})
	progress.Update(contract.Progress{Phase: "completed", Done: true, DoneRecords: m.TotalRecords, TotalRecords: m.TotalRecords, Bytes: m.Size})
	ev.Outcome = contract.OutcomeCompleted
	ev.Figures = map[string]any{"records": m.TotalRecords, "size": m.Size, "raw_bytes": m.RawBytes, "collections": len(m.Collections),
		"consistent": m.Consistent, "seconds": time.Since(start).Seconds(), "attempt": attempt}
	if !m.Consistent {
		ev.Reason = m.Inconsistency
	}
	_ = s.audit.Emit(ctx, ev)
	if err := msg.DoubleAck(ctx); err != nil {
		log.Warn("ack failed; a redelivery will find the manifest and stop", "err", err)
	}
	log.Info("snapshot completed", "records", m.TotalRecords, "size", m.Size, "consistent", m.Consistent)
}

// discard deletes a half-written or unverified archive object.
func (s *Service) discard(name string, log interface{ Warn(string, ...any) }) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.assets.Snapshots.Delete(ctx, name); err != nil && !bus.IsNotFound(err) {
		log.Warn("could not delete archive object", "object", name, "err", err)
	}
}

func objectName(snapshotID string) string { return snapshotID + ".tar.zst" }

var errNotConsistent = errors.New("collection counts changed during the export")
