package snapshotter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"path"
	"strings"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/archive"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/crypt"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/legacy"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
)

// Import (chroma.api.snapshot.import) is a request handler, not a queued
// job: it streams the staged file into a new archive object (two passes for
// a seed archive, one for a native one) at several MB/s, so even large
// files finish within the CLI's wait (ImportTimeout), and the client gets
// the manifest or the reason in the reply. Once an import has started, its
// staging object is deleted whatever the outcome; a rejected request (bad
// field, missing object) leaves it to the client. A worker that dies
// mid-import leaves no manifest: its half-written object is an orphan, like
// a failed snapshot's, and the client, which got no reply, deletes the
// staging object.
const (
	actionImport = "snapshot.import"
	// ImportTimeout bounds one import on the server.
	ImportTimeout = 2 * time.Hour
)

// handleImport turns a staged file into a verified snapshot.
func (s *Service) handleImport(ctx context.Context, r micro.Request) {
	var req contract.SnapshotImportRequest
	if e := decode(r, &req); e != nil {
		s.reject(ctx, r, actionImport, e, contract.AuditEvent{})
		return
	}
	ev := contract.AuditEvent{Action: actionImport, Actor: req.Actor, Reason: req.Reason, Tenant: req.Tenant, Database: req.Database,
		Figures: map[string]any{"object": req.Object, "file": req.FileName}}
	seedManifest, e := validateImport(&req)
	if e != nil {
		s.reject(ctx, r, actionImport, e, ev)
		return
	}
	info, err := s.assets.Snapshots.GetInfo(ctx, req.Object)
	if err != nil {
		e := &apiError{code: contract.CodeUnavailable, msg: fmt.Sprintf("read staged object %s: %v", req.Object, err)}
		if bus.IsNotFound(err) {
			e = &apiError{code: contract.CodeNotFound, field: "object",
				msg: fmt.Sprintf("no staged object %s in %s: put the file there first (the CLI's `snapshot import FILE` does)", req.Object, contract.ObjectSnapshots)}
		}
		s.reject(ctx, r, actionImport, e, ev)
		return
	}

	ictx, cancel := context.WithTimeout(ctx, ImportTimeout)
	defer cancel()
	id, opID := contract.NewID("snap_"), req.OpID
	if opID == "" {
		opID = contract.NewID("op_")
	}
	ev.SnapshotID, ev.OpID = id, opID
	ev.Outcome = contract.OutcomeStarted
	ev.Figures = map[string]any{"object": req.Object, "file": req.FileName, "size": info.Size, "format": req.Format}
	_ = s.audit.Emit(ctx, ev)
	log := s.log.With("snapshot_id", id, "op_id", opID, "object", req.Object)
	progress := bus.NewProgressPublisher(s.nc, s.subj, opID)

	start := time.Now()
	m, err := s.importSnapshot(ictx, &req, seedManifest, id, progress)
	// The staging object was consumed either way; the client may retry
	// with a new upload.
	s.discard(req.Object, log)
	if err != nil {
		s.discard(objectName(id), log)
		e := importError(err)
		log.Warn("import failed", "err", err)
		progress.Update(contract.Progress{Phase: "failed", Done: true, Error: e.msg})
		bus.RespondError(r, e.code, e.msg, e.field)
		ev.Outcome, ev.Error = contract.OutcomeFailed, e.msg
		ev.Figures = map[string]any{"object": req.Object, "file": req.FileName, "size": info.Size, "seconds": time.Since(start).Seconds()}
		_ = s.audit.Emit(ctx, ev)
		return
	}
	progress.Update(contract.Progress{Phase: "completed", Done: true, DoneRecords: m.TotalRecords, TotalRecords: m.TotalRecords, Bytes: m.Size})
	ev.Outcome, ev.Tenant, ev.Database = contract.OutcomeCompleted, m.Tenant, m.Database
	ev.Figures = map[string]any{"format": m.ImportedFrom.Format, "file": req.FileName, "source_size": m.ImportedFrom.Size,
		"source_sha256": m.ImportedFrom.SHA256, "manifest_checked": m.ImportedFrom.ManifestChecked, "records": m.TotalRecords,
		"collections": len(m.Collections), "size": m.Size, "seconds": time.Since(start).Seconds(), "warnings": len(m.ImportedFrom.Warnings)}
	_ = s.audit.Emit(ctx, ev)
	log.Info("snapshot imported", "format", m.ImportedFrom.Format, "records", m.TotalRecords, "size", m.Size)
	bus.RespondJSON(r, m)
}

// validateImport checks the request before anything is read, and parses
// the seed manifest if one was given.
func validateImport(req *contract.SnapshotImportRequest) (*legacy.SeedManifest, *apiError) {
	rest, ok := strings.CutPrefix(req.Object, contract.ImportStagingPrefix)
	if !ok || rest == "" || len(req.Object) > 256 || strings.Contains(rest, "..") || contract.ValidToken(strings.ReplaceAll(rest, ".", "_")) != nil {
		return nil, badRequest("object", "object %q is not a staging name: want %s<id> (letters, digits, '_', '-')", req.Object, contract.ImportStagingPrefix)
	}
	if req.OpID != "" && (!strings.HasPrefix(req.OpID, "op_") || len(req.OpID) > 128 || contract.ValidToken(req.OpID) != nil) {
		return nil, badRequest("op_id", "op_id %q: want op_ then letters, digits, '_' or '-' (it names the progress subject), or none", req.OpID)
	}
	switch req.Format {
	case "", contract.ImportFormatSeed, contract.ImportFormatNative:
	default:
		return nil, badRequest("format", "format %q: want %q, %q or empty to detect it", req.Format, contract.ImportFormatSeed, contract.ImportFormatNative)
	}
	if req.Name != "" {
		if err := contract.ValidateSnapshotName(req.Name); err != nil {
			return nil, badRequest("name", "%v", err)
		}
	}
	if req.Tenant != "" {
		if err := contract.ValidateChromaName("tenant", req.Tenant); err != nil {
			return nil, badRequest("tenant", "%v", err)
		}
	}
	if req.Database != "" {
		if err := contract.ValidateChromaName("database", req.Database); err != nil {
			return nil, badRequest("database", "%v", err)
		}
	}
	if len(req.Manifest) == 0 {
		return nil, nil
	}
	m, err := legacy.ParseManifest(req.Manifest)
	if err != nil {
		return nil, badRequest("manifest", "%v", err)
	}
	return m, nil
}

// importError maps an import failure to an error reply.
func importError(err error) *apiError {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, legacy.ErrTooLarge):
		return &apiError{code: contract.CodeTooLarge, msg: "file refused: " + err.Error()}
	case errors.Is(err, legacy.ErrManifest):
		return &apiError{code: contract.CodeVerificationFailed, field: "manifest", msg: "file refused: " + err.Error()}
	case errors.Is(err, legacy.ErrNotSeed), errors.Is(err, legacy.ErrInvalid),
		errors.Is(err, archive.ErrCorrupt), errors.Is(err, archive.ErrTruncated),
		errors.Is(err, archive.ErrChecksumMismatch), errors.Is(err, archive.ErrFormat),
		errors.Is(err, crypt.ErrCannotDecrypt), errors.Is(err, crypt.ErrDamaged):
		return &apiError{code: contract.CodeVerificationFailed, field: "object", msg: "file refused: " + err.Error()}
	}
	return &apiError{code: contract.CodeUnavailable, msg: "import failed: " + err.Error()}
}

// converted is what a conversion wrote into the new archive object.
type converted struct {
	md       *archive.Metadata
	man      *archive.Manifest
	rawBytes int64
	origin   contract.ImportOrigin
}

// importSnapshot converts the staged object into a new archive object,
// reads it back and verifies it as `snapshot verify` does, then writes the
// manifest.
func (s *Service) importSnapshot(ctx context.Context, req *contract.SnapshotImportRequest, sm *legacy.SeedManifest, id string, progress *bus.ProgressPublisher) (*contract.SnapshotManifest, error) {
	started := time.Now().UTC()
	progress.Update(contract.Progress{Phase: "detecting"})
	format, encrypted, err := s.sniffObject(ctx, req.Object)
	if err != nil {
		return nil, err
	}
	if req.Format != "" && req.Format != format {
		return nil, badRequest("format", "the file is a %s archive, the request says %s", format, req.Format)
	}

	obj := objectName(id)
	pr, pw := io.Pipe()
	sum := sha256.New()
	done := make(chan struct {
		c   *converted
		err error
	}, 1)
	go func() {
		var c *converted
		// With recipients the new archive is encrypted, and verified as it
		// is written (this snapshotter may have no identity to read it back).
		sl, err := s.seal(io.MultiWriter(pw, sum), true)
		if err == nil {
			if format == contract.ImportFormatSeed {
				c, err = s.convertSeed(ctx, req, sm, id, started, sl.w, progress)
			} else {
				c, err = s.rewriteNative(ctx, req, sm, id, encrypted, sl.w, progress)
			}
			var man *archive.Manifest
			if c != nil {
				man = c.man
			}
			err = sl.close(err, man)
		}
		pw.CloseWithError(err)
		done <- struct {
			c   *converted
			err error
		}{c, err}
	}()
	info, putErr := bus.PutObject(ctx, s.assets.JS, contract.ObjectSnapshots, jetstream.ObjectMeta{
		Name:        obj,
		Description: fmt.Sprintf("snapshot %s imported from %s (%s)", id, req.FileName, format),
	}, pr, bus.WithChunkID(bus.ChunkIDFor(obj)))
	pr.CloseWithError(fmt.Errorf("object store put ended: %v", putErr))
	res := <-done
	if res.err != nil {
		return nil, res.err
	}
	if putErr != nil {
		return nil, fmt.Errorf("store archive %s: %w", obj, putErr)
	}
	c := res.c

	m := &contract.SnapshotManifest{
		Envelope:   contract.NewEnvelope(contract.TypeSnapshotManifest),
		SnapshotID: id, Name: c.md.Name, Tenant: c.md.Tenant, Database: c.md.Database,
		ChromaVersion: c.md.ChromaVersion, Format: archive.FormatV1,
		Object: obj, Size: int64(info.Size), SHA256: hex.EncodeToString(sum.Sum(nil)), RawBytes: c.rawBytes,
		TotalRecords: c.man.TotalRecords, Consistent: true,
		StartedAt: started, CompletedAt: time.Now().UTC(), Actor: req.Actor, Reason: req.Reason,
		ImportedFrom: &c.origin,
	}
	// A native archive does not record whether its snapshot held every
	// collection of its database: one of named collections (--collections,
	// a rollback's safety snapshot) passed for the whole database, so that
	// rollback --drop-extra deleted every other collection, and status and
	// retention took it for the newest snapshot of all of them (retention
	// then let the real ones expire). Marked partial, it is neither. The
	// old tool's archives held every collection.
	if c.origin.Format == contract.ImportFormatNative {
		m.Partial = true
		c.origin.Warnings = append(c.origin.Warnings, "a native archive does not record whether its snapshot held every collection of its database, so the import is marked partial: a rollback to it leaves the database's other collections as they are (--drop-extra is refused), and it does not stand for the newest snapshot of all of them")
	}
	m.Encryption, m.Recipients = s.encryption()
	for i, mc := range c.man.Collections {
		ci := c.md.Collections[i]
		m.Collections = append(m.Collections, contract.CollectionSummary{
			ID: mc.ID, Name: mc.Name, Count: mc.Count, CountBefore: mc.Count, CountAfter: mc.Count,
			Dimension: ci.Dimension, Batches: mc.Batches, BatchRecords: batchRecords(mc.BatchRecords), ContentDigest: mc.ContentDigest,
		})
	}

	// Read back and verify exactly as chroma.api.snapshot.verify does.
	progress.Update(contract.Progress{Phase: "verifying", DoneRecords: m.TotalRecords, TotalRecords: m.TotalRecords, Bytes: m.Size})
	if rep := s.verifyStored(ctx, m); !rep.OK {
		return nil, fmt.Errorf("read-back verification of the imported archive: %s", rep.Problem)
	}
	m.VerifiedAt = time.Now().UTC()
	// As snapshot.create does: a name another database's snapshots use
	// makes the name ambiguous for every later command that takes it.
	elsewhere, before := s.peers(ctx, m.Name, m.Tenant, m.Database, m.ImportedFrom.SHA256, id)
	if w := nameElsewhereWarning(m.Name, elsewhere, id); w != "" {
		m.ImportedFrom.Warnings = append(m.ImportedFrom.Warnings, w)
	}
	// The same file imported again (twice by mistake, or once more on a
	// second try whose first answer was lost) is a second snapshot of the
	// same data, said nowhere else.
	if len(before) > 0 {
		m.ImportedFrom.Warnings = append(m.ImportedFrom.Warnings, fmt.Sprintf("this file was imported into %s/%s before, as %s: the snapshots hold the same data (`snapshot delete` removes one)",
			m.Tenant, m.Database, strings.Join(before, ", ")))
	}
	data, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	if _, err := s.assets.Manifests.Create(ctx, id, data); err != nil {
		return nil, fmt.Errorf("write manifest %s: %w", id, err)
	}
	return m, nil
}

// sniffObject reads the first bytes of the staged object to tell the
// format, and whether it is encrypted with age.
func (s *Service) sniffObject(ctx context.Context, obj string) (string, bool, error) {
	res, err := s.assets.Snapshots.Get(ctx, obj)
	if err != nil {
		return "", false, fmt.Errorf("open staged object %s: %w", obj, err)
	}
	defer res.Close()
	head := make([]byte, legacy.SniffLen)
	n, err := io.ReadFull(res, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return "", false, fmt.Errorf("read staged object %s: %w", obj, err)
	}
	if crypt.IsEncrypted(head[:n]) {
		f, err := s.sniffEncrypted(ctx, obj)
		return f, true, err
	}
	f, err := legacy.Sniff(head[:n])
	if err != nil {
		return "", false, err
	}
	if f == legacy.FormatSeed {
		return contract.ImportFormatSeed, false, nil
	}
	return contract.ImportFormatNative, false, nil
}

// convertSeed converts a seed archive (two streamed passes over the staged
// object) into w.
func (s *Service) convertSeed(ctx context.Context, req *contract.SnapshotImportRequest, sm *legacy.SeedManifest, id string, started time.Time, w io.Writer, progress *bus.ProgressPublisher) (*converted, error) {
	name := req.Name
	if name == "" && sm != nil {
		name = firstValidName(sm.Name, sm.SnapshotID)
	}
	if name == "" {
		name = firstValidName(fileStem(req.FileName), "imported")
	}
	progress.Update(contract.Progress{Phase: "checking"})
	res, err := legacy.Convert(func() (io.ReadCloser, error) { return s.assets.Snapshots.Get(ctx, req.Object) }, w, legacy.Options{
		SnapshotID: id, Name: name, Tenant: req.Tenant, Database: req.Database,
		Manifest: req.Manifest, CreatedAt: started,
		Progress: func(done, total int64) {
			progress.Update(contract.Progress{Phase: "converting", DoneRecords: done, TotalRecords: total})
		},
	})
	if err != nil {
		return nil, err
	}
	o := contract.ImportOrigin{
		Format: contract.ImportFormatSeed, File: req.FileName, Size: res.Size, SHA256: res.SHA256,
		ManifestChecked: res.SeedManifest != nil, SourceCreatedAt: res.SourceCreatedAt,
		Warnings: res.Warnings,
	}
	if res.Seed != nil {
		o.SourceChromaVersion = res.Seed.ChromaVersion
	}
	if sm := res.SeedManifest; sm != nil {
		o.SourceSnapshotID, o.SourceName = sm.SnapshotID, sm.Name
		if o.SourceChromaVersion == "" {
			o.SourceChromaVersion = sm.ChromaVersion
		}
	}
	if req.Name == "" && sm != nil && sm.Name != "" && name != sm.Name {
		o.Warnings = append(o.Warnings, fmt.Sprintf("manifest name %q is not a valid snapshot name; named %q", sm.Name, name))
	}
	return &converted{md: res.Metadata, man: res.Manifest, rawBytes: res.RawBytes, origin: o}, nil
}

// rewriteNative copies a native archive into w through archive.Reader and
// archive.Writer, batch for batch, so that its metadata.json names the new
// snapshot (id, name, and tenant/database if the request overrides them)
// while every record, batch name and content digest stays as it was.
func (s *Service) rewriteNative(ctx context.Context, req *contract.SnapshotImportRequest, sm *legacy.SeedManifest, id string, encrypted bool, w io.Writer, progress *bus.ProgressPublisher) (*converted, error) {
	obj, err := s.assets.Snapshots.Get(ctx, req.Object)
	if err != nil {
		return nil, fmt.Errorf("open staged object %s: %w", req.Object, err)
	}
	defer obj.Close()
	src := &countingHash{h: sha256.New()}
	in := io.TeeReader(obj, src)
	plain := in // the file's SHA-256 is of its bytes, encrypted or not
	if encrypted {
		if plain, err = s.plaintext(in, contract.EncryptionAge); err != nil {
			return nil, err
		}
	}
	ar, err := archive.NewReader(plain)
	if err != nil {
		return nil, err
	}
	orig := ar.Metadata()
	md := *orig
	md.SnapshotID = id
	md.Name = firstValidName(req.Name, orig.Name, fileStem(req.FileName), "imported")
	if req.Tenant != "" {
		md.Tenant = req.Tenant
	}
	if req.Database != "" {
		md.Database = req.Database
	}
	var total int64
	for _, c := range md.Collections {
		total += c.ExpectedCount
	}
	pw := &poisonWriter{w: w}
	aw, err := archive.NewWriter(pw, &md)
	if err != nil {
		return nil, fmt.Errorf("start archive: %w", err)
	}
	fail := func(err error) (*converted, error) {
		pw.poisoned = true // release the writer without completing the archive
		_, _ = aw.Close()
		return nil, err
	}
	var done int64
	for {
		b, err := ar.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fail(err)
		}
		if err := aw.WriteBatch(b.Collection, b.Records); err != nil {
			return fail(fmt.Errorf("rewrite collection %d batch %s: %w", b.Collection, b.Name, err))
		}
		done += int64(b.Records.Len())
		progress.Update(contract.Progress{Phase: "copying", DoneRecords: done, TotalRecords: max(total, done)})
	}
	// Drain so age checks its last chunk and the object store its digest at EOF.
	if _, err := io.Copy(io.Discard, plain); err != nil {
		return fail(fmt.Errorf("read staged object %s: %w", req.Object, err))
	}
	if _, err := io.Copy(io.Discard, in); err != nil {
		return fail(fmt.Errorf("read staged object %s: %w", req.Object, err))
	}
	srcMan := ar.Manifest()
	sumHex := hex.EncodeToString(src.h.Sum(nil))
	names := make([]string, len(srcMan.Collections))
	for i, c := range srcMan.Collections {
		names[i] = c.Name
	}
	if sm != nil {
		if err := sm.CheckNative(sumHex, names, srcMan.TotalRecords); err != nil {
			return fail(err)
		}
	}
	man, err := aw.Close()
	if err != nil {
		return nil, fmt.Errorf("finish archive: %w", err)
	}
	for i, c := range man.Collections {
		sc := srcMan.Collections[i]
		if c.ContentDigest != sc.ContentDigest || c.Count != sc.Count || len(c.Batches) != len(sc.Batches) {
			return nil, fmt.Errorf("rewritten collection %q differs from the imported one (%d records, digest %s; was %d, %s)", c.Name, c.Count, c.ContentDigest, sc.Count, sc.ContentDigest)
		}
	}
	_, raw := aw.Stats()
	created := orig.CreatedAt
	o := contract.ImportOrigin{
		Format: contract.ImportFormatNative, File: req.FileName, Size: src.n, SHA256: sumHex,
		ManifestChecked: sm != nil, SourceSnapshotID: orig.SnapshotID, SourceName: orig.Name,
		SourceCreatedAt: &created, SourceChromaVersion: orig.ChromaVersion,
	}
	if encrypted {
		o.Encryption = contract.EncryptionAge
		if s.cfg.Recipients == nil {
			o.Warnings = append(o.Warnings, "the file was encrypted with age; this snapshotter has no recipients (--age-recipients), so the imported archive is stored unencrypted")
		}
	}
	return &converted{md: &md, man: man, rawBytes: raw, origin: o}, nil
}

// firstValidName returns the first candidate that is a valid snapshot name,
// or that becomes one once its other characters are replaced by '_'.
func firstValidName(candidates ...string) string {
	for _, c := range candidates {
		if c == "" {
			continue
		}
		if contract.ValidateSnapshotName(c) == nil {
			return c
		}
		b := []byte(c)
		for i, ch := range b {
			ok := ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || (i > 0 && (ch == '.' || ch == '_' || ch == '-'))
			if !ok {
				b[i] = '_'
			}
		}
		fixed := strings.TrimLeft(string(b), "_")
		if len(fixed) > 128 {
			fixed = fixed[:128]
		}
		if contract.ValidateSnapshotName(fixed) == nil {
			return fixed
		}
	}
	return ""
}

// fileStem is a file name without its directory and archive extensions.
func fileStem(name string) string {
	name = path.Base(strings.ReplaceAll(name, `\`, "/"))
	for _, ext := range []string{".tar.gz", ".tgz", ".tar.zst", ".gz", ".zst", ".tar"} {
		if s, ok := strings.CutSuffix(name, ext); ok && s != "" {
			return s
		}
	}
	if name == "." || name == "/" {
		return ""
	}
	return name
}

// countingHash hashes and counts what is written to it.
type countingHash struct {
	h hash.Hash
	n int64
}

func (c *countingHash) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.h.Write(p)
}

// poisonWriter lets a failed rewrite release its archive.Writer without
// manifest.json ever reaching the object.
type poisonWriter struct {
	w        io.Writer
	poisoned bool
}

func (p *poisonWriter) Write(b []byte) (int, error) {
	if p.poisoned {
		return 0, errors.New("import failed; output closed")
	}
	return p.w.Write(b)
}
