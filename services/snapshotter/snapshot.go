package snapshotter

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/archive"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/crypt"
	"github.com/nats-io/nats.go/jetstream"
)

// snapshot exports into the object obj, reads it back and verifies it,
// then writes the manifest.
func (s *Service) snapshot(ctx context.Context, cmd *contract.SnapshotCommand, obj string, progress *bus.ProgressPublisher, log *slog.Logger) (*contract.SnapshotManifest, error) {
	started := time.Now().UTC()
	progress.Update(contract.Progress{Phase: "listing"})
	// A rollback that began after the request, before this worker took it.
	if err := s.checkNoRollback(ctx, cmd); err != nil {
		return nil, err
	}
	version, err := s.chroma.Version(ctx)
	if err != nil {
		return nil, fmt.Errorf("read Chroma version: %w", err)
	}
	// A snapshot of named collections (a rollback's safety snapshot, say)
	// holds the whole database when they are every collection it has,
	// listed now and again after the export (countLater): one created in
	// between, or a listing that fails, leaves it partial.
	colls, wholeBefore, err := s.resolveCollections(ctx, cmd, log)
	if err != nil {
		return nil, err
	}
	md := &archive.Metadata{
		Format: archive.FormatV1, SnapshotID: cmd.SnapshotID, Name: cmd.Name, CreatedAt: started,
		ChromaVersion: version, Tenant: cmd.Tenant, Database: cmd.Database,
	}
	before, err := s.count(ctx, cmd, colls, "")
	if err != nil {
		return nil, err
	}
	var total int64
	for i, c := range colls {
		md.Collections = append(md.Collections, archive.CollectionInfo{
			Index: i, ID: c.ID, Name: c.Name, Metadata: c.Metadata, Configuration: c.Configuration,
			Dimension: c.Dimension, ExpectedCount: before[i],
		})
		total += before[i]
	}

	// A put that fails mid-way (its stream between leaders, say), or
	// whose chunks do not read back as the archive that was written, is
	// deleted and made again from the start: the archive is streamed from
	// Chroma, so that means exporting again. (A put whose chunk acks were
	// lost in a leader election can report success over a chunk stored
	// twice.) Chroma's own failures are not retried here: its client
	// already retried them.
	var st *storedArchive
	// The counts after the export are taken as soon as its last page has
	// been read, while the archive's end is still being written, verified
	// and stored: that is when the export stopped looking at Chroma.
	var after <-chan counted
	countAfter := func() { after = s.countLater(ctx, cmd, colls, " after export", wholeBefore) }
	for try := 1; ; try++ {
		// A previous try, or an attempt under this name, may have left
		// a partial object.
		s.discard(obj, log)
		st, err = s.store(ctx, cmd, md, obj, total, progress, countAfter)
		var pe *putError
		if err == nil || !errors.As(err, &pe) || try >= storeTries || ctx.Err() != nil {
			break
		}
		log.Warn("storing the archive failed; deleting it and exporting again", "object", obj, "try", try, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(try) * time.Second):
		}
	}
	if err != nil {
		return nil, err
	}
	progress.Update(contract.Progress{Phase: "counting", DoneRecords: st.man.TotalRecords, TotalRecords: total, Bytes: int64(st.info.Size)})
	ac := <-after // set: the export that stored st read every page
	if ac.err != nil {
		return nil, ac.err
	}
	if ac.listErr != nil {
		log.Warn("cannot list the database's collections after the export; the snapshot of named collections is marked partial", "err", ac.listErr)
	}
	info := st.info
	sum, err := jetstream.DecodeObjectDigest(info.Digest)
	if err != nil || len(sum) != sha256.Size {
		return nil, fmt.Errorf("store archive %s: the object store recorded digest %q: %v", obj, info.Digest, err)
	}
	digest := hex.EncodeToString(sum)

	m := &contract.SnapshotManifest{
		Envelope:   contract.NewEnvelope(contract.TypeSnapshotManifest),
		SnapshotID: cmd.SnapshotID, Name: cmd.Name, Tenant: cmd.Tenant, Database: cmd.Database,
		ChromaURL: s.cfg.ChromaURL, ChromaVersion: version, Format: archive.FormatV1,
		Object: obj, Size: int64(info.Size), SHA256: digest, RawBytes: st.stats.rawBytes,
		TotalRecords: st.man.TotalRecords, Consistent: true, Partial: !wholeBefore || !ac.whole,
		StartedAt: started, CompletedAt: time.Now().UTC(), Actor: cmd.Actor, Reason: cmd.Reason, Keep: cmd.Keep,
	}
	m.Encryption, m.Recipients = s.encryption()
	var moved []string
	for i, mc := range st.man.Collections {
		ci := md.Collections[i]
		m.Collections = append(m.Collections, contract.CollectionSummary{
			ID: mc.ID, Name: mc.Name, Count: mc.Count, CountBefore: ci.ExpectedCount, CountAfter: ac.counts[i],
			Dimension: ci.Dimension, Batches: mc.Batches, BatchRecords: batchRecords(mc.BatchRecords), ContentDigest: mc.ContentDigest,
		})
		if mc.Count != ci.ExpectedCount || ac.counts[i] != ci.ExpectedCount {
			moved = append(moved, fmt.Sprintf("%q: %d before, %d exported, %d after", mc.Name, ci.ExpectedCount, mc.Count, ac.counts[i]))
		}
	}
	var why []string
	if len(moved) > 0 {
		why = append(why, fmt.Sprintf("%v (writers were active): %s", errNotConsistent, strings.Join(moved, "; ")))
	}
	if len(ac.changed) > 0 {
		why = append(why, fmt.Sprintf("%v (writers were active): %s", errCollectionsChanged, strings.Join(ac.changed, "; ")))
	}
	if len(why) > 0 {
		m.Consistent = false
		m.Inconsistency = strings.Join(why, "; and ")
	}
	// A rollback that began while the export read the database: what was
	// read may be half restored.
	holdAt(ctx, "exported")
	if err := s.checkNoRollback(ctx, cmd); err != nil {
		return nil, err
	}
	m.VerifiedAt = time.Now().UTC()
	data, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	if _, err := s.assets.Manifests.Create(ctx, cmd.SnapshotID, data); err != nil {
		return nil, fmt.Errorf("write manifest %s: %w", cmd.SnapshotID, err)
	}
	holdAt(ctx, "manifest")
	return m, nil
}

// batchRecords is what the archive writer recorded of each batch, for the
// snapshot manifest (nil for a collection without batches).
func batchRecords(br []archive.BatchRecords) []contract.BatchRecords {
	if len(br) == 0 {
		return nil
	}
	out := make([]contract.BatchRecords, len(br))
	for i, b := range br {
		first, cutFirst := cutID(b.FirstID)
		last, cutLast := cutID(b.LastID)
		out[i] = contract.BatchRecords{Count: int64(b.Count), First: first, Last: last, Cut: cutFirst || cutLast}
	}
	return out
}

// cutID keeps at most contract.MaxBatchRecordID bytes of id, ending on a
// whole character, then "…"; it says whether it cut.
func cutID(id string) (string, bool) {
	if len(id) <= contract.MaxBatchRecordID {
		return id, false
	}
	end := contract.MaxBatchRecordID
	for end > 0 && !utf8.RuneStart(id[end]) {
		end--
	}
	return id[:end] + "…", true
}

// checkNoRollback fails the snapshot when a rollback other than the one
// that asked for it restores its database.
func (s *Service) checkNoRollback(ctx context.Context, cmd *contract.SnapshotCommand) error {
	why, err := s.rollbackUnderway(ctx, cmd.Tenant, cmd.Database, cmd.ForOp)
	if err != nil {
		return fmt.Errorf("cannot tell whether a rollback is restoring the database: %w", err)
	}
	if why != "" {
		return &errRollbackUnderway{why}
	}
	return nil
}

// hold, when set (by tests), runs at the steps of a snapshot's end, with
// the context the next step uses: a test holds the worker there until it
// is stopped, as if it had died right after that step.
var hold atomic.Pointer[func(ctx context.Context, step string)]

func holdAt(ctx context.Context, step string) {
	if h := hold.Load(); h != nil {
		(*h)(ctx, step)
	}
}

// countParallel is how many collections count counts at once.
const countParallel = 4

// count counts the records of colls, countParallel at a time
// (chroma.Client.CountEach). when says which count failed ("" before the
// export).
func (s *Service) count(ctx context.Context, cmd *contract.SnapshotCommand, colls []chroma.Collection, when string) ([]int64, error) {
	ids := make([]string, len(colls))
	for i, c := range colls {
		ids[i] = c.ID
	}
	counts, err := s.chroma.CountEach(ctx, cmd.Tenant, cmd.Database, ids, countParallel)
	var ce *chroma.CountError
	if errors.As(err, &ce) {
		return nil, fmt.Errorf("count collection %q%s: %w", colls[ce.Index].Name, when, ce.Err)
	}
	return counts, err
}

type counted struct {
	counts []int64
	// changed describes how the database's collections changed since they
	// were listed (a snapshot of a whole database only).
	changed []string
	// whole says colls were still every collection of the database: for
	// a whole database always, else only when asked to list them again
	// and they were; listErr is why that listing failed.
	whole   bool
	listErr error
	err     error
}

// countLater counts as count does, in the background; the channel gets
// the result. For a snapshot of a whole database it lists the collections
// again too, as at the start: one created or renamed during the export, or
// whose metadata or configuration changed, is a write the counts do not
// show. (One deleted fails its count.) For a snapshot of named
// collections it lists them again when wholeBefore (they were every
// collection of the database when it started), to say whether they still
// are.
func (s *Service) countLater(ctx context.Context, cmd *contract.SnapshotCommand, colls []chroma.Collection, when string, wholeBefore bool) <-chan counted {
	ch := make(chan counted, 1)
	go func() {
		var res counted
		var now []chroma.Collection
		var lerr error
		var wg sync.WaitGroup
		named := len(cmd.Collections) > 0
		if !named || wholeBefore {
			wg.Go(func() { now, lerr = s.listDatabase(ctx, cmd) })
		}
		res.counts, res.err = s.count(ctx, cmd, colls, when)
		wg.Wait()
		switch {
		case !named:
			if res.err == nil {
				res.err = lerr
			}
			if res.err == nil {
				res.changed = collectionChanges(colls, now)
			}
			res.whole = true
		case wholeBefore:
			res.listErr = lerr
			res.whole = lerr == nil && sameCollections(colls, now)
		}
		ch <- res
	}()
	return ch
}

// sameCollections says a and b are the same collections (by id), in any
// order.
func sameCollections(a, b []chroma.Collection) bool {
	if len(a) != len(b) {
		return false
	}
	ids := make(map[string]bool, len(a))
	for _, c := range a {
		ids[c.ID] = true
	}
	for _, c := range b {
		if !ids[c.ID] {
			return false
		}
	}
	return len(ids) == len(b)
}

// collectionChanges names what differs between the collections listed
// before an export and after it, in the order listed.
func collectionChanges(before, after []chroma.Collection) []string {
	now := make(map[string]*chroma.Collection, len(after))
	for i := range after {
		now[after[i].ID] = &after[i]
	}
	var out []string
	for _, b := range before {
		a, ok := now[b.ID]
		if !ok {
			continue // deleted: its count after the export failed
		}
		delete(now, b.ID)
		if a.Name != b.Name {
			out = append(out, fmt.Sprintf("%q renamed to %q", b.Name, a.Name))
		}
		if !bytes.Equal(a.Configuration, b.Configuration) {
			out = append(out, fmt.Sprintf("configuration of %q changed", a.Name))
		}
		bm, _ := b.Metadata.AppendJSON(nil)
		am, _ := a.Metadata.AppendJSON(nil)
		if !bytes.Equal(am, bm) {
			out = append(out, fmt.Sprintf("metadata of %q changed", a.Name))
		}
	}
	for _, a := range after {
		if _, ok := now[a.ID]; ok {
			out = append(out, fmt.Sprintf("%q created", a.Name))
		}
	}
	return out
}

// storeTries bounds the tries of storing an archive.
const storeTries = 3

// putError is a put into the object store that failed on its own (not
// because the export feeding it did) and may pass when made again.
type putError struct{ err error }

func (e *putError) Error() string { return e.err.Error() }
func (e *putError) Unwrap() error { return e.err }

// storedArchive is an archive stored and verified as it was written.
type storedArchive struct {
	info  *jetstream.ObjectInfo
	man   *archive.Manifest
	stats exportStats
}

// store exports md's collections into the object obj, verifying the
// archive as it is written. read is called as export calls it.
func (s *Service) store(ctx context.Context, cmd *contract.SnapshotCommand, md *archive.Metadata, obj string, total int64, progress *bus.ProgressPublisher, read func()) (*storedArchive, error) {
	// Buffered pipes let the writer, the put and the verifier each go at
	// their own pace, a few MB apart (pipeDepth).
	toPut := newPipe(pipeDepth)
	type result struct {
		man   *archive.Manifest
		stats exportStats
		err   error
	}
	done := make(chan result, 1)
	// The archive is verified as it is written, by a reader that knows
	// nothing of the writer: every entry's checksum, every record decoded,
	// every content digest recomputed. The put reads every chunk back from
	// the stream as it is stored, and stores the object only if the chunks
	// are these bytes.
	toVerify := newPipe(pipeDepth)
	type verified struct {
		rep *archive.Report
		err error
	}
	checked := make(chan verified, 1)
	go func() {
		rep, err := archive.Verify(toVerify)
		_, _ = io.Copy(io.Discard, toVerify) // never block the writer, even after a failure
		toVerify.CloseRead(nil)              // nor a block the compressor writes after that
		checked <- verified{rep, err}
	}()
	go func() {
		// With recipients the object gets the ciphertext; the verifier
		// still reads the plaintext.
		var man *archive.Manifest
		var st exportStats
		sl, err := s.seal(toPut, false)
		if err == nil {
			var w io.Writer = tee{toPut, toVerify} // the usual case: one copy for both
			if sl.w != io.Writer(toPut) {
				w = io.MultiWriter(sl.w, toVerify)
			}
			man, st, err = s.export(ctx, md, w, total, progress, read)
			err = sl.close(err, nil)
		}
		toPut.CloseWrite(err)
		toVerify.CloseWrite(err)
		done <- result{man, st, err}
	}()
	info, putErr := bus.PutObject(ctx, s.assets.JS, contract.ObjectSnapshots, jetstream.ObjectMeta{
		Name:        obj,
		Description: fmt.Sprintf("snapshot %s (%s) of %s/%s", cmd.SnapshotID, cmd.Name, cmd.Tenant, cmd.Database),
	}, toPut, bus.WithChunkID(bus.ChunkIDFor(obj)))
	toPut.CloseRead(fmt.Errorf("object store put ended: %v", putErr)) // unblocks the exporter if the put failed first
	res := <-done
	ver := <-checked
	// A full store stays full until someone makes room: no export again.
	if putErr != nil && bus.StoreFull(putErr) {
		return nil, fmt.Errorf("store archive %s: the object store %s has no room for it (%w): delete snapshots (snapshot delete, cleanup) or raise JetStream's storage limits, then take it again; nothing of it was kept",
			obj, contract.ObjectSnapshots, putErr)
	}
	// A put that fails by itself returns its own error; one that read the
	// exporter's failure returns that.
	if putErr != nil && !errors.Is(putErr, res.err) && (bus.Transient(putErr) || errors.Is(putErr, bus.ErrReadBack)) {
		return nil, &putError{fmt.Errorf("store archive %s: %w", obj, putErr)}
	}
	if res.err != nil {
		return nil, res.err
	}
	if ver.err != nil {
		return nil, fmt.Errorf("verify archive as written: %w", ver.err)
	}
	if err := compareCollections(ver.rep, res.man.Collections); err != nil {
		return nil, fmt.Errorf("verify archive as written: %w", err)
	}
	if putErr != nil {
		return nil, fmt.Errorf("store archive %s: %w", obj, putErr)
	}
	return &storedArchive{info: info, man: res.man, stats: res.stats}, nil
}

// resolveCollections returns the collections the command names, in its
// order (all of the database when it names none, in Chroma's list order),
// and whether they are every collection of the database. The database is
// listed once; a named collection the listing does not hold (or every one,
// when the listing fails: the snapshot is then partial) is asked for by
// name, which says why it cannot be had.
func (s *Service) resolveCollections(ctx context.Context, cmd *contract.SnapshotCommand, log *slog.Logger) ([]chroma.Collection, bool, error) {
	all, err := s.listDatabase(ctx, cmd)
	if len(cmd.Collections) == 0 {
		return all, true, err
	}
	if err != nil {
		log.Warn("cannot list the database's collections; the snapshot of named collections is marked partial", "err", err)
	}
	byName := make(map[string]chroma.Collection, len(all))
	for _, c := range all {
		byName[c.Name] = c
	}
	out := make([]chroma.Collection, 0, len(cmd.Collections))
	for _, name := range cmd.Collections {
		c, ok := byName[name]
		if !ok {
			got, err := s.chroma.GetCollection(ctx, cmd.Tenant, cmd.Database, name)
			if err != nil {
				return nil, false, fmt.Errorf("collection %q of %s/%s: %w", name, cmd.Tenant, cmd.Database, err)
			}
			c = *got
		}
		out = append(out, c)
	}
	return out, err == nil && sameCollections(out, all), nil
}

// listDatabase lists every collection of the command's database, in
// Chroma's list order.
func (s *Service) listDatabase(ctx context.Context, cmd *contract.SnapshotCommand) ([]chroma.Collection, error) {
	colls, err := s.chroma.ListCollections(ctx, cmd.Tenant, cmd.Database)
	if err != nil {
		return nil, fmt.Errorf("list collections of %s/%s: %w", cmd.Tenant, cmd.Database, err)
	}
	return colls, nil
}

// verifyObject reads an archive object, checking the object store's digest,
// every archive entry and content digest; it returns the report and the
// SHA-256 of the object's bytes. An encrypted archive is decrypted; without
// an identity only its bytes are hashed, and the error is crypt.ErrNoIdentity.
func (s *Service) verifyObject(ctx context.Context, obj, encryption string) (*archive.Report, string, error) {
	ctx, cancel := bus.ObjectReadContext(ctx)
	defer cancel()
	res, err := s.assets.Snapshots.Get(ctx, obj)
	if err != nil {
		if bus.IsNotFound(err) {
			return nil, "", fmt.Errorf("archive object %s is missing from %s", obj, contract.ObjectSnapshots)
		}
		return nil, "", fmt.Errorf("open archive object %s: %w", obj, err)
	}
	defer res.Close()
	h := sha256.New()
	src := io.TeeReader(res, h)
	plain, err := s.plaintext(src, encryption)
	if errors.Is(err, crypt.ErrNoIdentity) {
		if _, err := io.Copy(h, res); err != nil {
			return nil, "", fmt.Errorf("archive object %s: %w", obj, err)
		}
		return nil, hex.EncodeToString(h.Sum(nil)), err
	}
	if err != nil {
		return nil, "", err
	}
	rep, err := archive.Verify(plain)
	if err != nil {
		return nil, "", err
	}
	// Drain so age checks its last chunk (when encrypted) and the object
	// store its own digest at EOF.
	if _, err := io.Copy(io.Discard, plain); err != nil {
		return nil, "", fmt.Errorf("archive object %s: %w", obj, err)
	}
	if _, err := io.Copy(h, res); err != nil {
		return nil, "", fmt.Errorf("archive object %s: %w", obj, err)
	}
	return rep, hex.EncodeToString(h.Sum(nil)), nil
}

// compareCollections checks a verified archive against the collections a
// manifest promises.
func compareCollections(rep *archive.Report, want []archive.ManifestCollection) error {
	if len(rep.Collections) != len(want) {
		return fmt.Errorf("archive holds %d collections, manifest says %d", len(rep.Collections), len(want))
	}
	for i, w := range want {
		g := rep.Collections[i]
		if g.ID != w.ID || g.Count != w.Count || g.ContentDigest != w.ContentDigest || g.Batches != len(w.Batches) {
			return fmt.Errorf("collection %q: archive has %d records in %d batches (digest %s), manifest says %d in %d (digest %s)",
				w.Name, g.Count, g.Batches, g.ContentDigest, w.Count, len(w.Batches), w.ContentDigest)
		}
	}
	return nil
}
