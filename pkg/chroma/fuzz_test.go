package chroma_test

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
)

func FuzzDecodeGetResponse(f *testing.F) {
	for _, s := range []string{
		`{"ids":["a","b"],"embeddings":[[1.5,2.25,-3.0],null],"documents":[null,""],"uris":["u1",null],"metadatas":[{"i":9007199254740993,"f":1.0,"b":true,"s":"x"},null],"include":["embeddings","documents","metadatas","uris"]}`,
		`{"ids":[],"embeddings":null,"documents":null,"uris":null,"metadatas":null,"include":[]}`,
		`{"ids":["a"],"embeddings":[[1e39]]}`,
		`{"ids":["a","b"],"embeddings":[ [ 1.17549435e-38 , -0.0,1E+2 ] ,[] ]}`,
		`{"ids":["a"],"embeddings":[["1"]]}`,
		`{"ids":["a"],"embeddings":[[16777217, 0.1, 3.4028235e38, 1e-46]]}`,
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
		// The hand-written embeddings parser must agree with encoding/json
		// bit for bit.
		var std struct {
			Embeddings [][]float32 `json:"embeddings"`
		}
		if err := json.NewDecoder(bytes.NewReader(data)).Decode(&std); err != nil {
			t.Fatalf("encoding/json refuses what DecodeGetResponse took: %v", err)
		}
		if len(std.Embeddings) != len(b.Embeddings) || (std.Embeddings == nil) != (b.Embeddings == nil) {
			t.Fatalf("embeddings %v, encoding/json %v", b.Embeddings, std.Embeddings)
		}
		for i := range std.Embeddings {
			if len(std.Embeddings[i]) != len(b.Embeddings[i]) || (std.Embeddings[i] == nil) != (b.Embeddings[i] == nil) {
				t.Fatalf("row %d: %v, encoding/json %v", i, b.Embeddings[i], std.Embeddings[i])
			}
			for j, f := range std.Embeddings[i] {
				if math.Float32bits(f) != math.Float32bits(b.Embeddings[i][j]) {
					t.Fatalf("row %d[%d]: %v, encoding/json %v", i, j, b.Embeddings[i][j], f)
				}
			}
		}
	})
}
