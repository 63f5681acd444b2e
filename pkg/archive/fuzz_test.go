package archive

import (
	"bytes"
	"errors"
	"testing"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
)

// FuzzReader feeds arbitrary bytes to Verify: it must never panic, and any
// archive it accepts must read back the same way twice.
func FuzzReader(f *testing.F) {
	valid := validArchive(f)
	f.Add(valid)
	f.Add(valid[:len(valid)/2])
	f.Add(compress(f, tarBytes(f, untar(f, valid)[:1])))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzVerify(t, data)
	})
}

// FuzzReaderTar fuzzes the uncompressed tar stream, which reaches the tar,
// JSON and batch checks far more often than fuzzing compressed bytes does.
func FuzzReaderTar(f *testing.F) {
	// Small seeds: tar pads every entry to 512 bytes, and large inputs make
	// each minimization slow.
	tiny := writeArchive(f, testMetadata(2), []written{{1, &record.Batch{
		IDs:        []string{"a", "b"},
		Embeddings: [][]float32{{1, 2}, nil},
		Documents:  []*string{ptr("d"), nil},
		Metadatas:  []record.Metadata{{"k": int64(1)}, nil},
	}}})
	f.Add(decompress(f, tiny))
	es := untar(f, tiny)
	f.Add(tarBytes(f, es[:3]))
	f.Add(tarBytes(f, append(es[:1:1], es[3:]...)))
	f.Fuzz(func(t *testing.T, raw []byte) {
		fuzzVerify(t, compress(t, raw))
	})
}

// fuzzLimits keeps hostile inputs cheap: a few bytes of zstd can expand to
// a full-size entry, which is slow to fuzz but exercises nothing new.
var fuzzLimits = Limits{MaxEntrySize: 1 << 20, MaxBatches: 1000, MaxCollections: 1000}

func fuzzVerify(t *testing.T, data []byte) {
	rep, err := VerifyWithLimits(bytes.NewReader(data), fuzzLimits)
	if err != nil {
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrChecksumMismatch) && !errors.Is(err, ErrFormat) {
			t.Fatalf("error %v matches no error class", err)
		}
		return
	}
	if rep == nil {
		t.Fatal("Verify: nil report and nil error")
	}
	_, batches, err := readArchive(data)
	if err != nil {
		t.Fatalf("Verify accepted the archive, Reader did not: %v", err)
	}
	var n int64
	for _, b := range batches {
		n += int64(b.Records.Len())
	}
	if n != rep.TotalRecords {
		t.Fatalf("read %d records, report says %d", n, rep.TotalRecords)
	}
}
