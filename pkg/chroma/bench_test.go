package chroma_test

import (
	"sync"
	"sync/atomic"
	"testing"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
)

// BenchmarkGet measures the backup read path: 2 workers paging through
// 4,000 records of 384-d with 500-char documents and 4 metadata keys.
func BenchmarkGet(b *testing.B) {
	c := server.Client(b)
	ctx := b.Context()
	const records, page = 4000, 1000
	if _, err := c.GetDatabase(ctx, "bench", "get"); err != nil {
		if err := testenv.SeedWorkload(ctx, c, "bench", "get", 1, records, 384, 500); err != nil {
			b.Fatal(err)
		}
	}
	col, err := c.GetCollection(ctx, "bench", "get", "workload_00")
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	var n atomic.Int64
	for b.Loop() {
		var wg sync.WaitGroup
		for w := range 2 {
			wg.Go(func() {
				for off := w * page; off < records; off += 2 * page {
					got, err := c.Get(ctx, "bench", "get", col.ID, chroma.GetRequest{Limit: page, Offset: off})
					if err != nil {
						b.Error(err)
						return
					}
					n.Add(int64(got.Len()))
				}
			})
		}
		wg.Wait()
	}
	b.ReportMetric(float64(n.Load())/b.Elapsed().Seconds(), "records/s")
}
