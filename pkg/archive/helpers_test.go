package archive

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
)

func ptr[T any](v T) *T { return &v }

// written is one WriteBatch call.
type written struct {
	coll  int
	batch *record.Batch
}

func testMetadata(n int) *Metadata {
	md := &Metadata{
		SnapshotID:    "snap-1",
		Name:          "nightly",
		CreatedAt:     time.Date(2025, 11, 25, 20, 0, 0, 0, time.FixedZone("CET", 3600)),
		ChromaVersion: "1.0.0",
		Tenant:        "default_tenant",
		Database:      "default_database",
	}
	for i := range n {
		md.Collections = append(md.Collections, CollectionInfo{
			ID:            "00000000-0000-0000-0000-00000000000" + string(rune('0'+i%10)),
			Name:          "coll-" + string(rune('a'+i%26)),
			Metadata:      record.Metadata{"hnsw:space": "l2", "n": int64(i)},
			Configuration: []byte(`{"hnsw":{"space":"l2","ef_construction":100}}`),
			Dimension:     ptr(3),
			ExpectedCount: int64(i),
		})
	}
	return md
}

// writeArchive writes batches under md and returns the archive bytes.
func writeArchive(t testing.TB, md *Metadata, batches []written) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, md)
	if err != nil {
		t.Fatalf("NewWriter: %v", err)
	}
	for i, b := range batches {
		if err := w.WriteBatch(b.coll, b.batch); err != nil {
			t.Fatalf("WriteBatch %d: %v", i, err)
		}
	}
	if _, err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return buf.Bytes()
}

// readArchive reads every batch of data.
func readArchive(data []byte) (*Reader, []*Batch, error) {
	r, err := NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, nil, err
	}
	var out []*Batch
	for {
		b, err := r.Next()
		if errors.Is(err, io.EOF) {
			return r, out, nil
		}
		if err != nil {
			return r, out, err
		}
		out = append(out, b)
	}
}

// tarEntry is an uncompressed entry, for building archives by hand.
type tarEntry struct {
	name string
	data []byte
}

func untar(t testing.TB, archive []byte) []tarEntry {
	t.Helper()
	zr, err := zstd.NewReader(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	var out []tarEntry
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, tarEntry{h.Name, data})
	}
}

func tarBytes(t testing.TB, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: e.name, Size: int64(len(e.data)), Mode: 0o644}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// encoder is shared: EncodeAll is safe for concurrent use, and a new
// encoder per call would dominate fuzzing time.
var encoder = sync.OnceValue(func() *zstd.Encoder {
	zw, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		panic(err)
	}
	return zw
})

func compress(t testing.TB, raw []byte) []byte {
	t.Helper()
	return encoder().EncodeAll(raw, nil)
}

// retar builds an archive from entries by hand.
func retar(t testing.TB, entries []tarEntry) []byte {
	t.Helper()
	return compress(t, tarBytes(t, entries))
}

// randomBatch makes n records of dim random floats, each with a document of
// docLen bytes and four metadata keys, like the measured workloads.
func randomBatch(rng *rand.Rand, prefix string, n, dim, docLen int) *record.Batch {
	b := &record.Batch{
		IDs:        make([]string, n),
		Embeddings: make([][]float32, n),
		Documents:  make([]*string, n),
		Metadatas:  make([]record.Metadata, n),
	}
	flat := make([]float32, n*dim)
	for i := range flat {
		flat[i] = rng.Float32()*2 - 1
	}
	doc := make([]byte, docLen)
	for i := range doc {
		doc[i] = byte('a' + rng.IntN(26))
	}
	for i := range n {
		b.IDs[i] = prefix + "-" + string(rune('a'+i%26)) + "-" + strconv.Itoa(i)
		b.Embeddings[i] = flat[i*dim : (i+1)*dim : (i+1)*dim]
		d := string(doc)
		b.Documents[i] = &d
		b.Metadatas[i] = record.Metadata{"source": "doc.txt", "chunk": int64(i), "score": rng.Float64(), "ok": i%2 == 0}
	}
	return b
}

// equalBatches compares record by record, embeddings by bits.
func equalBatches(t *testing.T, label string, got, want *record.Batch) {
	t.Helper()
	if got.Len() != want.Len() {
		t.Fatalf("%s: got %d records, want %d", label, got.Len(), want.Len())
	}
	for _, c := range []struct {
		name      string
		got, want bool
	}{
		{"embeddings", got.Embeddings == nil, want.Embeddings == nil},
		{"documents", got.Documents == nil, want.Documents == nil},
		{"metadatas", got.Metadatas == nil, want.Metadatas == nil},
		{"uris", got.URIs == nil, want.URIs == nil},
	} {
		if c.got != c.want {
			t.Errorf("%s: %s column nil = %v, want %v", label, c.name, c.got, c.want)
		}
	}
	for i := range want.IDs {
		if got.IDs[i] != want.IDs[i] {
			t.Errorf("%s: record %d: id %q, want %q", label, i, got.IDs[i], want.IDs[i])
		}
		if want.Documents != nil && !reflect.DeepEqual(got.Documents[i], want.Documents[i]) {
			t.Errorf("%s: record %d: document %v, want %v", label, i, strp(got.Documents[i]), strp(want.Documents[i]))
		}
		if want.URIs != nil && !reflect.DeepEqual(got.URIs[i], want.URIs[i]) {
			t.Errorf("%s: record %d: uri %v, want %v", label, i, strp(got.URIs[i]), strp(want.URIs[i]))
		}
		if want.Metadatas != nil && !reflect.DeepEqual(got.Metadatas[i], want.Metadatas[i]) {
			t.Errorf("%s: record %d: metadata %#v, want %#v", label, i, got.Metadatas[i], want.Metadatas[i])
		}
		if want.Embeddings == nil {
			continue
		}
		g, w := got.Embeddings[i], want.Embeddings[i]
		if (g == nil) != (w == nil) || len(g) != len(w) {
			t.Errorf("%s: record %d: embedding %v, want %v", label, i, g, w)
			continue
		}
		for j := range w {
			if math.Float32bits(g[j]) != math.Float32bits(w[j]) {
				t.Errorf("%s: record %d: embedding[%d] bits %#08x, want %#08x", label, i, j, math.Float32bits(g[j]), math.Float32bits(w[j]))
			}
		}
	}
}

func strp(s *string) any {
	if s == nil {
		return nil
	}
	return *s
}

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func decompress(t testing.TB, archive []byte) []byte {
	t.Helper()
	zr, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	out, err := zr.DecodeAll(archive, nil)
	if err != nil {
		t.Fatalf("decompress: %v", err)
	}
	return out
}
