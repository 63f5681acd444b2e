package snapshotter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/fence"
	"github.com/nats-io/nats.go/jetstream"
)

// The state bucket gains a record for every snapshot, rollback and
// migration, and a claim for every day's retention run. A run of retention
// over everything purges those of work that ended before its cutoff, so
// that the bucket, and `status` and every run that reads it, stay the size
// of recent work: the audit trail keeps the history. It leaves alone what
// has not ended (a queued, running or paused one, a migration whose
// rollback is pending or alerted), what changed since it was read, and what
// it cannot read.

// The kinds of records pruneState purges, as the cleanup report counts
// them.
const (
	prunedOperations = "operations"
	prunedMigrations = "migrations"
	prunedClaims     = "retention_claims"
)

// pruned is what pruneState did: the records purged by kind, and the
// operations it failed because no worker could end them any more.
type pruned struct {
	counts    map[string]int
	abandoned []string
}

// pruneState purges (or with dryRun counts) the records of work that ended
// before cutoff: operations completed, failed or cancelled, with any
// checkpoint and cancel request of theirs; migrations that ended and keep
// no snapshot busy; retention claims of days over before cutoff. Each
// record is purged only at the revision it was read at. An operation
// still queued or running whose last change is older than the work queue
// keeps commands (bus.CommandMaxAge) is failed instead (abandon): its
// command is gone, so no worker can end it. The operations in keepOps stay
// (restoredKeeps).
func (s *Service) pruneState(ctx context.Context, now, cutoff time.Time, dryRun bool, keepOps map[string]bool) (pruned, error) {
	kv := s.assets.State
	lister, err := kv.ListKeys(ctx)
	res := pruned{counts: map[string]int{prunedOperations: 0, prunedMigrations: 0, prunedClaims: 0}}
	counts := res.counts
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return res, nil
	}
	if err != nil {
		return pruned{}, fmt.Errorf("list state keys: %w", err) // nothing done, nothing counted
	}
	keys := map[string]bool{}
	for k := range lister.Keys() {
		keys[k] = true
	}
	var errs []error
	purge := func(kind, key string, rev uint64, also ...string) {
		if dryRun {
			counts[kind]++
			return
		}
		if beforeStatePurge != nil {
			beforeStatePurge(key)
		}
		if err := kv.Purge(ctx, key, jetstream.LastRevision(rev)); err != nil {
			// Changed since it was read (a new run of the same job), or
			// the bucket failed: the next run decides again.
			if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				errs = append(errs, fmt.Errorf("purge %s: %w", key, err))
			}
			return
		}
		counts[kind]++
		for _, k := range also {
			if keys[k] {
				if err := kv.Purge(ctx, k); err != nil {
					errs = append(errs, fmt.Errorf("purge %s: %w", k, err))
				}
			}
		}
	}
	for key := range keys {
		if ctx.Err() != nil {
			break
		}
		switch {
		case strings.HasPrefix(key, contract.OperationKey("")):
			e, op, ok := getState[contract.Operation](ctx, kv, key)
			if !ok {
				continue
			}
			at := lastChange(op.UpdatedAt, op.Time)
			if at.IsZero() {
				continue
			}
			if !contract.Ended(op.Status) {
				if !at.Before(now.Add(-abandonedAfter)) {
					continue
				}
				if !dryRun {
					if err := s.abandon(ctx, e.Revision(), op, now); err != nil {
						if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
							errs = append(errs, err)
						}
						continue
					}
				}
				res.abandoned = append(res.abandoned, op.OpID)
				continue
			}
			// A rollback whose leftovers are not taken back yet keeps its
			// record, which says what they are and when they are gone.
			if at.Before(cutoff) && !keys[contract.LeftoversKey(op.OpID)] && !keepOps[op.OpID] {
				purge(prunedOperations, key, e.Revision(), contract.CheckpointKey(op.OpID), contract.CancelKey(op.OpID))
			}
		case strings.HasPrefix(key, contract.MigrationKey("")):
			e, r, ok := getState[contract.MigrationRecord](ctx, kv, key)
			if !ok || migrationBusy(&r, now) != "" {
				continue
			}
			if at := lastChange(r.UpdatedAt, r.EndedAt, r.Time); !at.IsZero() && at.Before(cutoff) {
				purge(prunedMigrations, key, e.Revision())
			}
		case strings.HasPrefix(key, retentionClaimPrefix):
			day, err := time.Parse(time.DateOnly, strings.TrimPrefix(key, retentionClaimPrefix))
			if err != nil || !day.Add(24*time.Hour).Before(cutoff) {
				continue
			}
			if e, err := kv.Get(ctx, key); err == nil {
				purge(prunedClaims, key, e.Revision())
			}
		}
	}
	slices.Sort(res.abandoned)
	return res, errors.Join(errs...)
}

// abandonedAfter is how long after its last change an operation not ended
// is failed by abandon: its command has left the work queue by then.
const abandonedAfter = bus.CommandMaxAge + time.Hour

// abandon fails op, queued or running since before its command left the
// work queue, at the revision it was read at: no worker took the command
// in time (none ran), or the last one lost touch and the give-up
// (givenUp) was not heard. A rollback's write fence, if it holds one,
// stays raised, as when a rollback is given up.
func (s *Service) abandon(ctx context.Context, rev uint64, op contract.Operation, now time.Time) error {
	worker := "snapshotter"
	if op.Kind == "rollback" {
		worker = "restorer"
	}
	why := fmt.Sprintf("no worker ended it: its command left %s, which keeps commands %s (no %s took it in time, or the last one lost touch)",
		contract.StreamCommands, contract.FormatAge(bus.CommandMaxAge), worker)
	if op.Kind == "rollback" && op.Tenant != "" && op.Database != "" {
		if note, err := fence.LeftRaised(ctx, s.assets.State, op.Tenant, op.Database, op.OpID); note != "" && err == nil {
			why += "; the data may be half restored, and " + note
		}
		op.Phase = contract.StatusFailed
	}
	op.Envelope = contract.NewEnvelope(contract.TypeOperation)
	op.Status, op.Error, op.UpdatedAt = contract.StatusFailed, why, now.UTC()
	if op.Kind == "rollback" {
		// As the restorer marks every rollback it ends: not the archive's
		// fault, so asking again can help (the watchdog offers the command).
		op.ErrorCode = contract.ErrorOther
	}
	data, err := json.Marshal(op)
	if err != nil {
		return err
	}
	if _, err := s.assets.State.Update(ctx, contract.OperationKey(op.OpID), data, rev); err != nil {
		return fmt.Errorf("fail abandoned operation %s: %w", op.OpID, err)
	}
	s.log.Warn("operation failed: no worker ended it before its command left the work queue", "op_id", op.OpID, "kind", op.Kind)
	return nil
}

// beforeStatePurge, when set (by tests), runs between reading a record and
// purging it.
var beforeStatePurge func(key string)

// getState reads and decodes a state record; false when it is gone or
// unreadable (it is then left as it is).
func getState[T any](ctx context.Context, kv jetstream.KeyValue, key string) (jetstream.KeyValueEntry, T, bool) {
	var v T
	e, err := kv.Get(ctx, key)
	if err != nil || json.Unmarshal(e.Value(), &v) != nil {
		return nil, v, false
	}
	return e, v, true
}

// lastChange is the latest of ts.
func lastChange(ts ...time.Time) time.Time {
	var last time.Time
	for _, t := range ts {
		if t.After(last) {
			last = t
		}
	}
	return last
}
