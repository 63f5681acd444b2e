package restorer_test

import (
	"context"
	"errors"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/gate"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
	"github.com/chromadb-rollback/chromadb-rollback/services/restorer"
)

// TestGateDuringRollback holds a real rollback in the middle of a
// collection and writes through the read-only gate: writes to the database
// being restored get 503 while reads and writes elsewhere pass; once the
// rollback has ended, writes pass again.
func TestGateDuringRollback(t *testing.T) {
	e := seeded(t)
	snap := e.snapshot(t, "acme", "prod", "pre_migration")

	fences, err := gate.WatchFences(t.Context(), e.nats.Assets.State, gate.FencesConn(e.nats.Conn))
	if err != nil {
		t.Fatal(err)
	}
	upstream, _ := url.Parse(e.chroma.URL)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gctx, stopGate := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- gate.New(upstream, fences).ServeListener(gctx, ln) }()
	t.Cleanup(func() { stopGate(); <-served })
	app, err := chroma.New("http://"+ln.Addr().String(), chroma.WithRetryMaxElapsed(0))
	if err != nil {
		t.Fatal(err)
	}

	reached, release := make(chan struct{}), make(chan struct{})
	e.startRestorer(t, restorer.Config{Instance: "gated"}, func(ctx context.Context, p restorer.HookPoint) error {
		if p.Name == "batch" && p.Batch == 1 {
			select {
			case reached <- struct{}{}:
				select {
				case <-release:
				case <-ctx.Done():
					return ctx.Err()
				}
			default: // only the first time
			}
		}
		return nil
	})
	ctx := t.Context()
	prod, err := app.GetCollection(ctx, "acme", "prod", "corpus.v1") // a read, through the gate
	if err != nil {
		t.Fatal(err)
	}
	staging, err := app.GetCollection(ctx, "acme", "staging", "corpus.v1") // same name, other database
	if err != nil {
		t.Fatal(err)
	}
	write := func(tenant, db string, c *chroma.Collection, id string) error {
		v := make([]float32, *c.Dimension)
		v[0] = 1
		return app.Add(ctx, tenant, db, c.ID, &record.Batch{IDs: []string{id}, Embeddings: [][]float32{v}})
	}

	r := e.start(t, contract.RollbackRequest{SnapshotID: snap, Confirm: true, NoSafetySnapshot: true})
	select {
	case <-reached:
	case <-time.After(time.Minute):
		t.Fatal("the rollback never reached its first batch")
	}
	// The gate learns of the fence from the KV watch: give it a moment.
	var werr error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if werr = write("acme", "prod", prod, "during-rollback"); werr != nil {
			break
		}
	}
	var apiErr *chroma.APIError
	if !errors.As(werr, &apiErr) || apiErr.StatusCode != 503 {
		t.Fatalf("write during the rollback: %v, want a 503 from the gate", werr)
	}
	if _, err := app.ListCollections(ctx, "acme", "prod"); err != nil {
		t.Errorf("read during the rollback: %v", err)
	}
	if err := write("acme", "staging", staging, "elsewhere"); err != nil {
		t.Errorf("write to another database during the rollback: %v", err)
	}
	close(release)
	if op := e.waitOp(t, r.OpID, 2*time.Minute); op.Status != contract.StatusCompleted {
		t.Fatalf("rollback: %s %s", op.Status, op.Error)
	}
	// The fence is lowered: the collection was swapped (new id), writes pass.
	restored, err := app.GetCollection(ctx, "acme", "prod", "corpus.v1")
	if err != nil {
		t.Fatal(err)
	}
	prod = restored
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		werr = write("acme", "prod", prod, "after-rollback")
		if werr == nil || time.Now().After(deadline) {
			break
		}
	}
	if werr != nil {
		t.Errorf("write after the rollback: %v", werr)
	}
}
