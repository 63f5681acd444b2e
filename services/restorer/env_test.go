package restorer_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/archive"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/chromadb-rollback/chromadb-rollback/services/restorer"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// env is a real Chroma, an embedded JetStream server, a snapshotter for
// snapshots and safety snapshots, and a client connection.
type env struct {
	chroma *testenv.Chroma
	cc     *chroma.Client
	nats   *testenv.NATS
	subj   contract.Subjects
	// splitMin, when set, is the restorers' restorer.SetSplitMin.
	splitMin int
	// lookupTimeout, when set, is the restorers' restorer.SetLookupTimeout.
	lookupTimeout time.Duration
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

// seeded is newEnv with the full fixture and a snapshotter whose small pages
// give collections several archive batches.
func seeded(t *testing.T) *env {
	t.Helper()
	e := newEnv(t)
	if _, err := testenv.SeedFixture(t.Context(), e.cc); err != nil {
		t.Fatalf("seed fixture: %v", err)
	}
	e.startSnapshotter(t)
	return e
}

func testLogger(t *testing.T) *slog.Logger { return testenv.Logger(t) }

// run starts a service on its own connection until the returned stop is
// called (or the test ends). stop simulates a dying worker: the context is
// cancelled and the connection closed without acking.
func (e *env) run(t *testing.T, name string, start func(nc *nats.Conn) (interface{ Run(context.Context) error }, error)) (stop func()) {
	t.Helper()
	nc := e.nats.Connect(t)
	svc, err := start(nc)
	if err != nil {
		t.Fatalf("new %s: %v", name, err)
	}
	stop = testenv.RunService(t, name, nc, svc, false)
	return stop
}

func (e *env) startSnapshotter(t *testing.T) {
	t.Helper()
	e.run(t, "snapshotter", func(nc *nats.Conn) (interface{ Run(context.Context) error }, error) {
		return snapshotter.New(snapshotter.Config{ChromaURL: e.chroma.URL, MaxPageRecords: 64, Instance: "snapshotter"}, nc, e.subj, e.cc, testLogger(t))
	})
	waitForService(t, e.nats.Conn, e.subj.API("snapshot", "list"))
}

// startRestorer runs a restorer calling hook (if not nil) at its hook points.
// holdFirstBatch is a hook that holds a rollback before its first batch
// is written, the first time it gets there: reached receives then, and the
// rollback goes on once release is closed.
func holdFirstBatch() (hook func(context.Context, restorer.HookPoint) error, reached <-chan struct{}, release chan struct{}) {
	at := make(chan struct{})
	release = make(chan struct{})
	return func(ctx context.Context, p restorer.HookPoint) error {
		if p.Name == "batch" && p.Batch == 1 {
			select {
			case at <- struct{}{}:
				select {
				case <-release:
				case <-ctx.Done():
					return ctx.Err()
				}
			default: // only the first time
			}
		}
		return nil
	}, at, release
}

// awaitFirstBatch waits until the rollback held by holdFirstBatch reaches
// its first batch.
func awaitFirstBatch(t *testing.T, reached <-chan struct{}) {
	t.Helper()
	select {
	case <-reached:
	case <-time.After(time.Minute):
		t.Fatal("the rollback never reached its first batch")
	}
}

func (e *env) startRestorer(t *testing.T, cfg restorer.Config, hook func(context.Context, restorer.HookPoint) error) (stop func()) {
	t.Helper()
	if cfg.ChromaURL == "" {
		cfg.ChromaURL = e.chroma.URL
	}
	if cfg.AckWait == 0 {
		cfg.AckWait = 2 * time.Second
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = 5 * time.Second
	}
	stop = e.run(t, "restorer "+cfg.Instance, func(nc *nats.Conn) (interface{ Run(context.Context) error }, error) {
		svc, err := restorer.New(cfg, nc, e.subj, e.cc, testLogger(t))
		if err == nil && hook != nil {
			restorer.SetHook(svc, hook)
		}
		if err == nil && e.splitMin > 0 {
			restorer.SetSplitMin(svc, e.splitMin)
		}
		if err == nil && e.lookupTimeout > 0 {
			restorer.SetLookupTimeout(svc, e.lookupTimeout)
		}
		return svc, err
	})
	waitForService(t, e.nats.Conn, e.subj.API("rollback", "status"))
	return stop
}

func waitForService(t *testing.T, nc *nats.Conn, subject string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := nc.Request(subject, []byte(`{}`), time.Second); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no service answers on %s", subject)
}

// request sends a body and returns the reply with the error code from the
// Nats-Service-Error-Code header (0 when none).
func (e *env) request(t *testing.T, subject string, body any) (int, []byte) {
	t.Helper()
	data, ok := body.([]byte)
	if !ok {
		var err error
		if data, err = json.Marshal(body); err != nil {
			t.Fatal(err)
		}
	}
	msg, err := e.nats.Conn.Request(subject, data, 60*time.Second)
	if err != nil {
		t.Fatalf("request %s: %v", subject, err)
	}
	code := 0
	if h := msg.Header.Get("Nats-Service-Error-Code"); h != "" {
		code, _ = strconv.Atoi(h)
	}
	return code, msg.Data
}

// snapshot takes a snapshot and waits for it.
func (e *env) snapshot(t *testing.T, tenant, db, name string) string {
	t.Helper()
	code, data := e.request(t, e.subj.API("snapshot", "create"), contract.SnapshotCreateRequest{Name: name, Tenant: tenant, Database: db, Actor: "test"})
	if code != 0 {
		t.Fatalf("snapshot: %d %s", code, data)
	}
	var r contract.SnapshotCreateReply
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	if op := e.waitOp(t, r.OpID, time.Minute); op.Status != contract.StatusCompleted {
		t.Fatalf("snapshot %s: %s %s", name, op.Status, op.Error)
	}
	return r.SnapshotID
}

// plan asks for a plan and fails on an error reply.
func (e *env) plan(t *testing.T, req contract.RollbackRequest) *contract.RollbackPlan {
	t.Helper()
	code, data := e.request(t, e.subj.API("rollback", "plan"), req)
	if code != 0 {
		t.Fatalf("plan %+v: error %d: %s", req, code, data)
	}
	var r contract.RollbackReply
	if err := json.Unmarshal(data, &r); err != nil || r.Plan == nil {
		t.Fatalf("plan reply %s: %v", data, err)
	}
	return r.Plan
}

// start starts a rollback (confirmed unless the request says otherwise)
// and returns the reply, failing on an error reply.
func (e *env) start(t *testing.T, req contract.RollbackRequest) contract.RollbackReply {
	t.Helper()
	if req.Actor == "" {
		req.Actor = "test"
	}
	code, data := e.request(t, e.subj.API("rollback", "start"), req)
	if code != 0 {
		t.Fatalf("start %+v: error %d: %s", req, code, data)
	}
	var r contract.RollbackReply
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatalf("start reply %s: %v", data, err)
	}
	return r
}

// rollback starts a confirmed rollback and waits for it to complete.
func (e *env) rollback(t *testing.T, req contract.RollbackRequest) contract.Operation {
	t.Helper()
	req.Confirm = true
	r := e.start(t, req)
	if r.OpID == "" {
		t.Fatalf("start did not start: %+v", r)
	}
	op := e.waitOp(t, r.OpID, 2*time.Minute)
	if op.Status != contract.StatusCompleted {
		t.Fatalf("rollback %s ended %s: %s (report %s)", r.OpID, op.Status, op.Error, mustJSON(t, op.Restore))
	}
	return op
}

// waitOp waits until the operation has ended and returns it.
func (e *env) waitOp(t *testing.T, opID string, timeout time.Duration) contract.Operation {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if op, ok := e.op(t, opID); ok {
			switch op.Status {
			case contract.StatusCompleted, contract.StatusFailed, contract.StatusCancelled:
				return op
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	op, _ := e.op(t, opID)
	t.Fatalf("operation %s did not end within %s: %+v", opID, timeout, op)
	return contract.Operation{}
}

func (e *env) op(t *testing.T, opID string) (contract.Operation, bool) {
	t.Helper()
	entry, err := e.nats.Assets.State.Get(context.Background(), contract.OperationKey(opID))
	if err != nil {
		return contract.Operation{}, false
	}
	var op contract.Operation
	if err := json.Unmarshal(entry.Value(), &op); err != nil {
		t.Fatalf("decode operation: %v", err)
	}
	return op, true
}

// stateKeys lists the keys of the state bucket with a prefix.
func (e *env) stateKeys(t *testing.T, prefix string) []string {
	t.Helper()
	keys, err := e.nats.Assets.State.Keys(t.Context())
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range keys {
		if strings.HasPrefix(k, prefix) {
			out = append(out, k)
		}
	}
	return out
}

// assertReleased checks that no lease, fence or checkpoint is left. The
// fence and lease go before the operation ends; the checkpoint right after.
func (e *env) assertReleased(t *testing.T) {
	t.Helper()
	for _, p := range []string{"lease.", "fence."} {
		if keys := e.stateKeys(t, p); len(keys) > 0 {
			t.Errorf("state keys left behind: %v", keys)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		keys := append(e.stateKeys(t, "checkpoint."), e.stateKeys(t, "cancel.")...)
		if len(keys) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("state keys left behind: %v", keys)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// dbState is the full content of a database: every collection by name.
type dbState map[string]*collState

type collState struct {
	ID            string
	Metadata      record.Metadata
	Configuration json.RawMessage
	Space         string
	Records       *record.Batch
}

// dump reads every collection of a database, every record with every field.
func dump(t *testing.T, cc *chroma.Client, tenant, db string) dbState {
	t.Helper()
	ctx := t.Context()
	cols, err := cc.ListCollections(ctx, tenant, db)
	if err != nil {
		t.Fatalf("list collections of %s/%s: %v", tenant, db, err)
	}
	out := dbState{}
	for _, c := range cols {
		recs, err := testenv.ReadAll(ctx, cc, tenant, db, c.ID, 1000)
		if err != nil {
			t.Fatalf("read %s/%s/%s: %v", tenant, db, c.Name, err)
		}
		var cfg struct {
			HNSW struct{ Space string } `json:"hnsw"`
		}
		_ = json.Unmarshal(c.Configuration, &cfg)
		out[c.Name] = &collState{ID: c.ID, Metadata: c.Metadata, Configuration: c.Configuration, Space: cfg.HNSW.Space, Records: recs}
	}
	return out
}

func (e *env) dump(t *testing.T, tenant, db string) dbState { return dump(t, e.cc, tenant, db) }

// names lists a state's collection names, sorted.
func (s dbState) names() []string {
	var out []string
	for n := range s {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// compareDB checks that got holds exactly the collections of want with the
// same metadata, configuration and records (as sets of ids), every field
// equal; embeddings bit-exact except in cosine spaces. rename maps a want
// name to its name in got.
func compareDB(t *testing.T, label string, got, want dbState, rename map[string]string) {
	t.Helper()
	var wantNames []string
	for _, n := range want.names() {
		if r, ok := rename[n]; ok {
			n = r
		}
		wantNames = append(wantNames, n)
	}
	sort.Strings(wantNames)
	if g := got.names(); !reflect.DeepEqual(g, wantNames) {
		t.Errorf("%s: collections %q, want %q", label, g, wantNames)
	}
	for name, w := range want {
		gname := name
		if r, ok := rename[name]; ok {
			gname = r
		}
		g, ok := got[gname]
		if !ok {
			continue
		}
		compareCollection(t, label+"/"+gname, g, w)
	}
}

func compareCollection(t *testing.T, label string, got, want *collState) {
	t.Helper()
	if !reflect.DeepEqual(normMeta(got.Metadata), normMeta(want.Metadata)) {
		t.Errorf("%s: metadata %v, want %v", label, got.Metadata, want.Metadata)
	}
	if !jsonEqual(got.Configuration, want.Configuration) {
		t.Errorf("%s: configuration %s, want %s", label, got.Configuration, want.Configuration)
	}
	g, w := got.Records, want.Records
	if g.Len() != w.Len() {
		t.Errorf("%s: %d records, want %d", label, g.Len(), w.Len())
	}
	seen := map[string]bool{}
	idx := map[string]int{}
	for i, id := range g.IDs {
		if seen[id] {
			t.Errorf("%s: id %q appears twice", label, id)
		}
		seen[id] = true
		idx[id] = i
	}
	bad := 0
	report := func(format string, args ...any) {
		bad++
		if bad <= 5 {
			t.Errorf(label+": "+format, args...)
		}
	}
	for i, id := range w.IDs {
		k, ok := idx[id]
		if !ok {
			report("record %q missing", id)
			continue
		}
		if !reflect.DeepEqual(g.Documents[k], w.Documents[i]) {
			report("record %q: document %v, want %v", id, deref(g.Documents[k]), deref(w.Documents[i]))
		}
		if !reflect.DeepEqual(g.URIs[k], w.URIs[i]) {
			report("record %q: uri %v, want %v", id, deref(g.URIs[k]), deref(w.URIs[i]))
		}
		if !reflect.DeepEqual(normMeta(g.Metadatas[k]), normMeta(w.Metadatas[i])) {
			report("record %q: metadata %v, want %v", id, g.Metadatas[k], w.Metadatas[i])
		}
		if d := embeddingDiff(g.Embeddings[k], w.Embeddings[i], want.Space == "cosine"); d != "" {
			report("record %q: embedding %s", id, d)
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d differences in all", label, bad)
	}
}

func embeddingDiff(got, want []float32, cosine bool) string {
	if (got == nil) != (want == nil) || len(got) != len(want) {
		return fmt.Sprintf("has %d values (nil %v), want %d (nil %v)", len(got), got == nil, len(want), want == nil)
	}
	scale := 0.0
	for _, v := range want {
		scale = max(scale, math.Abs(float64(v)))
	}
	for i := range want {
		if math.Float32bits(got[i]) == math.Float32bits(want[i]) {
			continue
		}
		if cosine && math.Abs(float64(got[i])-float64(want[i])) <= 1e-6*scale {
			continue
		}
		return fmt.Sprintf("value %d is %v, want %v", i, got[i], want[i])
	}
	return ""
}

func deref(s *string) any {
	if s == nil {
		return nil
	}
	return *s
}

func normMeta(m record.Metadata) record.Metadata {
	if len(m) == 0 {
		return nil
	}
	return m
}

func jsonEqual(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return string(a) == string(b)
	}
	return reflect.DeepEqual(x, y)
}

// archiveBatches reads a snapshot's archive and returns, per collection
// name, the ids of each batch by batch name.
func (e *env) archiveBatches(t *testing.T, snapshotID string) map[string]map[string][]string {
	t.Helper()
	m := e.storedManifest(t, snapshotID)
	obj, err := e.nats.Assets.Snapshots.Get(t.Context(), m.Object)
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	ar, err := archive.NewReader(obj)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string][]string{}
	for {
		b, err := ar.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		name := ar.Metadata().Collections[b.Collection].Name
		if out[name] == nil {
			out[name] = map[string][]string{}
		}
		out[name][b.Name] = b.Records.IDs
	}
}

// clone deep-copies a state's maps so a test can edit its expectation.
func (s dbState) clone() dbState {
	out := dbState{}
	for k, v := range s {
		c := *v
		out[k] = &c
	}
	return out
}

// requestError sends a request that must fail and returns its error body.
func (e *env) requestError(t *testing.T, subject string, body any) (int, contract.ErrorBody) {
	t.Helper()
	code, data := e.request(t, subject, body)
	var eb contract.ErrorBody
	if code == 0 {
		t.Errorf("request to %s succeeded: %s", subject, data)
		return 0, eb
	}
	if err := json.Unmarshal(data, &eb); err != nil || eb.Code != code {
		t.Errorf("error body %s (code %d): %v", data, code, err)
	}
	return code, eb
}

// storedManifest reads a snapshot's manifest from KV.
func (e *env) storedManifest(t *testing.T, snapshotID string) *contract.SnapshotManifest {
	t.Helper()
	entry, err := e.nats.Assets.Manifests.Get(t.Context(), snapshotID)
	if err != nil {
		t.Fatal(err)
	}
	var m contract.SnapshotManifest
	if err := json.Unmarshal(entry.Value(), &m); err != nil {
		t.Fatal(err)
	}
	return &m
}

// snapshotThenDamage snapshots acme/prod as "pre_migration", then damages it
// as a bad migration does (damage): it returns the state before, the
// snapshot's id and the damaged state.
func (e *env) snapshotThenDamage(t *testing.T) (pre dbState, snap string, damaged dbState) {
	t.Helper()
	pre = e.dump(t, "acme", "prod")
	snap = e.snapshot(t, "acme", "prod", "pre_migration")
	damage(t, e.cc, 1)
	return pre, snap, e.dump(t, "acme", "prod")
}
