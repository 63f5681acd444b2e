package restorer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/fence"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
)

// Reply statuses of plan and start besides the operation statuses.
const (
	statusPlanned = "planned"
	statusRefused = "refused"
)

// apiError is an error reply: what went wrong and which field to fix;
// errorCode, when set, what it is about for programs (ErrorBody.ErrorCode).
type apiError struct {
	code      int
	msg       string
	field     string
	errorCode string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(field, format string, args ...any) *apiError {
	return &apiError{code: contract.CodeBadRequest, msg: fmt.Sprintf(format, args...), field: field}
}

func unavailable(format string, args ...any) *apiError {
	return &apiError{code: contract.CodeUnavailable, msg: fmt.Sprintf(format, args...)}
}

// decode parses a request body, bounding its size.
func decode(r micro.Request, v any) *apiError {
	if code, msg := bus.DecodeRequest(r, v); code != 0 {
		return &apiError{code: code, msg: msg}
	}
	return nil
}

// reject records the rejected command in the audit trail, then answers with e.
func (s *Service) reject(ctx context.Context, r micro.Request, action string, e *apiError, ev contract.AuditEvent) {
	ev.Action, ev.Outcome, ev.Error = action, contract.OutcomeRejected, e.msg
	_ = s.audit.Emit(ctx, ev) // stored before the caller learns of the refusal
	s.observeRefusal(action, e.code)
	e.respond(r)
}

// respond answers r with e.
func (e *apiError) respond(r micro.Request) {
	bus.RespondErrorBody(r, contract.ErrorBody{Code: e.code, Error: e.msg, Field: e.field, ErrorCode: e.errorCode})
}

func requestAudit(req *contract.RollbackRequest) contract.AuditEvent {
	return contract.AuditEvent{Actor: req.Actor, Reason: req.Reason, SnapshotID: req.SnapshotID, Tenant: req.TargetTenant, Database: req.TargetDatabase}
}

func (s *Service) handlePlan(ctx context.Context, r micro.Request) {
	var req contract.RollbackRequest
	if e := decode(r, &req); e != nil {
		s.reject(ctx, r, "rollback.plan", e, contract.AuditEvent{})
		return
	}
	sp, e := s.resolve(ctx, &req, false, false)
	var plan *contract.RollbackPlan
	if e == nil {
		plan, e = s.plan(ctx, sp)
	}
	if e != nil {
		s.reject(ctx, r, "rollback.plan", e, requestAudit(&req))
		return
	}
	plan.Warnings = append(plan.Warnings, s.leftoverWarnings(ctx, sp)...)
	bus.RespondJSON(r, contract.RollbackReply{Envelope: contract.NewEnvelope(contract.TypeRollbackReply), Status: statusPlanned, Plan: plan})
}

func (s *Service) handleStart(ctx context.Context, r micro.Request) {
	var req contract.RollbackRequest
	if e := decode(r, &req); e != nil {
		s.reject(ctx, r, "rollback", e, contract.AuditEvent{})
		return
	}
	ev := requestAudit(&req)
	opID := req.OpID
	if opID == "" && req.Job != "" {
		// One rollback per migration job, however often it is asked for.
		opID = "op_rollback_" + req.Job
	}
	if opID != "" {
		if err := contract.ValidToken(opID); err != nil {
			field := "op_id"
			if req.OpID == "" {
				field = "job"
			}
			s.reject(ctx, r, "rollback", badRequest(field, "%s: %v", field, err), ev)
			return
		}
		op, err := s.getOperation(ctx, opID)
		if err != nil {
			s.reject(ctx, r, "rollback", unavailable("%v", err), ev)
			return
		}
		if op != nil {
			// Already enqueued: answer with it instead of enqueueing twice.
			bus.RespondJSON(r, contract.RollbackReply{Envelope: contract.NewEnvelope(contract.TypeRollbackReply), OpID: opID,
				Status: op.Status, Progress: s.subj.Progress(opID), Plan: op.Plan})
			return
		}
	}
	sp, e := s.resolve(ctx, &req, true, false)
	if e == nil && req.Confirm {
		e = s.leftoversFirst(ctx, sp)
	}
	var plan *contract.RollbackPlan
	if e == nil {
		plan, e = s.plan(ctx, sp)
	}
	if e != nil {
		s.reject(ctx, r, "rollback", e, ev)
		return
	}
	if !req.Confirm {
		plan.Warnings = append(plan.Warnings, s.leftoverWarnings(ctx, sp)...)
	}
	ev.SnapshotID, ev.Tenant, ev.Database = plan.SnapshotID, plan.Tenant, plan.Database
	if !req.Confirm {
		why := fmt.Sprintf("not started: a rollback of %s/%s to snapshot %s (%s) writes %d records; review the plan and send the request again with \"confirm\": true",
			plan.Tenant, plan.Database, plan.SnapshotID, plan.SnapshotName, plan.WriteRecords)
		ev.Action, ev.Outcome, ev.Error = "rollback", contract.OutcomeRejected, "confirmation missing"
		ev.Figures = map[string]any{"write_records": plan.WriteRecords, "mode": plan.Mode}
		_ = s.audit.Emit(ctx, ev)
		bus.RespondJSON(r, contract.RollbackReply{Envelope: contract.NewEnvelope(contract.TypeRollbackReply), Status: statusRefused, Refused: why, Plan: plan})
		return
	}
	if opID == "" {
		opID = contract.NewID("op_")
	}
	// Taking the lease now makes a second start on the same database fail
	// here, with the holder named, rather than later in its job.
	lease, err := fence.Acquire(ctx, s.assets.State, contract.Lease{Tenant: plan.Tenant, Database: plan.Database, Holder: opID, Kind: "rollback", Actor: req.Actor,
		Server: plan.ChromaURL}, s.cfg.LeaseTTL)
	if err != nil {
		code := contract.CodeUnavailable
		if errors.Is(err, fence.ErrHeld) {
			code = contract.CodeConflict
		}
		s.reject(ctx, r, "rollback", &apiError{code: code, msg: "cannot start the rollback: " + err.Error()}, ev)
		return
	}
	ev.OpID = opID
	// The job restores the snapshot planned here, even if a newer one of
	// the same name appears meanwhile.
	req.OpID, req.SnapshotID = opID, plan.SnapshotID
	op := contract.Operation{OpID: opID, Kind: "rollback", SnapshotID: plan.SnapshotID, Status: contract.StatusQueued,
		Tenant: plan.Tenant, Database: plan.Database, Actor: req.Actor, Plan: plan, Warnings: plan.Warnings}
	if err := s.putOperation(ctx, op); err != nil {
		_ = lease.Release(context.WithoutCancel(ctx))
		s.reject(ctx, r, "rollback", unavailable("%v", err), ev)
		return
	}
	cmd := contract.RollbackCommand{Envelope: contract.NewEnvelope(contract.TypeRollbackCommand), OpID: opID, Request: req}
	data, _ := json.Marshal(cmd)
	msg := nats.NewMsg(s.subj.Command("rollback"))
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, opID)
	if _, err := bus.Publish(ctx, s.assets.JS, msg); err != nil {
		cctx := context.WithoutCancel(ctx)
		_ = lease.Release(cctx)
		_ = s.assets.State.Purge(cctx, contract.OperationKey(opID))
		s.reject(ctx, r, "rollback", unavailable("enqueue rollback: %v", err), ev)
		return
	}
	s.log.Info("rollback queued", "op_id", opID, "snapshot_id", plan.SnapshotID, "tenant", plan.Tenant, "database", plan.Database, "mode", plan.Mode)
	bus.RespondJSON(r, contract.RollbackReply{Envelope: contract.NewEnvelope(contract.TypeRollbackReply), OpID: opID,
		Status: contract.StatusQueued, Progress: s.subj.Progress(opID), Plan: plan})
}

// decodeRef reads an OperationRef and its operation, answering the error
// itself when it cannot.
func (s *Service) decodeRef(ctx context.Context, r micro.Request, action string) (*contract.OperationRef, *contract.Operation, bool) {
	var ref contract.OperationRef
	e := decode(r, &ref)
	if e == nil && ref.OpID == "" {
		e = badRequest("op_id", "op_id is required: the operation id that start answered with")
	}
	if e == nil && contract.ValidToken(ref.OpID) != nil {
		e = &apiError{code: contract.CodeNotFound, msg: fmt.Sprintf("no operation %q", ref.OpID), field: "op_id"}
	}
	var op *contract.Operation
	if e == nil {
		var err error
		op, err = s.getOperation(ctx, ref.OpID)
		switch {
		case err != nil:
			e = unavailable("%v", err)
		case op == nil:
			// Retention prunes the records of operations ended before its
			// cutoff; the audit trail keeps what they did.
			e = &apiError{code: contract.CodeNotFound, field: "op_id", msg: fmt.Sprintf(
				"no rollback operation %q (records of ended operations are pruned by retention; `audit-log --op %s` shows what it did)", ref.OpID, ref.OpID)}
		case op.Kind != "rollback":
			e = &apiError{code: contract.CodeNotFound, field: "op_id", msg: fmt.Sprintf(
				"no rollback operation %q: it is a %s operation (%s, of snapshot %s; see `snapshot info %s`)", ref.OpID, op.Kind, op.Status, op.SnapshotID, op.SnapshotID)}
		}
	}
	if e != nil {
		if action != "" {
			s.reject(ctx, r, action, e, contract.AuditEvent{Actor: ref.Actor, OpID: ref.OpID})
		} else {
			e.respond(r)
		}
		return nil, nil, false
	}
	return &ref, op, true
}

func (s *Service) handleStatus(ctx context.Context, r micro.Request) {
	_, op, ok := s.decodeRef(ctx, r, "")
	if !ok {
		return
	}
	if !contract.Ended(op.Status) {
		if c, err := s.cancelRequest(ctx, op.OpID); err == nil && c != nil {
			op.Warnings = append(op.Warnings, cancelNote(c))
		}
	}
	bus.RespondJSON(r, op)
}

func (s *Service) handleCancel(ctx context.Context, r micro.Request) {
	ref, op, ok := s.decodeRef(ctx, r, "rollback.cancel")
	if !ok {
		return
	}
	ev := contract.AuditEvent{Action: "rollback.cancel", Actor: ref.Actor, OpID: op.OpID, SnapshotID: op.SnapshotID, Tenant: op.Tenant, Database: op.Database}
	if contract.Ended(op.Status) {
		s.reject(ctx, r, "rollback.cancel", &apiError{code: contract.CodeConflict, msg: fmt.Sprintf("operation %s has already ended: %s", op.OpID, op.Status), field: "op_id"}, ev)
		return
	}
	c := contract.OperationRef{Envelope: contract.NewEnvelope(contract.TypeOperationRef), OpID: op.OpID, Actor: ref.Actor}
	data, _ := json.Marshal(c)
	if _, err := s.assets.State.Put(ctx, contract.CancelKey(op.OpID), data); err != nil {
		s.reject(ctx, r, "rollback.cancel", unavailable("record cancel request: %v", err), ev)
		return
	}
	ev.Outcome = contract.OutcomeCompleted
	ev.Reason = "cancel requested"
	_ = s.audit.Emit(ctx, ev)
	s.log.Info("rollback cancel requested", "op_id", op.OpID, "actor", ref.Actor)
	op.Warnings = append(op.Warnings, cancelNote(&c))
	bus.RespondJSON(r, op)
}

func cancelNote(c *contract.OperationRef) string {
	who := ""
	if c.Actor != "" {
		who = " by " + c.Actor
	}
	return fmt.Sprintf("cancel requested%s at %s: the rollback stops at the next batch", who, c.Time.Format(time.RFC3339))
}

func (s *Service) getOperation(ctx context.Context, opID string) (*contract.Operation, error) {
	return bus.GetOperation(ctx, s.assets.State, opID)
}

func (s *Service) putOperation(ctx context.Context, op contract.Operation) error {
	op.Envelope = contract.NewEnvelope(contract.TypeOperation)
	op.UpdatedAt = op.Time
	op.Kind = "rollback"
	data, _ := json.Marshal(op)
	if _, err := s.assets.State.Put(ctx, contract.OperationKey(op.OpID), data); err != nil {
		return fmt.Errorf("record operation %s: %w", op.OpID, err)
	}
	return nil
}

// cancelRequest returns the cancel request of an operation, nil if none.
func (s *Service) cancelRequest(ctx context.Context, opID string) (*contract.OperationRef, error) {
	e, err := s.assets.State.Get(ctx, contract.CancelKey(opID))
	if bus.IsNotFound(err) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var c contract.OperationRef
	if err := json.Unmarshal(e.Value(), &c); err != nil {
		return &contract.OperationRef{OpID: opID}, nil
	}
	return &c, nil
}

// lookup finds a manifest by snapshot id, or by name (contract.SnapshotByName:
// the one of that name taken last; a name used in two databases is refused).
func (s *Service) lookup(ctx context.Context, ref string) (*contract.SnapshotManifest, *apiError) {
	if ref == "" {
		return nil, badRequest("snapshot_id", "snapshot_id is required: give a snapshot id or name")
	}
	if contract.ValidToken(ref) == nil {
		if e, err := s.assets.Manifests.Get(ctx, ref); err == nil {
			var m contract.SnapshotManifest
			if err := json.Unmarshal(e.Value(), &m); err != nil {
				return nil, &apiError{code: contract.CodeInternal, msg: fmt.Sprintf("manifest %s is unreadable: %v", ref, err)}
			}
			return &m, nil
		} else if !bus.IsNotFound(err) && !errors.Is(err, jetstream.ErrKeyDeleted) {
			return nil, unavailable("read manifest %s: %v", ref, err)
		}
	}
	lister, err := s.assets.Manifests.ListKeys(ctx)
	if err != nil {
		return nil, unavailable("list manifests: %v", err)
	}
	var found []contract.SnapshotManifest
	for key := range lister.Keys() {
		e, err := s.assets.Manifests.Get(ctx, key)
		if err != nil {
			continue // deleted while listing
		}
		var m contract.SnapshotManifest
		if json.Unmarshal(e.Value(), &m) == nil && m.Name == ref {
			found = append(found, m)
		}
	}
	m, err := contract.SnapshotByName(found, ref, "", "")
	if err != nil {
		return nil, badRequest("snapshot_id", "%v", err)
	}
	if m == nil {
		return nil, &apiError{code: contract.CodeNotFound, msg: fmt.Sprintf("no snapshot with id or name %q (see `snapshot list`)", ref), field: "snapshot_id",
			errorCode: contract.ErrorArchiveUnusable}
	}
	return m, nil
}

// chromaErrorOn turns an error from the Chroma at other into an API
// error: "" for the restorer's own, else another server, which
// health-check does not check, so the error does not send the operator
// there.
func chromaErrorOn(other, what string, err error) *apiError {
	if errors.Is(err, chroma.ErrNotFound) {
		return &apiError{code: contract.CodeNotFound, msg: fmt.Sprintf("%s not found in Chroma", what)}
	}
	if chroma.NotAnswering(err) {
		check := "chromadb-rollback health-check checks it"
		if other != "" {
			check = fmt.Sprintf("GET %s/api/v2/heartbeat checks it (chromadb-rollback health-check checks the restorer's own Chroma only)", other)
		}
		return unavailable("read %s from Chroma: Chroma did not answer in time (%v): is it running and not overloaded? %s; nothing was changed", what, err, check)
	}
	return unavailable("read %s from Chroma: %v", what, err)
}
