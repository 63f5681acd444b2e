package snapshotter

import (
	"context"
	"fmt"
	"io"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/archive"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
)

type exportStats struct {
	records  int64
	rawBytes int64
}

// export writes the archive of md's collections to w, one page per batch.
// read, if not nil, is called once every record has been read from Chroma,
// before the archive's end is written.
func (s *Service) export(ctx context.Context, md *archive.Metadata, w io.Writer, total int64, progress *bus.ProgressPublisher, read func()) (*archive.Manifest, exportStats, error) {
	aw, err := archive.NewWriter(w, md)
	if err != nil {
		return nil, exportStats{}, fmt.Errorf("start archive: %w", err)
	}
	var done int64
	err = s.exportPages(ctx, md.Tenant, md.Database, md.Collections, func(i int, b *record.Batch) error {
		c := md.Collections[i]
		if err := aw.WriteBatch(i, b); err != nil {
			return fmt.Errorf("write collection %q: %w", c.Name, err)
		}
		done += int64(b.Len())
		recs, raw := aw.Stats()
		progress.Update(contract.Progress{Phase: "exporting", Collection: c.Name, DoneRecords: recs, TotalRecords: max(total, done), Bytes: raw})
		return nil
	})
	if err != nil {
		return nil, exportStats{}, err
	}
	if read != nil {
		read()
	}
	man, err := aw.Close()
	if err != nil {
		return nil, exportStats{}, fmt.Errorf("finish archive: %w", err)
	}
	recs, raw := aw.Stats()
	return man, exportStats{records: recs, rawBytes: raw}, nil
}

// pageSize picks records per page so that one page is about PageBytes as
// Chroma sends it (embeddings as decimal text dominate).
func (s *Service) pageSize(dim *int) int {
	per := 1024 // document, metadata and id
	if dim != nil {
		per += *dim * 11
	}
	n := s.cfg.PageBytes / per
	return min(max(n, 50), s.cfg.MaxPageRecords)
}

// balancePages splits count records into the fewest pages of at most limit
// records, all of about the same size, so the two workers finish together
// (2,458 records in pages of 1,598 would be 1,598 + 860).
func balancePages(count int64, limit int) (size, pages int) {
	if count <= 0 {
		return limit, 0
	}
	pages = int((count + int64(limit) - 1) / int64(limit))
	return int((count + int64(pages) - 1) / int64(pages)), pages
}

type pageResult struct {
	batch *record.Batch
	err   error
}

// exportPages reads every collection page by page with FetchWorkers
// requests in flight and hands pages to emit in collection and get order.
// Pages are planned across all collections at once, so small collections
// (one page each) are read in parallel too, and the order channel's
// capacity bounds how many fetched pages wait in memory. Pages are planned
// from the counts taken before. A collection's last planned page asks for
// one record more than were counted: if that record comes back, records
// were added meanwhile, and reading goes on until a short page, so they
// are kept (and the counts flag the snapshot as not consistent). An
// empty collection is one such page. No request is spent on finding that
// nothing follows.
func (s *Service) exportPages(ctx context.Context, tenant, db string, colls []archive.CollectionInfo, emit func(int, *record.Batch) error) error {
	limits := make([]int, len(colls))
	planned := make([]int, len(colls))
	for i, c := range colls {
		limits[i], planned[i] = balancePages(c.ExpectedCount, s.pageSize(c.Dimension))
		planned[i] = max(planned[i], 1)
	}
	get := func(i, offset, limit int) (*record.Batch, error) {
		c := colls[i]
		b, err := s.chroma.Get(ctx, tenant, db, c.ID, chroma.GetRequest{Limit: limit, Offset: offset, Include: chroma.IncludeAll})
		if err != nil {
			return nil, fmt.Errorf("read collection %q at offset %d: %w", c.Name, offset, err)
		}
		return b, nil
	}
	// pageLimit is how many records page p of collection i asks for.
	pageLimit := func(i, p int) int {
		if p == planned[i]-1 {
			return limits[i] + 1
		}
		return limits[i]
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// order holds the pages dispatched and not yet taken by the writer:
	// every worker's, plus the next one, so a worker that finishes starts
	// the following page at once while the writer is still busy with an
	// earlier one. At most FetchWorkers+1 fetched pages wait in memory.
	order := make(chan chan pageResult, s.cfg.FetchWorkers+1)
	sem := make(chan struct{}, s.cfg.FetchWorkers)
	go func() {
		defer close(order)
		for i := range colls {
			for p := range planned[i] {
				ch := make(chan pageResult, 1)
				select {
				case order <- ch:
				case <-ctx.Done():
					return
				}
				select {
				case sem <- struct{}{}:
				case <-ctx.Done():
					return
				}
				go func(offset, limit int) {
					defer func() { <-sem }()
					b, err := get(i, offset, limit)
					ch <- pageResult{b, err}
				}(p*limits[i], pageLimit(i, p))
			}
		}
	}()
	for i := range colls {
		more := false
		for p := range planned[i] {
			var r pageResult
			select {
			case ch, ok := <-order:
				if !ok {
					return ctx.Err()
				}
				select {
				case r = <-ch:
				case <-ctx.Done():
					return ctx.Err()
				}
			case <-ctx.Done():
				return ctx.Err()
			}
			if r.err != nil {
				return r.err
			}
			b := r.batch
			if p == planned[i]-1 && b.Len() > limits[i] {
				// The record past the counted ones: it opens the next page.
				b, more = b.Slice(0, limits[i]), true
			}
			if b.Len() > 0 {
				if err := emit(i, b); err != nil {
					return err
				}
			}
		}
		for offset := planned[i] * limits[i]; more; {
			b, err := get(i, offset, limits[i])
			if err != nil {
				return err
			}
			if b.Len() > 0 {
				if err := emit(i, b); err != nil {
					return err
				}
			}
			more = b.Len() == limits[i]
			offset += b.Len()
		}
	}
	return nil
}
