package archive

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
)

const benchRecords = 1000

// BenchmarkWriter measures writing one batch of 1,000 records (500-byte
// documents, four metadata keys) per op; MB/s counts uncompressed bytes.
func BenchmarkWriter(b *testing.B) {
	for _, dim := range []int{384, 768} {
		b.Run(fmt.Sprintf("dim=%d", dim), func(b *testing.B) {
			batch := randomBatch(rand.New(rand.NewPCG(1, uint64(dim))), "id", benchRecords, dim, 500)
			w, err := NewWriter(io.Discard, testMetadata(1))
			if err != nil {
				b.Fatal(err)
			}
			if err := w.WriteBatch(0, batch); err != nil {
				b.Fatal(err)
			}
			_, before := w.Stats()
			if err := w.WriteBatch(0, batch); err != nil {
				b.Fatal(err)
			}
			_, after := w.Stats()
			b.SetBytes(after - before)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if err := w.WriteBatch(0, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if _, err := w.Close(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkReader measures reading and fully verifying an archive of 20
// batches of 1,000 records, by a Reader and by Verify (which does not
// materialize the embeddings); MB/s counts uncompressed bytes.
func BenchmarkReader(b *testing.B) {
	for _, c := range []struct {
		dim    int
		verify bool
	}{{384, false}, {768, false}, {384, true}, {768, true}} {
		dim, verify := c.dim, c.verify
		name := fmt.Sprintf("dim=%d", dim)
		if verify {
			name = "Verify/" + name
		}
		b.Run(name, func(b *testing.B) {
			// Distinct batches: repeats would let zstd match whole batches.
			rng := rand.New(rand.NewPCG(1, uint64(dim)))
			var ws []written
			for i := range 20 {
				ws = append(ws, written{0, randomBatch(rng, fmt.Sprint("id", i), benchRecords, dim, 500)})
			}
			data := writeArchive(b, testMetadata(1), ws)
			rep, err := Verify(bytes.NewReader(data))
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(rep.RawBytes)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if verify {
					if _, err := Verify(bytes.NewReader(data)); err != nil {
						b.Fatal(err)
					}
					continue
				}
				r, err := NewReader(bytes.NewReader(data))
				if err != nil {
					b.Fatal(err)
				}
				for {
					_, err := r.Next()
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
				}
			}
			// After the loop: ResetTimer drops metrics reported earlier.
			b.ReportMetric(float64(len(data))/float64(rep.RawBytes), "compressed/raw")
		})
	}
}
