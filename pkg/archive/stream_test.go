package archive

import (
	"io"
	"math/rand/v2"
	"runtime"
	"testing"
)

// TestWriterStreams writes far more data than it lets the heap hold: the
// writer must keep about one batch in memory, not the archive.
func TestWriterStreams(t *testing.T) {
	batches := 200
	if raceEnabled || testing.Short() {
		batches = 20
	}
	const n, dim = 1000, 768
	b := randomBatch(rand.New(rand.NewPCG(1, 2)), "r", n, dim, 100)
	batchBytes := uint64(n * dim * 4)

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse

	w, err := NewWriter(io.Discard, testMetadata(1))
	if err != nil {
		t.Fatal(err)
	}
	var peak, first uint64
	for i := range batches {
		if err := w.WriteBatch(0, b); err != nil {
			t.Fatal(err)
		}
		if i%10 == 9 {
			// Live heap, not garbage the GC has yet to collect.
			runtime.GC()
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			if first == 0 {
				first = ms.HeapInuse
			}
		}
	}
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	_, raw := w.Stats()
	growth := int64(peak) - int64(base)
	// zstd keeps a 4 MiB window plus block buffers; allow a few batches.
	limit := int64(6 * batchBytes)
	t.Logf("wrote %d MiB raw; live heap grew %d KiB at most, %d KiB after the first 10 batches", raw>>20, growth>>10, (int64(peak)-int64(first))>>10)
	if drift := int64(peak) - int64(first); drift > int64(batchBytes) {
		t.Errorf("live heap grew %d bytes between the 10th and the last batch, want at most one batch (%d): something is retained", drift, batchBytes)
	}
	if growth > limit {
		t.Errorf("heap grew %d bytes writing %d bytes, want at most %d", growth, raw, limit)
	}
}
