package snapshotter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/disk"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
)

// Chroma's defaults, used when a request names no tenant or database.
const (
	DefaultTenant   = "default_tenant"
	DefaultDatabase = "default_database"
)

// apiError is an error reply: what went wrong and which field to fix.
type apiError struct {
	code  int
	msg   string
	field string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(field, format string, args ...any) *apiError {
	return &apiError{code: contract.CodeBadRequest, msg: fmt.Sprintf(format, args...), field: field}
}

// decode parses a request body, bounding its size.
func decode(r micro.Request, v any) *apiError {
	if code, msg := bus.DecodeRequest(r, v); code != 0 {
		return &apiError{code: code, msg: msg}
	}
	return nil
}

// reject records the rejected command in the audit trail, then answers with e.
func (s *Service) reject(ctx context.Context, r micro.Request, action string, e *apiError, ev contract.AuditEvent) {
	ev.Action, ev.Outcome, ev.Error = action, contract.OutcomeRejected, e.msg
	_ = s.audit.Emit(ctx, ev) // stored before the caller learns of the refusal
	s.observeRefusal(action, e.code)
	bus.RespondError(r, e.code, e.msg, e.field)
}

// chromaError turns an error from Chroma into an API error; one not found
// names the request's field to fix.
func chromaError(field, what string, err error) *apiError {
	if errors.Is(err, chroma.ErrNotFound) {
		return &apiError{code: contract.CodeNotFound, msg: fmt.Sprintf("%s not found in Chroma", what), field: field}
	}
	if chroma.NotAnswering(err) {
		return &apiError{code: contract.CodeUnavailable, msg: fmt.Sprintf("check %s in Chroma: Chroma did not answer in time (%v): is it running and not overloaded? chromadb-rollback health-check checks it; nothing was started", what, err)}
	}
	return &apiError{code: contract.CodeUnavailable, msg: fmt.Sprintf("check %s in Chroma: %v", what, err)}
}

func (s *Service) handleCreate(ctx context.Context, r micro.Request) {
	var req contract.SnapshotCreateRequest
	if e := decode(r, &req); e != nil {
		s.reject(ctx, r, "snapshot.create", e, contract.AuditEvent{})
		return
	}
	if req.Tenant == "" {
		req.Tenant = DefaultTenant
	}
	if req.Database == "" {
		req.Database = DefaultDatabase
	}
	ev := contract.AuditEvent{Actor: req.Actor, Reason: req.Reason, Tenant: req.Tenant, Database: req.Database}
	// Whether the name is used in other databases, looked up while Chroma
	// is asked about the request.
	elsewhere := make(chan []string, 1)
	go func() { elsewhere <- s.nameUsedElsewhere(ctx, req.Name, req.Tenant, req.Database) }()
	if e := s.validateCreate(ctx, &req); e != nil {
		s.reject(ctx, r, "snapshot.create", e, ev)
		return
	}
	if why, err := s.rollbackUnderway(ctx, req.Tenant, req.Database, req.ForOp); err != nil {
		s.reject(ctx, r, "snapshot.create", &apiError{code: contract.CodeUnavailable, msg: "cannot tell whether a rollback is restoring the database: " + err.Error()}, ev)
		return
	} else if why != "" {
		s.reject(ctx, r, "snapshot.create", &apiError{code: contract.CodeConflict, field: "database", msg: (&errRollbackUnderway{why}).Error()}, ev)
		return
	}
	cmd := contract.SnapshotCommand{
		Envelope:    contract.NewEnvelope(contract.TypeSnapshotCommand),
		SnapshotID:  contract.NewID("snap_"),
		OpID:        contract.NewID("op_"),
		Name:        req.Name,
		Tenant:      req.Tenant,
		Database:    req.Database,
		Collections: req.Collections,
		Actor:       req.Actor,
		Reason:      req.Reason,
		Keep:        req.Keep,
		ForOp:       req.ForOp,
	}
	if err := s.putOperation(ctx, snapshotOp(&cmd, contract.StatusQueued, 0)); err != nil {
		s.reject(ctx, r, "snapshot.create", &apiError{code: contract.CodeUnavailable, msg: err.Error()}, ev)
		return
	}
	data, _ := json.Marshal(cmd)
	msg := nats.NewMsg(s.subj.Command("snapshot"))
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, cmd.SnapshotID)
	if _, err := bus.Publish(ctx, s.assets.JS, msg); err != nil {
		s.reject(ctx, r, "snapshot.create", &apiError{code: contract.CodeUnavailable, msg: "enqueue snapshot: " + err.Error()}, ev)
		return
	}
	s.log.Info("snapshot queued", "snapshot_id", cmd.SnapshotID, "op_id", cmd.OpID, "name", cmd.Name)
	var warnings []string
	if w := nameElsewhereWarning(cmd.Name, <-elsewhere, cmd.SnapshotID); w != "" {
		warnings = append(warnings, w)
	}
	bus.RespondJSON(r, contract.SnapshotCreateReply{
		Envelope:   contract.NewEnvelope(contract.TypeSnapshotCreateReply),
		SnapshotID: cmd.SnapshotID,
		OpID:       cmd.OpID,
		Status:     contract.StatusQueued,
		Progress:   s.subj.Progress(cmd.OpID),
		Warnings:   warnings,
	})
}

// nameUsedElsewhere lists the other tenant/databases that have snapshots
// named name (best effort: nothing when the manifests cannot be read).
func (s *Service) nameUsedElsewhere(ctx context.Context, name, tenant, database string) []string {
	elsewhere, _ := s.peers(ctx, name, tenant, database, "", "")
	return elsewhere
}

// peers reads the manifests once for what a new snapshot id named name of
// tenant/database is told of the others (best effort: nothing when they
// cannot be read): the other tenant/databases with snapshots of that name,
// and, given the SHA-256 of the file it was imported from (importSum),
// the other snapshots imported into tenant/database from that file.
func (s *Service) peers(ctx context.Context, name, tenant, database, importSum, id string) (elsewhere, importedBefore []string) {
	seen := map[string]bool{}
	_ = bus.EachValue(ctx, s.assets.Manifests, ">", func(_ string, data []byte) error {
		var m contract.SnapshotManifest
		if json.Unmarshal(data, &m) != nil {
			return nil
		}
		here := m.Tenant == tenant && m.Database == database
		if m.Name == name && !here {
			seen[m.Tenant+"/"+m.Database] = true
		}
		if importSum != "" && here && m.ImportedFrom != nil && m.ImportedFrom.SHA256 == importSum && m.SnapshotID != id {
			importedBefore = append(importedBefore, m.SnapshotID)
		}
		return nil
	})
	slices.Sort(importedBefore)
	return slices.Sorted(maps.Keys(seen)), importedBefore
}

// nameElsewhereWarning is the warning for a new snapshot id named name
// when dbs (tenant/database) have snapshots of that name too; "" when
// none do.
func nameElsewhereWarning(name string, dbs []string, id string) string {
	if len(dbs) == 0 {
		return ""
	}
	return fmt.Sprintf("the name %q is also used by snapshots of %s: a name used in more than one database is refused where a snapshot is asked for by name, so refer to this one by its id %s",
		name, strings.Join(dbs, ", "), id)
}

// validateCreate checks the request against Chroma before anything is enqueued.
func (s *Service) validateCreate(ctx context.Context, req *contract.SnapshotCreateRequest) *apiError {
	if err := contract.ValidateSnapshotName(req.Name); err != nil {
		return badRequest("name", "%v", err)
	}
	if err := contract.ValidateChromaName("tenant", req.Tenant); err != nil {
		return badRequest("tenant", "%v", err)
	}
	if err := contract.ValidateChromaName("database", req.Database); err != nil {
		return badRequest("database", "%v", err)
	}
	seen := map[string]bool{}
	for _, c := range req.Collections {
		if err := contract.ValidateChromaName("collection", c); err != nil {
			return badRequest("collections", "%v", err)
		}
		if seen[c] {
			return badRequest("collections", "collection %q is named twice", c)
		}
		seen[c] = true
	}
	// The answer must come well inside the CLI's 30 s (--timeout), so a
	// hung Chroma is reported as such, not as the request timing out.
	cctx, cancel := context.WithTimeout(ctx, s.cfg.ChromaCheckTimeout)
	defer cancel()
	if _, err := s.chroma.GetTenant(cctx, req.Tenant); err != nil {
		return chromaError("tenant", fmt.Sprintf("tenant %q", req.Tenant), err)
	}
	if _, err := s.chroma.GetDatabase(cctx, req.Tenant, req.Database); err != nil {
		return chromaError("database", fmt.Sprintf("database %q of tenant %q", req.Database, req.Tenant), err)
	}
	for _, c := range req.Collections {
		if _, err := s.chroma.GetCollection(cctx, req.Tenant, req.Database, c); err != nil {
			return chromaError("collections", fmt.Sprintf("collection %q in %s/%s", c, req.Tenant, req.Database), err)
		}
	}
	return nil
}

func (s *Service) putOperation(ctx context.Context, op contract.Operation) error {
	op.Envelope = contract.NewEnvelope(contract.TypeOperation)
	op.UpdatedAt = op.Time
	data, _ := json.Marshal(op)
	if _, err := s.assets.State.Put(ctx, contract.OperationKey(op.OpID), data); err != nil {
		return fmt.Errorf("record operation %s: %w", op.OpID, err)
	}
	return nil
}

// lookup finds a manifest by snapshot id, or by name (contract.SnapshotByName:
// the one of that name taken last; a name used in two databases is refused).
func (s *Service) lookup(ctx context.Context, ref string) (*contract.SnapshotManifest, *apiError) {
	if ref == "" {
		return nil, badRequest("snapshot", "snapshot is required: give a snapshot id or name")
	}
	if contract.ValidToken(ref) == nil {
		if e, err := s.assets.Manifests.Get(ctx, ref); err == nil {
			var m contract.SnapshotManifest
			if err := json.Unmarshal(e.Value(), &m); err != nil {
				return nil, &apiError{code: contract.CodeInternal, msg: fmt.Sprintf("manifest %s is unreadable: %v", ref, err)}
			}
			return &m, nil
		} else if !bus.IsNotFound(err) {
			return nil, &apiError{code: contract.CodeUnavailable, msg: fmt.Sprintf("read manifest %s: %v", ref, err)}
		}
	}
	all, err := s.listManifests(ctx)
	if err != nil {
		return nil, &apiError{code: contract.CodeUnavailable, msg: err.Error()}
	}
	m, err := contract.SnapshotByName(all, ref, "", "")
	if err != nil {
		return nil, badRequest("snapshot", "%v", err)
	}
	if m != nil {
		return m, nil
	}
	if why := s.noManifestYet(ctx, ref); why != "" {
		return nil, &apiError{code: contract.CodeNotFound, msg: why, field: "snapshot"}
	}
	return nil, &apiError{code: contract.CodeNotFound, msg: fmt.Sprintf("no snapshot with id or name %q (see `snapshot list`)", ref), field: "snapshot"}
}

// noManifestYet says why the snapshot id has no manifest when an operation
// of the snapshotter's made, or is making, it: still running, failed, or
// deleted since. For a name with no manifest, it names a snapshot of that
// name still being made. "" when no operation (left) says more.
func (s *Service) noManifestYet(ctx context.Context, id string) string {
	byID := strings.HasPrefix(id, "snap_") && contract.ValidToken(id) == nil
	var op *contract.Operation
	found := errors.New("found")
	_ = bus.EachValue(ctx, s.assets.State, contract.OperationKey(">"), func(_ string, data []byte) error {
		var o contract.Operation
		if json.Unmarshal(data, &o) != nil || o.Kind != "snapshot" {
			return nil
		}
		switch {
		case byID && o.SnapshotID == id:
			op = &o
			return found // read no further
		case !byID && o.Name == id && (o.Status == contract.StatusQueued || o.Status == contract.StatusRunning):
			op = &o
			return found
		}
		return nil
	})
	if op == nil {
		return ""
	}
	at := op.UpdatedAt.UTC().Format(time.RFC3339)
	if !byID {
		return fmt.Sprintf("no snapshot named %q yet: snapshot %s of that name is being made (operation %s, %s since %s); `status` shows its progress", id, op.SnapshotID, op.OpID, op.Status, at)
	}
	switch op.Status {
	case contract.StatusQueued, contract.StatusRunning:
		return fmt.Sprintf("no snapshot %q yet: its operation %s is %s (since %s); `status` shows its progress", id, op.OpID, op.Status, at)
	case contract.StatusFailed:
		return fmt.Sprintf("no snapshot %q: its operation %s failed at %s: %s", id, op.OpID, at, op.Error)
	default:
		return fmt.Sprintf("no snapshot %q: it was made (operation %s, %s at %s) and deleted since; `audit-log --snapshot %s` says when and by whom", id, op.OpID, op.Status, at, id)
	}
}

// listManifests returns every manifest, newest first.
func (s *Service) listManifests(ctx context.Context) ([]contract.SnapshotManifest, error) {
	lister, err := s.assets.Manifests.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list manifests: %w", err)
	}
	var out []contract.SnapshotManifest
	for key := range lister.Keys() {
		e, err := s.assets.Manifests.Get(ctx, key)
		if err != nil {
			if bus.IsNotFound(err) {
				continue // deleted while listing
			}
			return nil, fmt.Errorf("read manifest %s: %w", key, err)
		}
		var m contract.SnapshotManifest
		if err := json.Unmarshal(e.Value(), &m); err != nil {
			s.log.Warn("unreadable manifest skipped", "key", key, "err", err)
			continue
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].StartedAt.Equal(out[j].StartedAt) {
			return out[i].StartedAt.After(out[j].StartedAt)
		}
		return out[i].SnapshotID > out[j].SnapshotID
	})
	return out, nil
}

func (s *Service) handleList(ctx context.Context, r micro.Request) {
	var req contract.SnapshotListRequest
	if len(r.Data()) > 0 {
		if code, msg := bus.DecodeRequest(r, &req); code != 0 {
			bus.RespondError(r, code, msg, "")
			return
		}
	}
	var after listCursor
	if req.After != "" {
		var ok bool
		if after, ok = parseListCursor(req.After); !ok {
			bus.RespondError(r, contract.CodeBadRequest, fmt.Sprintf("after %q is not a listing's next_after (started_at and snapshot id); leave it out for the first page", req.After), "after")
			return
		}
	}
	all, err := s.listManifests(ctx)
	if err != nil {
		bus.RespondError(r, contract.CodeUnavailable, err.Error(), "")
		return
	}
	rep := contract.SnapshotList{Envelope: contract.NewEnvelope(contract.TypeSnapshotList), Snapshots: []contract.SnapshotManifest{}}
	if req.After != "" {
		all = slices.DeleteFunc(all, func(m contract.SnapshotManifest) bool { return !after.precedes(&m) })
	}
	// As many whole manifests as one message holds: a database of many
	// collections has manifests of tens of KB, and a reply over the
	// connection's max payload is never sent (the asker would wait for
	// it until its timeout).
	maxBytes := int(s.nc.MaxPayload()) - 64<<10
	size := 1 << 10
	for i := range all {
		b, err := json.Marshal(&all[i])
		if err != nil {
			bus.RespondError(r, contract.CodeInternal, "encode manifest "+all[i].SnapshotID+": "+err.Error(), "")
			return
		}
		if size += len(b) + 64; size > maxBytes && len(rep.Snapshots) > 0 {
			last := rep.Snapshots[len(rep.Snapshots)-1]
			rep.More, rep.NextAfter = true, cursorOf(&last).String()
			break
		}
		rep.Snapshots = append(rep.Snapshots, all[i])
	}
	rep.ArchivesMissing = s.archivesMissing(ctx, rep.Snapshots)
	bus.RespondJSON(r, rep)
}

// listCursor is where a page of the snapshot listing ended: the last
// listed snapshot's place in its order (newest first by started_at, then
// by id, descending), which stays meaningful when that snapshot is
// deleted before the next page is asked for.
type listCursor struct {
	startedAt time.Time
	id        string
}

func cursorOf(m *contract.SnapshotManifest) listCursor {
	return listCursor{m.StartedAt, m.SnapshotID}
}

func (c listCursor) String() string {
	return c.startedAt.UTC().Format(time.RFC3339Nano) + " " + c.id
}

func parseListCursor(s string) (listCursor, bool) {
	at, id, ok := strings.Cut(s, " ")
	if !ok || id == "" {
		return listCursor{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, at)
	if err != nil {
		return listCursor{}, false
	}
	return listCursor{t, id}, true
}

// precedes says m is listed after the cursor: it is older, or as old with a
// lower id.
func (c listCursor) precedes(m *contract.SnapshotManifest) bool {
	if !m.StartedAt.Equal(c.startedAt) {
		return m.StartedAt.Before(c.startedAt)
	}
	return m.SnapshotID < c.id
}

// archivesMissing returns the ids of the snapshots in ms whose archive
// object the store does not hold, from one listing of the store's objects
// (their metadata, not their chunks). A manifest is written after its
// archive and deleted before it, so a missing one was deleted or lost
// outside chromadb-rollback. nil when the store cannot be listed: the
// listing of snapshots does not fail for it.
func (s *Service) archivesMissing(ctx context.Context, ms []contract.SnapshotManifest) []string {
	if len(ms) == 0 {
		return nil
	}
	objs, err := s.assets.Snapshots.List(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		s.log.Warn("cannot list the archives to check the snapshots have theirs", "err", err)
		return nil
	}
	held := make(map[string]bool, len(objs))
	for _, o := range objs {
		held[o.Name] = true
	}
	var out []string
	for _, m := range ms {
		if m.Object != "" && !held[m.Object] {
			out = append(out, m.SnapshotID)
		}
	}
	return out
}

// resolveRef decodes a SnapshotRef request and finds its manifest, answering
// the error itself when it cannot.
func (s *Service) resolveRef(ctx context.Context, r micro.Request) (*contract.SnapshotRef, *contract.SnapshotManifest, bool) {
	var ref contract.SnapshotRef
	e := decode(r, &ref)
	var m *contract.SnapshotManifest
	if e == nil {
		m, e = s.lookup(ctx, ref.Snapshot)
	}
	if e != nil {
		bus.RespondError(r, e.code, e.msg, e.field)
		return nil, nil, false
	}
	return &ref, m, true
}

func (s *Service) handleInfo(ctx context.Context, r micro.Request) {
	_, m, ok := s.resolveRef(ctx, r)
	if !ok {
		return
	}
	bus.RespondJSON(r, m)
}

func (s *Service) handleDelete(ctx context.Context, r micro.Request) {
	var ref contract.SnapshotRef
	if e := decode(r, &ref); e != nil {
		s.reject(ctx, r, "snapshot.delete", e, contract.AuditEvent{})
		return
	}
	ev := contract.AuditEvent{Actor: ref.Actor}
	m, e := s.lookup(ctx, ref.Snapshot)
	if e != nil {
		s.reject(ctx, r, "snapshot.delete", e, ev)
		return
	}
	ev.SnapshotID, ev.Tenant, ev.Database = m.SnapshotID, m.Tenant, m.Database
	// What follows is decided on this revision of the manifest, and the
	// manifest is deleted only at it: a snapshot pinned (or deleted) while
	// the uses below are read is not deleted by a decision made before.
	m, rev, e := s.manifestAt(ctx, m.SnapshotID)
	if e != nil {
		s.reject(ctx, r, "snapshot.delete", e, ev)
		return
	}
	if !ref.Force {
		// What retention never deletes, an operator deletes only on purpose.
		var why []string
		if m.Keep {
			why = append(why, fmt.Sprintf("it is pinned (unpin it with `snapshot keep %s --off`)", m.SnapshotID))
		}
		use, err := s.snapshotsInUse(ctx)
		if err != nil {
			s.reject(ctx, r, "snapshot.delete", &apiError{code: contract.CodeUnavailable, msg: "cannot tell whether a migration or rollback uses the snapshot: " + err.Error()}, ev)
			return
		}
		for _, k := range use.reasons(m) {
			why = append(why, k.detail)
		}
		if len(why) > 0 {
			s.reject(ctx, r, "snapshot.delete", &apiError{code: contract.CodeConflict, field: "snapshot",
				msg: fmt.Sprintf("not deleting snapshot %s (%s): %s; to delete it anyway, set \"force\": true (the CLI: snapshot delete --force)", m.SnapshotID, m.Name, strings.Join(why, "; "))}, ev)
			return
		}
	}
	if err := s.deleteSnapshot(ctx, m, rev); errors.Is(err, errManifestChanged) {
		e := &apiError{code: contract.CodeConflict, field: "snapshot",
			msg: fmt.Sprintf("not deleting snapshot %s (%s): it changed (pinned, say) while its delete was decided; nothing was deleted: look at it again (`snapshot info %s`) and delete it again if you still mean to", m.SnapshotID, m.Name, m.SnapshotID)}
		if _, _, ge := s.manifestAt(ctx, m.SnapshotID); ge != nil && ge.code == contract.CodeNotFound {
			e = &apiError{code: contract.CodeNotFound, field: "snapshot", msg: fmt.Sprintf("snapshot %s (%s) was deleted meanwhile, by another request", m.SnapshotID, m.Name)}
		}
		s.reject(ctx, r, "snapshot.delete", e, ev)
		return
	} else if err != nil && !errors.Is(err, errObjectLeft) {
		s.reject(ctx, r, "snapshot.delete", &apiError{code: contract.CodeUnavailable, msg: err.Error()}, ev)
		return
	}
	ev.Action, ev.Outcome = "snapshot.delete", contract.OutcomeCompleted
	ev.Figures = map[string]any{"size": m.Size, "records": m.TotalRecords}
	if ref.Force {
		ev.Figures["forced"] = true
	}
	_ = s.audit.Emit(ctx, ev)
	bus.RespondJSON(r, m)
}

// manifestAt reads the manifest of snapshot id with its revision.
func (s *Service) manifestAt(ctx context.Context, id string) (*contract.SnapshotManifest, uint64, *apiError) {
	e, err := s.assets.Manifests.Get(ctx, id)
	if bus.IsNotFound(err) {
		return nil, 0, &apiError{code: contract.CodeNotFound, field: "snapshot", msg: fmt.Sprintf("snapshot %s was deleted meanwhile, by another request", id)}
	}
	if err != nil {
		return nil, 0, &apiError{code: contract.CodeUnavailable, msg: fmt.Sprintf("read manifest %s: %v", id, err)}
	}
	var m contract.SnapshotManifest
	if err := json.Unmarshal(e.Value(), &m); err != nil {
		return nil, 0, &apiError{code: contract.CodeInternal, msg: fmt.Sprintf("manifest %s is unreadable: %v", id, err)}
	}
	return &m, e.Revision(), nil
}

func (s *Service) handleVerify(ctx context.Context, r micro.Request) {
	ref, m, ok := s.resolveRef(ctx, r)
	if !ok {
		return
	}
	rep := s.verifyStored(ctx, m)
	outcome := contract.OutcomeCompleted
	if !rep.OK {
		outcome = contract.OutcomeFailed
	}
	figures := map[string]any{"records": rep.TotalRecords, "size": rep.Size}
	if rep.Encryption != "" {
		figures["content_checked"] = rep.OK && rep.ContentUnchecked == ""
	}
	_ = s.audit.Emit(ctx, contract.AuditEvent{Action: "snapshot.verify", Outcome: outcome, Actor: ref.Actor, SnapshotID: m.SnapshotID,
		Tenant: m.Tenant, Database: m.Database, Error: rep.Problem, Figures: figures})
	if !rep.OK {
		s.observeVerifyFailed()
		body, _ := json.Marshal(rep)
		_ = r.Error(fmt.Sprint(contract.CodeVerificationFailed), "verification failed: "+rep.Problem, body)
		return
	}
	bus.RespondJSON(r, rep)
}

// healthCheckTimeout bounds each check of a health request; the CLI waits
// 15 s for the answer.
const healthCheckTimeout = 5 * time.Second

// storeNear is the share of the JetStream account's file storage limit, or
// of the object store's own byte limit, at which health fails its
// jetstream check: the share at which the watchdog, by default, alerts and
// pauses migrations.
const storeNear = contract.DefaultJetStreamNear

// storeNearlyFull names the limits the account's file storage (info) or
// the snapshots' object store stand at storeNear or more of.
func (s *Service) storeNearlyFull(ctx context.Context, info *jetstream.AccountInfo) []string {
	var full []string
	if d := bus.NearLimit("account storage", info.Store, info.Limits.MaxStore, storeNear); d != "" {
		full = append(full, d)
	}
	st, err := s.assets.Snapshots.Status(ctx)
	if bs, ok := st.(*jetstream.ObjectBucketStatus); err == nil && ok {
		if si := bs.StreamInfo(); si != nil {
			if d := bus.NearLimit("object store "+contract.ObjectSnapshots, si.State.Bytes, si.Config.MaxBytes, storeNear); d != "" {
				full = append(full, d)
			}
		}
	}
	return full
}

func (s *Service) handleHealth(ctx context.Context, r micro.Request) {
	h := contract.Health{Envelope: contract.NewEnvelope(contract.TypeHealth), OK: true}
	add := func(name string, err error, detail string) {
		c := contract.HealthCheck{Name: name, OK: err == nil, Detail: detail}
		if err != nil {
			c.Detail = err.Error()
			h.OK = false
		}
		h.Checks = append(h.Checks, c)
	}
	// Each check has its own deadline, and they run at once: Chroma being
	// down (its client retries until the deadline) must neither fail the
	// other checks nor outlast the caller's wait for the answer.
	type result struct {
		err    error
		detail string
	}
	checks := []func(context.Context) result{
		func(ctx context.Context) result {
			v, err := s.chroma.Version(ctx)
			return result{err, fmt.Sprintf("%s reachable, version %s", s.cfg.ChromaURL, v)}
		},
		func(ctx context.Context) result {
			info, err := s.assets.JS.AccountInfo(ctx)
			if err != nil {
				return result{err: err}
			}
			detail := fmt.Sprintf("JetStream ready: %d streams, %d bytes stored", info.Streams, info.Store)
			if info.Limits.MaxStore > 0 {
				detail += fmt.Sprintf(" of the account's %s", disk.Size(uint64(info.Limits.MaxStore)))
			}
			if full := s.storeNearlyFull(ctx, info); len(full) > 0 {
				return result{err: fmt.Errorf("JetStream storage is nearly full (%.0f%% or more): %s: the next snapshot may not fit "+
					"(the watchdog pauses migrations meanwhile); delete old snapshots (chromadb-rollback cleanup) or raise the limit",
					100*storeNear, strings.Join(full, "; "))}
			}
			return result{detail: detail}
		},
		func(ctx context.Context) result {
			key := "health." + s.cfg.Instance
			_, err := s.assets.State.Put(ctx, key, []byte(time.Now().UTC().Format(time.RFC3339)))
			if err == nil {
				err = s.assets.State.Purge(ctx, key)
			}
			return result{err, "state bucket accepts writes"}
		},
	}
	results := make([]result, len(checks))
	var wg sync.WaitGroup
	for i, check := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, healthCheckTimeout)
			defer cancel()
			results[i] = check(cctx)
		}()
	}
	wg.Wait()
	for i, name := range []string{"chroma", "jetstream", "store_writable"} {
		add(name, results[i].err, results[i].detail)
	}
	if s.cfg.DataDir != "" {
		free, err := disk.Free(s.cfg.DataDir)
		add("disk_free", err, fmt.Sprintf("%d MiB free under %s", free>>20, s.cfg.DataDir))
	}
	bus.RespondJSON(r, h)
}
