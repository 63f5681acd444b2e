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
func (s *Service) export(ctx context.Context, md *archive.Metadata, w io.Writer, total int64, progress *bus.ProgressPublisher) (*archive.Manifest, exportStats, error) {
	aw, err := archive.NewWriter(w, md)
	if err != nil {
		return nil, exportStats{}, fmt.Errorf("start archive: %w", err)
	}
	var done int64
	for i, c := range md.Collections {
		err := s.exportCollection(ctx, md.Tenant, md.Database, c, func(b *record.Batch) error {
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

type pageResult struct {
	batch *record.Batch
	err   error
}

// exportCollection reads a collection page by page with FetchWorkers
// requests in flight and hands pages to emit in get order. Pages are planned
// from the count taken before; if the last planned page comes back full,
// reading continues until a short page, so records added meanwhile are kept
// (and the snapshot is flagged as not consistent by the counts).
func (s *Service) exportCollection(ctx context.Context, tenant, db string, c archive.CollectionInfo, emit func(*record.Batch) error) error {
	limit := s.pageSize(c.Dimension)
	get := func(offset int) (*record.Batch, error) {
		b, err := s.chroma.Get(ctx, tenant, db, c.ID, chroma.GetRequest{Limit: limit, Offset: offset, Include: chroma.IncludeAll})
		if err != nil {
			return nil, fmt.Errorf("read collection %q at offset %d: %w", c.Name, offset, err)
		}
		return b, nil
	}
	pages := int((c.ExpectedCount + int64(limit) - 1) / int64(limit))

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// order holds one result channel per page, in page order; its capacity
	// bounds how many fetched pages wait in memory.
	order := make(chan chan pageResult, s.cfg.FetchWorkers*2)
	sem := make(chan struct{}, s.cfg.FetchWorkers)
	go func() {
		defer close(order)
		for p := 0; p < pages; p++ {
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
			go func(offset int) {
				defer func() { <-sem }()
				b, err := get(offset)
				ch <- pageResult{b, err}
			}(p * limit)
		}
	}()
	last := -1 // size of the last page, -1 before any
	for ch := range order {
		var r pageResult
		select {
		case r = <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		if r.err != nil {
			return r.err
		}
		last = r.batch.Len()
		if last > 0 {
			if err := emit(r.batch); err != nil {
				return err
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	offset := pages * limit
	for last == -1 || last == limit {
		b, err := get(offset)
		if err != nil {
			return err
		}
		last = b.Len()
		if last == 0 {
			break
		}
		if err := emit(b); err != nil {
			return err
		}
		offset += last
	}
	return nil
}
