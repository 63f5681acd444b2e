package archive

import (
	"bytes"
	"errors"
	"testing"
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
	valid := validArchive(f)
	f.Add(decompress(f, valid))
	es := untar(f, valid)
	f.Add(tarBytes(f, es[:3]))
	f.Add(tarBytes(f, append(es[:1:1], es[5:]...)))
	f.Fuzz(func(t *testing.T, raw []byte) {
		fuzzVerify(t, compress(t, raw))
	})
}

func fuzzVerify(t *testing.T, data []byte) {
	rep, err := Verify(bytes.NewReader(data))
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
