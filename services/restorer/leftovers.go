package restorer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/fence"
	"github.com/nats-io/nats.go/jetstream"
)

// A rollback that fails or is cancelled while its Chroma does not answer
// cannot take back its stage and swap: staging collections stay beside the
// live ones, and a swap cut short can leave a live collection renamed to
// "<name>__old_<op>". What is left is kept under contract.LeftoversKey, and
// every restorer retries it (clearLeftovers) every Config.LeftoverRetry,
// holding the database's lease so that no rollback runs meanwhile, until
// all of it is taken back; then the operation says so (LeftoversCleared).

// keepLeftovers records what a stopped rollback left, to be taken back
// once Chroma answers, and returns the warning that says so.
func (s *Service) keepLeftovers(ctx context.Context, cmd contract.RollbackCommand, tenant, database string, left []contract.LeftoverCollection) string {
	rec := contract.Leftovers{Envelope: contract.NewEnvelope(contract.TypeLeftovers), OpID: cmd.OpID, Tenant: tenant, Database: database,
		ChromaURL: cmd.Request.ChromaURL, Collections: left, Since: time.Now().UTC()}
	data, _ := json.Marshal(rec)
	if _, err := s.assets.State.Put(ctx, contract.LeftoversKey(cmd.OpID), data); err != nil {
		s.log.Error("could not keep what the rollback left; nothing will retry its cleanup", "op_id", cmd.OpID, "err", err)
		return fmt.Sprintf("the restorer could not record the %d collection(s) above to take them back later (%v): do what the warnings say by hand", len(left), err)
	}
	return fmt.Sprintf("the restorer takes the %d collection(s) above back itself once Chroma answers: it retries every %s while holding the lease of %s/%s, and `rollback-status %s` says when it has",
		len(left), s.cfg.LeftoverRetry, tenant, database, cmd.OpID)
}

// leftoversLoop retries what stopped rollbacks left, at start and then
// every Config.LeftoverRetry, until ctx ends.
func (s *Service) leftoversLoop(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.clearLeftovers(ctx)
		t.Reset(s.cfg.LeftoverRetry)
	}
}

// clearLeftovers tries once to take back what each stopped rollback left.
func (s *Service) clearLeftovers(ctx context.Context) {
	lister, err := s.assets.State.ListKeysFiltered(ctx, contract.LeftoversPrefix+"*")
	if err != nil {
		if !errors.Is(err, jetstream.ErrNoKeysFound) && ctx.Err() == nil {
			s.log.Warn("cannot list what stopped rollbacks left", "err", err)
		}
		return
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	for _, k := range keys {
		if ctx.Err() != nil {
			return
		}
		if err := s.clearLeftover(ctx, strings.TrimPrefix(k, contract.LeftoversPrefix)); err != nil {
			s.log.Warn("what a stopped rollback left is not taken back yet; retrying later", "key", k, "err", err)
		}
	}
}

// clearLeftover takes back what the rollback opID left, holding the lease
// of its database; what it cannot (Chroma still away) stays for the next
// try. Once all of it is, the record goes and the operation says so.
func (s *Service) clearLeftover(ctx context.Context, opID string) error {
	rec, rev, err := s.readLeftovers(ctx, opID)
	if err != nil || rec == nil {
		return err
	}
	// Kept before the rollback's operation is final, while the job still
	// holds the lease in the same name: not until it has ended.
	if op, err := s.getOperation(ctx, opID); err != nil {
		return err
	} else if op != nil && !contract.Ended(op.Status) {
		return nil
	}
	c, _, apiErr := s.targetClient(rec.ChromaURL)
	if apiErr != nil {
		return s.leftoversFailed(ctx, rec, rev, errors.New(apiErr.msg))
	}
	// Not while Chroma is away: that would only hold the lease through
	// the client's retries.
	if err := c.Heartbeat(ctx); err != nil {
		return s.leftoversFailed(ctx, rec, rev, err)
	}
	// The lease in the rollback's own name: a rollback of the database
	// started meanwhile is refused, naming it, and this waits for one
	// that runs.
	lease, err := fence.Acquire(ctx, s.assets.State, contract.Lease{Tenant: rec.Tenant, Database: rec.Database, Holder: opID,
		Kind: "rollback_cleanup", Actor: "restorer"}, s.cfg.LeaseTTL)
	if err != nil {
		return s.leftoversFailed(ctx, rec, rev, err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := lease.Release(rctx); err != nil {
			s.log.Warn("could not release the lease after a rollback's cleanup", "op_id", opID, "err", err)
		}
	}()
	// Read again under the lease: another instance may have finished it.
	if rec, rev, err = s.readLeftovers(ctx, opID); err != nil || rec == nil {
		return err
	}
	var still []contract.LeftoverCollection
	var errs []error
	var notes []string
	for _, l := range rec.Collections {
		note, err := takeBack(ctx, c, rec.Tenant, rec.Database, l)
		if err != nil {
			still = append(still, l)
			errs = append(errs, fmt.Errorf("%q: %w", l.Target, err))
			continue
		}
		notes = append(notes, note)
	}
	if len(still) > 0 {
		rec.Collections = still
		return s.leftoversFailed(ctx, rec, rev, errors.Join(errs...))
	}
	now := time.Now().UTC()
	if err := s.noteLeftoversCleared(ctx, rec, now, notes); err != nil {
		return err
	}
	if err := s.assets.State.Purge(ctx, contract.LeftoversKey(opID), jetstream.LastRevision(rev)); err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return fmt.Errorf("drop %s: %w", contract.LeftoversKey(opID), err)
	}
	s.log.Info("took back what a stopped rollback left", "op_id", opID, "tenant", rec.Tenant, "database", rec.Database, "collections", len(rec.Collections))
	return nil
}

func (s *Service) readLeftovers(ctx context.Context, opID string) (*contract.Leftovers, uint64, error) {
	e, err := s.assets.State.Get(ctx, contract.LeftoversKey(opID))
	if bus.IsNotFound(err) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read %s: %w", contract.LeftoversKey(opID), err)
	}
	var rec contract.Leftovers
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return nil, 0, fmt.Errorf("%s is unreadable: %w", contract.LeftoversKey(opID), err)
	}
	if rec.OpID != opID || rec.Tenant == "" || rec.Database == "" {
		return nil, 0, fmt.Errorf("%s does not name its operation, tenant and database", contract.LeftoversKey(opID))
	}
	return &rec, e.Revision(), nil
}

// leftoversFailed records a try that did not take everything back, and
// returns its error.
func (s *Service) leftoversFailed(ctx context.Context, rec *contract.Leftovers, rev uint64, cause error) error {
	rec.Attempts++
	rec.LastError = cause.Error()
	data, _ := json.Marshal(rec)
	if _, err := s.assets.State.Update(ctx, contract.LeftoversKey(rec.OpID), data, rev); err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		s.log.Warn("could not record a try at a rollback's cleanup", "op_id", rec.OpID, "err", err)
	}
	return cause
}

// noteLeftoversCleared says on the rollback's operation that what it left
// was taken back, and audits it.
func (s *Service) noteLeftoversCleared(ctx context.Context, rec *contract.Leftovers, at time.Time, notes []string) error {
	op, err := s.getOperation(ctx, rec.OpID)
	if err != nil {
		return err
	}
	if op != nil { // pruned meanwhile: nobody reads it any more
		op.LeftoversCleared, op.LeftoverNotes = &at, notes
		if err := s.putOperation(ctx, *op); err != nil {
			return err
		}
	}
	ev := contract.AuditEvent{Envelope: contract.NewEnvelope(contract.TypeAuditEvent), Action: "rollback.cleanup", Outcome: contract.OutcomeCompleted,
		Actor: "restorer", OpID: rec.OpID, Tenant: rec.Tenant, Database: rec.Database, Reason: strings.Join(notes, "; "),
		Figures: map[string]any{"collections": len(rec.Collections), "attempts": rec.Attempts + 1, "seconds": at.Sub(rec.Since).Seconds()}}
	if op != nil {
		ev.SnapshotID = op.SnapshotID
	}
	ev.ID = rec.OpID + "_cleanup"
	_ = s.audit.Emit(ctx, ev)
	return nil
}
