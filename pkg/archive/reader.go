package archive

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/klauspost/compress/zstd"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
)

// maxTrailing bounds the zero padding accepted after the tar end marker.
const maxTrailing = 64 << 10

// Reader reads an archive as a stream, checking it as it goes. It is not
// safe for concurrent use.
//
// Batches returned by Next are unverified until Next returns io.EOF: only
// then have every entry checksum and content digest been compared with the
// manifest. See the package documentation.
type Reader struct {
	lim Limits
	src *sourceReader
	zr  *zstd.Decoder
	tr  *tar.Reader

	md       *Metadata
	manifest *Manifest

	entries []ManifestEntry
	colls   []readColl
	cur     int
	batches int
	raw     int64

	// The .json entry waiting for its .f32 entry.
	pending     bytes.Buffer
	pendingName string
	pendingColl int
	pendingK    int
	hasPending  bool

	buf bytes.Buffer
	err error

	// digestOnly: batches come without embeddings, which are hashed
	// as stored (Verify needs nothing else).
	digestOnly bool
}

type readColl struct {
	batches []string
	digest  *record.Digest
}

// sourceReader remembers the underlying reader's own error, so that I/O
// failures are not mistaken for corruption.
type sourceReader struct {
	r   io.Reader
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

// NewReader starts reading an archive from r with the default Limits, and
// reads and checks metadata.json, which must be the first entry.
func NewReader(r io.Reader) (*Reader, error) {
	return NewReaderWithLimits(r, Limits{})
}

// NewReaderWithLimits is NewReader with explicit limits; zero fields of lim
// take their defaults.
func NewReaderWithLimits(r io.Reader, lim Limits) (*Reader, error) {
	lim = lim.withDefaults()
	src := &sourceReader{r: r}
	// Concurrency 1 decodes synchronously: no goroutines to leak when the
	// caller stops reading early, and nothing to Close.
	zr, err := zstd.NewReader(src,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxWindow(lim.MaxWindowSize),
		zstd.WithDecoderMaxMemory(lim.MaxWindowSize))
	if err != nil {
		return nil, fmt.Errorf("archive: zstd: %w", err)
	}
	ar := &Reader{lim: lim, src: src, zr: zr, tr: tar.NewReader(zr)}
	if err := ar.readMetadata(); err != nil {
		zr.Close()
		return nil, err
	}
	return ar, nil
}

// Metadata is the archive's metadata.json.
func (r *Reader) Metadata() *Metadata { return r.md }

// Manifest is the archive's manifest.json once Next has returned io.EOF,
// and nil before.
func (r *Reader) Manifest() *Manifest { return r.manifest }

// Next returns the next batch, in archive order. It returns io.EOF only
// after manifest.json was read and everything matched: every entry's size
// and SHA-256, the list and order of entries, and each collection's record
// count, batch names and content digest. Any other error is final.
func (r *Reader) Next() (*Batch, error) {
	if r.err != nil {
		return nil, r.err
	}
	b, err := r.next()
	if err != nil {
		r.err = err
		r.zr.Close()
		return nil, err
	}
	return b, nil
}

func (r *Reader) next() (*Batch, error) {
	for {
		hdr, err := r.tr.Next()
		if errors.Is(err, io.EOF) && r.src.err == nil {
			return nil, fmt.Errorf("%w: archive ends before %s", ErrTruncated, manifestEntry)
		}
		if err != nil {
			return nil, r.readErr("reading the entry after "+r.entries[len(r.entries)-1].Name, err)
		}
		data, err := r.readEntry(hdr)
		if err != nil {
			return nil, err
		}
		name := hdr.Name
		if name == manifestEntry {
			if r.hasPending {
				return nil, fmt.Errorf("%w: entry %s: expected %s", ErrCorrupt, name, batchEntry(r.pendingColl, batchName(r.pendingK), "f32"))
			}
			if err := r.finish(data); err != nil {
				return nil, err
			}
			return nil, io.EOF
		}
		c, k, ext, ok := parseBatchEntry(name)
		if !ok {
			return nil, fmt.Errorf("%w: unknown entry %q", ErrCorrupt, name)
		}
		if r.hasPending {
			if c != r.pendingColl || k != r.pendingK || ext != "f32" {
				return nil, fmt.Errorf("%w: entry %s: expected %s", ErrCorrupt, name, batchEntry(r.pendingColl, batchName(r.pendingK), "f32"))
			}
			r.hasPending = false
			cl := &r.colls[c]
			recs, err := decodeBatch(r.pendingName, r.pending.Bytes(), data, !r.digestOnly, cl.digest)
			if err != nil {
				return nil, err
			}
			bn := batchName(k)
			cl.batches = append(cl.batches, bn)
			return &Batch{Collection: c, Name: bn, Records: recs}, nil
		}
		if ext != "json" || c >= len(r.colls) || c < r.cur ||
			(c == r.cur && k != len(r.colls[c].batches)) || (c > r.cur && k != 0) {
			return nil, fmt.Errorf("%w: entry %s out of order: expected %s, the first batch of a later collection, or %s",
				ErrCorrupt, name, batchEntry(r.cur, batchName(len(r.colls[r.cur].batches)), "json"), manifestEntry)
		}
		if r.batches >= r.lim.MaxBatches {
			return nil, fmt.Errorf("%w: entry %s: more than %d batches", ErrCorrupt, name, r.lim.MaxBatches)
		}
		r.batches++
		r.cur = c
		r.pending.Reset()
		r.pending.Write(data)
		r.pendingName, r.pendingColl, r.pendingK, r.hasPending = name, c, k, true
	}
}

func (r *Reader) readMetadata() error {
	hdr, err := r.tr.Next()
	if errors.Is(err, io.EOF) && r.src.err == nil {
		return fmt.Errorf("%w: empty archive, no %s", ErrTruncated, metadataEntry)
	}
	if err != nil {
		if errors.Is(err, zstd.ErrMagicMismatch) {
			return fmt.Errorf("%w: not a zstd stream (a seed .tar.gz archive needs the importer): %w", ErrFormat, err)
		}
		return r.readErr("reading "+metadataEntry, err)
	}
	if hdr.Name != metadataEntry {
		return fmt.Errorf("%w: first entry is %q, want %s", ErrCorrupt, hdr.Name, metadataEntry)
	}
	data, err := r.readEntry(hdr)
	if err != nil {
		return err
	}
	var md Metadata
	if err := decodeStrict(data, &md); err != nil {
		// Wrong format first: a future version may not even parse as v1.
		var probe struct {
			Format string `json:"format"`
		}
		if decodeLoose(data, &probe) == nil && probe.Format != FormatV1 {
			return fmt.Errorf("%w: %s: format %q, want %q", ErrFormat, metadataEntry, probe.Format, FormatV1)
		}
		return fmt.Errorf("%w: entry %s: %w", ErrCorrupt, metadataEntry, err)
	}
	if md.Format != FormatV1 {
		return fmt.Errorf("%w: %s: format %q, want %q", ErrFormat, metadataEntry, md.Format, FormatV1)
	}
	if len(md.Collections) > r.lim.MaxCollections {
		return fmt.Errorf("%w: entry %s: %d collections, limit %d", ErrCorrupt, metadataEntry, len(md.Collections), r.lim.MaxCollections)
	}
	for i, c := range md.Collections {
		if c.Index != i {
			return fmt.Errorf("%w: entry %s: collection %d has index %d", ErrCorrupt, metadataEntry, i, c.Index)
		}
	}
	r.md = &md
	r.colls = make([]readColl, len(md.Collections))
	for i := range r.colls {
		r.colls[i].digest = record.NewDigest()
	}
	return nil
}

// readEntry reads the current entry whole and records its size and hash.
// The returned bytes are valid until the next readEntry.
func (r *Reader) readEntry(hdr *tar.Header) ([]byte, error) {
	if hdr.Typeflag != tar.TypeReg {
		return nil, fmt.Errorf("%w: entry %q: type %q, want a regular file", ErrCorrupt, hdr.Name, hdr.Typeflag)
	}
	if hdr.Size < 0 || hdr.Size > r.lim.MaxEntrySize {
		return nil, fmt.Errorf("%w: entry %q: size %d, limit %d", ErrCorrupt, hdr.Name, hdr.Size, r.lim.MaxEntrySize)
	}
	r.buf.Reset()
	// Grow only as the data arrives: hdr.Size is not trusted.
	r.buf.Grow(int(min(hdr.Size, 1<<20)))
	n, err := r.buf.ReadFrom(io.LimitReader(r.tr, hdr.Size))
	if err != nil {
		return nil, r.readErr("reading "+hdr.Name, err)
	}
	if n != hdr.Size {
		return nil, fmt.Errorf("%w: entry %s: %d of %d bytes", ErrTruncated, hdr.Name, n, hdr.Size)
	}
	data := r.buf.Bytes()
	sum := sha256.Sum256(data)
	if len(r.entries) >= 2*r.lim.MaxBatches+2 {
		return nil, fmt.Errorf("%w: entry %s: too many entries", ErrCorrupt, hdr.Name)
	}
	r.entries = append(r.entries, ManifestEntry{Name: hdr.Name, Size: hdr.Size, SHA256: hex.EncodeToString(sum[:])})
	r.raw += hdr.Size
	return data, nil
}

// finish checks the manifest against everything read, then that nothing
// follows it.
func (r *Reader) finish(data []byte) error {
	var m Manifest
	if err := decodeStrict(data, &m); err != nil {
		return fmt.Errorf("%w: entry %s: %w", ErrCorrupt, manifestEntry, err)
	}
	if m.Format != FormatV1 {
		return fmt.Errorf("%w: %s: format %q, want %q", ErrFormat, manifestEntry, m.Format, FormatV1)
	}
	got := r.entries[:len(r.entries)-1] // all but the manifest itself
	for i := range max(len(got), len(m.Entries)) {
		switch {
		case i >= len(m.Entries):
			return fmt.Errorf("%w: entry %s is not in the manifest", ErrCorrupt, got[i].Name)
		case i >= len(got):
			return fmt.Errorf("%w: manifest lists entry %s, missing from the archive", ErrCorrupt, m.Entries[i].Name)
		}
		g, w := got[i], m.Entries[i]
		if g.Name != w.Name {
			return fmt.Errorf("%w: entry %d is %s, manifest says %s", ErrCorrupt, i, g.Name, w.Name)
		}
		if g.Size != w.Size {
			return fmt.Errorf("%w: entry %s: size %d, manifest says %d", ErrChecksumMismatch, g.Name, g.Size, w.Size)
		}
		if g.SHA256 != w.SHA256 {
			return fmt.Errorf("%w: entry %s: sha256 %s, manifest says %s", ErrChecksumMismatch, g.Name, g.SHA256, w.SHA256)
		}
	}
	if len(m.Collections) != len(r.colls) {
		return fmt.Errorf("%w: manifest has %d collections, metadata %d", ErrCorrupt, len(m.Collections), len(r.colls))
	}
	var total int64
	for i, mc := range m.Collections {
		ci, rc := r.md.Collections[i], r.colls[i]
		label := fmt.Sprintf("collection %d (%s)", i, ci.Name)
		switch {
		case mc.Index != i || mc.ID != ci.ID || mc.Name != ci.Name:
			return fmt.Errorf("%w: manifest collection %d is %d %q %q, metadata says %q %q", ErrCorrupt, i, mc.Index, mc.ID, mc.Name, ci.ID, ci.Name)
		case mc.Count != rc.digest.Count():
			return fmt.Errorf("%w: %s: %d records, manifest says %d", ErrCorrupt, label, rc.digest.Count(), mc.Count)
		case !slices.Equal(mc.Batches, rc.batches):
			return fmt.Errorf("%w: %s: %d batches, manifest lists %d (%v)", ErrCorrupt, label, len(rc.batches), len(mc.Batches), firstDiff(rc.batches, mc.Batches))
		}
		if sum := rc.digest.Sum(); sum != mc.ContentDigest {
			return fmt.Errorf("%w: %s: content digest %s, manifest says %s", ErrChecksumMismatch, label, sum, mc.ContentDigest)
		}
		total += mc.Count
	}
	if total != m.TotalRecords {
		return fmt.Errorf("%w: %d records, manifest total_records says %d", ErrCorrupt, total, m.TotalRecords)
	}
	if err := r.checkEnd(); err != nil {
		return err
	}
	r.manifest = &m
	return nil
}

// checkEnd requires the tar stream to end after the manifest and reads the
// zstd stream to its end, which also checks the frame checksum.
func (r *Reader) checkEnd() error {
	hdr, err := r.tr.Next()
	if err == nil {
		return fmt.Errorf("%w: entry %q after %s", ErrCorrupt, hdr.Name, manifestEntry)
	}
	if !errors.Is(err, io.EOF) || r.src.err != nil {
		return r.readErr("reading past "+manifestEntry, err)
	}
	var buf [4096]byte
	var trailing int
	for {
		n, err := r.zr.Read(buf[:])
		trailing += n
		if trailing > maxTrailing || slices.ContainsFunc(buf[:n], func(b byte) bool { return b != 0 }) {
			return fmt.Errorf("%w: data after the end of the tar stream", ErrCorrupt)
		}
		if errors.Is(err, io.EOF) && r.src.err == nil {
			return nil
		}
		if err != nil {
			return r.readErr("reading past "+manifestEntry, err)
		}
	}
}

// readErr classifies an error from the tar or zstd layers. zstd decodes a
// block ahead, so the damage may lie after the entry being read.
func (r *Reader) readErr(what string, err error) error {
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return fmt.Errorf("%w: stream ends early, %s: %w", ErrTruncated, what, err)
	case r.src.err != nil && errors.Is(err, r.src.err):
		return fmt.Errorf("archive: %s: %w", what, err)
	default:
		return fmt.Errorf("%w: compressed stream, %s: %w", ErrCorrupt, what, err)
	}
}

func firstDiff(got, want []string) string {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return fmt.Sprintf("first difference at %d: %s vs %s", i, got[i], want[i])
		}
	}
	return "one list is a prefix of the other"
}
