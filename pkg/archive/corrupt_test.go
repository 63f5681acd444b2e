package archive

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
)

// validArchive is a small archive with three collections, one empty.
func validArchive(t testing.TB) []byte {
	t.Helper()
	return writeArchive(t, testMetadata(3), []written{
		{0, trickyBatch()},
		{0, &record.Batch{IDs: []string{"more"}, Embeddings: [][]float32{{4, 5, 6}}}},
		{2, trickyBatch()},
	})
}

func TestFlippedByte(t *testing.T) {
	data := validArchive(t)
	want := decompress(t, data)
	// A flip may leave the stored bytes unchanged: a larger zstd window in
	// the frame header, or an entropy-table bit that decodes the same. Then
	// the content is intact and Verify rightly accepts it; the stored
	// object's own digest is what catches those. Any flip that changes the
	// content must fail.
	var harmless int
	for _, mask := range []byte{0x01, 0x80, 0xff} {
		for off := range data {
			bad := bytes.Clone(data)
			bad[off] ^= mask
			_, err := Verify(bytes.NewReader(bad))
			if err == nil {
				if got := decompress(t, bad); !bytes.Equal(got, want) {
					t.Fatalf("offset %d of %d, mask %#x: content changed but Verify returned no error", off, len(data), mask)
				}
				harmless++
				continue
			}
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrChecksumMismatch) && !errors.Is(err, ErrFormat) {
				t.Fatalf("offset %d, mask %#x: error %v matches no error class", off, mask, err)
			}
		}
	}
	t.Logf("%d of %d flips left the content unchanged", harmless, 3*len(data))
}

func TestTruncated(t *testing.T) {
	data := validArchive(t)
	for _, n := range []int{0, 1, 4, 5, 8, 20, len(data) / 3, len(data) / 2, len(data) - 100, len(data) - 5, len(data) - 4, len(data) - 1} {
		_, err := Verify(bytes.NewReader(data[:n]))
		if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrCorrupt) {
			t.Errorf("truncated to %d of %d: got %v, want ErrTruncated or ErrCorrupt", n, len(data), err)
		}
	}
}

func TestUnclosedWriterIsTruncated(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, testMetadata(1))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteBatch(0, trickyBatch()); err != nil {
		t.Fatal(err)
	}
	// What a crash leaves: whatever zstd had flushed, no manifest.
	if err := w.zw.Flush(); err != nil {
		t.Fatal(err)
	}
	_, err = Verify(bytes.NewReader(buf.Bytes()))
	if !errors.Is(err, ErrTruncated) {
		t.Fatalf("got %v, want ErrTruncated", err)
	}
}

// tamper rewrites the archive's entries by hand.
func tamper(t *testing.T, data []byte, f func([]tarEntry) []tarEntry) []byte {
	t.Helper()
	return retar(t, f(untar(t, data)))
}

// editManifest applies f to the decoded manifest, keeping other entries.
func editManifest(f func(*Manifest)) func([]tarEntry) []tarEntry {
	return func(es []tarEntry) []tarEntry {
		last := &es[len(es)-1]
		var m Manifest
		if err := json.Unmarshal(last.data, &m); err != nil {
			panic(err)
		}
		f(&m)
		last.data, _ = json.Marshal(&m)
		return es
	}
}

// rehash recomputes the manifest entry for index i after its data changed.
func rehash(es []tarEntry, i int) {
	var m Manifest
	if err := json.Unmarshal(es[len(es)-1].data, &m); err != nil {
		panic(err)
	}
	sum := sha256hex(es[i].data)
	m.Entries[i].SHA256 = sum
	m.Entries[i].Size = int64(len(es[i].data))
	es[len(es)-1].data, _ = json.Marshal(&m)
}

func TestTampered(t *testing.T) {
	const f32 = "collections/0000/batch_000000.f32"
	tests := []struct {
		name     string
		edit     func([]tarEntry) []tarEntry
		want     error
		mentions string
	}{
		{"untouched", func(es []tarEntry) []tarEntry { return es }, nil, ""},
		{"entry sha256 in manifest", editManifest(func(m *Manifest) {
			m.Entries[2].SHA256 = strings.Repeat("0", 64)
		}), ErrChecksumMismatch, f32},
		{"entry data changed", func(es []tarEntry) []tarEntry {
			es[2].data[0] ^= 1
			return es
		}, ErrChecksumMismatch, f32},
		{"entry size in manifest", editManifest(func(m *Manifest) { m.Entries[1].Size++ }), ErrChecksumMismatch, "batch_000000.json"},
		{"content digest", editManifest(func(m *Manifest) {
			m.Collections[2].ContentDigest = strings.Repeat("a", 64)
		}), ErrChecksumMismatch, "content digest"},
		{"data and hash changed together", func(es []tarEntry) []tarEntry {
			es[2].data[0] ^= 1
			rehash(es, 2)
			return es
		}, ErrChecksumMismatch, "content digest"},
		{"count", editManifest(func(m *Manifest) { m.Collections[0].Count++ }), ErrCorrupt, "records"},
		{"total", editManifest(func(m *Manifest) { m.TotalRecords++ }), ErrCorrupt, "total_records"},
		{"batch list", editManifest(func(m *Manifest) { m.Collections[1].Batches = []string{"batch_000000"} }), ErrCorrupt, "batches"},
		{"collection id", editManifest(func(m *Manifest) { m.Collections[1].ID = "other" }), ErrCorrupt, "collection 1"},
		{"manifest format", editManifest(func(m *Manifest) { m.Format = "chromadb-rollback.v2.archive" }), ErrFormat, "v2"},
		{"manifest lists extra entry", editManifest(func(m *Manifest) {
			m.Entries = append(m.Entries, ManifestEntry{Name: "collections/0002/batch_000001.json"})
		}), ErrCorrupt, "missing"},
		{"manifest omits entry", editManifest(func(m *Manifest) { m.Entries = m.Entries[:len(m.Entries)-1] }), ErrCorrupt, "not in the manifest"},
		{"batch pair swapped", func(es []tarEntry) []tarEntry {
			es[1], es[3] = es[3], es[1]
			es[2], es[4] = es[4], es[2]
			return es
		}, ErrCorrupt, "out of order"},
		{"json and f32 swapped", func(es []tarEntry) []tarEntry {
			es[1], es[2] = es[2], es[1]
			return es
		}, ErrCorrupt, "out of order"},
		{"collections reordered", func(es []tarEntry) []tarEntry {
			out := []tarEntry{es[0], es[5], es[6], es[1], es[2], es[3], es[4], es[7]}
			return out
		}, ErrCorrupt, "out of order"},
		{"batch missing", func(es []tarEntry) []tarEntry {
			return append(es[:3:3], es[5:]...)
		}, ErrCorrupt, ""},
		{"batch duplicated", func(es []tarEntry) []tarEntry {
			return append(es[:3:3], append([]tarEntry{es[1], es[2]}, es[3:]...)...)
		}, ErrCorrupt, "out of order"},
		{"f32 missing", func(es []tarEntry) []tarEntry {
			return append(es[:2:2], es[3:]...)
		}, ErrCorrupt, "expected collections/0000/batch_000000.f32"},
		{"unknown entry", func(es []tarEntry) []tarEntry {
			return append(es[:1:1], append([]tarEntry{{"README", []byte("hi")}}, es[1:]...)...)
		}, ErrCorrupt, "unknown entry"},
		{"non-canonical name", func(es []tarEntry) []tarEntry {
			es[1].name = "collections/0/batch_000000.json"
			return es
		}, ErrCorrupt, "unknown entry"},
		{"entry after manifest", func(es []tarEntry) []tarEntry {
			return append(es, tarEntry{"extra.json", []byte("{}")})
		}, ErrCorrupt, "after manifest.json"},
		{"manifest missing", func(es []tarEntry) []tarEntry { return es[:len(es)-1] }, ErrTruncated, "manifest.json"},
		{"metadata not first", func(es []tarEntry) []tarEntry {
			es[0], es[1] = es[1], es[0]
			return es
		}, ErrCorrupt, "first entry"},
		{"metadata format", func(es []tarEntry) []tarEntry {
			es[0].data = bytes.Replace(es[0].data, []byte(FormatV1), []byte("chromadb-rollback.v9.archive"), 1)
			return es
		}, ErrFormat, "v9"},
		{"metadata bad json", func(es []tarEntry) []tarEntry {
			es[0].data = es[0].data[:len(es[0].data)/2]
			return es
		}, ErrCorrupt, "metadata.json"},
		{"bad float32 length", func(es []tarEntry) []tarEntry {
			es[2].data = append(es[2].data, 0, 0)
			rehash(es, 2)
			return es
		}, ErrCorrupt, "bad float32 byte length"},
		{"float32 data for a missing embedding", func(es []tarEntry) []tarEntry {
			es[2].data = append(es[2].data, 0, 0, 0, 0)
			rehash(es, 2)
			return es
		}, ErrCorrupt, "bad float32 byte length"},
		{"unknown batch field", func(es []tarEntry) []tarEntry {
			es[1].data = bytes.Replace(es[1].data, []byte(`{"ids"`), []byte(`{"extra":1,"ids"`), 1)
			rehash(es, 1)
			return es
		}, ErrCorrupt, "unknown field"},
		{"hostile dimension", func(es []tarEntry) []tarEntry {
			es[1].data = bytes.Replace(es[1].data, []byte(`"dimension":3`), []byte(`"dimension":4611686018427387904`), 1)
			rehash(es, 1)
			return es
		}, ErrCorrupt, "bad float32 byte length"},
		{"null index out of range", func(es []tarEntry) []tarEntry {
			es[1].data = bytes.Replace(es[1].data, []byte(`"null_embeddings":[1,4]`), []byte(`"null_embeddings":[1,9]`), 1)
			rehash(es, 1)
			return es
		}, ErrCorrupt, "null_embeddings"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := tamper(t, validArchive(t), tt.edit)
			_, err := Verify(bytes.NewReader(data))
			if tt.want == nil {
				if err != nil {
					t.Fatalf("got %v, want no error", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.mentions) {
				t.Errorf("error %q does not mention %q", err, tt.mentions)
			}
		})
	}
}

func TestNotZstd(t *testing.T) {
	gz := []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3}
	_, err := Verify(bytes.NewReader(gz))
	if !errors.Is(err, ErrFormat) {
		t.Fatalf("got %v, want ErrFormat", err)
	}
}

func TestEntryLimit(t *testing.T) {
	data := validArchive(t)
	r, err := NewReaderWithLimits(bytes.NewReader(data), Limits{MaxEntrySize: 100})
	if err == nil {
		_, err = r.Next()
	}
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "limit 100") {
		t.Fatalf("got %v, want ErrCorrupt naming the limit", err)
	}
}

type ioErrReader struct {
	r   io.Reader
	n   int
	err error
}

func (e *ioErrReader) Read(p []byte) (int, error) {
	if e.n <= 0 {
		return 0, e.err
	}
	p = p[:min(len(p), e.n)]
	n, err := e.r.Read(p)
	e.n -= n
	return n, err
}

func TestSourceErrorIsNotCorruption(t *testing.T) {
	data := validArchive(t)
	errNet := errors.New("connection reset")
	_, err := Verify(&ioErrReader{r: bytes.NewReader(data), n: len(data) / 2, err: errNet})
	if !errors.Is(err, errNet) {
		t.Fatalf("got %v, want %v", err, errNet)
	}
	if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrChecksumMismatch) {
		t.Errorf("I/O error %v classified as archive damage", err)
	}
}

func TestNextAfterEOF(t *testing.T) {
	r, _, err := readArchive(validArchive(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Next(); err != io.EOF {
		t.Errorf("Next after EOF: got %v, want io.EOF", err)
	}
}
