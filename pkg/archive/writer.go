package archive

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
)

// f32Chunk is how many bytes of float32 data are encoded at a time, so the
// embeddings of a batch are never copied whole.
const f32Chunk = 64 << 10

// windowSize is the zstd window the writer uses. Embeddings do not
// compress at any window, and the JSON of documents and metadata finds its
// repeats within far less (gzip's 32 KiB does nearly as well), so 1 MiB
// compresses as well as the 4 MiB zstd picks by itself for SpeedFastest,
// while both sides hold less: the encoder's history and the decoder's of
// every reader (the snapshotter's verification, the restorer): a seed
// snapshot allocated 12 MB of them at 4 MiB, and peaked 10-17 MB higher.
const windowSize = 1 << 20

// Writer writes an archive as a stream. It is not safe for concurrent use.
//
// Errors from validating a batch (bad collection index, ragged embeddings,
// mismatched columns, invalid UTF-8, a batch too large for one entry) leave
// the archive unchanged and the Writer usable. Any other error, in
// particular from the underlying writer, is sticky: the archive is unusable
// and every later call returns it; Close still releases resources.
type Writer struct {
	zw  *zstd.Encoder
	tw  *tar.Writer
	md  Metadata
	lim Limits

	modTime time.Time
	entries []ManifestEntry
	colls   []writeColl
	cur     int
	batches int

	records, raw int64

	js     []byte
	chunk  []byte
	hasher hash.Hash
	err    error
	closed bool
}

type writeColl struct {
	batches []string
	records []BatchRecords
	digest  *record.Digest
}

var errWriterClosed = errors.New("archive: writer is closed")

// NewWriter starts an archive on w and writes metadata.json from a copy of
// md, with Format set, CreatedAt in UTC and each collection's Index set to
// its position. w is never closed by the Writer.
func NewWriter(w io.Writer, md *Metadata) (*Writer, error) {
	if md == nil {
		return nil, errors.New("archive: nil metadata")
	}
	lim := Limits{}.withDefaults()
	cp := *md
	if cp.Format == "" {
		cp.Format = FormatV1
	}
	if cp.Format != FormatV1 {
		return nil, fmt.Errorf("%w: metadata format %q, this writer writes %q", ErrFormat, cp.Format, FormatV1)
	}
	if len(cp.Collections) > lim.MaxCollections {
		return nil, fmt.Errorf("archive: %d collections, at most %d per archive", len(cp.Collections), lim.MaxCollections)
	}
	cp.CreatedAt = cp.CreatedAt.UTC()
	cp.Collections = slices.Clone(cp.Collections)
	for i := range cp.Collections {
		cp.Collections[i].Index = i
	}
	mdJSON, err := json.Marshal(&cp)
	if err != nil {
		return nil, fmt.Errorf("archive: encode metadata: %w", err)
	}
	// SpeedFastest: embeddings barely compress, and compression must not
	// slow the snapshot down. The frame checksum stays on (the default).
	zw, err := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderCRC(true), zstd.WithWindowSize(windowSize))
	if err != nil {
		return nil, fmt.Errorf("archive: zstd: %w", err)
	}
	aw := &Writer{
		zw:      zw,
		tw:      tar.NewWriter(zw),
		md:      cp,
		lim:     lim,
		modTime: cp.CreatedAt.Truncate(time.Second),
		colls:   make([]writeColl, len(cp.Collections)),
		hasher:  sha256.New(),
		chunk:   make([]byte, 0, f32Chunk),
	}
	for i := range aw.colls {
		aw.colls[i].digest = record.NewDigest()
	}
	if err := aw.writeEntry(metadataEntry, mdJSON); err != nil {
		zw.Close()
		return nil, err
	}
	return aw, nil
}

// WriteBatch appends the records of b to collection collIndex (an index into
// the metadata's collections). Collections must be written in order:
// collIndex never decreases, and a collection skipped over stays empty. An
// empty batch writes nothing, so an empty collection has zero batches. All
// non-null embeddings of b must have the same length. b is not retained.
func (w *Writer) WriteBatch(collIndex int, b *record.Batch) error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return errWriterClosed
	}
	if collIndex < 0 || collIndex >= len(w.colls) {
		return fmt.Errorf("archive: collection index %d out of range (%d collections)", collIndex, len(w.colls))
	}
	if collIndex < w.cur {
		return fmt.Errorf("archive: collection %d written after collection %d: collections must be written in order", collIndex, w.cur)
	}
	if b == nil {
		return errors.New("archive: nil batch")
	}
	if b.Len() == 0 {
		return nil
	}
	if err := b.Validate(); err != nil {
		return fmt.Errorf("archive: collection %d: %w", collIndex, err)
	}
	dim, nulls, err := embeddingShape(b)
	if err != nil {
		return fmt.Errorf("archive: collection %d: %w", collIndex, err)
	}
	if w.batches >= w.lim.MaxBatches {
		return fmt.Errorf("archive: more than %d batches; use larger batches", w.lim.MaxBatches)
	}
	var f32Size int64
	if dim != nil {
		f32Size = int64(len(b.IDs)-len(nulls)) * int64(*dim) * 4
	}
	if hint := batchJSONHint(b); cap(w.js) < hint {
		w.js = make([]byte, 0, hint) // one allocation, not a growth by quarters
	}
	w.js, err = appendBatchJSON(w.js[:0], &batchFile{
		IDs:            b.IDs,
		Documents:      b.Documents,
		Metadatas:      b.Metadatas,
		URIs:           b.URIs,
		Dimension:      dim,
		NullEmbeddings: nulls,
	})
	if errors.Is(err, record.ErrInvalidUTF8) {
		// The encoder found it on its way; checkUTF8 says which record.
		if e := checkUTF8(b); e != nil {
			return fmt.Errorf("archive: collection %d: %w", collIndex, e)
		}
	}
	if err != nil {
		return fmt.Errorf("archive: collection %d: encode batch: %w", collIndex, err)
	}
	if int64(len(w.js)) > w.lim.MaxEntrySize || f32Size > w.lim.MaxEntrySize {
		return fmt.Errorf("archive: collection %d: batch of %d records exceeds the %d-byte entry limit; split it", collIndex, b.Len(), w.lim.MaxEntrySize)
	}

	// From here on a failure leaves a partial entry or digest: sticky.
	c := &w.colls[collIndex]
	if err := c.digest.Add(b); err != nil {
		return w.fail(fmt.Errorf("archive: collection %d: digest: %w", collIndex, err))
	}
	w.cur = collIndex
	name := batchName(len(c.batches))
	if err := w.writeEntry(batchEntry(collIndex, name, "json"), w.js); err != nil {
		return err
	}
	if err := w.writeEmbeddings(batchEntry(collIndex, name, "f32"), b.Embeddings, f32Size); err != nil {
		return err
	}
	c.batches = append(c.batches, name)
	// Cloned: b is not retained, and its ids may share a page's memory.
	c.records = append(c.records, BatchRecords{Count: b.Len(), FirstID: strings.Clone(b.IDs[0]), LastID: strings.Clone(b.IDs[len(b.IDs)-1])})
	w.batches++
	w.records += int64(b.Len())
	return nil
}

// Close writes manifest.json and ends the tar and zstd streams. It does not
// close the underlying writer. The returned manifest is what was written.
func (w *Writer) Close() (*Manifest, error) {
	if w.closed {
		if w.err != nil {
			return nil, w.err
		}
		return nil, errWriterClosed
	}
	w.closed = true
	if w.err != nil {
		w.zw.Close()
		return nil, w.err
	}
	m := &Manifest{
		Format:      FormatV1,
		Entries:     slices.Clone(w.entries),
		Collections: make([]ManifestCollection, len(w.colls)),
	}
	for i, c := range w.colls {
		ci := w.md.Collections[i]
		batches := c.batches
		if batches == nil {
			batches = []string{}
		}
		m.Collections[i] = ManifestCollection{
			Index:         i,
			ID:            ci.ID,
			Name:          ci.Name,
			Count:         c.digest.Count(),
			Batches:       batches,
			BatchRecords:  c.records,
			ContentDigest: c.digest.Sum(),
		}
		m.TotalRecords += c.digest.Count()
	}
	data, err := json.Marshal(m)
	if err != nil {
		w.zw.Close()
		return nil, w.fail(fmt.Errorf("archive: encode manifest: %w", err))
	}
	if err := w.writeEntry(manifestEntry, data); err != nil {
		w.zw.Close()
		return nil, err
	}
	if err := w.tw.Close(); err != nil {
		w.zw.Close()
		return nil, w.fail(fmt.Errorf("archive: close tar: %w", err))
	}
	if err := w.zw.Close(); err != nil {
		return nil, w.fail(fmt.Errorf("archive: close zstd: %w", err))
	}
	return m, nil
}

// Stats reports the records written so far and the uncompressed bytes of
// all entries written so far (manifest.json included after Close).
func (w *Writer) Stats() (records, rawBytes int64) { return w.records, w.raw }

func (w *Writer) fail(err error) error {
	w.err = err
	return err
}

func (w *Writer) header(name string, size int64) error {
	err := w.tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		Size:     size,
		Mode:     0o644,
		ModTime:  w.modTime,
		Format:   tar.FormatUSTAR,
	})
	if err != nil {
		return w.fail(fmt.Errorf("archive: write %s: %w", name, err))
	}
	return nil
}

func (w *Writer) writeEntry(name string, data []byte) error {
	if err := w.header(name, int64(len(data))); err != nil {
		return err
	}
	if _, err := w.tw.Write(data); err != nil {
		return w.fail(fmt.Errorf("archive: write %s: %w", name, err))
	}
	sum := sha256.Sum256(data)
	w.record(name, int64(len(data)), sum[:])
	return nil
}

// writeEmbeddings writes the non-null embeddings as one entry of size bytes,
// encoding and hashing them a chunk at a time.
func (w *Writer) writeEmbeddings(name string, emb [][]float32, size int64) error {
	if err := w.header(name, size); err != nil {
		return err
	}
	w.hasher.Reset()
	buf := w.chunk[:0]
	flush := func() error {
		w.hasher.Write(buf)
		if _, err := w.tw.Write(buf); err != nil {
			return w.fail(fmt.Errorf("archive: write %s: %w", name, err))
		}
		buf = buf[:0]
		return nil
	}
	for _, e := range emb {
		for len(e) > 0 {
			n := min(len(e), (cap(buf)-len(buf))/4)
			buf = record.AppendFloat32s(buf, e[:n])
			e = e[n:]
			if cap(buf)-len(buf) < 4 {
				if err := flush(); err != nil {
					return err
				}
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	w.record(name, size, w.hasher.Sum(nil))
	return nil
}

func (w *Writer) record(name string, size int64, sum []byte) {
	w.entries = append(w.entries, ManifestEntry{Name: name, Size: size, SHA256: hex.EncodeToString(sum)})
	w.raw += size
}

// batchJSONHint estimates the size of b's batch JSON: 64 bytes of field
// names, and per record 104 bytes (about 96 for its metadata, 8 for the
// quotes, commas and nulls around its values) plus its id, document (with
// an eighth more for escapes) and uri. More metadata only means that
// appendBatchJSON grows the buffer.
func batchJSONHint(b *record.Batch) int {
	n := 64 + 104*len(b.IDs)
	for i, id := range b.IDs {
		n += len(id)
		if i < len(b.Documents) && b.Documents[i] != nil {
			n += len(*b.Documents[i]) + len(*b.Documents[i])/8
		}
		if i < len(b.URIs) && b.URIs[i] != nil {
			n += len(*b.URIs[i])
		}
	}
	return n
}
