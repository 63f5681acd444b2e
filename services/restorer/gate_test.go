package restorer_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
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

	_, app := startGate(t, e)

	hook, reached, release := holdFirstBatch()
	e.startRestorer(t, restorer.Config{Instance: "gated"}, hook)
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
	awaitFirstBatch(t, reached)
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

// blockAdds is a transport to Chroma that holds every add until release
// is closed, counting the adds it holds.
type blockAdds struct {
	release chan struct{}
	held    atomic.Int32
}

func (b *blockAdds) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/add") {
		b.held.Add(1)
		select {
		case <-b.release:
		case <-r.Context().Done():
			return nil, r.Context().Err()
		}
	}
	return http.DefaultTransport.RoundTrip(r)
}

// TestRollbackWaitsForWritesTheGateAdmitted: a write the in-process gate
// let through just before the fence, still on its way to Chroma, has
// landed before the rollback reads or changes the database (restorer
// Config.Quiesce, as serve wires it): it cannot land in the middle of the
// restore, after the safety snapshot read the collection.
func TestRollbackWaitsForWritesTheGateAdmitted(t *testing.T) {
	e := seeded(t)
	snap := e.snapshot(t, "acme", "prod", "pre_migration")
	slow := &blockAdds{release: make(chan struct{})}
	g, app := startGate(t, e, gate.WithTransport(slow))

	var inFlightAtRestore atomic.Int32
	inFlightAtRestore.Store(-1)
	e.startRestorer(t, restorer.Config{Instance: "gated", Quiesce: g.Quiesce}, func(ctx context.Context, p restorer.HookPoint) error {
		if p.Name == "batch" {
			inFlightAtRestore.CompareAndSwap(-1, int32(g.InFlightWrites("acme", "prod")))
		}
		return nil
	})
	ctx := t.Context()
	prod, err := app.GetCollection(ctx, "acme", "prod", "corpus.v1")
	if err != nil {
		t.Fatal(err)
	}
	wrote := make(chan error, 1)
	go func() {
		v := make([]float32, *prod.Dimension)
		wrote <- app.Add(ctx, "acme", "prod", prod.ID, &record.Batch{IDs: []string{"admitted-before-the-fence"}, Embeddings: [][]float32{v}})
	}()
	for deadline := time.Now().Add(10 * time.Second); slow.held.Load() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the write never reached Chroma's side of the gate")
		}
	}
	r := e.start(t, contract.RollbackRequest{SnapshotID: snap, Confirm: true, NoSafetySnapshot: true})
	time.Sleep(time.Second) // the rollback would be restoring by now
	close(slow.release)
	if err := <-wrote; err != nil {
		t.Errorf("the write admitted before the fence: %v", err)
	}
	if op := e.waitOp(t, r.OpID, 2*time.Minute); op.Status != contract.StatusCompleted {
		t.Fatalf("rollback: %s %s", op.Status, op.Error)
	}
	if n := inFlightAtRestore.Load(); n != 0 {
		t.Errorf("%d write(s) the gate admitted before the fence were still in flight when the rollback wrote its first batch", n)
	}
}

// startGate serves a read-only gate in front of e's Chroma, following the
// fences in e's state bucket, until the test ends; app is a client that
// talks to Chroma through it.
func startGate(t *testing.T, e *env, opts ...gate.Option) (*gate.Gate, *chroma.Client) {
	t.Helper()
	fences, err := gate.WatchFences(t.Context(), e.nats.Assets.State, gate.FencesConn(e.nats.Conn))
	if err != nil {
		t.Fatal(err)
	}
	upstream, _ := url.Parse(e.chroma.URL)
	g := gate.New(upstream, fences, opts...)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gctx, stopGate := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- g.ServeListener(gctx, ln) }()
	t.Cleanup(func() { stopGate(); <-served })
	app, err := chroma.New("http://"+ln.Addr().String(), chroma.WithRetryMaxElapsed(0))
	if err != nil {
		t.Fatal(err)
	}
	return g, app
}
