package archive

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
)

// encodeBatchReference is how batch entries were written before
// appendBatchJSON, through encoding/json; archives must not change.
func encodeBatchReference(bf *batchFile) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	err := enc.Encode(bf)
	return buf.Bytes(), err
}

func batchJSONSeeds() [][]byte {
	dim := 3
	seeds := [][]byte{
		[]byte(`{"ids":["a"],"documents":null,"metadatas":null,"uris":null,"dimension":null,"null_embeddings":null}`),
		[]byte(` { "ids" : [ "a" , "b" ] , "dimension" : 0 , "null_embeddings" : [ 1 ] } `),
		[]byte(`{"ids":["a"],"IDS":["b"]}`),
		[]byte(`{"ids":["a"],"ids":["b"]}`),
		[]byte(`{"ids":["a",null]}`),
		[]byte(`{"ids":["\u00e9\ud83d\ude00"],"documents":[null,""],"metadatas":[{"k":1},null,{}]}`),
		[]byte(`{"ids":["a"],"dimension":1.0}`),
		[]byte(`{"ids":["a"],"extra":1}`),
		[]byte(`{"ids":["a"]} {}`),
		[]byte(`null`),
	}
	for _, b := range []*record.Batch{sampleBatch(), {IDs: []string{"<&>", "\u2028", "bad\xff"}, Documents: []*string{nil, sp(""), sp("\x01\"\\")}}} {
		bf := &batchFile{IDs: b.IDs, Documents: b.Documents, Metadatas: b.Metadatas, URIs: b.URIs, Dimension: &dim, NullEmbeddings: []int{}}
		data, err := encodeBatchReference(bf)
		if err != nil {
			panic(err)
		}
		seeds = append(seeds, data)
	}
	return seeds
}

func sp(s string) *string { return &s }

func sampleBatch() *record.Batch {
	return &record.Batch{
		IDs:       []string{"a", "b.c", "日本\x00"},
		Documents: []*string{nil, sp(""), sp("doc <b> & \u2029")},
		Metadatas: []record.Metadata{nil, {"k": int64(1), "<": "&"}, {"k": 1.0, "big": int64(1 << 60), "t": true}},
		URIs:      []*string{sp("u"), nil, nil},
	}
}

// FuzzBatchJSON holds the batch entry's one-pass reader and writer to
// encoding/json: whatever decodeBatchJSON accepts, decodeStrict accepts
// and decodes alike; whatever decodeStrict decodes, appendBatchJSON
// writes byte for byte as json.Encoder did, and decodeBatchJSON reads
// that back to the same batch.
func FuzzBatchJSON(f *testing.F) {
	for _, s := range batchJSONSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := decodeBatchJSON(data)
		var want batchFile
		werr := decodeStrict(data, &want)
		if err == nil && (werr != nil || !reflect.DeepEqual(*got, want)) {
			t.Fatalf("decodeBatchJSON(%q) = %+v; decodeStrict: %+v, %v", data, *got, want, werr)
		}
		if werr != nil {
			return
		}
		ref, rerr := encodeBatchReference(&want)
		enc, eerr := appendBatchJSON(nil, &want)
		if (rerr == nil) != (eerr == nil) || !bytes.Equal(ref, enc) {
			t.Fatalf("appendBatchJSON(%+v) = %q, %v; json.Encoder wrote %q, %v", want, enc, eerr, ref, rerr)
		}
		if eerr != nil {
			return
		}
		back, err := decodeBatchJSON(enc)
		if err != nil || !reflect.DeepEqual(*back, want) {
			t.Fatalf("decodeBatchJSON(%q) = %+v, %v; want %+v", enc, back, err, want)
		}
	})
}
