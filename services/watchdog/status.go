package watchdog

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
)

// maxProgress bounds the progress kept for the status report.
const maxProgress = 1024

// onProgress keeps the latest progress of every running operation.
func (s *Service) onProgress(m *nats.Msg) {
	var p contract.Progress
	if json.Unmarshal(m.Data, &p) != nil || p.OpID == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.Done {
		delete(s.progress, p.OpID)
		return
	}
	if _, ok := s.progress[p.OpID]; !ok && len(s.progress) >= maxProgress {
		return // operations that never said done; the report prunes them
	}
	s.progress[p.OpID] = p
}

func (s *Service) handleStatus(ctx context.Context, r micro.Request) {
	if code, msg := bus.DecodeQuery(r); code != 0 {
		bus.RespondError(r, code, msg, "")
		return
	}
	rep, err := s.Status(ctx)
	if err != nil {
		bus.RespondError(r, contract.CodeUnavailable, err.Error(), "")
		return
	}
	bus.RespondJSON(r, rep)
}

// Status builds the report chroma.api.status answers with.
func (s *Service) Status(ctx context.Context) (*contract.StatusReport, error) {
	rep := &contract.StatusReport{
		Envelope:   contract.NewEnvelope(contract.TypeStatusReport),
		Watchdog:   s.cfg.Instance,
		Migrations: []contract.MigrationRecord{},
		Fences:     []contract.Fence{},
		Operations: []contract.OperationStatus{},
		Snapshots:  []contract.DatabaseSnapshot{},
		Alerts:     []contract.StatusAlert{},
	}
	kv := s.assets.State
	// The records as the bucket holds them, not the watched cache: whoever
	// saw a record written (a job, a test, `nats kv get`) finds it here,
	// where the cache may be a watch delivery or a write behind.
	var failedAfter []contract.MigrationRecord // ended runs whose rollback failed after they ended
	now := time.Now()
	if err := bus.EachValue(ctx, kv, contract.MigrationKey(">"), func(_ string, data []byte) error {
		var r contract.MigrationRecord
		if json.Unmarshal(data, &r) != nil {
			return nil
		}
		if busy(&r) {
			rep.Migrations = append(rep.Migrations, r)
		} else if rollbackFailedAfterEnd(&r, now) {
			failedAfter = append(failedAfter, r)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	sortRecords(rep.Migrations)
	if err := bus.EachValue(ctx, kv, "fence.>", func(_ string, data []byte) error {
		var f contract.Fence
		if json.Unmarshal(data, &f) == nil {
			rep.Fences = append(rep.Fences, f)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	slices.SortFunc(rep.Fences, func(a, b contract.Fence) int { return a.RaisedAt.Compare(b.RaisedAt) })

	running := map[string]bool{}
	if err := bus.EachValue(ctx, kv, "op.>", func(_ string, data []byte) error {
		var op contract.Operation
		if json.Unmarshal(data, &op) != nil {
			return nil
		}
		if contract.Ended(op.Status) {
			return nil
		}
		running[op.OpID] = true
		os := contract.OperationStatus{Operation: op}
		s.mu.Lock()
		if p, ok := s.progress[op.OpID]; ok {
			os.Progress = &p
		}
		s.mu.Unlock()
		rep.Operations = append(rep.Operations, os)
		return nil
	}); err != nil {
		return nil, err
	}
	slices.SortFunc(rep.Operations, func(a, b contract.OperationStatus) int {
		return strings.Compare(a.Operation.OpID, b.Operation.OpID)
	})
	s.mu.Lock()
	for id := range s.progress {
		if !running[id] {
			delete(s.progress, id)
		}
	}
	s.mu.Unlock()

	// The newest verified snapshot of each database and, when that one is
	// partial or its archive is gone, the newest holding every collection
	// whose archive is there: by when their data was taken
	// (SnapshotManifest.TakenAt), so an old archive imported today is not
	// shown as a recent restore point.
	type candidate struct {
		ds  contract.DatabaseSnapshot
		obj string
	}
	byDB := map[string][]candidate{}
	manifests := map[string]bool{}
	if err := bus.EachValue(ctx, s.assets.Manifests, ">", func(key string, data []byte) error {
		manifests[key] = true
		var m contract.SnapshotManifest
		if json.Unmarshal(data, &m) != nil || m.VerifiedAt.IsZero() {
			return nil
		}
		k := m.Tenant + "/" + m.Database
		byDB[k] = append(byDB[k], candidate{obj: m.Object, ds: contract.DatabaseSnapshot{Tenant: m.Tenant, Database: m.Database,
			SnapshotID: m.SnapshotID, Name: m.Name, TotalRecords: m.TotalRecords, Size: m.Size, StartedAt: m.StartedAt,
			VerifiedAt: m.VerifiedAt, TakenAt: m.TakenAt(), Partial: m.Partial}})
		return nil
	}); err != nil {
		return nil, err
	}
	for _, k := range slices.Sorted(maps.Keys(byDB)) {
		cs := byDB[k]
		// Newest first; ties go to the one made last, then to the greater
		// id, as in retention's choice of the newest.
		slices.SortFunc(cs, func(a, b candidate) int {
			if c := b.ds.TakenAt.Compare(a.ds.TakenAt); c != 0 {
				return c
			}
			if c := b.ds.StartedAt.Compare(a.ds.StartedAt); c != 0 {
				return c
			}
			return strings.Compare(b.ds.SnapshotID, a.ds.SnapshotID)
		})
		for i, c := range cs {
			if i > 0 && c.ds.Partial {
				continue
			}
			c.ds.ArchiveMissing = s.archiveGone(ctx, c.obj)
			if i == 0 || !c.ds.ArchiveMissing {
				rep.Snapshots = append(rep.Snapshots, c.ds)
			}
			if !c.ds.Partial && !c.ds.ArchiveMissing {
				break // a full restore point that can be restored
			}
		}
	}

	s.mu.Lock()
	for _, k := range slices.Sorted(maps.Keys(s.conds)) {
		if c := s.conds[k]; c.active {
			rep.Alerts = append(rep.Alerts, contract.StatusAlert{Name: c.name, Detail: c.detail, Since: c.since, Figures: maps.Clone(c.figures)})
		}
	}
	s.mu.Unlock()
	if a, ok := s.archiveAlert(); ok {
		rep.Alerts = append(rep.Alerts, a)
	}
	for i := range rep.Migrations {
		if a, ok := s.rollbackAlert(&rep.Migrations[i]); ok {
			rep.Alerts = append(rep.Alerts, a)
		}
		if a, ok := s.deletedSnapshotAlert(ctx, &rep.Migrations[i], manifests); ok {
			rep.Alerts = append(rep.Alerts, a)
		}
	}
	rep.Alerts = append(rep.Alerts, overlapAlerts(rep.Migrations)...)
	sortRecords(failedAfter)
	for i := range failedAfter {
		rep.Alerts = append(rep.Alerts, endedRollbackAlert(&failedAfter[i]))
	}
	var left []contract.Leftovers
	if err := bus.EachValue(ctx, kv, contract.LeftoversPrefix+">", func(_ string, data []byte) error {
		var l contract.Leftovers
		if json.Unmarshal(data, &l) == nil && l.OpID != "" {
			left = append(left, l)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	slices.SortFunc(left, func(a, b contract.Leftovers) int { return a.Since.Compare(b.Since) })
	for i := range left {
		rep.Alerts = append(rep.Alerts, leftoversAlert(&left[i]))
	}
	rep.Storage = s.storage(ctx)
	return rep, nil
}

// endRunHint says how an operator ends a run the watchdog holds.
func (s *Service) endRunHint(job string) string {
	return fmt.Sprintf("then end the run: send abort on %s if the job still runs, or publish its failed event on %s in its place if it is gone (docs/runbook.md, Ending a run)",
		s.subj.Control(job), s.subj.MigrationEvent(job, contract.EventFailed))
}

// rollbackAlert is the status alert of a run whose trigger fired but whose
// rollback did not restore anything: it could not run, did not complete,
// or is left to the operator (automatic rollback disabled). The run's data
// may be lost and only an operator can act, so it is listed, from the
// record every instance reads, for as long as the run is not ended.
func (s *Service) rollbackAlert(r *contract.MigrationRecord) (contract.StatusAlert, bool) {
	if r.Trigger == "" || ended(r) || rollbackPending(r) || r.RollbackStatus == contract.StatusCompleted {
		return contract.StatusAlert{}, false
	}
	var what string
	switch r.RollbackStatus {
	case contract.RollbackAlerted:
		what = "automatic rollback is disabled"
	default:
		what = rollbackOutcome(r)
		if r.AbortSentAt.IsZero() {
			what += "; the job is paused"
		} else {
			what += "; the job was told to abort"
		}
	}
	return contract.StatusAlert{Name: "rollback", Since: r.TriggeredAt, Figures: rollbackFigures(r),
		Detail: fmt.Sprintf("migration %s of %s/%s: the %s trigger fired (%s), but %s. %s; %s",
			r.Job, r.Tenant, r.Database, r.Trigger, r.TriggerReason, what, capitalize(byHand(r)), s.endRunHint(r.Job))}, true
}

// rollbackFailedAfterEnd says the run had ended when its triggered
// rollback failed, could not run or was left to an operator (automatic
// rollback disabled: the failure trigger fires on the end itself), less
// than contract.EndedRunAlertFor ago. A run whose rollback failed or was alerted
// while it ran is listed by rollbackAlert until it ends: ending it is how
// an operator says it was dealt with.
func rollbackFailedAfterEnd(r *contract.MigrationRecord, now time.Time) bool {
	switch {
	case r.Trigger == "" || !ended(r) || rollbackPending(r), r.RollbackEndedAt.IsZero():
		return false
	case r.RollbackStatus == contract.StatusCompleted:
		return false
	}
	return r.RollbackEndedAt.After(r.EndedAt) && now.Sub(r.RollbackEndedAt) < contract.EndedRunAlertFor
}

// endedRollbackAlert is the status alert of a run that rollbackFailedAfterEnd.
func endedRollbackAlert(r *contract.MigrationRecord) contract.StatusAlert {
	f := rollbackFigures(r)
	f["ended"] = true
	if r.RollbackStatus == contract.RollbackAlerted {
		return contract.StatusAlert{Name: "rollback", Since: r.RollbackEndedAt, Figures: f,
			Detail: fmt.Sprintf("migration %s of %s/%s ended (%s) and the %s trigger fired (%s), but automatic rollback is disabled. %s. (Listed for %s after the alert; the audit trail keeps alert.rollback.)",
				r.Job, r.Tenant, r.Database, r.Status, r.Trigger, r.TriggerReason, capitalize(byHand(r)), contract.FormatAge(contract.EndedRunAlertFor))}
	}
	return contract.StatusAlert{Name: "rollback", Since: r.RollbackEndedAt, Figures: f,
		Detail: fmt.Sprintf("migration %s of %s/%s ended (%s), then the %s trigger's rollback did not complete: %s. The data may be lost; check it. %s. (Listed for %s after the failure; the audit trail keeps alert.rollback.)",
			r.Job, r.Tenant, r.Database, r.Status, r.Trigger, rollbackOutcome(r), capitalize(byHand(r)), contract.FormatAge(contract.EndedRunAlertFor))}
}

// rollbackOutcome says how a run's triggered rollback ended, for an alert.
func rollbackOutcome(r *contract.MigrationRecord) string {
	what := fmt.Sprintf("its rollback %s is %s", r.RollbackOpID, r.RollbackStatus)
	if r.RollbackError != "" {
		what += ": " + r.RollbackError
	}
	return what
}

// rollbackFigures are the figures of a run's rollback alert.
func rollbackFigures(r *contract.MigrationRecord) map[string]any {
	f := map[string]any{"job": r.Job, "run": r.Run, "trigger": r.Trigger, "op_id": r.RollbackOpID,
		"rollback_status": r.RollbackStatus, "snapshot_id": restorePoint(r)}
	if r.RollbackCommand != "" {
		f["command"] = r.RollbackCommand
	}
	return f
}

// deletedSnapshotAlert is the status alert of a running migration whose
// restore point (the snapshot the watchdog pinned or took for it) has no
// manifest any more: deleted with snapshot delete --force, which the
// snapshotter allows after refusing it once. Nothing can roll that run
// back, and until a trigger fires nothing else would say so. manifests
// holds the keys of every manifest.
func (s *Service) deletedSnapshotAlert(ctx context.Context, r *contract.MigrationRecord, manifests map[string]bool) (contract.StatusAlert, bool) {
	id := r.PinnedSnapshotID
	if id == "" && r.TakeSnapshot {
		id = r.SnapshotID // set once the snapshot it took was verified
	}
	// A run whose trigger fired has its rollback's own alert.
	if id == "" || manifests[id] || ended(r) || r.Trigger != "" {
		return contract.StatusAlert{}, false
	}
	return contract.StatusAlert{Name: "snapshot_deleted", Since: s.manifestDeletedAt(ctx, id),
		Figures: map[string]any{"job": r.Job, "run": r.Run, "snapshot_id": id},
		Detail: fmt.Sprintf("migration %s of %s/%s: its pre-migration snapshot %s was deleted, so no rollback, automatic or by hand, can restore what the database held before it. "+
			"Take a snapshot now if what the database holds is worth keeping; %s",
			r.Job, r.Tenant, r.Database, id, s.endRunHint(r.Job))}, true
}

// manifestDeletedAt is when the manifest of snapshot id was deleted: the
// time of the marker its delete left in the bucket's history (zero when
// that cannot be read, or the manifest never was).
func (s *Service) manifestDeletedAt(ctx context.Context, id string) time.Time {
	h, err := s.assets.Manifests.History(ctx, id)
	if err != nil || len(h) == 0 {
		return time.Time{}
	}
	if last := h[len(h)-1]; last.Operation() != jetstream.KeyValuePut {
		return last.Created().UTC()
	}
	return time.Time{}
}

// leftoversAlert is what a failed or cancelled rollback left while its
// Chroma did not answer, until a restorer took it back.
func leftoversAlert(l *contract.Leftovers) contract.StatusAlert {
	detail := fmt.Sprintf("rollback %s of %s/%s stopped while Chroma did not answer and could not take back what it staged: %s. "+
		"A restorer takes it back once Chroma answers (tried %d times",
		l.OpID, l.Tenant, l.Database, l.Describe(5), l.Attempts) // the rest counted: a rollback of hundreds would fill a screen
	if l.LastError != "" {
		detail += "; last: " + l.LastError
	}
	detail += fmt.Sprintf("). See `chromadb-rollback rollback-status %s`", l.OpID)
	return contract.StatusAlert{Name: "rollback_leftovers", Since: l.Since, Detail: detail,
		Figures: map[string]any{"op_id": l.OpID, "tenant": l.Tenant, "database": l.Database, "collections": len(l.Collections), "attempts": l.Attempts}}
}

// capitalize upper-cases the first letter of a sentence.
func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// overlapAlerts are the status alerts of the databases that more than one
// run not yet ended migrates (runs in start order), one for each, since the
// later start: a rollback for one of them restores its pre-migration
// snapshot over the others' writes too (the whole database, or its failed
// collections), and the others, paused while it runs and resumed after,
// do not write them again.
func overlapAlerts(runs []contract.MigrationRecord) []contract.StatusAlert {
	byDB := map[string][]*contract.MigrationRecord{}
	var dbs []string
	for i := range runs {
		r := &runs[i]
		if ended(r) {
			continue
		}
		k := r.Tenant + "/" + r.Database
		if byDB[k] == nil {
			dbs = append(dbs, k)
		}
		byDB[k] = append(byDB[k], r)
	}
	var out []contract.StatusAlert
	for _, k := range dbs {
		rs := byDB[k]
		if len(rs) < 2 {
			continue
		}
		jobs := make([]string, len(rs))
		named := make([]string, len(rs))
		var since time.Time
		for i, r := range rs {
			jobs[i] = r.Job
			named[i] = fmt.Sprintf("%q (started %s)", r.Job, r.StartedAt.UTC().Format(time.RFC3339))
			if r.StartedAt.After(since) {
				since = r.StartedAt
			}
		}
		out = append(out, contract.StatusAlert{Name: "migrations_overlap", Since: since,
			Figures: map[string]any{"jobs": jobs, "tenant": rs[0].Tenant, "database": rs[0].Database},
			Detail: fmt.Sprintf("%s migrate %s at once: a rollback for one of them restores its pre-migration snapshot over the others' writes too, "+
				"and they, resumed after it, do not write them again. Run one migration per database at a time; to roll one back, end the others first (docs/runbook.md, Ending a run)",
				strings.Join(named[:len(named)-1], ", ")+" and "+named[len(named)-1], k)})
	}
	return out
}
