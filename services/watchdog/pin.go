package watchdog

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

// restorePoint is the snapshot a run's rollback restores: the pinned one,
// else what the started event named.
func restorePoint(rec *contract.MigrationRecord) string {
	if rec.PinnedSnapshotID != "" {
		return rec.PinnedSnapshotID
	}
	return rec.SnapshotID
}

// pinEvery is how often a run's snapshot not found yet is looked for.
const pinEvery = 5 * time.Second

// needsPin says a run names its snapshot and the watchdog has not found
// it yet (nor found it unusable).
func needsPin(r *contract.MigrationRecord) bool {
	return r.SnapshotID != "" && !r.TakeSnapshot && !snapshotSettled(r) && !ended(r) && r.Trigger == ""
}

// pin records the snapshot the run's SnapshotID stands for, once: a name
// is not unique, and the rollback must restore what the run started
// from, not a snapshot made or imported later under that name, nor one of
// another database. It looks at the started event, then every pinEvery
// while a snapshot of that name is still being made (the job asked for it
// and started at once) or none is found, and at the trigger. An id of
// another database is an alert at once, before the job writes: no
// rollback to it is possible.
//
// With alert false (the started event, before it is audited) an unusable
// snapshot is left to the next look, which raises the alert after the
// run's migration.started. pin returns the pinned id, "" while there is
// none.
func (s *Service) pin(ctx context.Context, job string, alert bool) (pinned string) {
	found := false
	s.mu.Lock()
	s.pinAt[job] = time.Now().Add(pinEvery)
	s.mu.Unlock()
	defer func() {
		if found {
			s.mu.Lock()
			delete(s.pinAt, job)
			s.mu.Unlock()
		}
	}()
	rec, _, err := s.get(ctx, job)
	if err != nil || rec == nil || !needsPin(rec) {
		found = err == nil
		if rec != nil {
			pinned = rec.PinnedSnapshotID
		}
		return pinned
	}
	res, err := s.resolveSnapshot(ctx, rec)
	found = err == nil && ((res.never && alert) || res.id != "")
	switch {
	case err != nil:
		s.log.Warn("cannot look up the pre-migration snapshot; looking again later", "job", job, "snapshot", rec.SnapshotID, "err", err)
	case res.never && alert:
		s.snapshotFailed(ctx, rec, "cannot be used", res.why)
	case res.id != "":
		next, written, err := s.update(ctx, job, func(cur *contract.MigrationRecord) *contract.MigrationRecord {
			if cur == nil || cur.Run != rec.Run || !needsPin(cur) {
				return nil
			}
			next := *cur
			next.PinnedSnapshotID = res.id
			return &next
		})
		if err != nil {
			s.log.Warn("cannot pin the pre-migration snapshot; looking again later", "job", job, "err", err)
		} else if written {
			s.log.Info("pre-migration snapshot pinned", "job", job, "run", rec.Run, "snapshot", rec.SnapshotID, "snapshot_id", res.id)
		}
		if next != nil && next.Run == rec.Run {
			pinned = next.PinnedSnapshotID
		}
	}
	return pinned
}

// pinDue says the tick may look for job's snapshot again.
func (s *Service) pinDue(job string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !time.Now().Before(s.pinAt[job])
}

// resolution is what a run's SnapshotID stands for: id, or why none.
type resolution struct {
	id, why string
	// never: no snapshot can ever be it (an id of another database).
	never bool
	// pending: a snapshot of that name of the run's database is being
	// made; it is the one meant.
	pending bool
	// keyMissing: never, only because no restorer holds its key: the
	// snapshot itself is whole, and restores once one does.
	keyMissing bool
}

// resolveSnapshot finds the snapshot rec.SnapshotID stands for in the
// run's tenant/database: the snapshot of that id, else the one of that
// name still being made, else the one of that name taken last
// (contract.SnapshotByName).
func (s *Service) resolveSnapshot(ctx context.Context, rec *contract.MigrationRecord) (resolution, error) {
	ref, db := rec.SnapshotID, rec.Tenant+"/"+rec.Database
	if contract.ValidToken(ref) == nil {
		e, err := s.assets.Manifests.Get(ctx, ref)
		switch {
		case err == nil:
			var m contract.SnapshotManifest
			if err := json.Unmarshal(e.Value(), &m); err != nil {
				return resolution{why: fmt.Sprintf("the manifest of snapshot %s is unreadable: %v", ref, err), never: true}, nil
			}
			if m.Tenant != rec.Tenant || m.Database != rec.Database {
				return resolution{why: fmt.Sprintf("snapshot %s is of %s/%s, not of the migrated database %s: its rollback would restore another database",
					ref, m.Tenant, m.Database, db), never: true}, nil
			}
			return s.usable(ctx, &m)
		case !bus.IsNotFound(err) && !errors.Is(err, jetstream.ErrKeyDeleted):
			return resolution{}, fmt.Errorf("read manifest %s: %w", ref, err)
		}
	}
	making := ""
	if err := bus.EachValue(ctx, s.assets.State, "op.>", func(_ string, data []byte) error {
		var op contract.Operation
		if json.Unmarshal(data, &op) == nil && op.Kind == "snapshot" && op.Name == ref && op.Tenant == rec.Tenant &&
			op.Database == rec.Database && !contract.Ended(op.Status) {
			making = op.OpID
		}
		return nil
	}); err != nil {
		return resolution{}, err
	}
	if making != "" {
		return resolution{why: fmt.Sprintf("snapshot %q of %s is still being made (operation %s)", ref, db, making), pending: true}, nil
	}
	var named []contract.SnapshotManifest
	if err := bus.EachValue(ctx, s.assets.Manifests, ">", func(_ string, data []byte) error {
		var m contract.SnapshotManifest
		if json.Unmarshal(data, &m) == nil && m.Name == ref {
			named = append(named, m)
		}
		return nil
	}); err != nil {
		return resolution{}, err
	}
	if m, _ := contract.SnapshotByName(named, ref, rec.Tenant, rec.Database); m != nil {
		return s.usable(ctx, m)
	}
	if len(named) > 0 {
		return resolution{why: fmt.Sprintf("no snapshot of %s has the id or name %q: the snapshots of that name are of other databases (%s/%s): restoring one would roll back another database",
			db, ref, named[0].Tenant, named[0].Database)}, nil
	}
	return resolution{why: fmt.Sprintf("no snapshot of %s has the id or name %q", db, ref)}, nil
}

// usable resolves a run's snapshot to m, unless m's archive is not in the
// object store as its manifest describes it (deleted or lost outside
// chromadb-rollback), or it is encrypted and no restorer can decrypt it:
// then no rollback to it can run, and the job must not write. The restorer's full verification comes at the rollback; this
// is the look a migration's start can afford.
func (s *Service) usable(ctx context.Context, m *contract.SnapshotManifest) (resolution, error) {
	info, err := s.archiveInfo(ctx, m.Object)
	switch {
	case errors.Is(err, jetstream.ErrObjectNotFound):
		return resolution{why: fmt.Sprintf("the archive of snapshot %s (object %s) is missing from %s: no rollback to it can run; take a new snapshot",
			m.SnapshotID, m.Object, contract.ObjectSnapshots), never: true}, nil
	case err != nil:
		// An early warning only: the rollback verifies the archive in
		// full. A watchdog user without the permission to read objects'
		// metadata (an accounts.conf from before it was needed) pins as
		// it did before.
		s.log.Warn("cannot look up the archive of the pre-migration snapshot; pinned without that check",
			"snapshot", m.SnapshotID, "object", m.Object, "err", err)
		return resolution{id: m.SnapshotID}, nil
	case int64(info.Size) != m.Size:
		return resolution{why: fmt.Sprintf("the archive of snapshot %s (object %s) holds %d bytes where its manifest says %d: no rollback to it can run; take a new snapshot",
			m.SnapshotID, m.Object, info.Size, m.Size), never: true}, nil
	}
	if why := s.decryptProblem(ctx, m); why != "" {
		return resolution{why: why, never: true, keyMissing: true}, nil
	}
	return resolution{id: m.SnapshotID}, nil
}
