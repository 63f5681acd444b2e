package chroma_test

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"slices"
	"testing"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
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
		`null`,
		`{}`,
		`{"IDS":["a"],"Embeddings":[[1]],"ids":["b"],"embeddings":[[2]],"other":{"x":[1,"]"]}}`,
		`{"ids":["a"],"embeddings":[[+1]]}`,
		`{"ids":["a"],"embeddings":[[.5]]}`,
		`{"ids":["a"],"embeddings":[[01]]}`,
		`{"ids":["a"],"embeddings":[[1.]]}`,
		`{"ids":["a"],"embeddings":[[1e]]}`,
		`{"ids":["a"],"embeddings":[[-0.0e-0]]}`,
		`{"ids":["a\"b"],"documents":["}"] , "embeddings" : null } `,
		`{"ids":["a"],}`,
		`{"ids":["a"]}x`,
		`{"ids":["a"],"x":tru}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// The reference: encoding/json over the whole answer ([]float32
		// via encoding/json is bit-exact).
		var std struct {
			IDs        []string          `json:"ids"`
			Embeddings [][]float32       `json:"embeddings"`
			Documents  []*string         `json:"documents"`
			URIs       []*string         `json:"uris"`
			Metadatas  []record.Metadata `json:"metadatas"`
		}
		stdErr := json.Unmarshal(data, &std)
		b, err := chroma.DecodeGetResponse(bytes.NewReader(data))
		if err != nil {
			if stdErr == nil && std.IDs != nil {
				want := &record.Batch{IDs: std.IDs, Embeddings: std.Embeddings, Documents: std.Documents, URIs: std.URIs, Metadatas: std.Metadatas}
				if want.Validate() == nil {
					t.Fatalf("refused what encoding/json decodes into a valid batch: %v", err)
				}
			}
			return
		}
		if err := b.Validate(); err != nil {
			t.Fatalf("decoded an inconsistent batch: %v", err)
		}
		if b.IDs == nil {
			t.Fatal("decoded a batch without ids")
		}
		if stdErr != nil {
			t.Fatalf("encoding/json refuses what DecodeGetResponse took: %v", stdErr)
		}
		if !slices.Equal(b.IDs, std.IDs) || !equalStrings(b.Documents, std.Documents) || !equalStrings(b.URIs, std.URIs) {
			t.Fatalf("columns differ from encoding/json: %+v, want %+v", b, std)
		}
		if len(b.Metadatas) != len(std.Metadatas) || (b.Metadatas == nil) != (std.Metadatas == nil) {
			t.Fatalf("metadatas %v, encoding/json %v", b.Metadatas, std.Metadatas)
		}
		for i, m := range std.Metadatas {
			if len(m) == 0 {
				m = nil // {} is returned as no metadata
			}
			if !reflect.DeepEqual(b.Metadatas[i], m) {
				t.Fatalf("metadata %d: %v, encoding/json %v", i, b.Metadatas[i], m)
			}
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

func equalStrings(a, b []*string) bool {
	if len(a) != len(b) || (a == nil) != (b == nil) {
		return false
	}
	for i := range a {
		if (a[i] == nil) != (b[i] == nil) || (a[i] != nil && *a[i] != *b[i]) {
			return false
		}
	}
	return true
}
