package restorer

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
)

// TestBatchCheck: the comparison of what Chroma gives back for a restored
// batch with the archive finds every kind of difference, and names the
// record and what differs; what Chroma cannot keep apart (nil and empty
// metadata, a zero cosine vector and null) and cosine's rounding are not
// differences.
func TestBatchCheck(t *testing.T) {
	str := func(s string) *string { return &s }
	want := func() *record.Batch {
		return &record.Batch{
			IDs:        []string{"a", "b.ü"},
			Embeddings: [][]float32{{1, -2.5, 0.125}, {4, 5, 6}},
			Documents:  []*string{str(""), nil},
			Metadatas:  []record.Metadata{{"n": int64(1), "s": "x"}, nil},
			URIs:       []*string{str("s3://a"), nil},
		}
	}
	off := func(f float32, ulps int) float32 { return math.Float32frombits(math.Float32bits(f) + uint32(ulps)) }
	for _, tc := range []struct {
		name   string
		cosine bool
		want   func(b *record.Batch) // changes the archived batch
		got    func(b *record.Batch) // changes what Chroma gives back
		diff   string                // the first difference, "" for none
		n      int                   // how many when not one
	}{
		{name: "the same records in another order", got: func(b *record.Batch) {
			b.IDs[0], b.IDs[1] = b.IDs[1], b.IDs[0]
			b.Embeddings[0], b.Embeddings[1] = b.Embeddings[1], b.Embeddings[0]
			b.Documents[0], b.Documents[1] = b.Documents[1], b.Documents[0]
			b.Metadatas[0], b.Metadatas[1] = b.Metadatas[1], b.Metadatas[0]
			b.URIs[0], b.URIs[1] = b.URIs[1], b.URIs[0]
		}},
		{name: "record missing", got: func(b *record.Batch) {
			*b = record.Batch{IDs: b.IDs[:1], Embeddings: b.Embeddings[:1], Documents: b.Documents[:1], Metadatas: b.Metadatas[:1], URIs: b.URIs[:1]}
		}, diff: `record "b.ü" is missing`},
		{name: "empty document comes back null", got: func(b *record.Batch) { b.Documents[0] = nil },
			diff: `record "a": document is null, want ""`},
		{name: "null document comes back empty", got: func(b *record.Batch) { b.Documents[1] = str("") },
			diff: `record "b.ü": document is "", want null`},
		{name: "document changed", got: func(b *record.Batch) { b.Documents[0] = str("migrated") },
			diff: `record "a": document is "migrated", want ""`},
		{name: "no documents at all", got: func(b *record.Batch) { b.Documents = nil },
			diff: `record "a": document is null, want ""`},
		{name: "uri changed", got: func(b *record.Batch) { b.URIs[0] = str("s3://b") },
			diff: `record "a": uri is "s3://b", want "s3://a"`},
		{name: "uri where none was", got: func(b *record.Batch) { b.URIs[1] = str("s3://new") },
			diff: `record "b.ü": uri is "s3://new", want null`},
		{name: "metadata int comes back float", got: func(b *record.Batch) { b.Metadatas[0] = record.Metadata{"n": 1.0, "s": "x"} },
			diff: `record "a": metadata`},
		{name: "metadata key lost", got: func(b *record.Batch) { b.Metadatas[0] = record.Metadata{"n": int64(1)} },
			diff: `record "a": metadata {"n":1}, want {"n":1,"s":"x"}`},
		{name: "empty metadata comes back null", want: func(b *record.Batch) { b.Metadatas[1] = record.Metadata{} }},
		{name: "embedding one bit off", got: func(b *record.Batch) { b.Embeddings[0][1] = off(-2.5, 1) },
			diff: `record "a": embedding value 1 is`},
		{name: "negative zero is not zero", want: func(b *record.Batch) { b.Embeddings[1][2] = 0 },
			got: func(b *record.Batch) { b.Embeddings[1][2] = float32(math.Copysign(0, -1)) }, diff: `record "b.ü": embedding value 2 is -0 (bits 80000000), want 0 (bits 00000000)`},
		{name: "embedding shorter", got: func(b *record.Batch) { b.Embeddings[1] = b.Embeddings[1][:2] },
			diff: `record "b.ü": embedding has 2 values, want 3`},
		{name: "embedding null", got: func(b *record.Batch) { b.Embeddings[0] = nil },
			diff: `record "a": embedding null, want 3 values`},
		{name: "no embeddings at all", got: func(b *record.Batch) { b.Embeddings = nil },
			diff: `record "a": embedding null, want 3 values`, n: 2},
		{name: "cosine: a few ULPs off", cosine: true, got: func(b *record.Batch) {
			b.Embeddings[0][0], b.Embeddings[1][2] = off(1, 3), off(6, -2)
		}},
		{name: "cosine: over the tolerance", cosine: true, got: func(b *record.Batch) { b.Embeddings[1][0] = 4.0001 },
			diff: `record "b.ü": embedding value 0 is 4.0001, want 4 (difference`},
		{name: "cosine: NaN", cosine: true, got: func(b *record.Batch) { b.Embeddings[0][2] = float32(math.NaN()) },
			diff: `record "a": embedding value 2 is NaN, want 0.125`},
		{name: "cosine: a zero vector comes back null", cosine: true,
			want: func(b *record.Batch) { b.Embeddings[1] = nil }, got: func(b *record.Batch) { b.Embeddings[1] = []float32{0, 0, 0} }},
		{name: "cosine: a vector where null was", cosine: true,
			want: func(b *record.Batch) { b.Embeddings[1] = nil }, got: func(b *record.Batch) { b.Embeddings[1] = []float32{0, 1e-30, 0} },
			diff: `record "b.ü": embedding present, want null`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, g := want(), want()
			if tc.want != nil {
				tc.want(w)
				tc.want(g)
			}
			if tc.got != nil {
				tc.got(g)
			}
			c := batchCheck{cosine: tc.cosine}
			c.compare(w, g)
			if tc.diff == "" {
				if c.total != 0 || len(c.diffs) != 0 {
					t.Fatalf("%d differences: %q", c.total, c.diffs)
				}
				return
			}
			n := max(tc.n, 1)
			if c.total != n || len(c.diffs) != n || !strings.HasPrefix(c.diffs[0], tc.diff) {
				t.Fatalf("%d differences: %q; want %d, the first starting %q", c.total, c.diffs, n, tc.diff)
			}
		})
	}

	t.Run("cosine: the largest difference is reported", func(t *testing.T) {
		w, g := want(), want()
		g.Embeddings[1][1] = off(5, 4)
		c := batchCheck{cosine: true}
		c.compare(w, g)
		if d := float64(off(5, 4) - 5); c.total != 0 || c.maxDiff != d {
			t.Fatalf("%d differences %q, largest difference %g; want none and %g", c.total, c.diffs, c.maxDiff, d)
		}
	})

	t.Run("differences are counted beyond those listed", func(t *testing.T) {
		w := &record.Batch{}
		for i := range maxListedDiffs + 10 {
			w.IDs = append(w.IDs, fmt.Sprintf("id-%d", i))
			w.Embeddings = append(w.Embeddings, []float32{float32(i)})
		}
		c := batchCheck{}
		c.compare(w, &record.Batch{})
		if c.total != maxListedDiffs+10 || len(c.diffs) != maxListedDiffs || c.diffs[0] != `record "id-0" is missing` {
			t.Fatalf("total %d, listed %d, first %q", c.total, len(c.diffs), c.diffs[0])
		}
	})
}

func TestMetadataClose(t *testing.T) {
	x := 632.0 / 7 // 90.28571428571429, which Chroma 1.0 stores as 90.28571428571428
	near := math.Nextafter(x, 0)
	far := x
	for range maxMetadataULPs + 1 {
		far = math.Nextafter(far, 0)
	}
	for _, tc := range []struct {
		want, got record.Metadata
		ok        bool
		off       int
	}{
		{record.Metadata{"x": x, "n": int64(1)}, record.Metadata{"x": x, "n": int64(1)}, true, 0},
		{record.Metadata{"x": x, "n": int64(1)}, record.Metadata{"x": near, "n": int64(1)}, true, 1},
		{record.Metadata{"x": x}, record.Metadata{"x": far}, false, 0},
		{record.Metadata{"x": x}, record.Metadata{"y": x}, false, 0},
		{record.Metadata{"x": 1.0}, record.Metadata{"x": int64(1)}, false, 0},
		{record.Metadata{"x": 1e-300}, record.Metadata{"x": -1e-300}, false, 0},
		{record.Metadata{"x": 0.0}, record.Metadata{"x": math.Copysign(0, -1)}, true, 0},
		{nil, record.Metadata{}, true, 0},
		{record.Metadata{"x": x}, record.Metadata{"x": near, "y": "extra"}, false, 0},
	} {
		ok, off := metadataClose(tc.want, tc.got)
		if ok != tc.ok || off != tc.off {
			t.Errorf("metadataClose(%v, %v) = %v, %d; want %v, %d", tc.want, tc.got, ok, off, tc.ok, tc.off)
		}
	}
}
