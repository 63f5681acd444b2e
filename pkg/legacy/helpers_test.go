package legacy

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"testing"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/archive"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
)

func sp(s string) *string { return &s }

// sampleBatch holds the values a converter gets wrong first: unicode and NUL
// in ids, null versus empty documents, float32 edge values, int64 beyond
// 2^53, integral floats, bools, null metadata and null embeddings.
func sampleBatch(prefix string, n, dim int) *record.Batch {
	b := &record.Batch{}
	edge := []float32{0, float32(math.Copysign(0, -1)), math.MaxFloat32, -math.MaxFloat32, math.SmallestNonzeroFloat32,
		1.17549435e-38, 0.1, 1e-7, 16777217, 3.4e38, -1e-45, 0.30000001192092896}
	for i := range n {
		b.IDs = append(b.IDs, fmt.Sprintf("%s%c-\u00e9\U0001F680\x00%d", prefix, 'a'+i%26, i))
		switch i % 4 {
		case 0:
			b.Documents = append(b.Documents, nil)
		case 1:
			b.Documents = append(b.Documents, sp(""))
		case 2:
			b.Documents = append(b.Documents, sp("doc \"quoted\" \\ back\nslash \t\u2028 日本語 \x7f"))
		default:
			b.Documents = append(b.Documents, sp("plain"))
		}
		if i%7 == 6 {
			b.Embeddings = append(b.Embeddings, nil)
		} else {
			e := make([]float32, dim)
			for k := range e {
				e[k] = edge[(i+k)%len(edge)] * float32(1+k%3)
				if math.IsInf(float64(e[k]), 0) {
					e[k] = math.MaxFloat32
				}
			}
			b.Embeddings = append(b.Embeddings, e)
		}
		switch i % 3 {
		case 0:
			b.Metadatas = append(b.Metadatas, nil)
		case 1:
			b.Metadatas = append(b.Metadatas, record.Metadata{"n": int64(9007199254740993), "min": int64(math.MinInt64), "f": 1.0, "g": 1e-7, "big": 1e300, "b": true, "s": "x\u00e9"})
		default:
			b.Metadatas = append(b.Metadatas, record.Metadata{"chunk": int64(i), "neg": -0.5, "b": false, "s": ""})
		}
	}
	return b
}

func sampleArchive() *SeedArchive {
	return &SeedArchive{
		Dir:           "snapshot_20251130_143022",
		ChromaVersion: "0.3.21",
		Timestamp:     "2025-11-30T14:30:22",
		Collections: []SeedCollection{
			SeedCollectionFromBatch("sergio_corpus", sampleBatch("c", 45, 8), 10),
			{Name: "empty_collection"},
			SeedCollectionFromBatch("sergio.personality", sampleBatch("p", 7, 3), 100),
		},
	}
}

func build(t testing.TB, a *SeedArchive) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteSeedArchive(&buf, a); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func opener(data []byte) Opener {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }
}

// convert runs Convert on data and returns the result and the native bytes.
func convert(data []byte, opt Options) (*Result, []byte, error) {
	var out bytes.Buffer
	res, err := Convert(opener(data), &out, opt)
	return res, out.Bytes(), err
}

type nativeColl struct {
	info    archive.CollectionInfo
	batches []string
	recs    *record.Batch
}

// readNative reads a native archive to its verified end.
func readNative(t testing.TB, data []byte) (*archive.Metadata, []nativeColl) {
	t.Helper()
	ar, err := archive.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("open native archive: %v", err)
	}
	md := ar.Metadata()
	colls := make([]nativeColl, len(md.Collections))
	for i, c := range md.Collections {
		colls[i] = nativeColl{info: c, recs: &record.Batch{}}
	}
	for {
		b, err := ar.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read native archive: %v", err)
		}
		c := &colls[b.Collection]
		c.batches = append(c.batches, b.Name)
		appendBatch(c.recs, b.Records)
	}
	return md, colls
}

func appendBatch(dst, b *record.Batch) {
	n := b.Len()
	dst.IDs = append(dst.IDs, b.IDs...)
	dst.Embeddings = append(dst.Embeddings, colOrNil(b.Embeddings, n)...)
	dst.Documents = append(dst.Documents, colOrNil(b.Documents, n)...)
	dst.Metadatas = append(dst.Metadatas, colOrNil(b.Metadatas, n)...)
	dst.URIs = append(dst.URIs, colOrNil(b.URIs, n)...)
}

func colOrNil[T any](c []T, n int) []T {
	if c == nil {
		return make([]T, n)
	}
	return c
}

// seedRecords flattens a seed collection.
func seedRecords(c SeedCollection) []SeedRecord {
	var out []SeedRecord
	for _, b := range c.Batches {
		out = append(out, b.Records...)
	}
	return out
}

// compareRecords checks the native records against the seed records one by
// one: ids, documents, metadata exactly, embeddings bit for bit.
func compareRecords(t testing.TB, coll string, got *record.Batch, want []SeedRecord) {
	t.Helper()
	if got.Len() != len(want) {
		t.Fatalf("collection %q: %d records, want %d", coll, got.Len(), len(want))
	}
	for i, w := range want {
		if got.IDs[i] != w.ID {
			t.Errorf("collection %q record %d: id %q, want %q", coll, i, got.IDs[i], w.ID)
		}
		var doc *string
		if got.Documents != nil {
			doc = got.Documents[i]
		}
		if (doc == nil) != (w.Text == nil) || (doc != nil && *doc != *w.Text) {
			t.Errorf("collection %q id %q: document %v, want %v", coll, w.ID, strp(doc), strp(w.Text))
		}
		var md record.Metadata
		if got.Metadatas != nil {
			md = got.Metadatas[i]
		}
		wantMD := w.Metadata
		if len(wantMD) == 0 {
			wantMD = nil
		}
		if !reflect.DeepEqual(md, wantMD) {
			t.Errorf("collection %q id %q: metadata %#v, want %#v", coll, w.ID, md, wantMD)
		}
		var e []float32
		if got.Embeddings != nil {
			e = got.Embeddings[i]
		}
		if (e == nil) != (w.Embedding == nil) || len(e) != len(w.Embedding) {
			t.Errorf("collection %q id %q: embedding %v, want %v", coll, w.ID, e, w.Embedding)
			continue
		}
		for k := range e {
			if math.Float32bits(e[k]) != math.Float32bits(w.Embedding[k]) {
				t.Errorf("collection %q id %q: embedding[%d] = %g (%#x), want %g (%#x)", coll, w.ID, k, e[k], math.Float32bits(e[k]), w.Embedding[k], math.Float32bits(w.Embedding[k]))
			}
		}
	}
}

func strp(s *string) string {
	if s == nil {
		return "null"
	}
	return "\"" + *s + "\""
}

// tarEntry is one entry for tgz.
type tarEntry struct {
	name     string
	body     string
	typ      byte
	linkname string
}

// tgz writes entries as a .tar.gz, as freely as a hostile tool would.
func tgz(t testing.TB, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	// Stored, not compressed: cheap enough for fuzzing.
	zw, _ := gzip.NewWriterLevel(&buf, gzip.NoCompression)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		size := int64(len(e.body))
		if typ != tar.TypeReg {
			size = 0
		}
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Typeflag: typ, Size: size, Mode: 0o644, Linkname: e.linkname, Format: tar.FormatPAX}); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gz(t testing.TB, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
