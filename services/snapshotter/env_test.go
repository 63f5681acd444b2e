package snapshotter_test

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/archive"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// env is a real Chroma, an embedded JetStream server and a client connection.
type env struct {
	chroma *testenv.Chroma
	cc     *chroma.Client
	nats   *testenv.NATS
	subj   contract.Subjects
}

func newEnv(t *testing.T) *env {
	t.Helper()
	c := testenv.StartChroma(t)
	e := &env{
		chroma: c,
		cc:     c.Client(t, chroma.WithRetryMaxElapsed(3*time.Second)),
		nats:   testenv.StartNATS(t),
		subj:   contract.Subjects{Prefix: contract.DefaultPrefix},
	}
	// Runs after the services stop: every event the test caused matches its schema.
	t.Cleanup(func() { testenv.CheckAudit(t, e.nats.JS) })
	return e
}

func testLogger(t *testing.T) *slog.Logger { return testenv.Logger(t) }

// startService runs an instance on its own connection until the returned
// stop is called (or the test ends). stop simulates a dying worker: the
// context is cancelled and the connection closed without acking.
func (e *env) startService(t *testing.T, cfg snapshotter.Config) (stop func()) {
	t.Helper()
	return e.startServiceWith(t, cfg, e.cc)
}

// startServiceWith is startService with the instance talking to Chroma
// through cc.
func (e *env) startServiceWith(t *testing.T, cfg snapshotter.Config, cc *chroma.Client) (stop func()) {
	t.Helper()
	nc := e.nats.Connect(t)
	if cfg.ChromaURL == "" {
		cfg.ChromaURL = e.chroma.URL
	}
	svc, err := snapshotter.New(cfg, nc, e.subj, cc, testLogger(t))
	if err != nil {
		t.Fatalf("new snapshotter: %v", err)
	}
	stop = testenv.RunService(t, "snapshotter", nc, svc, false)
	waitForService(t, e.nats.Conn, e.subj.API("snapshot", "list"))
	return stop
}

func waitForService(t *testing.T, nc *nats.Conn, subject string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := nc.Request(subject, []byte(`{}`), time.Second); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no service answers on %s", subject)
}

// request sends a raw body and returns the reply, with the error code from
// the Nats-Service-Error-Code header (0 when none).
func (e *env) request(t *testing.T, subject string, body []byte) (int, []byte) {
	t.Helper()
	msg, err := e.nats.Conn.Request(subject, body, 30*time.Second)
	if err != nil {
		t.Fatalf("request %s: %v", subject, err)
	}
	code := 0
	if h := msg.Header.Get("Nats-Service-Error-Code"); h != "" {
		code, _ = strconv.Atoi(h)
	}
	return code, msg.Data
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// create asks for a snapshot and returns the reply, failing on an error reply.
func (e *env) create(t *testing.T, req contract.SnapshotCreateRequest) contract.SnapshotCreateReply {
	t.Helper()
	code, data := e.request(t, e.subj.API("snapshot", "create"), mustJSON(t, req))
	if code != 0 {
		t.Fatalf("create %+v: error %d: %s", req, code, data)
	}
	var r contract.SnapshotCreateReply
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatalf("decode create reply: %v", err)
	}
	return r
}

// waitOp waits until the operation has ended and returns it.
func (e *env) waitOp(t *testing.T, opID string, timeout time.Duration) contract.Operation {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		entry, err := e.nats.Assets.State.Get(t.Context(), "op."+opID)
		if err == nil {
			var op contract.Operation
			if err := json.Unmarshal(entry.Value(), &op); err != nil {
				t.Fatalf("decode operation: %v", err)
			}
			if op.Status == contract.StatusCompleted || op.Status == contract.StatusFailed {
				return op
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("operation %s did not end within %s", opID, timeout)
	return contract.Operation{}
}

func (e *env) manifest(t *testing.T, id string) (*contract.SnapshotManifest, bool) {
	t.Helper()
	entry, err := e.nats.Assets.Manifests.Get(t.Context(), id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, false
	}
	if err != nil {
		t.Fatalf("get manifest %s: %v", id, err)
	}
	var m contract.SnapshotManifest
	if err := json.Unmarshal(entry.Value(), &m); err != nil {
		t.Fatalf("decode manifest: %v", err)
	}
	return &m, true
}

// objects lists the archive objects in the store.
func (e *env) objects(t *testing.T) []string {
	t.Helper()
	list, err := e.nats.Assets.Snapshots.List(t.Context())
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil
	}
	if err != nil {
		t.Fatalf("list objects: %v", err)
	}
	var names []string
	for _, o := range list {
		names = append(names, o.Name)
	}
	return names
}

// readArchive opens a stored archive and returns every batch, checked to EOF.
func (e *env) readArchive(t *testing.T, object string) (*archive.Metadata, []*archive.Batch) {
	t.Helper()
	r, err := e.nats.Assets.Snapshots.Get(t.Context(), object)
	if err != nil {
		t.Fatalf("get object %s: %v", object, err)
	}
	defer r.Close()
	ar, err := archive.NewReader(r)
	if err != nil {
		t.Fatalf("open archive: %v", err)
	}
	var out []*archive.Batch
	for {
		b, err := ar.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read archive: %v", err)
		}
		out = append(out, b)
	}
	return ar.Metadata(), out
}

// auditEvents returns every event in the audit stream so far.
func (e *env) auditEvents(t *testing.T) []contract.AuditEvent {
	t.Helper()
	ctx := t.Context()
	info, err := e.nats.Assets.Audit.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := int(info.State.Msgs)
	if n == 0 {
		return nil
	}
	cons, err := e.nats.Assets.Audit.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var out []contract.AuditEvent
	for m := range batch.Messages() {
		var ev contract.AuditEvent
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			t.Fatalf("audit event %s is not JSON: %v", m.Data(), err)
		}
		out = append(out, ev)
	}
	return out
}

// findAudit returns the events with action and outcome.
func findAudit(evs []contract.AuditEvent, action, outcome string) []contract.AuditEvent {
	var out []contract.AuditEvent
	for _, ev := range evs {
		if ev.Action == action && ev.Outcome == outcome {
			out = append(out, ev)
		}
	}
	return out
}
