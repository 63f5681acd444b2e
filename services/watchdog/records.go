package watchdog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/nats-io/nats.go/jetstream"
)

// casAttempts bounds a compare-and-set loop: each retry means another
// instance wrote the record in between, which settles within a few rounds.
const casAttempts = 16

// jobNameRE is what a job name must be to name a key in the state bucket
// (KV keys allow fewer characters than subject tokens).
var jobNameRE = regexp.MustCompile(`^[A-Za-z0-9_=-]{1,200}$`)

// errConflict says the record kept changing under a compare-and-set.
var errConflict = errors.New("the migration record kept changing; try again")

// errUnreadable says a migration record is not a record: asking again
// will not help, an operator must delete it.
var errUnreadable = errors.New("unreadable migration record")

// watchRecords fills the record cache from the state bucket and keeps it
// current until ctx ends. The cache drives the ticker; every decision
// re-reads the key and writes by revision, and the status report reads
// the bucket.
func (s *Service) watchRecords(ctx context.Context) error {
	w, err := s.assets.State.WatchFiltered(ctx, []string{contract.MigrationKey(">")})
	if err != nil {
		return fmt.Errorf("watch migration records: %w", err)
	}
	initial := time.NewTimer(30 * time.Second)
	defer initial.Stop()
	for done := false; !done; {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watch migration records: the watcher stopped")
			}
			if e == nil {
				done = true // every current value has been seen
				continue
			}
			s.applyEntry(e)
		case <-initial.C:
			_ = w.Stop()
			return errors.New("watch migration records: no initial values within 30s")
		case <-ctx.Done():
			_ = w.Stop()
			return ctx.Err()
		}
	}
	go func() {
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e != nil {
					s.applyEntry(e)
				}
			}
		}
	}()
	return nil
}

// applyEntry updates the cache with a watched entry.
func (s *Service) applyEntry(e jetstream.KeyValueEntry) {
	job := strings.TrimPrefix(e.Key(), contract.MigrationKey(""))
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(s.records, job)
		return
	}
	var rec contract.MigrationRecord
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		s.log.Warn("unreadable migration record ignored", "key", e.Key(), "err", err)
		return
	}
	s.cacheLocked(job, rec, e.Revision())
}

func (s *Service) cacheLocked(job string, rec contract.MigrationRecord, rev uint64) {
	if cur, ok := s.records[job]; ok && cur.rev >= rev {
		return
	}
	s.records[job] = cachedRecord{rec: rec, rev: rev}
}

// cached returns the cached records, oldest run first.
func (s *Service) cached() []contract.MigrationRecord {
	s.mu.Lock()
	out := make([]contract.MigrationRecord, 0, len(s.records))
	for _, c := range s.records {
		out = append(out, c.rec)
	}
	s.mu.Unlock()
	sortRecords(out)
	return out
}

// sortRecords sorts records oldest run first, then by job.
func sortRecords(recs []contract.MigrationRecord) {
	slices.SortFunc(recs, func(a, b contract.MigrationRecord) int {
		if c := a.StartedAt.Compare(b.StartedAt); c != 0 {
			return c
		}
		return strings.Compare(a.Job, b.Job)
	})
}

// get reads a job's record from the bucket; nil when there is none.
func (s *Service) get(ctx context.Context, job string) (*contract.MigrationRecord, uint64, error) {
	e, err := s.assets.State.Get(ctx, contract.MigrationKey(job))
	if bus.IsNotFound(err) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read migration record %s: %w", job, err)
	}
	var rec contract.MigrationRecord
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return nil, 0, fmt.Errorf("%w %s (%v): delete it with `nats kv del %s %s`", errUnreadable, contract.MigrationKey(job), err,
			contract.BucketState, contract.MigrationKey(job))
	}
	return &rec, e.Revision(), nil
}

// update changes a job's record by compare-and-set. fn gets a fresh copy of
// the current record (nil when there is none) and returns the record to
// write, or nil to leave it as it is. fn may run more than once, so it
// must not act outside the record: callers act after update reports that
// their write went in (written), which happens in exactly one caller
// however many instances race.
func (s *Service) update(ctx context.Context, job string, fn func(cur *contract.MigrationRecord) *contract.MigrationRecord) (rec *contract.MigrationRecord, written bool, err error) {
	key := contract.MigrationKey(job)
	for range casAttempts {
		cur, rev, err := s.get(ctx, job)
		if err != nil {
			return nil, false, err
		}
		next := fn(cur)
		if next == nil {
			return cur, false, nil
		}
		next.Envelope = contract.NewEnvelope(contract.TypeMigrationRecord)
		next.Job = job
		next.UpdatedAt = next.Time
		data, err := json.Marshal(next)
		if err != nil {
			return nil, false, fmt.Errorf("encode migration record %s: %w", job, err)
		}
		var newRev uint64
		if cur == nil {
			newRev, err = s.assets.State.Create(ctx, key, data)
		} else {
			newRev, err = s.assets.State.Update(ctx, key, data, rev)
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return nil, false, fmt.Errorf("write migration record %s: %w", job, err)
		}
		s.mu.Lock()
		s.cacheLocked(job, *next, newRev)
		s.mu.Unlock()
		if hook := afterRecordWrite.Load(); hook != nil {
			(*hook)(next)
		}
		return next, true, nil
	}
	return nil, false, fmt.Errorf("migration record %s: %w", job, errConflict)
}

// updateAudited is update preceded by the audit event (under id) that
// reports the change: the record changes only once the event is stored,
// so an instance stopped between the two loses nothing. Whoever makes the
// change after such a stop sends the event again under the same id, which
// the audit stream stores once within its duplicate window. When the
// event cannot be stored, nothing is written and the error says so: the
// next tick tries again.
func (s *Service) updateAudited(ctx context.Context, id string, ev contract.AuditEvent, job string, fn func(cur *contract.MigrationRecord) *contract.MigrationRecord) (rec *contract.MigrationRecord, written bool, err error) {
	if err := s.emitChecked(ctx, id, ev); err != nil {
		return nil, false, err
	}
	return s.update(ctx, job, fn)
}

// afterRecordWrite, when set (by tests), runs after every migration record
// an instance writes: a test holds an instance there, as if it had died
// right after the write, to see that nothing the write stands for is lost.
var afterRecordWrite atomic.Pointer[func(rec *contract.MigrationRecord)]

// ended says the job itself is over: it reported completed or failed, or
// its run was rolled back.
func ended(r *contract.MigrationRecord) bool {
	switch r.Status {
	case contract.MigrationCompleted, contract.MigrationFailed, contract.MigrationRolledBack:
		return true
	}
	return !r.EndedAt.IsZero()
}

// rollbackPending says a triggered rollback has not ended yet.
func rollbackPending(r *contract.MigrationRecord) bool {
	if r.Trigger == "" {
		return false
	}
	switch r.RollbackStatus {
	case contract.RollbackRequested, contract.StatusQueued, contract.StatusRunning:
		return true
	}
	return false
}

// busy says the run is not over: the job runs, or its rollback does.
func busy(r *contract.MigrationRecord) bool {
	return !ended(r) || rollbackPending(r)
}

// pausable says pause and resume apply: the job runs and no trigger took
// it over (an alerted trigger leaves the job running).
func pausable(r *contract.MigrationRecord) bool {
	return !ended(r) && (r.Trigger == "" || r.RollbackStatus == contract.RollbackAlerted)
}

// rollbackOpID is the deterministic op id of a run's rollback: every
// instance, every retry and every redelivered event asks for the same one,
// so the restorer starts it once.
func rollbackOpID(r *contract.MigrationRecord, trigger string) string {
	return fmt.Sprintf("op_rb_%s_%d_%s", r.Job, r.Run, trigger)
}

// snapshotName is the name of the pre-migration snapshot the watchdog takes.
func snapshotName(job string) string {
	name := "pre_migration_" + strings.ReplaceAll(job, "=", "-")
	if len(name) > 128 {
		name = name[:128]
	}
	return name
}
