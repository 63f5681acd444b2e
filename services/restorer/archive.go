package restorer

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/archive"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/crypt"
	"github.com/nats-io/nats.go/jetstream"
)

// errArchive marks an archive that is missing, corrupt or does not match
// its manifest: nothing may be restored from it.
var errArchive = errors.New("archive failed verification")

// archiveUnusable says err is about the snapshot's archive itself
// (contract.ErrorArchiveUnusable): an errArchive, but not a keyError,
// which a restorer given the key does not have.
func archiveUnusable(err error) bool {
	var ke *keyError
	return errors.Is(err, errArchive) && !errors.As(err, &ke)
}

// archiveReadTimeout bounds one read of an archive, however slow.
const archiveReadTimeout = 24 * time.Hour

// verifiedArchive is what a full read of a snapshot's archive found.
type verifiedArchive struct {
	md *archive.Metadata
	// sizes[c][k] is the record count of batch k of collection c.
	sizes [][]int
	// nulls[c] counts the records of collection c without an embedding.
	nulls []int64
}

// archiveStream reads a stored archive while hashing its bytes, so the end
// of a read can be checked against the manifest's SHA-256.
type archiveStream struct {
	obj    io.ReadCloser
	cancel context.CancelFunc
	hash   hash.Hash
	// plain is what r reads: the hashed object, decrypted if encrypted.
	plain io.Reader
	r     *archive.Reader
	m     *contract.SnapshotManifest
	// ahead, when not nil, is the first batch being read ahead (prefetch).
	ahead chan readAhead
}

type readAhead struct {
	b   *archive.Batch
	err error
}

// prefetch starts reading the first batch, so that it is decoded and
// checked while the job prepares (plan, fence) instead of after.
func (st *archiveStream) prefetch() {
	st.ahead = make(chan readAhead, 1)
	go func() {
		b, err := st.read()
		st.ahead <- readAhead{b, err}
	}()
}

// openArchive opens the archive object of m for reading.
func (s *Service) openArchive(ctx context.Context, m *contract.SnapshotManifest) (*archiveStream, error) {
	if m.Format != archive.FormatV1 {
		return nil, fmt.Errorf("%w: snapshot %s is in format %q; this restorer reads %q (import it first)", errArchive, m.SnapshotID, m.Format, archive.FormatV1)
	}
	if err := s.checkDecryptable(m); err != nil {
		return nil, err
	}
	info, err := s.assets.Snapshots.GetInfo(ctx, m.Object)
	if err != nil {
		if bus.IsNotFound(err) {
			return nil, fmt.Errorf("%w: archive object %s of snapshot %s is missing from %s", errArchive, m.Object, m.SnapshotID, contract.ObjectSnapshots)
		}
		return nil, fmt.Errorf("read archive object info %s: %w", m.Object, err)
	}
	if int64(info.Size) != m.Size {
		return nil, fmt.Errorf("%w: archive object %s is %d bytes, its manifest says %d (truncated or replaced)", errArchive, m.Object, info.Size, m.Size)
	}
	if want, err := objectDigest(m.SHA256); err != nil {
		return nil, fmt.Errorf("%w: manifest of snapshot %s: sha256 %q: %v", errArchive, m.SnapshotID, m.SHA256, err)
	} else if info.Digest != "" && info.Digest != want {
		// Both in hex, so they can be compared by eye.
		got := info.Digest
		if sum, err := jetstream.DecodeObjectDigest(info.Digest); err == nil {
			got = hex.EncodeToString(sum)
		}
		return nil, fmt.Errorf("%w: archive object %s was stored with sha256 %s, its manifest says sha256 %s (replaced)", errArchive, m.Object, got, m.SHA256)
	}
	// A restore reads the archive as slowly as Chroma adds: a pull-based
	// reader (OpenObject) holds a few chunks, where the object store's own
	// Get, a push subscription, would buffer up to 64 MB and drop chunks
	// as a slow consumer. The info was checked above, so it opens that.
	rctx, cancel := context.WithTimeout(ctx, archiveReadTimeout)
	obj, err := bus.OpenObject(rctx, s.assets.JS, contract.ObjectSnapshots, info)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("open archive object %s: %w", m.Object, err)
	}
	st := &archiveStream{obj: obj, cancel: cancel, hash: sha256.New(), m: m}
	st.plain, err = s.decrypt(m, io.TeeReader(obj, st.hash))
	if err == nil {
		st.r, err = archive.NewReader(st.plain)
	}
	if err == nil {
		err = checkMetadata(m, st.r.Metadata())
	}
	if err != nil {
		st.close()
		return nil, classifyArchiveErr(m, err)
	}
	return st, nil
}

// next returns the next batch, or io.EOF once the whole archive was read
// and every check passed: entry checksums and content digests (the archive
// reader), the object store's digest, and the manifest's SHA-256, counts,
// batches and digests.
func (st *archiveStream) next() (*archive.Batch, error) {
	if st.ahead != nil {
		a := <-st.ahead
		st.ahead = nil
		return a.b, a.err
	}
	return st.read()
}

func (st *archiveStream) read() (*archive.Batch, error) {
	b, err := st.r.Next()
	if err == nil {
		return b, nil
	}
	if !errors.Is(err, io.EOF) {
		return nil, classifyArchiveErr(st.m, err)
	}
	// Drain: age checks its last chunk, the object store its digest at EOF.
	if _, err := io.Copy(io.Discard, st.plain); err != nil {
		return nil, classifyArchiveErr(st.m, err)
	}
	if _, err := io.Copy(st.hash, st.obj); err != nil {
		return nil, classifyArchiveErr(st.m, err)
	}
	if sum := hex.EncodeToString(st.hash.Sum(nil)); sum != st.m.SHA256 {
		return nil, fmt.Errorf("%w: archive %s has sha256 %s, its manifest says %s", errArchive, st.m.Object, sum, st.m.SHA256)
	}
	if err := checkManifest(st.m, st.r.Manifest()); err != nil {
		return nil, err
	}
	return nil, io.EOF
}

func (st *archiveStream) close() {
	st.obj.Close()
	st.cancel()
	if st.ahead != nil {
		<-st.ahead // the read ahead ends, failed, once the object is closed
		st.ahead = nil
	}
}

// objectDigest is the object store's form of a hex SHA-256.
func objectDigest(sha string) (string, error) {
	sum, err := hex.DecodeString(sha)
	if err != nil || len(sum) != sha256.Size {
		return "", errors.New("not a hex SHA-256")
	}
	return "SHA-256=" + base64.URLEncoding.EncodeToString(sum), nil
}

// checkArchive checks what can be checked without reading a snapshot's
// archive: the object exists with the size and the SHA-256 digest the
// manifest names (as the object store recorded them when it was stored),
// and its metadata matches the manifest. A restore that relies on it
// verifies every byte while it stages (see next), before it swaps in.
// With keep, the archive is left open for that read, its first batch
// already being read (prefetch); the caller closes it.
func (s *Service) checkArchive(ctx context.Context, m *contract.SnapshotManifest, keep bool) (*verifiedArchive, *archiveStream, error) {
	st, err := s.openArchive(ctx, m)
	if err != nil {
		return nil, nil, err
	}
	va := &verifiedArchive{md: st.r.Metadata()}
	if !keep {
		st.close()
		return va, nil, nil
	}
	st.prefetch()
	return va, st, nil
}

// nullsOf is the number of records of collection i without an embedding,
// when the archive was read in full (0 otherwise).
func (va *verifiedArchive) nullsOf(i int) int64 {
	if i < len(va.nulls) {
		return va.nulls[i]
	}
	return 0
}

// verifyArchive reads a snapshot's archive in full and checks it (see next).
func (s *Service) verifyArchive(ctx context.Context, m *contract.SnapshotManifest) (*verifiedArchive, error) {
	st, err := s.openArchive(ctx, m)
	if err != nil {
		return nil, err
	}
	defer st.close()
	va := &verifiedArchive{md: st.r.Metadata(), sizes: make([][]int, len(m.Collections)), nulls: make([]int64, len(m.Collections))}
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		b, err := st.next()
		if errors.Is(err, io.EOF) {
			return va, nil
		}
		if err != nil {
			return nil, err
		}
		va.sizes[b.Collection] = append(va.sizes[b.Collection], b.Records.Len())
		for i := range b.Records.IDs {
			if b.Records.Embeddings == nil || b.Records.Embeddings[i] == nil {
				va.nulls[b.Collection]++
			}
		}
	}
}

// classifyArchiveErr tells damage (errArchive) from a failure to read.
func classifyArchiveErr(m *contract.SnapshotManifest, err error) error {
	if errors.Is(err, errArchive) {
		return err
	}
	if errors.Is(err, archive.ErrChecksumMismatch) || errors.Is(err, archive.ErrCorrupt) || errors.Is(err, archive.ErrTruncated) ||
		errors.Is(err, archive.ErrFormat) || errors.Is(err, jetstream.ErrDigestMismatch) || errors.Is(err, crypt.ErrDamaged) {
		return fmt.Errorf("%w: archive %s of snapshot %s: %w", errArchive, m.Object, m.SnapshotID, err)
	}
	return fmt.Errorf("read archive %s: %w", m.Object, err)
}

// checkMetadata compares the archive's metadata.json with the manifest.
func checkMetadata(m *contract.SnapshotManifest, md *archive.Metadata) error {
	if md.SnapshotID != m.SnapshotID || md.Tenant != m.Tenant || md.Database != m.Database {
		return fmt.Errorf("%w: archive %s holds snapshot %s of %s/%s, its manifest says %s of %s/%s",
			errArchive, m.Object, md.SnapshotID, md.Tenant, md.Database, m.SnapshotID, m.Tenant, m.Database)
	}
	if len(md.Collections) != len(m.Collections) {
		return fmt.Errorf("%w: archive %s has %d collections, its manifest %d", errArchive, m.Object, len(md.Collections), len(m.Collections))
	}
	for i, c := range md.Collections {
		if c.ID != m.Collections[i].ID || c.Name != m.Collections[i].Name {
			return fmt.Errorf("%w: archive %s collection %d is %q (%s), its manifest says %q (%s)",
				errArchive, m.Object, i, c.Name, c.ID, m.Collections[i].Name, m.Collections[i].ID)
		}
	}
	return nil
}

// checkManifest compares the archive's verified manifest.json with the
// snapshot manifest in KV.
func checkManifest(m *contract.SnapshotManifest, am *archive.Manifest) error {
	if am.TotalRecords != m.TotalRecords {
		return fmt.Errorf("%w: archive %s holds %d records, its manifest says %d", errArchive, m.Object, am.TotalRecords, m.TotalRecords)
	}
	for i, w := range m.Collections {
		g := am.Collections[i]
		if g.Count != w.Count || g.ContentDigest != w.ContentDigest || !slices.Equal(g.Batches, w.Batches) {
			return fmt.Errorf("%w: collection %q: archive has %d records in %d batches (digest %s), manifest says %d in %d (digest %s)",
				errArchive, w.Name, g.Count, len(g.Batches), g.ContentDigest, w.Count, len(w.Batches), w.ContentDigest)
		}
	}
	return nil
}
