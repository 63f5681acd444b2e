package snapshotter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
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

// pruneState purges (or with dryRun counts) the records of work that ended
// before cutoff: operations completed, failed or cancelled, with any
// checkpoint and cancel request of theirs; migrations that ended and keep
// no snapshot busy; retention claims of days over before cutoff. Each
// record is purged only at the revision it was read at. It returns how
// many of each kind.
func (s *Service) pruneState(ctx context.Context, cutoff time.Time, dryRun bool) (map[string]int, error) {
	kv := s.assets.State
	lister, err := kv.ListKeys(ctx)
	counts := map[string]int{prunedOperations: 0, prunedMigrations: 0, prunedClaims: 0}
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return counts, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list state keys: %w", err)
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
			if !ok || !terminalStatus(op.Status) {
				continue
			}
			if at := lastChange(op.UpdatedAt, op.Time); !at.IsZero() && at.Before(cutoff) {
				purge(prunedOperations, key, e.Revision(), contract.CheckpointKey(op.OpID), contract.CancelKey(op.OpID))
			}
		case strings.HasPrefix(key, contract.MigrationKey("")):
			e, r, ok := getState[contract.MigrationRecord](ctx, kv, key)
			if !ok || migrationBusy(&r) != "" {
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
	return counts, errors.Join(errs...)
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

func terminalStatus(status string) bool {
	switch status {
	case contract.StatusCompleted, contract.StatusFailed, contract.StatusCancelled:
		return true
	}
	return false
}
