package restorer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/fence"
)

// Rollback modes.
const (
	modeFull    = "full"
	modePartial = "partial"
	modeBatches = "batches"
)

// spec is a validated rollback request resolved against its snapshot and
// the target: which archive collections go where.
type spec struct {
	req *contract.RollbackRequest
	m   *contract.SnapshotManifest
	arc *verifiedArchive
	// streamed: the archive was only checked (object, size, digest,
	// metadata); the restore verifies every byte as it stages, and swaps
	// nothing in before the whole archive verified.
	streamed bool
	// stream is the archive left open for a streamed restore (resolve
	// with keep), or nil; whoever takes it closes it.
	stream *archiveStream

	target    *chroma.Client
	targetURL string
	own       bool // the target is the restorer's own Chroma
	tenant    string
	database  string
	mode      string

	// Per archive collection, by index.
	restore []bool            // full or partial: restored
	batches []map[string]bool // batch-level: the batches upserted (nil: none)
	names   []string          // the collection's name in the target
}

var collectionNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{1,510}[A-Za-z0-9]$`)

// validCollectionName applies Chroma's rules before anything is sent.
func validCollectionName(name string) error {
	if !collectionNameRE.MatchString(name) || strings.Contains(name, "..") {
		return fmt.Errorf("%q is not a valid Chroma collection name: use 3-512 letters, digits, '.', '_' or '-', starting and ending with a letter or digit, without '..'", name)
	}
	return nil
}

// suggestName is a valid collection name close to name, for an example
// of a rename.
func suggestName(name string) string {
	var b strings.Builder
	for _, r := range name {
		switch {
		case r < 128 && (r == '.' || r == '_' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'):
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	s := strings.Trim(strings.ReplaceAll(b.String(), "..", "_"), "._-")
	for len(s) < 3 {
		s += "_restored"
		s = strings.TrimLeft(s, "._-")
	}
	if len(s) > 512 {
		s = strings.TrimRight(s[:512], "._-")
	}
	if validCollectionName(s) != nil {
		return "new_name"
	}
	return s
}

// resolve validates a request against its snapshot and the target and
// verifies the archive; cheap checks come first, the archive read last.
// With streamOK, a stage-and-swap restore (nothing written in place) only
// checks the archive here (checkArchive), since it verifies every byte
// while it stages and swaps only after that; in place and batch-level
// writes always read the whole archive first. With keep, a streamed
// archive is left open in spec.stream for the restore.
func (s *Service) resolve(ctx context.Context, req *contract.RollbackRequest, streamOK, keep bool) (*spec, *apiError) {
	switch {
	case len(req.Collections) > 0 && len(req.Batches) > 0:
		return nil, badRequest("batches", "give collections (a partial rollback) or batches (a batch-level rollback), not both")
	case req.DropExtra && (len(req.Collections) > 0 || len(req.Batches) > 0):
		return nil, badRequest("drop_extra", "drop_extra applies to full rollbacks only; partial and batch-level rollbacks never delete collections")
	case req.InPlace && len(req.Batches) > 0:
		return nil, badRequest("in_place", "in_place applies to full and partial rollbacks; a batch-level rollback always upserts into the live collection")
	}
	m, e := s.lookup(ctx, req.SnapshotID)
	if e != nil {
		return nil, e
	}
	if req.DropExtra && m.Partial {
		// A partial snapshot (named collections, a rollback's safety
		// snapshot) says nothing of the database's other collections:
		// "not in the snapshot" is not "not there before".
		return nil, badRequest("drop_extra", "snapshot %s (%s) holds only some collections of %s/%s (partial), so drop_extra would delete every other collection there, which it never held; roll back without it (they are listed as extra and kept) and delete what should go by hand",
			m.SnapshotID, m.Name, m.Tenant, m.Database)
	}
	sp := &spec{req: req, m: m, tenant: m.Tenant, database: m.Database, mode: modeFull}
	if req.TargetTenant != "" {
		if err := contract.ValidateChromaName("target_tenant", req.TargetTenant); err != nil {
			return nil, badRequest("target_tenant", "%v", err)
		}
		sp.tenant = req.TargetTenant
	}
	if req.TargetDatabase != "" {
		if err := contract.ValidateChromaName("target_database", req.TargetDatabase); err != nil {
			return nil, badRequest("target_database", "%v", err)
		}
		sp.database = req.TargetDatabase
	}
	if strings.Contains(sp.tenant+sp.database, "/") {
		return nil, badRequest("target_database", "tenant and database names cannot contain '/'")
	}

	byName := map[string]int{}
	var names []string
	for i, c := range m.Collections {
		byName[c.Name] = i
		names = append(names, c.Name)
	}
	unknown := func(field string, got []string) *apiError {
		return badRequest(field, "collections not in snapshot %s (%s): %s; it holds %s", m.SnapshotID, m.Name, quoteList(got), quoteList(names))
	}
	n := len(m.Collections)
	sp.restore = make([]bool, n)
	sp.batches = make([]map[string]bool, n)
	sp.names = slices.Clone(names)
	switch {
	case len(req.Collections) > 0:
		sp.mode = modePartial
		var missing []string
		for _, c := range req.Collections {
			i, ok := byName[c]
			if !ok {
				missing = append(missing, c)
				continue
			}
			if sp.restore[i] {
				return nil, badRequest("collections", "collection %q is named twice", c)
			}
			sp.restore[i] = true
		}
		if len(missing) > 0 {
			return nil, unknown("collections", missing)
		}
	case len(req.Batches) > 0:
		sp.mode = modeBatches
		var missing, badBatches []string
		for c, bs := range req.Batches {
			i, ok := byName[c]
			if !ok {
				missing = append(missing, c)
				continue
			}
			if len(bs) == 0 {
				return nil, badRequest("batches", "collection %q names no batches; list them (see `snapshot info %s`)", c, m.SnapshotID)
			}
			sel := map[string]bool{}
			for _, b := range bs {
				if !slices.Contains(m.Collections[i].Batches, b) {
					badBatches = append(badBatches, c+":"+b)
				}
				sel[b] = true
			}
			sp.batches[i] = sel
		}
		if len(missing) > 0 {
			sort.Strings(missing)
			return nil, unknown("batches", missing)
		}
		if len(badBatches) > 0 {
			sort.Strings(badBatches)
			return nil, badRequest("batches", "batches not in snapshot %s: %s (see `snapshot info %s` for each collection's batches)", m.SnapshotID, quoteList(badBatches), m.SnapshotID)
		}
	default:
		for i := range sp.restore {
			sp.restore[i] = true
		}
	}

	var badRename, notRestored []string
	for from, to := range req.Rename {
		i, ok := byName[from]
		if !ok {
			badRename = append(badRename, from)
			continue
		}
		if err := validCollectionName(to); err != nil {
			return nil, badRequest("rename", "rename %q: %v", from, err)
		}
		if !sp.touched(i) {
			notRestored = append(notRestored, from)
		}
		sp.names[i] = to
	}
	if len(badRename) > 0 {
		sort.Strings(badRename)
		return nil, unknown("rename", badRename)
	}
	if len(notRestored) > 0 {
		// Ignored, it would restore a collection under its own name that
		// was meant to go elsewhere, or leave a typo unnoticed.
		sort.Strings(notRestored)
		return nil, badRequest("rename", "rename names %s, which this rollback does not restore: rename only the collections it restores, or name them too", quoteList(notRestored))
	}
	// The seed tool's Chroma allowed names this Chroma refuses: without
	// this check the rollback would create the tenant and database, write
	// the collections before such a name, and fail at it.
	var badNames []string
	for i, name := range sp.names {
		if sp.touched(i) && validCollectionName(name) != nil {
			badNames = append(badNames, name)
		}
	}
	if len(badNames) > 0 {
		sort.Strings(badNames)
		return nil, badRequest("rename", "collections %s cannot be created in Chroma under these names (use 3-512 letters, digits, '.', '_' or '-', starting and ending with a letter or digit, without '..'): restore them under other names with rename (--rename %q in the CLI)",
			quoteList(badNames), badNames[0]+":"+suggestName(badNames[0]))
	}
	seen := map[string]string{}
	for i, name := range sp.names {
		if !sp.touched(i) {
			continue
		}
		if prev, dup := seen[name]; dup {
			return nil, badRequest("rename", "collections %q and %q would both be restored as %q", prev, m.Collections[i].Name, name)
		}
		seen[name] = m.Collections[i].Name
	}
	// A renamed collection must not land on one this rollback leaves alone
	// (only partial and batch-level rollbacks leave any).
	for i, name := range sp.names {
		if sp.touched(i) && name != m.Collections[i].Name && sp.tenant == m.Tenant && sp.database == m.Database {
			if j, ok := byName[name]; ok && !sp.touched(j) {
				return nil, badRequest("rename", "rename %q to %q would overwrite collection %q, which this rollback does not restore", m.Collections[i].Name, name, m.Collections[j].Name)
			}
		}
	}

	var ae *apiError
	sp.target, sp.targetURL, ae = s.targetClient(req.ChromaURL)
	if ae != nil {
		return nil, ae
	}
	sp.own = sp.targetURL == s.ownURL

	var arc *verifiedArchive
	var err error
	if streamOK && !req.InPlace && len(req.Batches) == 0 {
		sp.streamed = true
		arc, sp.stream, err = s.checkArchive(ctx, m, keep)
	} else {
		arc, err = s.verifyArchive(ctx, m)
	}
	if err != nil {
		if errors.Is(err, errArchive) {
			e := &apiError{code: contract.CodeVerificationFailed, msg: fmt.Sprintf("refusing to restore snapshot %s: %v; nothing was changed", m.SnapshotID, err), field: "snapshot_id"}
			if archiveUnusable(err) {
				e.errorCode = contract.ErrorArchiveUnusable
			}
			return nil, e
		}
		return nil, unavailable("verify the archive of snapshot %s: %v", m.SnapshotID, err)
	}
	sp.arc = arc
	return sp, nil
}

// takeStream returns the archive left open by resolve, if any.
func (sp *spec) takeStream() *archiveStream {
	st := sp.stream
	sp.stream = nil
	return st
}

// closeStream closes the archive left open by resolve, if not taken.
func (sp *spec) closeStream() {
	if st := sp.takeStream(); st != nil {
		st.close()
	}
}

// touched reports whether archive collection i is written by the rollback.
func (sp *spec) touched(i int) bool { return sp.restore[i] || sp.batches[i] != nil }

// server is the Chroma the rollback writes to as its lease names it: ""
// for the restorer's own, else the other server's URL (the plan's
// chroma_url).
func (sp *spec) server() string {
	if sp.own {
		return ""
	}
	return sp.targetURL
}

// targetState is what the target database holds now.
type targetState struct {
	tenantExists, databaseExists bool
	collections                  map[string]chroma.Collection
	counts                       map[string]int64 // records, by collection name
}

// inspectTarget finds which of the target tenant, database and
// collections exist, and counts the records of those the plan shows. The
// lookups run at once: a plan is on the way of every rollback.
func (s *Service) inspectTarget(ctx context.Context, sp *spec) (*targetState, *apiError) {
	st := &targetState{collections: map[string]chroma.Collection{}, counts: map[string]int64{}}
	var tenantErr, dbErr, listErr error
	var cols []chroma.Collection
	var wg sync.WaitGroup
	// A hung Chroma is reported after s.lookupTimeout, not after a whole
	// attempt's (minutes, sized for pages of records): the tenant and
	// database lookups are one small request each, and when one is not
	// answered in time the others are not waited for.
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lookup := func(get func(context.Context) error) error {
		tctx, done := context.WithTimeout(lctx, s.lookupTimeout)
		defer done()
		err := get(tctx)
		if chroma.NotAnswering(err) {
			cancel()
		}
		return err
	}
	wg.Go(func() {
		tenantErr = lookup(func(ctx context.Context) error { _, err := sp.target.GetTenant(ctx, sp.tenant); return err })
	})
	wg.Go(func() {
		dbErr = lookup(func(ctx context.Context) error {
			_, err := sp.target.GetDatabase(ctx, sp.tenant, sp.database)
			return err
		})
	})
	wg.Go(func() { cols, listErr = sp.target.ListCollections(lctx, sp.tenant, sp.database) })
	wg.Wait()
	if ctx.Err() == nil && lctx.Err() != nil {
		// A lookup was not answered and cut the others short: report it,
		// not their cancellation.
		if chroma.NotAnswering(tenantErr) {
			return nil, chromaErrorOn(sp.server(), fmt.Sprintf("tenant %q on %s", sp.tenant, sp.targetURL), tenantErr)
		}
		return nil, chromaErrorOn(sp.server(), fmt.Sprintf("database %s/%s on %s", sp.tenant, sp.database, sp.targetURL), dbErr)
	}
	switch {
	case errors.Is(tenantErr, chroma.ErrNotFound):
		return st, nil
	case tenantErr != nil:
		return nil, chromaErrorOn(sp.server(), fmt.Sprintf("tenant %q on %s", sp.tenant, sp.targetURL), tenantErr)
	}
	st.tenantExists = true
	switch {
	case errors.Is(dbErr, chroma.ErrNotFound):
		return st, nil
	case dbErr != nil:
		return nil, chromaErrorOn(sp.server(), fmt.Sprintf("database %s/%s on %s", sp.tenant, sp.database, sp.targetURL), dbErr)
	}
	st.databaseExists = true
	if listErr != nil {
		return nil, chromaErrorOn(sp.server(), fmt.Sprintf("collections of %s/%s", sp.tenant, sp.database), listErr)
	}
	for _, c := range cols {
		st.collections[c.Name] = c
	}
	// Counts, a few at a time, of what the plan shows: the archive's
	// targets and, in a full rollback, the extra collections.
	shown := map[string]bool{}
	for _, name := range sp.names {
		shown[name] = true
	}
	var counted []chroma.Collection
	var ids []string
	for _, c := range cols {
		if sp.mode == modeFull || shown[c.Name] {
			counted, ids = append(counted, c), append(ids, c.ID)
		}
	}
	counts, err := sp.target.CountEach(ctx, sp.tenant, sp.database, ids, inspectWorkers)
	var ce *chroma.CountError
	if errors.As(err, &ce) {
		return nil, chromaErrorOn(sp.server(), fmt.Sprintf("count of collection %q", counted[ce.Index].Name), ce.Err)
	}
	if err != nil {
		return nil, chromaErrorOn(sp.server(), fmt.Sprintf("counts of %s/%s", sp.tenant, sp.database), err)
	}
	for i, c := range counted {
		st.counts[c.Name] = counts[i]
	}
	return st, nil
}

// defaultLookupTimeout bounds a plan's lookup of the target tenant and
// database: one small request each.
const defaultLookupTimeout = 20 * time.Second

// inspectWorkers is how many collections a plan counts at once.
const inspectWorkers = 4

// plan computes what the rollback will do; it changes nothing.
func (s *Service) plan(ctx context.Context, sp *spec) (*contract.RollbackPlan, *apiError) {
	st, e := s.inspectTarget(ctx, sp)
	if e != nil {
		return nil, e
	}
	m := sp.m
	p := &contract.RollbackPlan{
		Envelope:   contract.NewEnvelope(contract.TypeRollbackPlan),
		SnapshotID: m.SnapshotID, SnapshotName: m.Name,
		SourceTenant: m.Tenant, SourceDatabase: m.Database,
		Tenant: sp.tenant, Database: sp.database,
		Mode: sp.mode, ArchiveVerified: !sp.streamed, Verification: contract.VerifyBeforeWrite,
		InPlace: sp.req.InPlace, DropExtra: sp.req.DropExtra,
	}
	if sp.streamed {
		p.Verification = contract.VerifyWhileStaging
	}
	p.ChromaURL = sp.server()
	targets := map[string]bool{}
	for i, c := range m.Collections {
		ci := sp.arc.md.Collections[i]
		it := contract.PlanItem{Collection: c.Name, Target: sp.names[i], SnapshotRecords: c.Count, CurrentRecords: -1, Space: spaceOf(ci.Configuration, ci.Metadata)}
		if ci.Dimension != nil {
			it.Dimension = *ci.Dimension
		}
		_, exists := st.collections[it.Target]
		if exists {
			it.CurrentRecords = st.counts[it.Target]
		}
		switch {
		case sp.restore[i]:
			it.Action = contract.PlanReplace
			if !exists {
				it.Action = contract.PlanCreate
			}
			it.WriteRecords = c.Count
			targets[it.Target] = true
		case sp.batches[i] != nil:
			it.Action = contract.PlanUpsert
			for k, name := range c.Batches {
				if sp.batches[i][name] {
					it.Batches = append(it.Batches, name)
					it.BatchCounts = append(it.BatchCounts, int64(sp.arc.sizes[i][k]))
					it.WriteRecords += int64(sp.arc.sizes[i][k])
				}
			}
			if !exists {
				p.Warnings = append(p.Warnings, fmt.Sprintf("collection %q does not exist in %s/%s: it is created with the snapshot's configuration and metadata, then the batches are upserted", it.Target, sp.tenant, sp.database))
				break
			}
			// A migration that re-embedded the collection (a new model, a
			// new dimension) leaves one the snapshot's records cannot be
			// upserted into: Chroma refuses them mid-way. Say so now, and
			// what restores it instead.
			live := st.collections[it.Target]
			if live.Dimension != nil && ci.Dimension != nil && *live.Dimension != *ci.Dimension {
				return nil, badRequest("batches", "collection %q in %s/%s now holds %d-dimensional embeddings and the snapshot's %q %d-dimensional ones: its batches cannot be upserted into it; restore the whole collection with a partial rollback instead (--partial --failed-collections %s)",
					it.Target, sp.tenant, sp.database, *live.Dimension, c.Name, *ci.Dimension, c.Name)
			}
			if space := spaceOf(live.Configuration, live.Metadata); space != it.Space {
				p.Warnings = append(p.Warnings, fmt.Sprintf("collection %q in %s/%s is now in a %s space and the snapshot's %q in %s: the batches are upserted into it as it is (a partial rollback, --partial --failed-collections %s, restores it whole)",
					it.Target, sp.tenant, sp.database, space, c.Name, it.Space, c.Name))
			}
		default:
			it.Action = contract.PlanUntouched
		}
		p.WriteRecords += it.WriteRecords
		p.Items = append(p.Items, it)
		// Null embeddings are written as zero vectors of the collection's
		// dimension; with none recorded (an old tool's archive whose
		// records have no embedding) there is nothing to write them with,
		// and the write failed after the lease, fence and safety snapshot.
		// A streamed plan has not counted the nulls, but an import of the
		// old format records the dimension of the embeddings it found:
		// none means the collection has none.
		if it.Dimension == 0 && c.Count > 0 && it.WriteRecords > 0 &&
			((!sp.streamed && sp.arc.nullsOf(i) == c.Count) || (m.ImportedFrom != nil && m.ImportedFrom.Format == contract.ImportFormatSeed)) {
			return nil, badRequest("collections", "collection %q: none of its %d records has an embedding in the snapshot, nor does the snapshot record its dimension (an old tool's archive written without embeddings), and Chroma needs an embedding for each record: it cannot be restored; roll back the other collections (--partial --failed-collections)",
				c.Name, c.Count)
		}
		if n := sp.arc.nullsOf(i); n > 0 && it.WriteRecords > 0 && it.Space != "cosine" {
			p.Warnings = append(p.Warnings, fmt.Sprintf("collection %q: %d records have no embedding in the snapshot; Chroma needs one, so they are written with zero vectors", c.Name, n))
		}
	}
	// Into another database a rename may land on the name of a snapshot
	// collection this rollback leaves alone (in the snapshot's own
	// database it is refused): that row reads "untouched" with the
	// target's count, though the target is overwritten.
	writtenFrom := map[string]string{}
	for _, it := range p.Items {
		if it.Action != contract.PlanUntouched && it.Collection != it.Target {
			writtenFrom[it.Target] = it.Collection
		}
	}
	for _, it := range p.Items {
		if from, ok := writtenFrom[it.Target]; ok && it.Action == contract.PlanUntouched {
			p.Warnings = append(p.Warnings, fmt.Sprintf("collection %q in %s/%s is written with the snapshot's %q (renamed to it); the snapshot's own %q, listed as untouched, is not restored there",
				it.Target, sp.tenant, sp.database, from, it.Collection))
		}
	}
	if sp.mode == modeFull {
		var extras []string
		for name := range st.collections {
			if !targets[name] {
				extras = append(extras, name)
			}
		}
		sort.Strings(extras)
		for _, name := range extras {
			it := contract.PlanItem{Target: name, Action: contract.PlanExtra, CurrentRecords: st.counts[name], SnapshotRecords: 0,
				Space: spaceOf(st.collections[name].Configuration, st.collections[name].Metadata)}
			if sp.req.DropExtra {
				it.Action = contract.PlanDrop
			}
			p.Items = append(p.Items, it)
		}
		if len(extras) > 0 && !sp.req.DropExtra {
			what := fmt.Sprintf("%d collections in %s/%s are not in the snapshot and are kept: %s (drop_extra, --drop-extra in the CLI, deletes them)", len(extras), sp.tenant, sp.database, quoteList(extras))
			if len(extras) == 1 {
				what = fmt.Sprintf("1 collection in %s/%s is not in the snapshot and is kept: %s (drop_extra, --drop-extra in the CLI, deletes it)", sp.tenant, sp.database, quoteList(extras))
			}
			p.Warnings = append(p.Warnings, what)
		}
	}
	for _, it := range p.Items {
		overwrites := (it.Action == contract.PlanReplace || it.Action == contract.PlanDrop || it.Action == contract.PlanUpsert) && it.CurrentRecords >= 0
		if overwrites && !sp.req.NoSafetySnapshot {
			p.SafetySnapshot = true
		}
	}
	if p.SafetySnapshot && !sp.own {
		return nil, badRequest("no_safety_snapshot", "a safety snapshot can only be taken of the restorer's own Chroma (%s), and this rollback overwrites collections on %s; set no_safety_snapshot (--no-safety-snapshot in the CLI) to go ahead without one", s.ownURL, sp.targetURL)
	}
	if !sp.own {
		p.Warnings = append(p.Warnings, fmt.Sprintf("no write fence on %s: the read-only gate and the migrations paused by a rollback are those of %s, so writes to %s/%s there go on while it restores",
			sp.targetURL, s.ownURL, sp.tenant, sp.database))
	}
	if !m.Consistent {
		p.Warnings = append(p.Warnings, "snapshot is not consistent: "+m.Inconsistency)
	}
	// Chroma refuses to create a tenant or database of fewer than 3
	// characters; the rollback would fail at the create, after its lease,
	// fence and safety snapshot.
	for _, c := range []struct {
		field, what, name string
		create, given     bool
	}{{"target_tenant", "tenant", sp.tenant, !st.tenantExists, sp.req.TargetTenant != ""}, {"target_database", "database", sp.database, !st.databaseExists, sp.req.TargetDatabase != ""}} {
		if c.create && utf8.RuneCountInString(c.name) < 3 {
			// The snapshot's own name (a seed tool archive's) calls for a
			// target; a target given already calls for a longer one.
			how := "restore elsewhere with"
			if c.given {
				how = "give a " + c.what + " that exists or a name of at least 3 characters in"
			}
			return nil, badRequest(c.field, "%s %q does not exist on %s, and Chroma cannot create it: its %s names have at least 3 characters; %s %s (--%s in the CLI)",
				c.what, c.name, sp.targetURL, c.what, how, c.field, strings.ReplaceAll(c.field, "_", "-"))
		}
	}
	switch {
	case !st.tenantExists: // a misspelt tenant would otherwise be made in silence
		p.Warnings = append(p.Warnings, fmt.Sprintf("tenant %q does not exist on %s: it and the database %s/%s will be created (is the tenant's name right?)", sp.tenant, sp.targetURL, sp.tenant, sp.database))
	case !st.databaseExists:
		p.Warnings = append(p.Warnings, fmt.Sprintf("database %s/%s does not exist on %s: it will be created", sp.tenant, sp.database, sp.targetURL))
	}
	if sp.req.InPlace {
		w := "in_place: each collection is deleted and refilled where readers see it; a failure or cancel leaves it partly restored"
		switch {
		case p.SafetySnapshot:
			w += " (the safety snapshot holds what was there)"
		case sp.req.NoSafetySnapshot:
			w += ", and nothing keeps what was there (no_safety_snapshot)"
		}
		p.Warnings = append(p.Warnings, w)
	}
	if sp.mode == modeBatches {
		p.Warnings = append(p.Warnings, "batch-level: the named batches' records are overwritten with the snapshot's; records added or changed elsewhere are kept")
	}
	if err := fence.CheckOn(ctx, s.assets.State, sp.server(), sp.tenant, sp.database, sp.req.OpID); err != nil && errors.Is(err, fence.ErrHeld) {
		p.Warnings = append(p.Warnings, err.Error()+": starting this rollback is refused until it is released")
	}
	am, measured := s.addModel(ctx, sp.targetURL)
	p.WriteCollections = writeCollections(p)
	values := writeValues(p)
	p.AddRate, p.SecondsPerCollection, p.AddRateMeasured = 1/am.perRecord, am.perCollection, measured
	if t := am.recordSeconds(p.WriteRecords, values); p.WriteRecords > 0 && t > 0 {
		p.AddRate = float64(p.WriteRecords) / t // for these records' dimensions
	}
	p.SecondsPerCollectionAssumed = am.collectionAssumed
	p.EstimatedSeconds = am.seconds(p.WriteCollections, p.WriteRecords, values)
	return p, nil
}

// spaceOf reads the distance space from a configuration (hnsw or spann),
// falling back to the hnsw:space metadata key and then Chroma's default.
func spaceOf(cfg json.RawMessage, md map[string]any) string {
	var c struct {
		HNSW  *struct{ Space string } `json:"hnsw"`
		SPANN *struct{ Space string } `json:"spann"`
	}
	if json.Unmarshal(cfg, &c) == nil {
		if c.HNSW != nil && c.HNSW.Space != "" {
			return c.HNSW.Space
		}
		if c.SPANN != nil && c.SPANN.Space != "" {
			return c.SPANN.Space
		}
	}
	if sp, ok := md["hnsw:space"].(string); ok && sp != "" {
		return sp
	}
	return "l2"
}

func quoteList(xs []string) string {
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = fmt.Sprintf("%q", x)
	}
	return strings.Join(q, ", ")
}
