package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
)

// TestCount: collections are counted a few at a time, each count lands in
// its collection's place, and the first failure is the error, naming its
// collection and when it was counted.
func TestCount(t *testing.T) {
	ch := testenv.StartChroma(t)
	cc := ch.Client(t, chroma.WithRetryMaxElapsed(2*time.Second))
	ctx := t.Context()
	const tenant, db = "default_tenant", "default_database"
	var colls []chroma.Collection
	for i := range 2*countParallel + 1 {
		c, err := cc.CreateCollection(ctx, tenant, db, chroma.CreateCollection{Name: fmt.Sprintf("count_%02d", i)})
		if err != nil {
			t.Fatal(err)
		}
		b := &record.Batch{}
		for k := range i * 3 {
			b.IDs = append(b.IDs, fmt.Sprintf("r%d", k))
			b.Embeddings = append(b.Embeddings, []float32{float32(k), 1, 2})
		}
		if b.Len() > 0 {
			if err := cc.Add(ctx, tenant, db, c.ID, b); err != nil {
				t.Fatal(err)
			}
		}
		colls = append(colls, *c)
	}
	s := &Service{chroma: cc}
	cmd := &contract.SnapshotCommand{Tenant: tenant, Database: db}
	got, err := s.count(ctx, cmd, colls, "")
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range got {
		if n != int64(i*3) {
			t.Errorf("collection %d: counted %d, want %d", i, n, i*3)
		}
	}

	// A collection deleted since it was listed.
	gone := colls[3]
	if err := cc.DeleteCollection(ctx, tenant, db, gone.Name); err != nil {
		t.Fatal(err)
	}
	_, err = s.count(ctx, cmd, colls, " after export")
	if err == nil || !strings.Contains(err.Error(), `count collection "count_03" after export`) {
		t.Fatalf("count with %s deleted: %v, want an error naming it", gone.Name, err)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.count(cctx, cmd, colls[:2], ""); !errors.Is(err, context.Canceled) {
		t.Fatalf("count with a cancelled context: %v, want context.Canceled", err)
	}
}
