package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

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

// minPageRecords is the fewest records a page asks for, however large
// its records are: one. A record can be close to Chroma's 40 MiB request
// limit; with 8 a page, a collection of 8 MB documents was read in 64 MB
// answers, three at a time, and a snapshot of 96 MB of records took the
// process from 50 MB to 660 MB.
const minPageRecords = 1

// probeRecords is how many records of a collection the probe reads, without
// embeddings, to size its pages: the first one, then as many more as fit
// in a page by its size.
const probeRecords = 16

// recordBytes is what one record of a collection is taken to weigh in
// Chroma's answer before a page of it was read: its embedding as decimal
// text, and its id, document, metadata and URI, at least 1 KiB, or half as
// much again as the probe's records weighed.
func recordBytes(dim *int, probed int) int {
	per := max(1024, probed*3/2)
	if dim != nil {
		per += *dim * 11
	}
	return per
}

// pageLimit is how many records a page asks for so that it is about
// PageBytes as Chroma sends it, for records of perRecord bytes.
func (s *Service) pageLimit(perRecord int) int {
	return min(max(s.cfg.PageBytes/max(perRecord, 1), minPageRecords), s.cfg.MaxPageRecords)
}

// probe reads the first records of each collection that has any, without
// their embeddings, and returns what one weighs in Chroma's answer (0 when
// the collection has none). A page is then sized by the records' bytes,
// not their number: 2,500 records of 40 KB documents are a 100 MB page.
// It reads one record, then up to probeRecords in all as far as they fit
// in a page by the first one's size: 16 records of 8 MB documents would be
// a 128 MB answer.
func (s *Service) probe(ctx context.Context, tenant, db string, colls []archive.CollectionInfo) ([]int, error) {
	out := make([]int, len(colls))
	errs := make([]error, len(colls))
	sem := make(chan struct{}, countParallel)
	var wg sync.WaitGroup
	for i, c := range colls {
		if c.ExpectedCount <= 0 {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			get := func(offset, limit int) (int, int, error) {
				b, size, err := s.chroma.GetPage(ctx, tenant, db, c.ID, chroma.GetRequest{Offset: offset, Limit: limit,
					Include: []chroma.Include{chroma.IncludeDocuments, chroma.IncludeMetadatas, chroma.IncludeURIs}, MaxBytes: s.maxPageBytes()})
				var tooLarge *chroma.PageTooLargeError
				if errors.As(err, &tooLarge) {
					// Records far heavier than the first: what they
					// weigh is all the probe wants to know.
					return limit, int(max(tooLarge.Size, int64(tooLarge.MaxBytes)+1)), nil
				}
				if err != nil {
					return 0, 0, fmt.Errorf("read collection %q: %w", c.Name, err)
				}
				return b.Len(), size, nil
			}
			n, size, err := get(0, 1)
			if err == nil && n > 0 {
				if more := min(probeRecords, s.cfg.PageBytes/max(size, 1)) - 1; more > 0 && c.ExpectedCount > 1 {
					var m, msize int
					m, msize, err = get(1, more)
					n, size = n+m, size+msize
				}
			}
			if err != nil {
				errs[i] = err
			} else if n > 0 {
				out[i] = size / n
			}
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
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

// page is one get of a collection's records, dispatched in order.
type page struct {
	coll, offset int
	limit        int  // the records it stands for
	last         bool // the collection's last planned page: it asks for one more
	// res carries the page's records in get order: one batch, or several
	// when Chroma's answer for the whole page would have been over
	// maxPageBytes; closed after the last (or an error).
	res chan pageResult
}

// maxPageBytes is the largest answer of more than one record a page
// reads: twice PageBytes. A page is sized by what the records read so far
// weighed, so records much heavier than those before them (a collection
// whose first records are short test entries, and the rest 200 KB
// documents) made pages of any size: 620 records in one answer of 120 MB,
// and a snapshotter of 457 MB. An answer Chroma announces larger is not
// read; the page is read again in smaller gets, sized by its size.
func (s *Service) maxPageBytes() int { return 2 * s.cfg.PageBytes }

// exportPages reads every collection page by page with FetchWorkers
// requests in flight and hands pages to emit in collection and get order.
// Pages are planned across all collections at once, so small collections
// (one page each) are read in parallel too, and the order channel's
// capacity bounds how many fetched pages wait in memory.
//
// Pages are sized by bytes (about PageBytes each as Chroma sends them):
// from a probe of each collection's first records at first, then from the
// largest records per byte any page of the collection came back with, and
// planned from the counts taken before. A collection's last planned page
// asks for one record more than were counted: if that record comes back,
// records were added meanwhile, and reading goes on until a short page,
// so they are kept (and the counts flag the snapshot as not consistent).
// An empty collection is one such page. No request is spent on finding
// that nothing follows.
func (s *Service) exportPages(ctx context.Context, tenant, db string, colls []archive.CollectionInfo, emit func(int, *record.Batch) error) error {
	probed, err := s.probe(ctx, tenant, db, colls)
	if err != nil {
		return err
	}
	// perRecord[i] is what a record of collection i is taken to weigh.
	perRecord := make([]atomic.Int64, len(colls))
	for i, c := range colls {
		perRecord[i].Store(int64(recordBytes(c.Dimension, probed[i])))
	}
	limit := func(i int) int { return s.pageLimit(int(perRecord[i].Load())) }
	weighs := func(i int, per int64) {
		for {
			cur := perRecord[i].Load()
			if per <= cur || perRecord[i].CompareAndSwap(cur, per) {
				return
			}
		}
	}
	// get reads up to n records of collection i from offset, in one
	// answer of at most maxPageBytes: a larger one is asked for again with
	// fewer records (one record is read whatever its size). It returns how
	// many records it asked for last: fewer came back only at the end.
	get := func(i, offset, n int) (*record.Batch, int, error) {
		c := colls[i]
		for {
			q := chroma.GetRequest{Limit: n, Offset: offset, Include: chroma.IncludeAll}
			if n > 1 {
				q.MaxBytes = s.maxPageBytes()
			}
			b, size, err := s.chroma.GetPage(ctx, tenant, db, c.ID, q)
			var tooLarge *chroma.PageTooLargeError
			if errors.As(err, &tooLarge) && n > 1 {
				weighs(i, max(tooLarge.Size, int64(q.MaxBytes)+1)/int64(n))
				n = max(1, min(n/2, limit(i)))
				continue
			}
			if err != nil {
				return nil, 0, fmt.Errorf("read collection %q at offset %d: %w", c.Name, offset, err)
			}
			if k := b.Len(); k > 0 {
				weighs(i, int64(size/k))
			}
			return b, n, nil
		}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// order holds the pages dispatched and not yet taken by the writer:
	// every worker's, plus the next one, so a worker that finishes starts
	// the following page at once while the writer is still busy with an
	// earlier one. At most FetchWorkers+1 fetched pages wait in memory.
	order := make(chan *page, s.cfg.FetchWorkers+1)
	sem := make(chan struct{}, s.cfg.FetchWorkers)
	go func() {
		defer close(order)
		for i, c := range colls {
			count := int(max(c.ExpectedCount, 0))
			for offset := 0; ; {
				// A worker is free first: a page is sized by what every
				// page that came back so far weighed.
				select {
				case sem <- struct{}{}:
				case <-ctx.Done():
					return
				}
				// The rest of the collection in pages of about the same
				// size, so the workers finish together (2,458 records in
				// pages of 1,598 would be 1,598 + 860).
				size, pages := balancePages(int64(count-offset), limit(i))
				p := &page{coll: i, offset: offset, limit: size, last: pages <= 1, res: make(chan pageResult, 1)}
				select {
				case order <- p:
				case <-ctx.Done():
					<-sem
					return
				}
				ask := p.limit
				if p.last {
					ask++
				}
				go func() {
					defer func() { <-sem }()
					defer close(p.res)
					// The page whole, or when it is too large, in gets
					// sized by what it weighed, each handed on as it comes.
					for offset, left, first := p.offset, ask, true; left > 0; first = false {
						n := left
						if !first {
							n = min(left, limit(p.coll))
						}
						b, asked, err := get(p.coll, offset, n)
						select {
						case p.res <- pageResult{b, err}:
						case <-ctx.Done():
							return
						}
						if err != nil || b.Len() < asked {
							return
						}
						offset, left = offset+b.Len(), left-b.Len()
					}
				}()
				if p.last {
					break
				}
				offset += size
			}
		}
	}()
	for p := range order {
		more, err := s.takePage(ctx, p, func(b *record.Batch) error { return emit(p.coll, b) })
		if err != nil {
			return err
		}
		for offset := p.offset + p.limit; more; {
			b, asked, err := get(p.coll, offset, limit(p.coll))
			if err != nil {
				return err
			}
			if b.Len() > 0 {
				if err := emit(p.coll, b); err != nil {
					return err
				}
			}
			more = b.Len() == asked
			offset += b.Len()
		}
	}
	return ctx.Err()
}

// takePage emits the batches of page p as its worker reads them and says
// whether a record came back past the counted ones of a collection's
// last page (records were added meanwhile: reading goes on after it).
func (s *Service) takePage(ctx context.Context, p *page, emit func(*record.Batch) error) (more bool, err error) {
	got := 0
	for {
		var r pageResult
		var ok bool
		select {
		case r, ok = <-p.res:
		case <-ctx.Done():
			return false, ctx.Err()
		}
		if !ok {
			return more, nil
		}
		if r.err != nil {
			return false, r.err
		}
		b := r.batch
		if p.last && got+b.Len() > p.limit {
			// The record past the counted ones: it opens the next page.
			b, more = b.Slice(0, p.limit-got), true
		}
		got += r.batch.Len()
		if b.Len() > 0 {
			if err := emit(b); err != nil {
				return false, err
			}
		}
	}
}
