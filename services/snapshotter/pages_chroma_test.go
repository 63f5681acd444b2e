package snapshotter

import (
	"slices"
	"testing"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/archive"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
)

// TestExportPagesWhenCountsMoved reads real collections with pages planned
// from counts that are wrong, as when writers add or delete records between
// the count and the export: every record present is emitted once, in get
// order, however the planned pages end (full, short, or none planned).
func TestExportPagesWhenCountsMoved(t *testing.T) {
	ctx := t.Context()
	cc := testenv.StartChroma(t).Client(t)
	const total = 230
	if err := testenv.SeedWorkload(ctx, cc, "default_tenant", "default_database", 1, total, 8, 20); err != nil {
		t.Fatal(err)
	}
	colls, err := cc.ListCollections(ctx, "default_tenant", "default_database")
	if err != nil || len(colls) != 1 {
		t.Fatalf("collections: %v %v", colls, err)
	}
	all, err := cc.Get(ctx, "default_tenant", "default_database", colls[0].ID, chroma.GetRequest{Limit: total + 10, Include: chroma.IncludeAll})
	if err != nil || all.Len() != total {
		t.Fatalf("get all: %d records, %v", all.Len(), err)
	}
	s := &Service{chroma: cc, cfg: Config{MaxPageRecords: 50, PageBytes: 1 << 20, FetchWorkers: 2}}
	for _, tc := range []struct {
		name     string
		expected int64
	}{
		{"exact, pages end full", 200 + 30},
		{"records added after the count, planned pages end full", 200},
		{"records added after the count, uneven pages", 190},
		{"records deleted after the count", 260},
		{"none counted", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			info := []archive.CollectionInfo{{ID: colls[0].ID, Name: colls[0].Name, ExpectedCount: tc.expected}}
			var ids []string
			err := s.exportPages(ctx, "default_tenant", "default_database", info, func(i int, b *record.Batch) error {
				if i != 0 || b.Len() == 0 {
					t.Errorf("emitted collection %d with %d records", i, b.Len())
				}
				ids = append(ids, b.IDs...)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ids, all.IDs) {
				t.Errorf("emitted %d ids, want the %d in get order", len(ids), all.Len())
			}
		})
	}
}
