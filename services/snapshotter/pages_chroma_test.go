package snapshotter

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path"
	"slices"
	"strings"
	"sync"
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
	ch := testenv.StartChroma(t)
	cc := ch.Client(t)
	// The probe's requests (no embeddings), by collection: the limits asked.
	var mu sync.Mutex
	probes := map[string][]int{}
	rt := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.Body != nil && strings.HasSuffix(r.URL.Path, "/get") {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				return nil, err
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			var req struct {
				Limit   int      `json:"limit"`
				Include []string `json:"include"`
			}
			if json.Unmarshal(body, &req) == nil && !slices.Contains(req.Include, "embeddings") {
				coll := path.Base(path.Dir(r.URL.Path))
				mu.Lock()
				probes[coll] = append(probes[coll], req.Limit)
				mu.Unlock()
			}
		}
		return http.DefaultTransport.RoundTrip(r)
	})
	probing := ch.Client(t, chroma.WithHTTPClient(&http.Client{Transport: rt}))
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
		// Each record more than a page: pages of one record, and a probe
		// of one. (Pages of at least 8 records, and a probe of 16, held
		// 64 MB and 128 MB answers for 8 MB documents.)
		seed("huge", func(int) int { return 3 * 128 << 10 }, 5),
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
	s := &Service{chroma: probing, cfg: Config{MaxPageRecords: 2500, PageBytes: pageBytes, FetchWorkers: 2}}
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
	if !slices.Equal(pages[3], []int{1, 1, 1, 1, 1}) {
		t.Errorf("huge: pages %v; want 5 of one record", pages[3])
	}
	// The probe reads one record, then as many more as fit in a page by
	// its size: 15 more of 100-byte records, 10 more of 8 KB ones (the
	// answer carries ids and JSON besides), none of 384 KB ones.
	mu.Lock()
	defer mu.Unlock()
	for i, want := range [][]int{{1, 14}, {1, 15}, {1, 15}, {1}} {
		got := probes[colls[i].ID]
		if i == 0 {
			if len(got) != 2 || got[0] != 1 || got[1] < 8 || got[1] > 15 {
				t.Errorf("%s: probe asked for %v records; want 1, then 8 to 15", colls[i].Name, got)
			}
			continue
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: probe asked for %v records; want %v", colls[i].Name, got, want)
		}
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestExportPagesBoundedWhenRecordsGrow: pages are sized by what the
// records read so far weighed, so records much heavier than those before
// them made pages of any size (a collection of 20 short records and then
// 600 of 200 KB was read as one 120 MB answer: a snapshotter of 457 MB).
// No answer of more than one record is read over twice PageBytes: the
// page is read again in smaller gets, each handed on as it comes, and
// every record is emitted once in get order, also when the last page
// holds records added after the count.
func TestExportPagesBoundedWhenRecordsGrow(t *testing.T) {
	ctx := t.Context()
	ch := testenv.StartChroma(t)
	cc := ch.Client(t)
	// The largest answer read: its size, as Chroma announced it.
	var mu sync.Mutex
	largest := 0
	rt := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := http.DefaultTransport.RoundTrip(r)
		if err == nil && strings.HasSuffix(r.URL.Path, "/get") {
			resp.Body = &countingBody{ReadCloser: resp.Body, done: func(n int) {
				mu.Lock()
				largest = max(largest, n)
				mu.Unlock()
			}}
		}
		return resp, err
	})
	watched := ch.Client(t, chroma.WithHTTPClient(&http.Client{Transport: rt}))
	const tenant, db, dim = "default_tenant", "default_database", 8
	seed := func(name string, docSize func(k int) int, n int) chroma.Collection {
		c, err := cc.CreateCollection(ctx, tenant, db, chroma.CreateCollection{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		for from := 0; from < n; from += 50 {
			b := &record.Batch{}
			for k := from; k < min(n, from+50); k++ {
				doc := strings.Repeat(string(rune('a'+k%26)), docSize(k))
				e := make([]float32, dim)
				e[0] = float32(k)
				b.IDs, b.Embeddings, b.Documents = append(b.IDs, fmt.Sprintf("%s-%04d", name, k)), append(b.Embeddings, e), append(b.Documents, &doc)
			}
			if err := cc.Add(ctx, tenant, db, c.ID, b); err != nil {
				t.Fatal(err)
			}
		}
		return *c
	}
	const pageBytes = 128 << 10
	colls := []chroma.Collection{
		// Short records first, as far as the probe reads, then 32 KB ones.
		seed("light_first", func(k int) int { return map[bool]int{true: 100, false: 32 << 10}[k < 20] }, 220),
		// 1 KB records for some pages, then 64 KB ones.
		seed("growing", func(k int) int { return map[bool]int{true: 1 << 10, false: 64 << 10}[k < 300] }, 400),
		// Records of more than twice a page each, after short ones.
		seed("huge_after", func(k int) int { return map[bool]int{true: 10, false: 3 * pageBytes}[k < 5] }, 8),
	}
	var info []archive.CollectionInfo
	for i, c := range colls {
		n, err := cc.Count(ctx, tenant, db, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			n -= 7 // seven records added after the count
		}
		info = append(info, archive.CollectionInfo{ID: c.ID, Name: c.Name, ExpectedCount: int64(n)})
	}
	s := &Service{chroma: watched, cfg: Config{MaxPageRecords: 2500, PageBytes: pageBytes, FetchWorkers: 2}}
	ids := make([][]string, len(colls))
	if err := s.exportPages(ctx, tenant, db, info, func(i int, b *record.Batch) error {
		docs := 0
		for _, d := range b.Documents {
			docs += len(*d)
		}
		if b.Len() > 1 && docs > s.maxPageBytes() {
			t.Errorf("%s: a batch of %d records with %d KB of documents, over %d KB", colls[i].Name, b.Len(), docs>>10, s.maxPageBytes()>>10)
		}
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
	// One record of 384 KB is read whole; nothing larger is.
	if largest > 3*pageBytes+4<<10 {
		t.Errorf("an answer of %d KB was read; want none over one 384 KB record's", largest>>10)
	}
}

// countingBody reports how many bytes were read from a body when it is
// closed.
type countingBody struct {
	io.ReadCloser
	n    int
	done func(int)
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n += n
	return n, err
}

func (c *countingBody) Close() error {
	c.done(c.n)
	return c.ReadCloser.Close()
}
