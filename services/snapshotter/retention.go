package snapshotter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
)

// Retention deletes snapshots older than a period, once a day at 00:00 UTC
// and on request (chroma.api.snapshot.cleanup). It never deletes a pinned
// snapshot (keep), one a migration not yet over or a rollback not yet ended
// uses, the newest verified snapshot of a tenant/database, nor the newest
// one holding all its collections. Each snapshot is deleted manifest first,
// and only if its manifest is still the one the run decided on, so a
// snapshot pinned meanwhile survives. If the state cannot be read, the run
// deletes nothing.

// RetentionOff as Config.Retention turns the daily run off; cleanup
// requests must then say older_than.
const RetentionOff time.Duration = -1

// retentionActor is the actor of the daily run's audit events.
const retentionActor = "retention"

// Clock tells retention the time; tests inject a fake one.
type Clock interface {
	Now() time.Time
	// After delivers the time once d has passed.
	After(d time.Duration) <-chan time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

var _ Clock = systemClock{}

// ParseRetention reads a retention period as the flag and RETENTION take
// it: a Go duration ("72h"), days ("7d", "1d12h"), or "off".
func ParseRetention(s string) (time.Duration, error) {
	if strings.EqualFold(strings.TrimSpace(s), "off") {
		return RetentionOff, nil
	}
	return contract.ParseAge(s)
}

// retentionString says a retention period the way ParseRetention reads it.
func retentionString(d time.Duration) string {
	if d == RetentionOff {
		return "off"
	}
	return contract.FormatAge(d)
}

// RetentionClaimKey is the key in CHROMA_STATE that the instance running
// the daily retention of day (00:00 UTC) creates first, so that one
// instance runs it.
func RetentionClaimKey(day time.Time) string {
	return retentionClaimPrefix + day.UTC().Format(time.DateOnly)
}

const retentionClaimPrefix = "retention."

// retentionClaim is the value of a RetentionClaimKey.
type retentionClaim struct {
	Instance  string    `json:"instance"`
	Day       string    `json:"day"`
	ClaimedAt time.Time `json:"claimed_at"`
}

// retentionLoop runs retention at every 00:00 UTC until ctx is done, on
// the instance that claims the day first.
func (s *Service) retentionLoop(ctx context.Context) {
	if s.cfg.Retention == RetentionOff {
		s.log.Info("daily retention is off")
		return
	}
	clock := s.cfg.Clock
	for {
		now := clock.Now().UTC()
		next := now.Truncate(24 * time.Hour).Add(24 * time.Hour)
		select {
		case <-ctx.Done():
			return
		case <-clock.After(next.Sub(now)):
		}
		if !s.claimRetention(ctx, next) {
			continue
		}
		_, err := s.cleanup(ctx, cleanupOptions{
			trigger: contract.CleanupTriggerSchedule, olderThan: s.cfg.Retention,
			actor: retentionActor, reason: "daily retention of " + next.Format(time.DateOnly),
		})
		if err != nil && ctx.Err() == nil {
			s.log.Error("daily retention failed", "day", next.Format(time.DateOnly), "err", err)
		}
	}
}

// claimRetention creates the day's claim key; false when another instance
// has it, or when the state bucket stays unwritable.
func (s *Service) claimRetention(ctx context.Context, day time.Time) bool {
	key := RetentionClaimKey(day)
	data, _ := json.Marshal(retentionClaim{Instance: s.cfg.Instance, Day: day.Format(time.DateOnly), ClaimedAt: s.cfg.Clock.Now().UTC()})
	for attempt := 1; ; attempt++ {
		_, err := s.assets.State.Create(ctx, key, data)
		switch {
		case err == nil:
			return true
		case errors.Is(err, jetstream.ErrKeyExists):
			s.log.Debug("daily retention claimed by another instance", "key", key)
			return false
		case attempt == 3 || ctx.Err() != nil:
			s.log.Error("cannot claim the daily retention; skipped today", "key", key, "err", err)
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(5 * time.Second):
		}
	}
}

// cleanupOptions is one retention run.
type cleanupOptions struct {
	trigger          string
	dryRun           bool
	olderThan        time.Duration
	tenant, database string
	actor, reason    string
}

// manifestEntry is a manifest with the revision it was read at.
type manifestEntry struct {
	m   contract.SnapshotManifest
	rev uint64
}

// keepReason is one reason a snapshot is kept.
type keepReason struct{ code, detail string }

// snapshotUse is what running work needs which snapshot.
type snapshotUse struct {
	// refs maps a snapshot id, or a name, to why it is in use. A name is
	// keyed with the tenant/database of the migration that named it
	// (nameKey), or with none (a rollback's request), and keeps every
	// snapshot of that name there: which one it stands for is the
	// watchdog's and the restorer's to decide (contract.SnapshotByName),
	// and keeping one too many while it runs loses nothing.
	refs map[string][]keepReason
	// restored is, by target tenant/database of the configured Chroma,
	// the newest rollback into it that completed.
	restored map[string]restoredTo
}

// restoredTo is a completed rollback: the snapshot it restored from.
type restoredTo struct {
	snapshotID, opID string
	ended            time.Time
}

// restoredKeeps says which snapshots a database was last restored to and
// has no newer backup of: for every tenant/database whose newest completed
// rollback ended after every verified snapshot of all its collections
// with its archive in place was taken, the snapshot that rollback restored
// from, with why, and that rollback's op id. After a rollback the
// database holds that snapshot's data, while its newest snapshot is the
// rollback's safety snapshot, of the state the rollback undid: were the
// restored snapshot to expire, the database's last good state would be
// only in the database itself. A snapshot of all its collections taken
// after the rollback takes over.
func restoredKeeps(all []manifestEntry, use *snapshotUse, gone map[string]bool) (map[string]keepReason, map[string]bool) {
	keeps, ops := map[string]keepReason{}, map[string]bool{}
	for db, r := range use.restored {
		newer := slices.ContainsFunc(all, func(e manifestEntry) bool {
			m := &e.m
			return m.Tenant+"/"+m.Database == db && !m.VerifiedAt.IsZero() && !m.Partial && !gone[m.SnapshotID] &&
				m.TakenAt().After(r.ended)
		})
		if newer {
			continue
		}
		ops[r.opID] = true
		detail := fmt.Sprintf("what %s was last restored to (rollback %s, ended %s); no snapshot of all its collections was taken since", db, r.opID, r.ended.UTC().Format(time.RFC3339))
		if k, ok := keeps[r.snapshotID]; ok {
			detail = k.detail + "; " + detail
		}
		keeps[r.snapshotID] = keepReason{contract.KeepRestored, detail}
	}
	return keeps, ops
}

// nameKey keys a reference by name within tenant/database ("" for any).
func nameKey(name, tenant, database string) string {
	return "\x00" + name + "\x00" + tenant + "/" + database
}

// add records that ref (an id or a name) is in use, by work on
// tenant/database ("" when it could be any).
func (u *snapshotUse) add(ref, tenant, database, code, detail string) {
	if ref == "" {
		return
	}
	r := keepReason{code, detail}
	u.refs[ref] = append(u.refs[ref], r) // as an id
	if tenant != "" {
		ref = nameKey(ref, tenant, database)
	} else {
		ref = nameKey(ref, "", "")
	}
	u.refs[ref] = append(u.refs[ref], r) // as a name
}

// reasons says why m is in use: by its id, or by its name, each reason
// once (a migration that named m and was pinned to its id uses it once).
func (u *snapshotUse) reasons(m *contract.SnapshotManifest) []keepReason {
	var why []keepReason
	for _, ref := range []string{m.SnapshotID, nameKey(m.Name, m.Tenant, m.Database), nameKey(m.Name, "", "")} {
		for _, r := range u.refs[ref] {
			if !slices.Contains(why, r) {
				why = append(why, r)
			}
		}
	}
	return why
}

// cleanup runs retention once. It audits every deletion and the run. An
// error means the run could not decide what is in use, so it deleted
// nothing; failed deletions are in the report instead.
func (s *Service) cleanup(ctx context.Context, o cleanupOptions) (*contract.CleanupReport, error) {
	now := s.cfg.Clock.Now().UTC()
	rep := &contract.CleanupReport{
		Envelope: contract.NewEnvelope(contract.TypeCleanupReport),
		RunID:    contract.NewID("ret_"), DryRun: o.dryRun, Trigger: o.trigger, Instance: s.cfg.Instance,
		Tenant: o.tenant, Database: o.database,
		OlderThan: contract.FormatAge(o.olderThan), OlderThanSeconds: o.olderThan.Seconds(),
		Now: now, Cutoff: now.Add(-o.olderThan),
		Deleted: []contract.CleanupItem{}, Kept: []contract.CleanupItem{}, Failed: []contract.CleanupItem{},
	}
	log := s.log.With("run_id", rep.RunID, "trigger", o.trigger, "dry_run", o.dryRun)
	runEv := contract.AuditEvent{Action: "snapshot.cleanup", Actor: o.actor, Reason: o.reason, OpID: rep.RunID,
		Tenant: o.tenant, Database: o.database}

	// What is in use is read before the manifests: a migration or rollback
	// that starts after this names a snapshot that is newer than the run's
	// view or was already kept.
	use, err := s.snapshotsInUse(ctx)
	var all []manifestEntry
	if err == nil {
		all, err = s.manifestEntries(ctx)
	}
	if err != nil {
		runEv.Outcome, runEv.Error = contract.OutcomeFailed, "nothing deleted: "+err.Error()
		runEv.Figures = map[string]any{"dry_run": o.dryRun, "trigger": o.trigger, "older_than_seconds": o.olderThan.Seconds()}
		_ = s.audit.Emit(ctx, runEv)
		log.Error("retention run failed; nothing deleted", "err", err)
		return nil, fmt.Errorf("retention: %w; nothing was deleted", err)
	}

	// A snapshot whose archive is gone (lost outside chromadb-rollback)
	// cannot be restored: it does not stand for the newest full one, or
	// the last restorable one would expire while it stays (status, too,
	// shows the newest full one whose archive is there).
	ms := make([]contract.SnapshotManifest, len(all))
	for i := range all {
		ms[i] = all[i].m
	}
	gone := map[string]bool{}
	for _, id := range s.archivesMissing(ctx, ms) {
		gone[id] = true
	}
	restored, restoredOps := restoredKeeps(all, use, gone)
	expired := s.decide(all, use, gone, restored, rep, o)
	// Oldest first, so that a run cut short has freed the oldest.
	slices.Reverse(expired)
	for _, e := range expired {
		item := cleanupItem(&e.m, now)
		item.Reason = contract.ReasonExpired
		item.Detail = fmt.Sprintf("older than %s (age %s) and kept by nothing", rep.OlderThan, item.Age)
		if o.dryRun {
			rep.Deleted = append(rep.Deleted, item)
			rep.BytesFreed += e.m.Size
			continue
		}
		if ctx.Err() != nil {
			item.Error = "not deleted: the snapshotter is stopping"
			rep.Failed = append(rep.Failed, item)
			continue
		}
		err := s.deleteSnapshot(ctx, &e.m, e.rev)
		ev := contract.AuditEvent{Action: "snapshot.delete", Actor: o.actor, Reason: "retention", OpID: rep.RunID,
			SnapshotID: e.m.SnapshotID, Tenant: e.m.Tenant, Database: e.m.Database,
			Figures: map[string]any{"size": e.m.Size, "records": e.m.TotalRecords, "age_seconds": item.AgeSeconds,
				"older_than_seconds": o.olderThan.Seconds(), "trigger": o.trigger}}
		switch {
		case errors.Is(err, errManifestChanged):
			item.Reason, item.Detail = contract.KeepChanged, "the manifest was changed (e.g. pinned) or deleted during the run; the next run decides again"
			rep.Kept = append(rep.Kept, item)
			continue
		case err != nil && !errors.Is(err, errObjectLeft):
			item.Error = err.Error()
			rep.Failed = append(rep.Failed, item)
			ev.Outcome, ev.Error = contract.OutcomeFailed, err.Error()
			_ = s.audit.Emit(ctx, ev)
			log.Warn("retention could not delete a snapshot", "snapshot_id", e.m.SnapshotID, "err", err)
			continue
		case err != nil:
			// The snapshot is gone; its bytes are not freed yet.
			item.Error = err.Error()
			ev.Error = err.Error()
		default:
			rep.BytesFreed += e.m.Size
		}
		ev.Outcome = contract.OutcomeCompleted
		_ = s.audit.Emit(ctx, ev)
		rep.Deleted = append(rep.Deleted, item)
		log.Info("snapshot deleted by retention", "snapshot_id", e.m.SnapshotID, "name", e.m.Name, "age", item.Age, "size", e.m.Size)
	}
	slices.SortFunc(rep.Kept, func(a, b contract.CleanupItem) int { return b.StartedAt.Compare(a.StartedAt) })

	runEv.Outcome = contract.OutcomeCompleted
	runEv.Figures = map[string]any{"dry_run": o.dryRun, "trigger": o.trigger, "older_than_seconds": o.olderThan.Seconds(),
		"scanned": len(rep.Deleted) + len(rep.Kept) + len(rep.Failed), "kept": len(rep.Kept), "failed": len(rep.Failed)}
	if o.tenant == "" && ctx.Err() == nil {
		// Chunks belong to no tenant: only a run over everything sweeps them.
		left, err := s.sweepOrphanChunks(ctx, now, o.dryRun)
		if err != nil {
			log.Warn("could not sweep what killed puts and imports left", "err", err)
		}
		runEv.Figures["orphan_chunk_subjects"], runEv.Figures["stale_staging_objects"] = left.chunks, left.staged
		runEv.Figures["unnamed_archive_objects"] = left.unnamed
		// So are the records of ended work (pruneState).
		// The record of a rollback that keeps what it restored from is
		// how the next run knows: it stays.
		pr, err := s.pruneState(ctx, now, rep.Cutoff, o.dryRun, restoredOps)
		if err != nil {
			log.Warn("could not prune every record of ended work", "err", err)
			runEv.Figures["state_prune_error"] = err.Error()
		}
		rep.StatePruned, rep.Abandoned = pr.counts, pr.abandoned
		for kind, n := range pr.counts {
			runEv.Figures["pruned_"+kind] = n
		}
		runEv.Figures["abandoned_operations"] = len(pr.abandoned)
	}
	if o.dryRun {
		runEv.Figures["would_delete"], runEv.Figures["would_free"] = len(rep.Deleted), rep.BytesFreed
	} else {
		runEv.Figures["deleted"], runEv.Figures["bytes_freed"] = len(rep.Deleted), rep.BytesFreed
	}
	if len(rep.Failed) > 0 {
		runEv.Outcome, runEv.Error = contract.OutcomeFailed, fmt.Sprintf("%d expired snapshots could not be deleted", len(rep.Failed))
	}
	_ = s.audit.Emit(ctx, runEv)
	log.Info("retention run done", "deleted", len(rep.Deleted), "kept", len(rep.Kept), "failed", len(rep.Failed), "bytes_freed", rep.BytesFreed)
	return rep, nil
}

// decide fills rep.Kept with the snapshots in scope that something keeps,
// each with its reasons, and returns the expired ones, newest first. gone
// holds the ids of snapshots whose archive is missing from the store;
// restored what restoredKeeps keeps.
func (s *Service) decide(all []manifestEntry, use *snapshotUse, gone map[string]bool, restored map[string]keepReason, rep *contract.CleanupReport, o cleanupOptions) []manifestEntry {
	// Newest verified, newest verified holding every collection, and of
	// those the newest taken while no writer moved the counts, per
	// tenant/database, by when their data was taken (an old archive
	// imported today is not the newest).
	newest, newestFull, newestConsistent := map[string]*contract.SnapshotManifest{}, map[string]*contract.SnapshotManifest{}, map[string]*contract.SnapshotManifest{}
	for i := range all { // newest started first
		m := &all[i].m
		db := m.Tenant + "/" + m.Database
		if m.VerifiedAt.IsZero() {
			continue
		}
		if cur := newest[db]; cur == nil || m.TakenAt().After(cur.TakenAt()) {
			newest[db] = m
		}
		if cur := newestFull[db]; !m.Partial && !gone[m.SnapshotID] && (cur == nil || m.TakenAt().After(cur.TakenAt())) {
			newestFull[db] = m
		}
		if cur := newestConsistent[db]; !m.Partial && !gone[m.SnapshotID] && m.Consistent && (cur == nil || m.TakenAt().After(cur.TakenAt())) {
			newestConsistent[db] = m
		}
	}
	is := func(newest map[string]*contract.SnapshotManifest, db, id string) bool {
		return newest[db] != nil && newest[db].SnapshotID == id
	}
	var expired []manifestEntry
	for _, e := range all {
		m := &e.m
		if o.tenant != "" && m.Tenant != o.tenant || o.database != "" && m.Database != o.database {
			continue
		}
		db := m.Tenant + "/" + m.Database
		var why []keepReason
		if m.Keep {
			why = append(why, keepReason{contract.KeepPinned, "pinned with keep"})
		}
		why = append(why, use.reasons(m)...)
		if is(newest, db, m.SnapshotID) {
			why = append(why, keepReason{contract.KeepNewest, "the newest verified snapshot of " + db})
		} else if is(newestFull, db, m.SnapshotID) {
			why = append(why, keepReason{contract.KeepNewestFull, "the newest verified snapshot of all collections of " + db + " that can be restored (newer ones hold only some, or their archive is gone)"})
		}
		if is(newestConsistent, db, m.SnapshotID) && !is(newest, db, m.SnapshotID) && !is(newestFull, db, m.SnapshotID) {
			why = append(why, keepReason{contract.KeepNewestConsistent, "the newest consistent snapshot of all collections of " + db + " that can be restored (newer ones were taken while writers were active)"})
		}
		if k, ok := restored[m.SnapshotID]; ok {
			why = append(why, k)
		}
		if !m.StartedAt.Before(rep.Cutoff) {
			why = append(why, keepReason{contract.KeepRecent, fmt.Sprintf("younger than %s", rep.OlderThan)})
		}
		if len(why) == 0 {
			expired = append(expired, e)
			continue
		}
		item := cleanupItem(m, rep.Now)
		item.Reason = why[0].code
		details := make([]string, len(why))
		for i, w := range why {
			details[i] = w.detail
		}
		item.Detail = strings.Join(details, "; ")
		rep.Kept = append(rep.Kept, item)
	}
	return expired
}

func cleanupItem(m *contract.SnapshotManifest, now time.Time) contract.CleanupItem {
	age := max(now.Sub(m.StartedAt), 0)
	return contract.CleanupItem{
		SnapshotID: m.SnapshotID, Name: m.Name, Tenant: m.Tenant, Database: m.Database, StartedAt: m.StartedAt,
		AgeSeconds: age.Seconds(), Age: contract.FormatAge(age), Size: m.Size, Records: m.TotalRecords,
		Partial: m.Partial, Keep: m.Keep,
	}
}

// snapshotsInUse reads the migration records and the operations: the
// snapshots of migrations not yet over and of rollbacks not yet ended. A
// record that cannot be read fails the run, as what it protects is unknown.
func (s *Service) snapshotsInUse(ctx context.Context) (*snapshotUse, error) {
	now := s.cfg.Clock.Now()
	use := &snapshotUse{refs: map[string][]keepReason{}, restored: map[string]restoredTo{}}
	err := bus.EachValue(ctx, s.assets.State, contract.MigrationKey(">"), func(key string, data []byte) error {
		var r contract.MigrationRecord
		if err := json.Unmarshal(data, &r); err != nil {
			return fmt.Errorf("migration record %s is unreadable (%v): fix or delete it", key, err)
		}
		if why := migrationBusy(&r, now); why != "" {
			detail := fmt.Sprintf("migration %s (%s) depends on it", r.Job, why)
			use.add(r.SnapshotID, r.Tenant, r.Database, contract.KeepMigration, detail)
			use.add(r.PinnedSnapshotID, r.Tenant, r.Database, contract.KeepMigration, detail)
			use.add(r.SnapshotPendingID, r.Tenant, r.Database, contract.KeepMigration, detail)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var running []contract.Operation // rollbacks not yet ended
	err = bus.EachValue(ctx, s.assets.State, contract.OperationKey(">"), func(key string, data []byte) error {
		var op contract.Operation
		if err := json.Unmarshal(data, &op); err != nil {
			return fmt.Errorf("operation %s is unreadable (%v): fix or delete it", key, err)
		}
		if op.Kind != "rollback" {
			return nil
		}
		if tenant, database, ok := op.RestoredInto(); ok && op.Plan.SnapshotID != "" {
			db := tenant + "/" + database
			if cur, ok := use.restored[db]; !ok || op.UpdatedAt.After(cur.ended) {
				use.restored[db] = restoredTo{snapshotID: op.Plan.SnapshotID, opID: op.OpID, ended: op.UpdatedAt}
			}
		}
		if contract.Ended(op.Status) {
			return nil
		}
		detail := fmt.Sprintf("rollback %s (%s) uses it", op.OpID, op.Status)
		use.add(op.SnapshotID, "", "", contract.KeepRollback, detail)
		if op.Plan != nil && op.Plan.SnapshotID != op.SnapshotID {
			use.add(op.Plan.SnapshotID, "", "", contract.KeepRollback, detail)
		}
		if op.Restore != nil {
			use.add(op.Restore.SafetySnapshotID, "", "", contract.KeepRollback, fmt.Sprintf("safety snapshot of rollback %s (%s)", op.OpID, op.Status))
		}
		running = append(running, op)
		return nil
	})
	if err != nil {
		return nil, err
	}
	// While a rollback runs, only its checkpoint names the safety snapshot
	// it took (op.Restore is written when it ends): the snapshot that
	// undoes the rollback, which its report offers to roll back to.
	for _, op := range running {
		e, err := s.assets.State.Get(ctx, contract.CheckpointKey(op.OpID))
		if bus.IsNotFound(err) {
			continue // no checkpoint yet: no safety snapshot asked for
		}
		if err != nil {
			return nil, fmt.Errorf("read the checkpoint of rollback %s: %w", op.OpID, err)
		}
		var ck struct {
			SafetySnapshotID string `json:"safety_snapshot_id"`
		}
		if err := json.Unmarshal(e.Value(), &ck); err != nil {
			return nil, fmt.Errorf("checkpoint of rollback %s is unreadable (%v): fix or delete it", op.OpID, err)
		}
		use.add(ck.SafetySnapshotID, "", "", contract.KeepRollback, fmt.Sprintf("safety snapshot of rollback %s (%s)", op.OpID, op.Status))
	}
	return use, nil
}

// migrationBusy says why a migration still depends on its snapshot ("" when
// it does not): the job runs or is paused, its triggered rollback has not
// ended, or an operator was alerted to run that rollback by hand. It
// follows the watchdog's rules (services/watchdog, records.go).
func migrationBusy(r *contract.MigrationRecord, now time.Time) string {
	if r.Trigger != "" {
		switch r.RollbackStatus {
		case contract.RollbackRequested, contract.StatusQueued, contract.StatusRunning:
			return "rollback " + r.RollbackStatus
		case contract.RollbackAlerted:
			return "rollback alerted, to be run by an operator"
		case contract.StatusFailed, contract.StatusCancelled:
			// The status lists it with the command that restores this
			// snapshot, after the run ended too, for a while.
			if !r.RollbackEndedAt.IsZero() && now.Sub(r.RollbackEndedAt) < contract.EndedRunAlertFor {
				return "rollback " + r.RollbackStatus + ", to be run by an operator"
			}
		}
	}
	switch r.Status {
	case contract.MigrationCompleted, contract.MigrationFailed, contract.MigrationRolledBack:
		return ""
	}
	if !r.EndedAt.IsZero() {
		return ""
	}
	if r.Status == "" {
		return "status unknown"
	}
	return r.Status
}

// manifestEntries returns every readable manifest with its revision, newest
// first (as listManifests orders them).
func (s *Service) manifestEntries(ctx context.Context) ([]manifestEntry, error) {
	lister, err := s.assets.Manifests.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list manifests: %w", err)
	}
	var out []manifestEntry
	var ferr error
	for key := range lister.Keys() {
		if ferr != nil {
			continue
		}
		e, err := s.assets.Manifests.Get(ctx, key)
		if bus.IsNotFound(err) {
			continue
		}
		if err != nil {
			ferr = fmt.Errorf("read manifest %s: %w", key, err)
			continue
		}
		var m contract.SnapshotManifest
		if err := json.Unmarshal(e.Value(), &m); err != nil {
			s.log.Warn("unreadable manifest left alone by retention", "key", key, "err", err)
			continue
		}
		out = append(out, manifestEntry{m: m, rev: e.Revision()})
	}
	if ferr != nil {
		return nil, ferr
	}
	slices.SortFunc(out, func(a, b manifestEntry) int {
		if c := b.m.StartedAt.Compare(a.m.StartedAt); c != 0 {
			return c
		}
		return strings.Compare(b.m.SnapshotID, a.m.SnapshotID)
	})
	return out, nil
}

func (s *Service) handleCleanup(ctx context.Context, r micro.Request) {
	var req contract.CleanupRequest
	if e := decode(r, &req); e != nil {
		s.reject(ctx, r, "snapshot.cleanup", e, contract.AuditEvent{})
		return
	}
	ev := contract.AuditEvent{Actor: req.Actor, Reason: req.Reason, Tenant: req.Tenant, Database: req.Database}
	o, e := s.cleanupRequestOptions(&req)
	if e != nil {
		s.reject(ctx, r, "snapshot.cleanup", e, ev)
		return
	}
	rep, err := s.cleanup(ctx, o)
	if err != nil {
		bus.RespondError(r, contract.CodeUnavailable, err.Error(), "")
		return
	}
	bus.RespondJSON(r, rep)
}

// cleanupRequestOptions validates a cleanup request.
func (s *Service) cleanupRequestOptions(req *contract.CleanupRequest) (cleanupOptions, *apiError) {
	o := cleanupOptions{trigger: contract.CleanupTriggerRequest, dryRun: req.DryRun, tenant: req.Tenant, database: req.Database,
		actor: req.Actor, reason: req.Reason, olderThan: s.cfg.Retention}
	if req.OlderThan != "" {
		d, err := contract.ParseAge(req.OlderThan)
		if err != nil {
			return o, badRequest("older_than", "older_than: %v", err)
		}
		o.olderThan = d
	} else if s.cfg.Retention == RetentionOff {
		return o, badRequest("older_than", "retention is off on this snapshotter (--retention off): give older_than, e.g. \"7d\"")
	}
	if req.Database != "" && req.Tenant == "" {
		return o, badRequest("tenant", "database %q needs its tenant: give tenant too (e.g. %q)", req.Database, DefaultTenant)
	}
	if req.Tenant != "" {
		if err := contract.ValidateChromaName("tenant", req.Tenant); err != nil {
			return o, badRequest("tenant", "%v", err)
		}
	}
	if req.Database != "" {
		if err := contract.ValidateChromaName("database", req.Database); err != nil {
			return o, badRequest("database", "%v", err)
		}
	}
	return o, nil
}

// orphanChunkAge is how old a snapshot must be before retention purges
// chunks of its objects that no object info names: far longer than an
// export, so no put still running is touched.
const orphanChunkAge = 24 * time.Hour

// leftoverRE matches the name of a snapshot's archive object and its chunk
// id (bus.ChunkIDFor), or the name of an import's staging object as the
// CLI makes it and its chunk id, capturing the time it was made.
var leftoverRE = regexp.MustCompile(`^(?:snap_(\d{8}T\d{6}Z)_[A-Za-z0-9_.-]+[_.]tar[_.]zst|import[_/](\d{8}T\d{6}Z)_[0-9a-f]+)$`)

// leftoverAge is when leftoverRE dates name, if it matches.
func leftoverAge(name string, now time.Time) (time.Duration, bool) {
	m := leftoverRE.FindStringSubmatch(name)
	if m == nil {
		return 0, false
	}
	at, err := time.Parse("20060102T150405Z", m[1]+m[2])
	if err != nil {
		return 0, false
	}
	return now.Sub(at), true
}

// leftovers counts what sweepOrphanChunks found: chunk subjects no object
// names, import staging objects, and archive objects no manifest names.
type leftovers struct{ chunks, staged, unnamed int }

// sweepOrphanChunks purges (dry run: counts) what puts and imports left
// once it is orphanChunkAge old: the chunks of snapshot and staging
// objects that no object info names (their process was killed, and a
// snapshot's command was not delivered again: the next delivery purges
// them itself), staging objects of imports whose client was killed before
// it removed them, and snapshot archive objects that no manifest names.
// Chunks and objects under other names are left alone.
func (s *Service) sweepOrphanChunks(ctx context.Context, now time.Time, dryRun bool) (found leftovers, err error) {
	orphans, err := bus.OrphanChunks(ctx, s.assets.JS, contract.ObjectSnapshots)
	if err != nil {
		return found, err
	}
	for id, n := range orphans {
		if age, ok := leftoverAge(id, now); !ok || age < orphanChunkAge {
			continue
		}
		found.chunks++
		if dryRun {
			continue
		}
		if err := bus.PurgeChunks(ctx, s.assets.JS, contract.ObjectSnapshots, id); err != nil {
			return found, err
		}
		s.log.Info("purged chunks that no object names", "chunk_id", id, "chunks", n)
	}
	objs, err := s.assets.Snapshots.List(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		return found, err
	}
	for _, o := range objs {
		age, ok := leftoverAge(o.Name, now)
		if !ok || age < orphanChunkAge {
			continue
		}
		what, count := "a staging object an import left", &found.staged
		if !strings.HasPrefix(o.Name, contract.ImportStagingPrefix) {
			// An archive its snapshot's manifest does not name: an attempt
			// whose command was given up on after its last delivery (its
			// worker may have lived on, so it was not deleted at once), or
			// an object whose deletion failed after its manifest's.
			if !s.unnamedArchive(ctx, o.Name) {
				continue
			}
			what, count = "an archive object no manifest names", &found.unnamed
		}
		*count++
		if dryRun {
			continue
		}
		if err := s.assets.Snapshots.Delete(ctx, o.Name); err != nil && !bus.IsNotFound(err) {
			return found, err
		}
		s.log.Info("deleted "+what, "object", o.Name, "size", o.Size)
	}
	return found, nil
}

// snapshotObjectRE matches the archive objects snapshots and imports write
// (objectName, attemptObjectName), capturing the snapshot id.
var snapshotObjectRE = regexp.MustCompile(`^(snap_\d{8}T\d{6}Z_[A-Za-z0-9_-]+?)(?:\.attempt\d+)?\.tar\.zst$`)

// unnamedArchive says that name is a snapshot's archive object which its
// snapshot's manifest does not name: there is no manifest of that id, or
// a readable one names another object. A manifest that cannot be read
// keeps the object.
func (s *Service) unnamedArchive(ctx context.Context, name string) bool {
	m := snapshotObjectRE.FindStringSubmatch(name)
	if m == nil {
		return false
	}
	e, err := s.assets.Manifests.Get(ctx, m[1])
	if bus.IsNotFound(err) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return true
	}
	if err != nil {
		return false
	}
	var man contract.SnapshotManifest
	return json.Unmarshal(e.Value(), &man) == nil && man.Object != "" && man.Object != name
}
