package chroma_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
)

// TestCountEach: each count lands in its collection's place; the first
// failure is a *CountError with its index and stops the counts not yet
// started; an ended context starts none.
func TestCountEach(t *testing.T) {
	c, ct := countingClient(t, "/count")
	tenant, db := newDB(t, c)
	ctx := t.Context()
	var ids []string
	for i := range 5 {
		col, err := c.CreateCollection(ctx, tenant, db, chroma.CreateCollection{Name: fmt.Sprintf("count_%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		b := &record.Batch{}
		for k := range i * 2 {
			b.IDs = append(b.IDs, fmt.Sprint("r", k))
			b.Embeddings = append(b.Embeddings, []float32{float32(k), 1})
		}
		if b.Len() > 0 {
			if err := c.Add(ctx, tenant, db, col.ID, b); err != nil {
				t.Fatal(err)
			}
		}
		ids = append(ids, col.ID)
	}
	counts, err := c.CountEach(ctx, tenant, db, ids, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range counts {
		if n != int64(i*2) {
			t.Errorf("collection %d: counted %d, want %d", i, n, i*2)
		}
	}

	// One at a time, the second missing: the third is never asked for.
	missing := "00000000-0000-4000-8000-000000000000"
	ct.n.Store(0)
	_, err = c.CountEach(ctx, tenant, db, []string{ids[0], missing, ids[2], ids[3], ids[4]}, 1)
	var ce *chroma.CountError
	if !errors.As(err, &ce) || ce.Index != 1 || !errors.Is(err, chroma.ErrNotFound) {
		t.Fatalf("count with the second collection missing: %v, want a CountError at index 1 matching ErrNotFound", err)
	}
	if n := ct.n.Load(); n != 2 {
		t.Errorf("%d counts requested, want 2 (none after the failure)", n)
	}

	ct.n.Store(0)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.CountEach(cctx, tenant, db, ids, 2); !errors.Is(err, context.Canceled) || errors.As(err, &ce) {
		t.Fatalf("count with an ended context: %v, want context.Canceled", err)
	}
	if n := ct.n.Load(); n != 0 {
		t.Errorf("%d counts requested with an ended context", n)
	}
}
