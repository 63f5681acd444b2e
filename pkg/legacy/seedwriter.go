package legacy

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
)

// SeedArchive describes an archive in the seed tool's format. WriteSeedArchive
// writes it the way the Python tool did (tarfile "w:gz", json.dumps), so
// tests and tools can make seed archives without Python.
type SeedArchive struct {
	// Dir is the directory holding the entries inside the tar ("" for the
	// root), e.g. "snapshot_20251130_143022", as tarfile.add(dir, arcname)
	// writes it: a directory entry, then the files.
	Dir           string
	ChromaVersion string
	// Timestamp is written as given, e.g. "2025-11-30T14:30:22".
	Timestamp   string
	Collections []SeedCollection
	// MetadataFirst writes metadata.json before collections.json (the tool
	// took whatever order the directory listing gave).
	MetadataFirst bool
	// Indent is json.dump's indent (0 writes compact json.dumps output).
	Indent int
	// NoMetadata leaves metadata.json out.
	NoMetadata bool
	// CollectionsCount and TotalChunks, when set, are written into
	// metadata.json instead of the true counts (to make bad archives).
	CollectionsCount, TotalChunks *int64
	// ModTime of the entries (default: the Unix epoch, for reproducibility).
	ModTime time.Time
}

// SeedCollection is one collection of collections.json.
type SeedCollection struct {
	Name    string
	Batches []SeedBatch
}

// SeedBatch is one batch of a collection, e.g. "batch_000000".
type SeedBatch struct {
	Name    string
	Records []SeedRecord
}

// SeedRecord is one record as the seed tool wrote it: "text" is the
// document, "embedding" a list of floats (null when nil), "metadata" an
// object (null when nil).
type SeedRecord struct {
	ID        string
	Text      *string
	Embedding []float32
	Metadata  record.Metadata
}

// SeedCollectionFromBatch splits b into seed batches of batchSize records
// named batch_000000, batch_000001, ... as the seed tool did.
func SeedCollectionFromBatch(name string, b *record.Batch, batchSize int) SeedCollection {
	c := SeedCollection{Name: name}
	if batchSize <= 0 {
		batchSize = 100
	}
	for start := 0; start < b.Len(); start += batchSize {
		end := min(start+batchSize, b.Len())
		sb := SeedBatch{Name: nativeBatchName(len(c.Batches))}
		for i := start; i < end; i++ {
			r := SeedRecord{ID: b.IDs[i]}
			if b.Documents != nil {
				r.Text = b.Documents[i]
			}
			if b.Embeddings != nil {
				r.Embedding = b.Embeddings[i]
			}
			if b.Metadatas != nil {
				r.Metadata = b.Metadatas[i]
			}
			sb.Records = append(sb.Records, r)
		}
		c.Batches = append(c.Batches, sb)
	}
	return c
}

// Counts are the collections and records (chunks) of a.
func (a *SeedArchive) Counts() (collections, chunks int64) {
	for _, c := range a.Collections {
		for _, b := range c.Batches {
			chunks += int64(len(b.Records))
		}
	}
	return int64(len(a.Collections)), chunks
}

// CollectionsJSON is collections.json as json.dumps writes it.
func (a *SeedArchive) CollectionsJSON() ([]byte, error) {
	colls := make(pyObject, 0, len(a.Collections))
	for _, c := range a.Collections {
		batches := make(pyObject, 0, len(c.Batches))
		for _, b := range c.Batches {
			recs := make([]any, 0, len(b.Records))
			for _, r := range b.Records {
				var text any
				if r.Text != nil {
					text = *r.Text
				}
				var emb any
				if r.Embedding != nil {
					emb = r.Embedding
				}
				var md any
				if r.Metadata != nil {
					md = metadataObject(r.Metadata)
				}
				recs = append(recs, pyObject{{"id", r.ID}, {"text", text}, {"embedding", emb}, {"metadata", md}})
			}
			batches = append(batches, pyKV{b.Name, recs})
		}
		colls = append(colls, pyKV{c.Name, batches})
	}
	return pyDumps(colls, a.Indent)
}

// MetadataJSON is metadata.json as the seed tool wrote it.
func (a *SeedArchive) MetadataJSON() ([]byte, error) {
	nc, nt := a.Counts()
	if a.CollectionsCount != nil {
		nc = *a.CollectionsCount
	}
	if a.TotalChunks != nil {
		nt = *a.TotalChunks
	}
	return pyDumps(pyObject{
		{"chromadb_version", a.ChromaVersion},
		{"snapshot_timestamp", a.Timestamp},
		{"collections_count", nc},
		{"total_chunks", nt},
	}, a.Indent)
}

// WriteSeedArchive writes a as a .tar.gz the way the seed tool did:
// gzip level 9 with the tar's name in the gzip header, a PAX tar whose
// entries sit under Dir, padded to tar's 10 KiB records.
func WriteSeedArchive(w io.Writer, a *SeedArchive) error {
	collJSON, err := a.CollectionsJSON()
	if err != nil {
		return err
	}
	mdJSON, err := a.MetadataJSON()
	if err != nil {
		return err
	}
	mtime := a.ModTime
	if mtime.IsZero() {
		mtime = time.Unix(0, 0)
	}
	zw, err := gzip.NewWriterLevel(w, gzip.BestCompression)
	if err != nil {
		return err
	}
	if a.Dir != "" {
		zw.Name = path.Base(a.Dir) + ".tar"
	}
	zw.ModTime = mtime
	cw := &countWriter{w: zw}
	tw := tar.NewWriter(cw)
	hdr := func(name string, typ byte, size int64) *tar.Header {
		mode := int64(0o644)
		if typ == tar.TypeDir {
			mode = 0o755
		}
		return &tar.Header{Typeflag: typ, Name: name, Size: size, Mode: mode, ModTime: mtime,
			Uid: 1000, Gid: 1000, Uname: "setup", Gname: "setup", Format: tar.FormatPAX}
	}
	if a.Dir != "" {
		if err := tw.WriteHeader(hdr(strings.TrimSuffix(a.Dir, "/")+"/", tar.TypeDir, 0)); err != nil {
			return err
		}
	}
	type entry struct {
		name string
		data []byte
	}
	entries := []entry{{collectionsEntry, collJSON}}
	if !a.NoMetadata {
		if a.MetadataFirst {
			entries = append([]entry{{metadataEntry, mdJSON}}, entries...)
		} else {
			entries = append(entries, entry{metadataEntry, mdJSON})
		}
	}
	for _, e := range entries {
		if err := tw.WriteHeader(hdr(path.Join(a.Dir, e.name), tar.TypeReg, int64(len(e.data)))); err != nil {
			return err
		}
		if _, err := tw.Write(e.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if pad := (10240 - cw.n%10240) % 10240; pad > 0 {
		if _, err := cw.Write(make([]byte, pad)); err != nil {
			return err
		}
	}
	return zw.Close()
}

// SeedManifestJSON is the manifest the seed tool kept beside an archive
// (manifests/<snapshot_id>.json) for the archive bytes data, as Convert
// reads it: snapshot id and name, timestamp, checksum, counts, collection
// and batch names.
func SeedManifestJSON(a *SeedArchive, snapshotID, name string, data []byte) ([]byte, error) {
	sum := sha256.Sum256(data)
	nc, nt := a.Counts()
	var names []any
	batches := pyObject{}
	for _, c := range a.Collections {
		names = append(names, c.Name)
		var bn []any
		for _, b := range c.Batches {
			bn = append(bn, b.Name)
		}
		if bn == nil {
			bn = []any{}
		}
		batches = append(batches, pyKV{c.Name, bn})
	}
	if names == nil {
		names = []any{}
	}
	return pyDumps(pyObject{
		{"snapshot_id", snapshotID},
		{"snapshot_name", name},
		{"timestamp", a.Timestamp},
		{"archive_path", "snapshots/" + snapshotID + ".tar.gz"},
		{"checksum", hex.EncodeToString(sum[:])},
		{"checksum_algorithm", "sha256"},
		{"size_bytes", int64(len(data))},
		{"chromadb_version", a.ChromaVersion},
		{"collections_count", nc},
		{"total_chunks", nt},
		{"collections", names},
		{"batch_metadata", batches},
	}, 2)
}

// BuildSeedArchive writes a into memory and returns the .tar.gz and its
// manifest.
func BuildSeedArchive(a *SeedArchive, snapshotID, name string) (data, manifest []byte, err error) {
	var buf bytes.Buffer
	if err := WriteSeedArchive(&buf, a); err != nil {
		return nil, nil, err
	}
	manifest, err = SeedManifestJSON(a, snapshotID, name, buf.Bytes())
	return buf.Bytes(), manifest, err
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// pyObject is a JSON object with keys in insertion order, as Python's dict.
type pyObject []pyKV

type pyKV struct {
	k string
	v any
}

func metadataObject(md record.Metadata) pyObject {
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	o := make(pyObject, 0, len(keys))
	for _, k := range keys {
		o = append(o, pyKV{k, md[k]})
	}
	return o
}

// pyDumps encodes v as Python's json.dumps(v, indent=indent) does with its
// defaults: ensure_ascii, ", " and ": " separators without indent, floats
// as repr(float).
func pyDumps(v any, indent int) ([]byte, error) {
	e := &pyEncoder{indent: indent}
	if err := e.value(v, 0); err != nil {
		return nil, err
	}
	return e.buf.Bytes(), nil
}

type pyEncoder struct {
	buf    bytes.Buffer
	indent int
}

func (e *pyEncoder) newline(level int) {
	e.buf.WriteByte('\n')
	e.buf.WriteString(strings.Repeat(" ", e.indent*level))
}

func (e *pyEncoder) sep(i, level int) {
	if i > 0 {
		e.buf.WriteByte(',')
		if e.indent == 0 {
			e.buf.WriteByte(' ')
		}
	}
	if e.indent > 0 {
		e.newline(level)
	}
}

func (e *pyEncoder) value(v any, level int) error {
	switch x := v.(type) {
	case nil:
		e.buf.WriteString("null")
	case bool:
		e.buf.WriteString(strconv.FormatBool(x))
	case string:
		e.buf.WriteString(PyString(x))
	case int:
		e.buf.WriteString(strconv.Itoa(x))
	case int64:
		e.buf.WriteString(strconv.FormatInt(x, 10))
	case float64:
		e.buf.WriteString(PyFloat(x))
	case []float32:
		items := make([]any, len(x))
		for i, f := range x {
			items[i] = float64(f)
		}
		return e.value(items, level)
	case []any:
		if len(x) == 0 {
			e.buf.WriteString("[]")
			return nil
		}
		e.buf.WriteByte('[')
		for i, it := range x {
			e.sep(i, level+1)
			if err := e.value(it, level+1); err != nil {
				return err
			}
		}
		if e.indent > 0 {
			e.newline(level)
		}
		e.buf.WriteByte(']')
	case pyObject:
		if len(x) == 0 {
			e.buf.WriteString("{}")
			return nil
		}
		e.buf.WriteByte('{')
		for i, kv := range x {
			e.sep(i, level+1)
			e.buf.WriteString(PyString(kv.k))
			e.buf.WriteString(": ")
			if err := e.value(kv.v, level+1); err != nil {
				return err
			}
		}
		if e.indent > 0 {
			e.newline(level)
		}
		e.buf.WriteByte('}')
	default:
		return fmt.Errorf("legacy: cannot write %T in a seed archive", v)
	}
	return nil
}

// PyFloat formats f as Python's repr(float) and json.dumps do: the shortest
// digits that round-trip a float64, in positional notation when the decimal
// exponent is in [-4, 16), else as 1.5e-05 or 1e+16; integral values end in
// ".0". NaN and infinities come out as Python writes them (NaN, Infinity),
// which is not JSON.
func PyFloat(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	s := strconv.FormatFloat(f, 'e', -1, 64) // d.ddde±XX
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	mant, expStr, _ := strings.Cut(s, "e")
	exp, _ := strconv.Atoi(expStr)
	digits := strings.Replace(mant, ".", "", 1)
	var out string
	if exp >= -4 && exp < 16 {
		// Positional.
		point := exp + 1 // digits before the decimal point
		switch {
		case point <= 0:
			out = "0." + strings.Repeat("0", -point) + digits
		case point >= len(digits):
			out = digits + strings.Repeat("0", point-len(digits)) + ".0"
		default:
			out = digits[:point] + "." + digits[point:]
		}
	} else {
		m := digits[:1]
		if len(digits) > 1 {
			m += "." + digits[1:]
		}
		sign := "+"
		if exp < 0 {
			sign, exp = "-", -exp
		}
		out = fmt.Sprintf("%se%s%02d", m, sign, exp)
	}
	if neg {
		out = "-" + out
	}
	return out
}

// PyString quotes s as json.dumps does with ensure_ascii: everything outside
// printable ASCII (DEL included) as \uXXXX, surrogate pairs beyond the BMP.
func PyString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		default:
			switch {
			case r < 0x20 || (r > 0x7e && r < 0x10000):
				fmt.Fprintf(&b, `\u%04x`, r)
			case r >= 0x10000:
				r1, r2 := utf16.EncodeRune(r)
				fmt.Fprintf(&b, `\u%04x\u%04x`, r1, r2)
			default:
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}
