package snapshotter

import (
	"fmt"
	"slices"
	"strings"
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

// TestExportPagesSizedByBytes: pages are about PageBytes as Chroma sends
// them whatever the records weigh: records with 8 KB documents come in
// pages of a few records, small ones in one page as before, and a
// collection whose first records are small and the rest large gets small
// pages once the first large ones came back. Every record is emitted once,
// in get order.
func TestExportPagesSizedByBytes(t *testing.T) {
	ctx := t.Context()
	cc := testenv.StartChroma(t).Client(t)
	const tenant, db, dim, big = "default_tenant", "default_database", 8, 8 << 10
	seed := func(name string, docSize func(k int) int, n int) chroma.Collection {
		c, err := cc.CreateCollection(ctx, tenant, db, chroma.CreateCollection{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		b := &record.Batch{}
		for k := range n {
			doc := strings.Repeat(string(rune('a'+k%26)), docSize(k))
			e := make([]float32, dim)
			e[0] = float32(k)
			b.IDs, b.Embeddings, b.Documents = append(b.IDs, fmt.Sprintf("%s-%04d", name, k)), append(b.Embeddings, e), append(b.Documents, &doc)
		}
		if err := cc.Add(ctx, tenant, db, c.ID, b); err != nil {
			t.Fatal(err)
		}
		c, err = cc.GetCollection(ctx, tenant, db, name)
		if err != nil {
			t.Fatal(err)
		}
		return *c
	}
	colls := []chroma.Collection{
		seed("large", func(int) int { return big }, 120),
		seed("small", func(int) int { return 100 }, 100),
		seed("skewed", func(k int) int { return map[bool]int{true: 100, false: big}[k < probeRecords] }, 400),
	}
	var info []archive.CollectionInfo
	for _, c := range colls {
		n, err := cc.Count(ctx, tenant, db, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		info = append(info, archive.CollectionInfo{ID: c.ID, Name: c.Name, Dimension: c.Dimension, ExpectedCount: int64(n)})
	}
	const pageBytes = 128 << 10
	s := &Service{chroma: cc, cfg: Config{MaxPageRecords: 2500, PageBytes: pageBytes, FetchWorkers: 2}}
	pages := make([][]int, len(colls)) // records per page, by collection
	ids := make([][]string, len(colls))
	if err := s.exportPages(ctx, tenant, db, info, func(i int, b *record.Batch) error {
		pages[i] = append(pages[i], b.Len())
		ids[i] = append(ids[i], b.IDs...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for i, c := range colls {
		all, err := testenv.ReadAll(ctx, cc, tenant, db, c.ID, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ids[i], all.IDs) {
			t.Errorf("%s: emitted %d ids, want the %d in get order", c.Name, len(ids[i]), all.Len())
		}
	}
	// A page of records with 8 KB documents holds at most 16 of them
	// (128 KiB); the probe asks for half as much again, so about 10.
	perPage := pageBytes / big
	for k, n := range pages[0] {
		if n > perPage {
			t.Errorf("large: page %d has %d records (%d KB of documents); want at most %d", k, n, n*big>>10, perPage)
		}
	}
	if len(pages[1]) != 1 {
		t.Errorf("small: %d pages %v; want one", len(pages[1]), pages[1])
	}
	// The probe saw small records: the first pages, sized before any
	// came back, are large; every one after them is sized by them.
	if len(pages[2]) <= s.cfg.FetchWorkers {
		t.Fatalf("skewed: pages %v", pages[2])
	}
	for k, n := range pages[2][s.cfg.FetchWorkers:] {
		if n > perPage+perPage/4 {
			t.Errorf("skewed: page %d has %d records; want about %d at most once the large ones came back (pages %v)", k+s.cfg.FetchWorkers, n, perPage, pages[2])
		}
	}
}
