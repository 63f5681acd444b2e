package legacy

import (
	"bytes"
	"errors"
	"testing"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/archive"
)

// fuzzLimits keep every input cheap.
var fuzzLimits = Limits{MaxInputBytes: 1 << 20, MaxUncompressedBytes: 4 << 20, MaxBatchBytes: 1 << 20, MaxEntries: 64, MaxCollections: 64}

// checkConverted is what must hold for any input: a classified error and
// nothing written, or a native archive that verifies and agrees with the
// result.
func checkConverted(t *testing.T, data []byte, manifest []byte) {
	var out bytes.Buffer
	res, err := Convert(opener(data), &out, Options{Limits: fuzzLimits, Manifest: manifest})
	if err != nil {
		if !errors.Is(err, ErrNotSeed) && !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrManifest) && !errors.Is(err, ErrTooLarge) {
			t.Fatalf("unclassified error: %v", err)
		}
		if out.Len() != 0 {
			t.Fatalf("%d bytes written for a refused input", out.Len())
		}
		return
	}
	rep, err := archive.Verify(bytes.NewReader(out.Bytes()))
	if err != nil {
		t.Fatalf("converted archive does not verify: %v", err)
	}
	if rep.TotalRecords != res.Manifest.TotalRecords || len(rep.Collections) != len(res.Metadata.Collections) {
		t.Fatalf("verify says %d records in %d collections, the result %d in %d", rep.TotalRecords, len(rep.Collections), res.Manifest.TotalRecords, len(res.Metadata.Collections))
	}
}

// FuzzConvert feeds arbitrary bytes as the .tar.gz.
func FuzzConvert(f *testing.F) {
	small := &SeedArchive{Dir: "s", ChromaVersion: "0.3.21", Collections: []SeedCollection{
		SeedCollectionFromBatch("c", sampleBatch("x", 5, 3), 2), {Name: "e"},
	}}
	var buf bytes.Buffer
	if err := WriteSeedArchive(&buf, small); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add(tgz(f, tarEntry{name: "collections.json", body: `{"c": {"b": [{"id": "a", "embedding": [1, 2], "metadata": {"k": 1.5}}]}}`}))
	f.Add(tgz(f, tarEntry{name: "../collections.json", body: `{}`}))
	f.Add([]byte{0x1f, 0x8b})
	f.Fuzz(func(t *testing.T, data []byte) {
		checkConverted(t, data, nil)
	})
}

// FuzzCollectionsJSON feeds arbitrary collections.json text inside a valid
// tar.gz, which reaches the JSON parser far more often than FuzzConvert.
func FuzzCollectionsJSON(f *testing.F) {
	for _, s := range []string{
		`{}`,
		`{"c": {}}`,
		`{"c": {"batch_000000": [{"id": "a", "text": null, "embedding": [0.1, -1e-7], "metadata": {"i": 1, "f": 1.0, "b": true, "s": "x"}}]}}`,
		`{"c": {"b1": [{"id": "a"}], "b2": [{"id": "a"}]}}`,
		`{"c": {"b": [{"id": "\u00e9\ud83d\ude80", "document": "", "uri": "u", "embedding": null}]}, "d": {"b": []}}`,
		`{"c": {"b": [{"id": "a", "metadata": {"n": {"x": 1}}}]}}`,
		`{"c": {"b": [{"id": "a", "embedding": [1e39]}]}}`,
	} {
		f.Add(s, `{"total_chunks": 1}`)
	}
	f.Fuzz(func(t *testing.T, js, md string) {
		data := tgz(t, tarEntry{name: "snap/collections.json", body: js}, tarEntry{name: "snap/metadata.json", body: md})
		checkConverted(t, data, nil)
	})
}
