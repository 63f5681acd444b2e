package restorer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/nats-io/nats.go"
)

// safetySnapshot has the snapshotter take a snapshot of every collection
// the rollback overwrites or drops, and waits until it is verified. The
// fence is raised and jobs are paused by then, so it holds the state just
// before the rollback, and it can itself be rolled back to.
func (j *job) safetySnapshot(ctx context.Context) error {
	s := j.s
	j.mu.Lock()
	plan, snapOp := j.ck.Plan, j.ck.SafetyOpID
	j.mu.Unlock()
	if snapOp == "" {
		var cols []string
		for _, it := range plan.Items {
			switch it.Action {
			case contract.PlanReplace, contract.PlanDrop, contract.PlanUpsert:
				if it.CurrentRecords >= 0 {
					cols = append(cols, it.Target)
				}
			}
		}
		name := "safety_" + strings.TrimPrefix(j.cmd.OpID, "op_")
		if len(name) > 128 {
			name = name[:128]
		}
		req := contract.SnapshotCreateRequest{
			Envelope: contract.NewEnvelope(contract.TypeSnapshotCreateRequest),
			Name:     name, Tenant: j.sp.tenant, Database: j.sp.database, Collections: cols,
			Actor:  j.cmd.Request.Actor,
			Reason: fmt.Sprintf("safety snapshot before rollback %s to snapshot %s", j.cmd.OpID, j.sp.m.SnapshotID),
			ForOp:  j.cmd.OpID, // this rollback holds the lease and the fence
		}
		data, _ := json.Marshal(req)
		rctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
		msg, err := s.nc.RequestWithContext(rctx, s.subj.API("snapshot", "create"), data)
		cancel()
		switch {
		case errors.Is(err, nats.ErrNoResponders):
			return fmt.Errorf("safety snapshot: no snapshotter answers on %s; start one, or set no_safety_snapshot (--no-safety-snapshot in the CLI) to roll back without one; nothing was changed",
				s.subj.API("snapshot", "create"))
		case err != nil:
			return fmt.Errorf("safety snapshot: ask the snapshotter: %w; nothing was changed", err)
		case msg.Header.Get("Nats-Service-Error-Code") != "":
			return fmt.Errorf("safety snapshot refused by the snapshotter (%s): %s; nothing was changed",
				msg.Header.Get("Nats-Service-Error-Code"), msg.Header.Get("Nats-Service-Error"))
		}
		var rep contract.SnapshotCreateReply
		if err := json.Unmarshal(msg.Data, &rep); err != nil || rep.OpID == "" || rep.SnapshotID == "" {
			return fmt.Errorf("safety snapshot: the snapshotter's reply %.200q is not a snapshot_create_reply", msg.Data)
		}
		if err := j.saveCheckpoint(ctx, func(ck *checkpoint) { ck.SafetyOpID, ck.SafetySnapshotID = rep.OpID, rep.SnapshotID }); err != nil {
			return err
		}
		j.mu.Lock()
		snapOp = rep.OpID
		j.report.SafetySnapshotID = rep.SnapshotID
		j.mu.Unlock()
		j.log.Info("safety snapshot requested", "snapshot_id", rep.SnapshotID, "collections", cols)
	}
	j.mu.Lock()
	snapID := j.ck.SafetySnapshotID
	j.mu.Unlock()

	deadline := time.Now().Add(s.cfg.SafetySnapshotTimeout)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		op, err := s.getOperation(ctx, snapOp)
		if err != nil {
			j.log.Warn("cannot read the safety snapshot's operation; retrying", "err", err)
		}
		if op != nil {
			switch op.Status {
			case contract.StatusCompleted:
				if _, err := s.assets.Manifests.Get(ctx, snapID); err != nil {
					if bus.IsNotFound(err) {
						return fmt.Errorf("safety snapshot %s completed but has no manifest; nothing was changed", snapID)
					}
					return fmt.Errorf("safety snapshot %s: read manifest: %w", snapID, err)
				}
				if err := j.saveCheckpoint(ctx, func(ck *checkpoint) { ck.SafetyDone = true }); err != nil {
					return err
				}
				j.step(ctx, "safety snapshot taken", map[string]any{"safety_snapshot_id": snapID})
				return nil
			case contract.StatusFailed:
				return fmt.Errorf("safety snapshot %s failed: %s; nothing was changed", snapID, op.Error)
			}
		}
		if err := j.checkCancel(ctx); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("safety snapshot %s did not complete within %s; nothing was changed", snapID, s.cfg.SafetySnapshotTimeout)
		}
		j.progress.Update(contract.Progress{Phase: phaseSafetySnapshot})
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-tick.C:
		}
	}
}

// verifyRestore checks, after every swap, that each restored collection is
// the verified one under its target name with the archived count,
// metadata and configuration, and that dropped collections are gone.
func (j *job) verifyRestore(ctx context.Context) error {
	j.setPhase(ctx, phaseVerifyingRestore)
	for i := range j.sp.m.Collections {
		j.mu.Lock()
		cs, ok := j.ck.Collections[i]
		var target, workID, action string
		if ok {
			target, workID, action = cs.Target, cs.WorkID, cs.Action
		}
		j.mu.Unlock()
		if !ok {
			continue
		}
		if action == contract.PlanUpsert {
			continue // its records were read back and compared as they were written
		}
		if err := j.checkCollection(ctx, i, target, workID); err != nil {
			return err
		}
	}
	for _, name := range j.ck.Dropped {
		c, err := j.sp.target.GetCollection(ctx, j.sp.tenant, j.sp.database, name)
		switch {
		case err == nil:
			return fmt.Errorf("%w: dropped collection %q still exists (%s)", errVerify, name, c.ID)
		case !errors.Is(err, chroma.ErrNotFound):
			return fmt.Errorf("check dropped collection %q: %w", name, err)
		}
	}
	return nil
}
