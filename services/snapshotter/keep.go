package snapshotter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
)

// handleKeep pins or unpins a snapshot (chroma.api.snapshot.keep).
func (s *Service) handleKeep(ctx context.Context, r micro.Request) {
	var req contract.SnapshotKeepRequest
	if e := decode(r, &req); e != nil {
		s.reject(ctx, r, "snapshot.keep", e, contract.AuditEvent{})
		return
	}
	ev := contract.AuditEvent{Actor: req.Actor, Reason: req.Reason}
	if req.Keep == nil {
		s.reject(ctx, r, "snapshot.keep", badRequest("keep", "keep is required: true pins the snapshot so retention never deletes it, false unpins it"), ev)
		return
	}
	m, e := s.lookup(ctx, req.Snapshot)
	if e != nil {
		s.reject(ctx, r, "snapshot.keep", e, ev)
		return
	}
	ev.SnapshotID, ev.Tenant, ev.Database = m.SnapshotID, m.Tenant, m.Database
	m, changed, e := s.setKeep(ctx, m.SnapshotID, *req.Keep)
	if e != nil {
		s.reject(ctx, r, "snapshot.keep", e, ev)
		return
	}
	ev.Action, ev.Outcome = "snapshot.keep", contract.OutcomeCompleted
	ev.Figures = map[string]any{"keep": *req.Keep, "changed": changed}
	_ = s.audit.Emit(ctx, ev)
	s.log.Info("snapshot keep set", "snapshot_id", m.SnapshotID, "keep", *req.Keep, "changed", changed)
	bus.RespondJSON(r, m)
}

// setKeep sets the manifest's keep flag by compare-and-set, so that it
// never overwrites a concurrent change and never races a retention run
// (which deletes a manifest only at the revision it decided on).
func (s *Service) setKeep(ctx context.Context, id string, keep bool) (*contract.SnapshotManifest, bool, *apiError) {
	for range 10 {
		e, err := s.assets.Manifests.Get(ctx, id)
		if bus.IsNotFound(err) {
			return nil, false, &apiError{code: contract.CodeNotFound, msg: fmt.Sprintf("snapshot %s was deleted", id), field: "snapshot"}
		}
		if err != nil {
			return nil, false, &apiError{code: contract.CodeUnavailable, msg: fmt.Sprintf("read manifest %s: %v", id, err)}
		}
		var m contract.SnapshotManifest
		if err := json.Unmarshal(e.Value(), &m); err != nil {
			return nil, false, &apiError{code: contract.CodeInternal, msg: fmt.Sprintf("manifest %s is unreadable: %v", id, err)}
		}
		if m.Keep == keep {
			return &m, false, nil
		}
		m.Keep = keep
		data, err := json.Marshal(&m)
		if err != nil {
			return nil, false, &apiError{code: contract.CodeInternal, msg: fmt.Sprintf("encode manifest %s: %v", id, err)}
		}
		_, err = s.assets.Manifests.Update(ctx, id, data, e.Revision())
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return nil, false, &apiError{code: contract.CodeUnavailable, msg: fmt.Sprintf("update manifest %s: %v", id, err)}
		}
		return &m, true, nil
	}
	return nil, false, &apiError{code: contract.CodeConflict, msg: fmt.Sprintf("manifest %s keeps changing; try again", id)}
}
