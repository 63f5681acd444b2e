package chroma_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
)

// BenchmarkDecodeGetResponse decodes a get page as Chroma sends it: 1,000
// records of 768-d with 500-char documents and 4 metadata keys, no server.
func BenchmarkDecodeGetResponse(b *testing.B) {
	const n, dim = 1000, 768
	r := rand.New(rand.NewPCG(1, 2))
	var page struct {
		IDs        []string         `json:"ids"`
		Embeddings [][]float32      `json:"embeddings"`
		Documents  []string         `json:"documents"`
		URIs       []*string        `json:"uris"`
		Metadatas  []map[string]any `json:"metadatas"`
		Include    []string         `json:"include"`
	}
	doc := bytes.Repeat([]byte("lorem ipsum "), 42)[:500]
	for i := range n {
		page.IDs = append(page.IDs, fmt.Sprintf("id_%06d", i))
		e := make([]float32, dim)
		for j := range e {
			e[j] = r.Float32()*2 - 1
		}
		page.Embeddings = append(page.Embeddings, e)
		page.Documents = append(page.Documents, string(doc))
		page.URIs = append(page.URIs, nil)
		page.Metadatas = append(page.Metadatas, map[string]any{"i": i, "f": 0.5, "b": true, "s": "text"})
	}
	page.Include = []string{"embeddings", "documents", "metadatas", "uris"}
	data, err := json.Marshal(page)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		got, err := chroma.DecodeGetResponse(bytes.NewReader(data))
		if err != nil || got.Len() != n {
			b.Fatalf("decode: %d records, %v", got.Len(), err)
		}
	}
}
