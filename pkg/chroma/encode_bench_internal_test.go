package chroma

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
)

// BenchBatch is the benchmarks' workload: n records of dim-d with
// 500-character documents and 4 metadata keys, the same on every call.
func BenchBatch(n, dim int) *record.Batch {
	r := rand.New(rand.NewPCG(1, 2))
	doc := string(bytes.Repeat([]byte("lorem ipsum "), 42)[:500])
	bt := &record.Batch{}
	for i := range n {
		bt.IDs = append(bt.IDs, fmt.Sprintf("id_%06d", i))
		e := make([]float32, dim)
		for j := range e {
			e[j] = r.Float32()*2 - 1
		}
		bt.Embeddings = append(bt.Embeddings, e)
		d := doc
		bt.Documents = append(bt.Documents, &d)
		bt.Metadatas = append(bt.Metadatas, record.Metadata{"i": int64(i), "f": 0.5, "b": true, "s": "text"})
	}
	return bt
}

// BenchmarkEncode encodes an add body as the restorer sends it: 2,458
// records of 384-d (BenchBatch), no server (the preflight answer is
// cached).
func BenchmarkEncode(b *testing.B) {
	const n, dim = 2458, 384
	bt := BenchBatch(n, dim)
	c, err := New("http://127.0.0.1:1")
	if err != nil {
		b.Fatal(err)
	}
	c.preflight = &Preflight{MaxBatchSize: 5461, SupportsBase64Encoding: true}
	for b.Loop() {
		e, err := c.Encode(b.Context(), bt)
		if err != nil {
			b.Fatal(err)
		}
		size := e.overhead()
		for i := range n {
			size += e.recordSize(i)
		}
		if body := e.body(0, n, size); len(body) != size {
			b.Fatalf("body of %d bytes, sized %d", len(body), size)
		}
	}
}
