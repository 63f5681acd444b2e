package chroma_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
)

// BenchmarkDecodeGetResponse decodes a get page as Chroma sends it: 1,000
// records of 768-d (BenchBatch), no server.
func BenchmarkDecodeGetResponse(b *testing.B) {
	const n, dim = 1000, 768
	var page struct {
		IDs        []string          `json:"ids"`
		Embeddings [][]float32       `json:"embeddings"`
		Documents  []*string         `json:"documents"`
		URIs       []*string         `json:"uris"`
		Metadatas  []record.Metadata `json:"metadatas"`
		Include    []string          `json:"include"`
	}
	bt := chroma.BenchBatch(n, dim)
	page.IDs, page.Embeddings, page.Documents, page.Metadatas = bt.IDs, bt.Embeddings, bt.Documents, bt.Metadatas
	page.URIs = make([]*string, n)
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
