package chroma_test

import (
	"bytes"
	"testing"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
)

func FuzzDecodeGetResponse(f *testing.F) {
	for _, s := range []string{
		`{"ids":["a","b"],"embeddings":[[1.5,2.25,-3.0],null],"documents":[null,""],"uris":["u1",null],"metadatas":[{"i":9007199254740993,"f":1.0,"b":true,"s":"x"},null],"include":["embeddings","documents","metadatas","uris"]}`,
		`{"ids":[],"embeddings":null,"documents":null,"uris":null,"metadatas":null,"include":[]}`,
		`{"ids":["a"],"embeddings":[[1e39]]}`,
		`{"ids":["a"],"metadatas":[{"x":1e400}]}`,
		`{"ids":["a"],"embeddings":[[1],[2]]}`,
		`{"ids":null}`,
		`[]`,
		``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := chroma.DecodeGetResponse(bytes.NewReader(data))
		if err != nil {
			return
		}
		if err := b.Validate(); err != nil {
			t.Fatalf("decoded an inconsistent batch: %v", err)
		}
		if b.IDs == nil {
			t.Fatal("decoded a batch without ids")
		}
	})
}
