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

// heartbeatWait bounds the heartbeat a retry starts with: the client's
// own retries would otherwise add their half minute to every try while
// Chroma is away, and to the wait once it is back.
const heartbeatWait = 5 * time.Second

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
	ids, err := s.leftoverOps(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("cannot list what stopped rollbacks left", "err", err)
		}
		return
	}
	for _, id := range ids {
		if ctx.Err() != nil {
			return
		}
		if err := s.clearLeftover(ctx, id); err != nil && !errors.Is(err, errNotEnded) {
			s.log.Warn("what a stopped rollback left is not taken back yet; retrying later", "op_id", id, "err", err)
		}
	}
}

// leftoverOps are the rollbacks whose leftovers are kept (LeftoversKey).
func (s *Service) leftoverOps(ctx context.Context) ([]string, error) {
	lister, err := s.assets.State.ListKeysFiltered(ctx, contract.LeftoversPrefix+"*")
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list what stopped rollbacks left: %w", err)
	}
	var ids []string
	for k := range lister.Keys() {
		ids = append(ids, strings.TrimPrefix(k, contract.LeftoversPrefix))
	}
	return ids, nil
}

// errNotEnded says the rollback whose leftovers were to be taken back is
// still running: its job holds the lease, and ends by itself.
var errNotEnded = errors.New("its rollback has not ended yet")

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
		return errNotEnded
	}
	c, target, apiErr := s.targetClient(rec.ChromaURL)
	if apiErr != nil {
		return s.leftoversFailed(ctx, rec, rev, errors.New(apiErr.msg))
	}
	server := "" // the lease the rollback held: on another server, in its name
	if target != s.ownURL {
		server = target
	}
	// Not while Chroma is away: that would only hold the lease through
	// the client's retries.
	hctx, cancel := context.WithTimeout(ctx, heartbeatWait)
	err = c.Heartbeat(hctx)
	cancel()
	if err != nil {
		return s.leftoversFailed(ctx, rec, rev, err)
	}
	// The lease in the rollback's own name: a rollback of the database
	// started meanwhile is refused, naming it, and this waits for one
	// that runs.
	lease, err := fence.Acquire(ctx, s.assets.State, contract.Lease{Tenant: rec.Tenant, Database: rec.Database, Holder: opID,
		Kind: "rollback_cleanup", Actor: "restorer", Server: server}, s.cfg.LeaseTTL)
	if err != nil {
		return s.leftoversFailed(ctx, rec, rev, err)
	}
	var released bool
	release := func() {
		if released {
			return
		}
		released = true
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := lease.Release(rctx); err != nil {
			s.log.Warn("could not release the lease after a rollback's cleanup", "op_id", opID, "err", err)
		}
	}
	defer release()
	// Read again under the lease: another instance may have finished it.
	if rec, rev, err = s.readLeftovers(ctx, opID); err != nil || rec == nil {
		return err
	}
	var still []contract.LeftoverCollection
	var errs []error
	var notes []string
	for _, l := range rec.Collections {
		how, err := takeBack(ctx, c, rec.Tenant, rec.Database, l)
		if err != nil {
			still = append(still, l)
			errs = append(errs, fmt.Errorf("%q: %w", l.Target, err))
			continue
		}
		notes = append(notes, leftoverNote(ctx, c, rec, l, how))
	}
	if len(still) > 0 {
		rec.Collections = still
		return s.leftoversFailed(ctx, rec, rev, errors.Join(errs...))
	}
	// As a job's end: whoever sees the operation say so finds the lease
	// released and the leftover record gone (status's rollback_leftovers
	// alert with it).
	release()
	if err := s.assets.State.Purge(ctx, contract.LeftoversKey(opID), jetstream.LastRevision(rev)); err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return fmt.Errorf("drop %s: %w", contract.LeftoversKey(opID), err)
	}
	if err := s.noteLeftoversCleared(ctx, rec, time.Now().UTC(), notes); err != nil {
		return err
	}
	s.log.Info("took back what a stopped rollback left", "op_id", opID, "tenant", rec.Tenant, "database", rec.Database, "collections", len(rec.Collections))
	return nil
}

// leftoverNote says what became of l, taken back as how says.
func leftoverNote(ctx context.Context, c *chroma.Client, rec *contract.Leftovers, l contract.LeftoverCollection, how takenBack) string {
	staging := fmt.Sprintf("; staging collection %q deleted", l.Staging)
	switch how {
	case tookRestored:
		return fmt.Sprintf("%q is restored; the collection it replaced (%q) is deleted", l.Target, l.Old)
	case tookRenamedBack:
		return fmt.Sprintf("%q holds what it held before this rollback again: it was left renamed aside as %q", l.Target, l.Old) + staging
	case tookNothingToPut:
		return fmt.Sprintf("neither %q nor %q exists: nothing to put back", l.Target, l.Old) + staging
	}
	switch old, err := findCollection(ctx, c, rec.Tenant, rec.Database, l.Old); {
	case err != nil:
		return fmt.Sprintf("%q was left as it is; whether %q is left too could not be read (%v)", l.Target, l.Old, err) + staging
	case old != nil:
		// Made again while it was renamed aside (by a later rollback, or
		// a migration): which to keep is an operator's call.
		return fmt.Sprintf("%q holds what %q held before this rollback, but %q was made again meanwhile, so both were left: keep one", l.Old, l.Target, l.Target) + staging
	}
	return fmt.Sprintf("%q was left as it is", l.Target) + staging
}

func (s *Service) readLeftovers(ctx context.Context, opID string) (*contract.Leftovers, uint64, error) {
	key := contract.LeftoversKey(opID)
	rec, rev, err := bus.GetJSON[contract.Leftovers](ctx, s.assets.State, key, key)
	if err != nil || rec == nil {
		return nil, 0, err
	}
	if err := checkLeftovers(rec, opID); err != nil {
		return nil, 0, err
	}
	return rec, rev, nil
}

// checkLeftovers says whether rec, kept under opID's key, names its
// operation, tenant and database.
func checkLeftovers(rec *contract.Leftovers, opID string) error {
	if rec.OpID != opID || rec.Tenant == "" || rec.Database == "" {
		return fmt.Errorf("%s does not name its operation, tenant and database", contract.LeftoversKey(opID))
	}
	return nil
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

// pendingLeftovers are the records of what stopped rollbacks left in sp's
// database on sp's Chroma, not yet taken back: every record read by one
// watcher (a plan asks on every call), not listed and then got one by one.
func (s *Service) pendingLeftovers(ctx context.Context, sp *spec) ([]contract.Leftovers, error) {
	var out []contract.Leftovers
	err := bus.EachValue(ctx, s.assets.State, contract.LeftoversPrefix+">", func(key string, data []byte) error {
		var rec contract.Leftovers
		if err := json.Unmarshal(data, &rec); err != nil {
			return fmt.Errorf("%s is unreadable: %w", key, err)
		}
		if err := checkLeftovers(&rec, strings.TrimPrefix(key, contract.LeftoversPrefix)); err != nil {
			return err
		}
		if rec.Tenant != sp.tenant || rec.Database != sp.database {
			return nil
		}
		if _, u, apiErr := s.targetClient(rec.ChromaURL); apiErr == nil && u != sp.targetURL {
			return nil // the same names on another Chroma
		}
		out = append(out, rec)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// leftoverWarnings warn a plan of sp of what stopped rollbacks left there:
// starting it takes that back first, which the plan cannot show.
func (s *Service) leftoverWarnings(ctx context.Context, sp *spec) []string {
	recs, err := s.pendingLeftovers(ctx, sp)
	if err != nil {
		return []string{fmt.Sprintf("whether earlier rollbacks left collections here could not be read (%v)", err)}
	}
	var out []string
	for i := range recs {
		out = append(out, fmt.Sprintf("rollback %s left %d collection(s) here while Chroma did not answer: %s. Starting this rollback takes them back first, "+
			"so a staging collection the plan lists as extra goes, and a collection renamed aside comes back under its name", recs[i].OpID, len(recs[i].Collections), recs[i].Describe(5)))
	}
	return out
}

// leftoversFirst takes back, before a rollback of sp starts, what stopped
// rollbacks left there. Planned over them, it would take their staging
// collections for extra ones (which drop_extra deletes, a live collection
// renamed aside among them) and a collection renamed aside for a missing
// one. It refuses the start when they cannot be taken back now.
func (s *Service) leftoversFirst(ctx context.Context, sp *spec) *apiError {
	recs, err := s.pendingLeftovers(ctx, sp)
	if err != nil {
		return unavailable("%v", err)
	}
	for i := range recs {
		rec := &recs[i]
		if err := s.clearLeftover(ctx, rec.OpID); err != nil {
			return &apiError{code: contract.CodeConflict, msg: fmt.Sprintf("rollback %s left collections in %s/%s that cannot be taken back now (%v): %s. "+
				"The restorer retries every %s; start this rollback once `status` no longer lists alert rollback_leftovers", rec.OpID, rec.Tenant, rec.Database, err,
				rec.Describe(5), s.cfg.LeftoverRetry)}
		}
	}
	return nil
}
