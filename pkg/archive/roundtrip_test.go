package archive

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
)

// trickyBatch holds every value that is easy to lose on the way through.
func trickyBatch() *record.Batch {
	return &record.Batch{
		IDs: []string{"plain", "nul\x00inside", "日本語-id", "emoji-🦀", ""},
		Embeddings: [][]float32{
			{1, -2.5, 3},
			nil,
			{float32(math.Copysign(0, -1)), math.Float32frombits(1), math.MaxFloat32},
			{math.Float32frombits(0x007fffff), -math.SmallestNonzeroFloat32, 0},
			nil,
		},
		Documents: []*string{ptr("hello"), nil, ptr(""), ptr("naïve \u2028 <tag> & \"q\""), ptr("nul\x00doc")},
		Metadatas: []record.Metadata{
			{"big": int64(1<<53 + 1), "min": int64(math.MinInt64), "max": int64(math.MaxInt64)},
			{"one": 1.0, "neg": -0.5, "tiny": 5e-324, "huge": 1.7976931348623157e308},
			{"t": true, "f": false, "s": "ünïcödé", "empty": ""},
			nil,
			{},
		},
		URIs: []*string{ptr("s3://b/k"), nil, ptr(""), ptr("file:///ü"), nil},
	}
}

func TestRoundTrip(t *testing.T) {
	tricky := trickyBatch()
	idsOnly := &record.Batch{IDs: []string{"a", "b"}}
	allNull := &record.Batch{IDs: []string{"x", "y"}, Embeddings: [][]float32{nil, nil}, Documents: []*string{nil, nil}}
	zeroDim := &record.Batch{IDs: []string{"z"}, Embeddings: [][]float32{{}}}
	tests := []struct {
		name    string
		colls   int
		batches []written
		// wantBatches per collection
		wantBatches []int
	}{
		{"tricky values", 1, []written{{0, tricky}}, []int{1}},
		{"nil columns", 1, []written{{0, idsOnly}}, []int{1}},
		{"all embeddings null", 1, []written{{0, allNull}}, []int{1}},
		{"zero-length embedding", 1, []written{{0, zeroDim}}, []int{1}},
		{"no collections", 0, nil, []int{}},
		{"only empty collections", 3, nil, []int{0, 0, 0}},
		{"empty batch writes nothing", 2, []written{{0, &record.Batch{}}, {1, idsOnly}}, []int{0, 1}},
		{"empty collections between", 5, []written{{1, tricky}, {1, idsOnly}, {3, allNull}}, []int{0, 2, 0, 1, 0}},
		{"several batches", 2, []written{{0, tricky}, {0, tricky}, {0, idsOnly}, {1, zeroDim}, {1, tricky}}, []int{3, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			md := testMetadata(tt.colls)
			data := writeArchive(t, md, tt.batches)
			r, got, err := readArchive(data)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			var want []written
			for _, b := range tt.batches {
				if b.batch.Len() > 0 {
					want = append(want, b)
				}
			}
			if len(got) != len(want) {
				t.Fatalf("got %d batches, want %d", len(got), len(want))
			}
			next := map[int]int{}
			for i, w := range want {
				if got[i].Collection != w.coll {
					t.Errorf("batch %d: collection %d, want %d", i, got[i].Collection, w.coll)
				}
				if wantName := fmt.Sprintf("batch_%06d", next[w.coll]); got[i].Name != wantName {
					t.Errorf("batch %d: name %s, want %s", i, got[i].Name, wantName)
				}
				next[w.coll]++
				equalBatches(t, fmt.Sprintf("batch %d", i), got[i].Records, w.batch)
			}
			m := r.Manifest()
			if m == nil {
				t.Fatal("Manifest() = nil after EOF")
			}
			for i, c := range m.Collections {
				if len(c.Batches) != tt.wantBatches[i] {
					t.Errorf("collection %d: %d batches, want %d", i, len(c.Batches), tt.wantBatches[i])
				}
				d := record.NewDigest()
				for _, w := range want {
					if w.coll == i {
						if err := d.Add(w.batch); err != nil {
							t.Fatal(err)
						}
					}
				}
				if c.ContentDigest != d.Sum() || c.Count != d.Count() {
					t.Errorf("collection %d: digest %s count %d, want %s %d", i, c.ContentDigest, c.Count, d.Sum(), d.Count())
				}
			}
			gotMD := r.Metadata()
			if gotMD.Format != FormatV1 {
				t.Errorf("format %q, want %q", gotMD.Format, FormatV1)
			}
			if !gotMD.CreatedAt.Equal(md.CreatedAt) || gotMD.CreatedAt.Location() != time.UTC {
				t.Errorf("created_at %v, want %v in UTC", gotMD.CreatedAt, md.CreatedAt)
			}
			for i := range md.Collections {
				wantC := md.Collections[i]
				wantC.Index = i
				if !reflect.DeepEqual(gotMD.Collections[i], wantC) {
					t.Errorf("collection %d: metadata %+v, want %+v", i, gotMD.Collections[i], wantC)
				}
			}
		})
	}
}

// TestDigestIndependentOfBatching checks the manifest digest is the same
// however the records were split.
func TestDigestIndependentOfBatching(t *testing.T) {
	b := trickyBatch()
	whole := writeArchive(t, testMetadata(1), []written{{0, b}})
	split := writeArchive(t, testMetadata(1), []written{{0, b.Slice(0, 2)}, {0, b.Slice(2, 3)}, {0, b.Slice(3, 5)}})
	rw, _, err := readArchive(whole)
	if err != nil {
		t.Fatal(err)
	}
	rs, _, err := readArchive(split)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := rs.Manifest().Collections[0].ContentDigest, rw.Manifest().Collections[0].ContentDigest; got != want {
		t.Errorf("split digest %s, want %s", got, want)
	}
}

func TestManyCollections(t *testing.T) {
	const n = 300
	md := testMetadata(n)
	var batches []written
	for i := 0; i < n; i += 3 {
		batches = append(batches, written{i, &record.Batch{IDs: []string{fmt.Sprint("id", i)}, Embeddings: [][]float32{{float32(i), 0, 1}}}})
	}
	data := writeArchive(t, md, batches)
	rep, err := Verify(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if got, want := len(rep.Collections), n; got != want {
		t.Fatalf("got %d collections, want %d", got, want)
	}
	if got, want := rep.TotalRecords, int64(len(batches)); got != want {
		t.Errorf("total records %d, want %d", got, want)
	}
	if got, want := rep.Entries, 2+2*len(batches); got != want {
		t.Errorf("entries %d, want %d", got, want)
	}
	for i, c := range rep.Collections {
		want := 0
		if i%3 == 0 {
			want = 1
		}
		if c.Batches != want || c.Count != int64(want) {
			t.Errorf("collection %d: %d batches, %d records, want %d", i, c.Batches, c.Count, want)
		}
	}
}

func TestWriterStats(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, testMetadata(1))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteBatch(0, trickyBatch()); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteBatch(0, trickyBatch()); err != nil {
		t.Fatal(err)
	}
	m, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	records, raw := w.Stats()
	if records != 10 {
		t.Errorf("records %d, want 10", records)
	}
	rep, err := Verify(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if raw != rep.RawBytes {
		t.Errorf("writer raw bytes %d, Verify says %d", raw, rep.RawBytes)
	}
	if m.TotalRecords != 10 || rep.TotalRecords != 10 {
		t.Errorf("total records: manifest %d, report %d, want 10", m.TotalRecords, rep.TotalRecords)
	}
}

// TestWriterBatchRecords checks that the manifest Close returns says what
// each batch holds, and that manifest.json does not: v1 readers refuse
// fields they do not know.
func TestWriterBatchRecords(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, testMetadata(3))
	if err != nil {
		t.Fatal(err)
	}
	b := trickyBatch() // ids "plain", "nul\x00inside", "日本語-id", "emoji-🦀", ""
	for _, wb := range []written{{0, b.Slice(0, 2)}, {0, b.Slice(2, 5)}, {2, &record.Batch{IDs: []string{"only"}}}} {
		if err := w.WriteBatch(wb.coll, wb.batch); err != nil {
			t.Fatal(err)
		}
	}
	m, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	want := [][]BatchRecords{
		{{Count: 2, FirstID: "plain", LastID: "nul\x00inside"}, {Count: 3, FirstID: "日本語-id", LastID: ""}},
		nil,
		{{Count: 1, FirstID: "only", LastID: "only"}},
	}
	for i, c := range m.Collections {
		if !reflect.DeepEqual(c.BatchRecords, want[i]) {
			t.Errorf("collection %d: batch records %+v, want %+v", i, c.BatchRecords, want[i])
		}
	}
	entries := untar(t, buf.Bytes())
	if last := entries[len(entries)-1]; last.name != manifestEntry || bytes.Contains(last.data, []byte("plain")) || bytes.Contains(last.data, []byte(`"count":2`)) {
		t.Errorf("manifest.json holds batch records: %s", last.data)
	}
	r, _, err := readArchive(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Manifest().Collections[0].BatchRecords; got != nil {
		t.Errorf("a Reader's manifest has batch records %+v, want none", got)
	}
}

func TestWriterRejects(t *testing.T) {
	ragged := &record.Batch{IDs: []string{"a", "b"}, Embeddings: [][]float32{{1, 2}, {1, 2, 3}}}
	short := &record.Batch{IDs: []string{"a", "b"}, Documents: []*string{ptr("x")}}
	badUTF8 := &record.Batch{IDs: []string{"a\xff"}}
	// The bad string comes second, after a good record with non-ASCII
	// text, so the error must name the right record.
	badString := func(doc, uri *string, md record.Metadata) *record.Batch {
		return &record.Batch{
			IDs:       []string{"é", "b"},
			Documents: []*string{ptr("ü ok"), doc},
			URIs:      []*string{ptr("ü"), uri},
			Metadatas: []record.Metadata{{"ключ": "значение"}, md},
		}
	}
	badMeta := &record.Batch{IDs: []string{"a"}, Metadatas: []record.Metadata{{"k": []int{1}}}}
	nan := &record.Batch{IDs: []string{"a"}, Metadatas: []record.Metadata{{"k": math.NaN()}}}
	ok := &record.Batch{IDs: []string{"ok"}}
	tests := []struct {
		name string
		coll int
		b    *record.Batch
		want string // in the error, when set
	}{
		{"ragged embeddings", 1, ragged, ""},
		{"short column", 1, short, ""},
		{"invalid UTF-8 id", 1, badUTF8, `record 0: id "a\xff" is not valid UTF-8`},
		{"invalid UTF-8 document", 1, badString(ptr("x\xe4\xb8"), nil, nil), `record 1 (id "b"): document is not valid UTF-8`},
		{"invalid UTF-8 uri", 1, badString(nil, ptr("\xff"), nil), `record 1 (id "b"): uri is not valid UTF-8`},
		{"invalid UTF-8 metadata key", 1, badString(nil, nil, record.Metadata{"k\xff": 1}), `record 1 (id "b"): metadata key "k\xff" is not valid UTF-8`},
		{"invalid UTF-8 metadata value", 1, badString(nil, nil, record.Metadata{"k": "\xed\xa0\x80"}), `record 1 (id "b"): metadata value of "k" is not valid UTF-8`},
		{"unsupported metadata type", 1, badMeta, ""},
		{"NaN metadata", 1, nan, ""},
		{"negative index", -1, ok, ""},
		{"index past end", 2, ok, ""},
		{"earlier collection", 0, ok, ""},
		{"nil batch", 1, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			w, err := NewWriter(&buf, testMetadata(2))
			if err != nil {
				t.Fatal(err)
			}
			if err := w.WriteBatch(1, ok); err != nil {
				t.Fatal(err)
			}
			err = w.WriteBatch(tt.coll, tt.b)
			if err == nil {
				t.Fatal("WriteBatch: got nil error, want one")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("WriteBatch: %v, want an error saying %s", err, tt.want)
			}
			// The rejected batch left the archive intact and usable.
			if err := w.WriteBatch(1, ok); err != nil {
				t.Fatalf("WriteBatch after rejection: %v", err)
			}
			if _, err := w.Close(); err != nil {
				t.Fatal(err)
			}
			rep, err := Verify(&buf)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got := rep.Collections[1].Count; got != 2 {
				t.Errorf("collection 1: %d records, want 2", got)
			}
		})
	}
}

type failWriter struct{ n int }

var errDisk = errors.New("disk full")

func (f *failWriter) Write(p []byte) (int, error) {
	if f.n < len(p) {
		return 0, errDisk
	}
	f.n -= len(p)
	return len(p), nil
}

func TestWriterStickyError(t *testing.T) {
	w, err := NewWriter(&failWriter{n: 0}, testMetadata(1))
	if err != nil {
		// zstd buffers, so the failure may only surface later.
		t.Fatalf("NewWriter: %v", err)
	}
	big := trickyBatch()
	var werr error
	for range 1000 {
		if werr = w.WriteBatch(0, big); werr != nil {
			break
		}
	}
	_, cerr := w.Close()
	if !errors.Is(werr, errDisk) && !errors.Is(cerr, errDisk) {
		t.Fatalf("WriteBatch error %v, Close error %v; want %v from one of them", werr, cerr, errDisk)
	}
	if err := w.WriteBatch(0, big); err == nil {
		t.Error("WriteBatch after failure: got nil error")
	}
}

func TestNewWriterRejectsFormat(t *testing.T) {
	md := testMetadata(1)
	md.Format = "chromadb-rollback.v2.archive"
	_, err := NewWriter(&bytes.Buffer{}, md)
	if !errors.Is(err, ErrFormat) {
		t.Fatalf("got %v, want ErrFormat", err)
	}
}

func TestNewWriterDoesNotModifyMetadata(t *testing.T) {
	md := testMetadata(2)
	md.Collections[1].Index = 7
	if _, err := NewWriter(&bytes.Buffer{}, md); err != nil {
		t.Fatal(err)
	}
	if md.Format != "" || md.Collections[1].Index != 7 {
		t.Errorf("NewWriter changed its argument: format %q, index %d", md.Format, md.Collections[1].Index)
	}
}

// TestWriterWindow holds the writer to its 1 MiB zstd window, which keeps
// the memory of both sides down, and archives written with the 4 MiB
// window it used before still read.
func TestWriterWindow(t *testing.T) {
	b := randomBatch(rand.New(rand.NewPCG(3, 4)), "w", 1000, 384, 500)
	data := writeArchive(t, testMetadata(1), []written{{0, b}, {0, b}})
	var h zstd.Header
	if err := h.Decode(data); err != nil {
		t.Fatal(err)
	}
	if h.WindowSize == 0 || h.WindowSize > windowSize {
		t.Errorf("frame window %d bytes, want at most %d", h.WindowSize, windowSize)
	}

	// The same tar stream in a 4 MiB window, as written before.
	var old bytes.Buffer
	zw, err := zstd.NewWriter(&old, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithWindowSize(4<<20))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(decompress(t, data)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.Decode(old.Bytes()); err != nil {
		t.Fatal(err)
	}
	if h.WindowSize != 4<<20 {
		t.Fatalf("re-encoded frame window %d bytes, want 4 MiB", h.WindowSize)
	}
	_, got, err := readArchive(old.Bytes())
	if err != nil {
		t.Fatalf("archive in a 4 MiB window: %v", err)
	}
	if len(got) != 2 {
		t.Fatalf("%d batches, want 2", len(got))
	}
	for i, g := range got {
		equalBatches(t, fmt.Sprintf("batch %d", i), g.Records, b)
	}
}
