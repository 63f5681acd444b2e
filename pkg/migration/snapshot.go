package migration

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/nats-io/nats.go/jetstream"
)

// runSkew is how much earlier than the started event a record without a
// run number may say it started and still count as this run's (clocks of
// the job and the watchdog differ).
const runSkew = time.Minute

// WaitForSnapshot returns the id of the pre-migration snapshot a rollback
// of the run restores. It watches the job's migration record (key
// migration.<job> in CHROMA_STATE) until the watchdog has found the
// snapshot Start named (by id, or the one of that name of the run's
// database, once it is made) or, with TakeSnapshot, has taken and
// verified one; it returns ErrSnapshotFailed when the watchdog reports
// it could not, or that the named one cannot be used (it is of another
// database, or its archive is missing). Records of earlier runs of the same job name are ignored.
// Bound the wait with ctx.
func (j *Job) WaitForSnapshot(ctx context.Context) (string, error) {
	r, ok := j.Started()
	if !ok {
		return "", fmt.Errorf("wait for snapshot: %w", ErrNotStarted)
	}
	kv, err := j.js.KeyValue(ctx, contract.BucketState)
	if err != nil {
		return "", fmt.Errorf("wait for snapshot: bucket %s: %w", contract.BucketState, err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := kv.Watch(wctx, contract.MigrationKey(j.job))
	if err != nil {
		return "", fmt.Errorf("wait for snapshot: watch %s: %w", contract.MigrationKey(j.job), err)
	}
	defer func() { _ = w.Stop() }()
	for {
		var entry jetstream.KeyValueEntry
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("wait for snapshot of run %d: %w", r.Sequence, ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return "", fmt.Errorf("wait for snapshot of run %d: watcher stopped", r.Sequence)
			}
			entry = e
		}
		if entry == nil || entry.Operation() != jetstream.KeyValuePut {
			continue // end of the initial values, or a delete
		}
		var rec contract.MigrationRecord
		if err := json.Unmarshal(entry.Value(), &rec); err != nil {
			j.log.Warn("migration record is not JSON; ignored", attrErr, err)
			continue
		}
		if !sameRun(&rec, r) {
			continue
		}
		switch {
		case rec.PinnedSnapshotID != "":
			return rec.PinnedSnapshotID, nil
		case r.Event.TakeSnapshot && rec.SnapshotID != "":
			return rec.SnapshotID, nil
		case rec.SnapshotError != "":
			return "", fmt.Errorf("%w: %s", ErrSnapshotFailed, rec.SnapshotError)
		case rec.Status == contract.MigrationCompleted || rec.Status == contract.MigrationFailed || rec.Status == contract.MigrationRolledBack:
			return "", fmt.Errorf("%w: the run ended (%s) without one", ErrSnapshotFailed, rec.Status)
		}
	}
}

// sameRun reports whether rec is the record of the run started with r.
func sameRun(rec *contract.MigrationRecord, r Receipt) bool {
	if rec.Run != 0 {
		return rec.Run == r.Sequence
	}
	return !rec.StartedAt.Before(r.Event.Time.Add(-runSkew))
}
