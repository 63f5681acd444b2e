package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/chromadb-rollback/chromadb-rollback/services/auditor"
	"github.com/chromadb-rollback/chromadb-rollback/services/restorer"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
	"github.com/chromadb-rollback/chromadb-rollback/services/watchdog"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// tenant holds every test's database (one database per test).
const tenant = "acme"

// replicas is the replica count every service asks for on the cluster.
const replicas = 3

var subj = contract.Subjects{Prefix: contract.DefaultPrefix}

// sharedChroma is the one Chroma server of the package's tests, started
// by TestMain (each test has its own database). A test may restart it.
var sharedChroma *testenv.Chroma

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "chromadb-rollback-cluster-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	logf, err := os.Create(filepath.Join(dir, "chroma.log"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer logf.Close()
	sharedChroma, err = testenv.LaunchChroma(context.Background(), filepath.Join(dir, "data"), 0, logf)
	if err != nil {
		fmt.Fprintln(os.Stderr, "start chroma:", err)
		return 1
	}
	defer sharedChroma.Close()
	return m.Run()
}

// stack is the 3-node cluster of deploy/nats with the project's assets
// created R3, the shared Chroma with the test's database, and an operator
// connection; services are added with snapshotter, restorer, watchdog and
// auditor.
type stack struct {
	t      *testing.T
	cl     *testenv.Cluster
	pw     testenv.DeployPasswords
	chroma *testenv.Chroma
	cc     *chroma.Client // straight to Chroma, for fixtures and checks
	db     string
	log    *slog.Logger

	op        *nats.Conn // the operator's
	js        jetstream.JetStream
	state     jetstream.KeyValue
	manifests jetstream.KeyValue
	objects   jetstream.ObjectStore
}

// newStack starts the cluster, seeds acme/<db> with collections x records
// (dim-dimensional embeddings) and creates the assets R3.
func newStack(t *testing.T, db string, collections, records, dim int) *stack {
	t.Helper()
	st := &stack{t: t, chroma: sharedChroma, db: db, log: testenv.Logger(t)}
	st.cc = sharedChroma.Client(t, chroma.WithRetryMaxElapsed(20*time.Second))
	// The server outlives the test: -count=N runs it again on the same one.
	if err := st.cc.DeleteDatabase(t.Context(), tenant, db); err != nil && !errors.Is(err, chroma.ErrNotFound) {
		t.Fatalf("delete database %s of an earlier run: %v", db, err)
	}
	if err := testenv.SeedWorkload(t.Context(), st.cc, tenant, db, collections, records, dim, 200); err != nil {
		t.Fatalf("seed: %v", err)
	}
	st.pw = testenv.SetDeployPasswords(t)
	st.cl = testenv.StartCluster(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	// A service's user creates the assets (operators may not).
	sjs, err := jetstream.New(st.cl.Connect(t, st.pw.Config("snapshotter")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bus.Bootstrap(ctx, sjs, bus.Config{Subjects: subj, Replicas: replicas}); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	st.op = st.cl.Connect(t, st.pw.Config("operator"))
	if st.js, err = jetstream.New(st.op); err != nil {
		t.Fatal(err)
	}
	kv, err := st.js.KeyValue(ctx, contract.BucketState)
	if err != nil {
		t.Fatal(err)
	}
	st.state = bus.RetryKeyValue(st.js, kv)
	if kv, err = st.js.KeyValue(ctx, contract.BucketManifests); err != nil {
		t.Fatal(err)
	}
	st.manifests = bus.RetryKeyValue(st.js, kv)
	obs, err := st.js.ObjectStore(ctx, contract.ObjectSnapshots)
	if err != nil {
		t.Fatal(err)
	}
	st.objects = bus.RetryObjectStore(st.js, contract.ObjectSnapshots, obs)
	// Runs after the services stopped (cleanups run last first): every
	// event the test caused matches its schema.
	t.Cleanup(func() {
		st.audit() // waits until the stream reads whole
		testenv.CheckAudit(t, st.js)
	})
	return st
}

// restart starts node i again and waits until every stream, bucket and the
// object store has its three replicas current again.
func (st *stack) restart(i int) {
	st.t.Helper()
	st.cl.Restart(st.t, i)
	for _, name := range assetStreams {
		waitReplicated(st.t, st.js, name, replicas)
	}
}

// killLeaderDuring kills the node leading stream while the request held
// by a trap goes on: the kill starts, the traps are freed 50 ms later, and
// the operation carries on during the shutdown and the election. It
// returns the killed node's index once the node is down.
func (st *stack) killLeaderDuring(stream string, traps ...*trap) int {
	st.t.Helper()
	leader := -1
	for deadline := time.Now().Add(10 * time.Second); leader < 0; time.Sleep(20 * time.Millisecond) {
		if leader = st.cl.StreamLeader(stream); leader < 0 && time.Now().After(deadline) {
			freeAll(traps...)
			st.t.Fatalf("stream %s has no leader to kill", stream)
		}
	}
	down := make(chan struct{})
	go func() {
		st.cl.Kill(leader)
		close(down)
	}()
	time.Sleep(50 * time.Millisecond)
	freeAll(traps...)
	<-down
	return leader
}

// proxy stands between one service instance and Chroma: it counts the
// requests by kind (the last path element of a POST, such as get, add,
// upsert, count; else the method and that element) and holds the one a
// test waits for.
type proxy struct {
	URL  string
	rp   *httputil.ReverseProxy
	dead atomic.Bool

	mu     sync.Mutex
	counts map[string]int
	traps  []*trap
	slow   map[string]time.Duration
}

// trap is the n-th request of a kind, as a test waits for it.
type trap struct {
	kind    string
	n       int
	hold    bool
	reached chan struct{} // closed when the request arrives
	release chan struct{} // closed when it may go on (hold)
	once    sync.Once
}

func newProxy(t *testing.T, upstream string) *proxy {
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{rp: httputil.NewSingleHostReverseProxy(u), counts: map[string]int{}, slow: map[string]time.Duration{}}
	p.rp.ErrorLog = nil
	srv := httptest.NewServer(p)
	t.Cleanup(func() {
		p.mu.Lock()
		for _, tr := range p.traps {
			tr.free()
		}
		p.mu.Unlock()
		srv.Close()
	})
	p.URL = srv.URL
	return p
}

func kindOf(r *http.Request) string {
	if r.Method == http.MethodPost {
		return path.Base(r.URL.Path)
	}
	return r.Method + " " + path.Base(r.URL.Path)
}

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p.dead.Load() {
		http.Error(w, "instance killed", http.StatusServiceUnavailable)
		return
	}
	kind := kindOf(r)
	p.mu.Lock()
	p.counts[kind]++
	n := p.counts[kind]
	var hit *trap
	for _, tr := range p.traps {
		if tr.kind == kind && tr.n == n {
			hit = tr
		}
	}
	delay := p.slow[kind]
	p.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	if hit != nil {
		close(hit.reached)
		if hit.hold {
			select {
			case <-hit.release:
			case <-r.Context().Done():
				return
			}
		}
		if p.dead.Load() {
			http.Error(w, "instance killed", http.StatusServiceUnavailable)
			return
		}
	}
	p.rp.ServeHTTP(w, r)
}

// at sets a trap for the n-th request of kind; with hold the request waits
// until the trap is released (or its client gives up).
func (p *proxy) at(kind string, n int, hold bool) *trap {
	tr := &trap{kind: kind, n: n, hold: hold, reached: make(chan struct{}), release: make(chan struct{})}
	p.mu.Lock()
	p.traps = append(p.traps, tr)
	p.mu.Unlock()
	return tr
}

// slowDown delays every request of kind by d, so that a fault lands while
// an operation streams rather than after it.
func (p *proxy) slowDown(kind string, d time.Duration) {
	p.mu.Lock()
	p.slow[kind] = d
	p.mu.Unlock()
}

// count is how many requests of kind passed.
func (p *proxy) count(kind string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts[kind]
}

// free lets a held request go on.
func (tr *trap) free() { tr.once.Do(func() { close(tr.release) }) }

// freeAll lets the requests of every trap go on (a trap not reached yet
// then does not hold its request).
func freeAll(traps ...*trap) {
	for _, tr := range traps {
		tr.free()
	}
}

// firstTrap waits for whichever of traps is reached first and returns its
// index, -1 after timeout.
func firstTrap(timeout time.Duration, traps ...*trap) int {
	deadline := time.After(timeout)
	for {
		for i, tr := range traps {
			select {
			case <-tr.reached:
				return i
			default:
			}
		}
		select {
		case <-deadline:
			return -1
		case <-time.After(10 * time.Millisecond):
		}
	}
}

type runner interface{ Run(context.Context) error }

// instance is one service instance with its own NATS connection (its
// service's user) and its own proxy to Chroma.
type instance struct {
	name   string
	proxy  *proxy
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// kill stops the instance as a crash would, as far as the others can
// tell: its proxy refuses every request from now on (it can no longer
// touch Chroma), its connection is closed (it can no longer ack, write or
// audit), then its goroutines are stopped.
func (in *instance) kill(t *testing.T) {
	in.once.Do(func() {
		in.proxy.dead.Store(true)
		in.nc.Close()
		in.cancel()
		select {
		case err := <-in.done:
			if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, nats.ErrConnectionClosed) {
				t.Logf("%s ended: %v", in.name, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("%s did not stop within 30s", in.name)
		}
	})
}

// stop stops the instance at the end of the test.
func (in *instance) stop(t *testing.T) {
	in.once.Do(func() {
		in.cancel()
		select {
		case err := <-in.done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("%s run: %v", in.name, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("%s did not stop within 30s", in.name)
		}
		in.nc.Close()
	})
}

// start runs a service instance until the test ends.
func (st *stack) start(name, user string, mk func(nc *nats.Conn, chromaURL string, cc *chroma.Client, log *slog.Logger) (runner, error)) *instance {
	st.t.Helper()
	p := newProxy(st.t, st.chroma.URL)
	nc := st.cl.Connect(st.t, st.pw.Config(user), nats.Name(name))
	log := st.log.With("instance", name)
	opts := []chroma.Option{chroma.WithLogger(log)}
	if user == "watchdog" {
		opts = append(opts, chroma.WithRetryMaxElapsed(0)) // it counts heartbeat failures itself
	}
	cc, err := chroma.New(p.URL, opts...)
	if err != nil {
		st.t.Fatal(err)
	}
	svc, err := mk(nc, p.URL, cc, log)
	if err != nil {
		st.t.Fatalf("new %s: %v", name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{name: name, proxy: p, nc: nc, cancel: cancel, done: make(chan error, 1)}
	go func() { in.done <- svc.Run(ctx) }()
	st.t.Cleanup(func() { in.stop(st.t) })
	return in
}

func (st *stack) snapshotter(name string, cfg snapshotter.Config) *instance {
	in := st.start(name, "snapshotter", func(nc *nats.Conn, u string, cc *chroma.Client, log *slog.Logger) (runner, error) {
		cfg.ChromaURL, cfg.Instance, cfg.Replicas = u, name, replicas
		return snapshotter.New(cfg, nc, subj, cc, log)
	})
	st.waitService(subj.API("snapshot", "list"))
	return in
}

func (st *stack) restorer(name string, cfg restorer.Config) *instance {
	in := st.start(name, "restorer", func(nc *nats.Conn, u string, cc *chroma.Client, log *slog.Logger) (runner, error) {
		cfg.ChromaURL, cfg.Instance, cfg.Replicas = u, name, replicas
		return restorer.New(cfg, nc, subj, cc, log)
	})
	st.waitService(subj.API("rollback", "status"))
	return in
}

func (st *stack) watchdog(name string, cfg watchdog.Config) *instance {
	in := st.start(name, "watchdog", func(nc *nats.Conn, u string, cc *chroma.Client, log *slog.Logger) (runner, error) {
		cfg.ChromaURL, cfg.Instance, cfg.Replicas = u, name, replicas
		return watchdog.New(cfg, nc, subj, cc, log)
	})
	st.waitService(subj.API("status"))
	return in
}

// auditor runs an auditor with its own durable consumer (auditor-0,
// auditor-1: the names deploy/nats/accounts.conf protects) and its own
// trail in dir.
func (st *stack) auditor(consumer, dir string) *instance {
	in := st.start(consumer, "auditor", func(nc *nats.Conn, _ string, _ *chroma.Client, log *slog.Logger) (runner, error) {
		return auditor.New(auditor.Config{DataDir: dir, Instance: consumer, Consumer: consumer, Replicas: replicas}, nc, subj, log)
	})
	st.waitService(subj.API("audit", "health"))
	return in
}

// waitService waits until some instance answers on subject.
func (st *stack) waitService(subject string) {
	st.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := st.op.Request(subject, []byte(`{}`), time.Second); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	st.t.Fatalf("no service answers on %s", subject)
}

// request sends req as the operator and returns the error code (0 for a
// reply) and the body.
func (st *stack) request(subject string, req any, timeout time.Duration) (int, []byte) {
	st.t.Helper()
	data, err := json.Marshal(req)
	if err != nil {
		st.t.Fatal(err)
	}
	msg, err := st.op.Request(subject, data, timeout)
	if err != nil {
		st.t.Fatalf("request %s: %v", subject, err)
	}
	code := 0
	if c := msg.Header.Get("Nats-Service-Error-Code"); c != "" {
		fmt.Sscan(c, &code)
	}
	return code, msg.Data
}

// createSnapshot asks for a snapshot of the test's database.
func (st *stack) createSnapshot(name string) contract.SnapshotCreateReply {
	st.t.Helper()
	code, data := st.request(subj.API("snapshot", "create"), contract.SnapshotCreateRequest{Name: name, Tenant: tenant, Database: st.db, Actor: "test"}, time.Minute)
	var reply contract.SnapshotCreateReply
	if code != 0 || json.Unmarshal(data, &reply) != nil || reply.OpID == "" {
		st.t.Fatalf("snapshot create %s: %d %s", name, code, data)
	}
	return reply
}

// startRollback asks for a confirmed rollback of req (actor set here).
func (st *stack) startRollback(req contract.RollbackRequest) contract.RollbackReply {
	st.t.Helper()
	req.Confirm, req.Actor = true, "test"
	code, data := st.request(subj.API("rollback", "start"), req, 2*time.Minute)
	var reply contract.RollbackReply
	if code != 0 || json.Unmarshal(data, &reply) != nil || reply.OpID == "" {
		st.t.Fatalf("rollback start: %d %s", code, data)
	}
	return reply
}

// operation reads op.<opID>; nil when absent.
func (st *stack) operation(opID string) *contract.Operation {
	st.t.Helper()
	e, err := st.state.Get(context.Background(), contract.OperationKey(opID))
	if bus.IsNotFound(err) {
		return nil
	}
	if err != nil {
		st.t.Fatalf("read operation %s: %v", opID, err)
	}
	var op contract.Operation
	if err := json.Unmarshal(e.Value(), &op); err != nil {
		st.t.Fatal(err)
	}
	return &op
}

// waitOp waits until the operation ends and returns it.
func (st *stack) waitOp(opID string, timeout time.Duration) contract.Operation {
	st.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		op := st.operation(opID)
		if op != nil {
			switch op.Status {
			case contract.StatusCompleted, contract.StatusFailed, contract.StatusCancelled:
				return *op
			}
		}
		if time.Now().After(deadline) {
			st.t.Fatalf("operation %s did not end within %s: %+v", opID, timeout, op)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// manifest reads a snapshot's manifest.
func (st *stack) manifest(id string) (*contract.SnapshotManifest, bool) {
	st.t.Helper()
	e, err := st.manifests.Get(context.Background(), id)
	if bus.IsNotFound(err) {
		return nil, false
	}
	if err != nil {
		st.t.Fatalf("read manifest %s: %v", id, err)
	}
	var m contract.SnapshotManifest
	if err := json.Unmarshal(e.Value(), &m); err != nil {
		st.t.Fatal(err)
	}
	return &m, true
}

// manifestObjects lists the objects the manifests name, sorted.
func (st *stack) manifestObjects() []string {
	st.t.Helper()
	keys, err := st.manifests.Keys(context.Background())
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		st.t.Fatal(err)
	}
	var out []string
	for _, k := range keys {
		if m, ok := st.manifest(k); ok {
			out = append(out, m.Object)
		}
	}
	slices.Sort(out)
	return out
}

// objectNames lists the objects in the store, sorted.
func (st *stack) objectNames() []string {
	st.t.Helper()
	infos, err := st.objects.List(context.Background())
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		st.t.Fatal(err)
	}
	var out []string
	for _, i := range infos {
		out = append(out, i.Name)
	}
	slices.Sort(out)
	return out
}

// checkStore fails the test unless the object store holds exactly the
// objects the manifests name: no orphan, nothing missing, and no chunks
// that no object names.
func (st *stack) checkStore(what string) {
	st.t.Helper()
	if objs, want := st.objectNames(), st.manifestObjects(); !slices.Equal(objs, want) {
		st.t.Errorf("%s: objects %v, the manifests name %v", what, objs, want)
	}
	if orphans, err := bus.OrphanChunks(context.Background(), st.js, contract.ObjectSnapshots); err != nil || len(orphans) > 0 {
		st.t.Errorf("%s: chunks no object names: %v (%v)", what, orphans, err)
	}
}

// verify asks the snapshotter to read the snapshot's archive back in full.
func (st *stack) verify(id string) {
	st.t.Helper()
	code, data := st.request(subj.API("snapshot", "verify"), contract.SnapshotRef{Snapshot: id}, time.Minute)
	var rep contract.VerifyReport
	if code != 0 || json.Unmarshal(data, &rep) != nil || !rep.OK {
		st.t.Errorf("verify %s: %d %s", id, code, data)
	}
}

// dbState is every collection of the test's database: its metadata and
// all its records in get order.
type dbState map[string]collState

type collState struct {
	Metadata record.Metadata
	Records  *record.Batch
}

func (st *stack) dump() dbState {
	st.t.Helper()
	ctx := context.Background()
	colls, err := st.cc.ListCollections(ctx, tenant, st.db)
	if err != nil {
		st.t.Fatal(err)
	}
	out := dbState{}
	for _, c := range colls {
		b, err := testenv.ReadAll(ctx, st.cc, tenant, st.db, c.ID, 500)
		if err != nil {
			st.t.Fatal(err)
		}
		out[c.Name] = collState{Metadata: c.Metadata, Records: b}
	}
	return out
}

func (s dbState) records() int {
	n := 0
	for _, c := range s {
		n += c.Records.Len()
	}
	return n
}

// diff says how got differs from want, "" when every collection holds
// the same metadata and the same records (ids, embeddings bit for bit,
// documents, metadata, uris) in the same order.
func (s dbState) diff(want dbState) string {
	var out []string
	for name, w := range want {
		g, ok := s[name]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("collection %q missing", name))
		case !reflect.DeepEqual(g.Metadata, w.Metadata):
			out = append(out, fmt.Sprintf("collection %q: metadata %v, want %v", name, g.Metadata, w.Metadata))
		case !reflect.DeepEqual(g.Records, w.Records):
			out = append(out, fmt.Sprintf("collection %q: %d records differ from the %d wanted", name, g.Records.Len(), w.Records.Len()))
		}
	}
	for name := range s {
		if _, ok := want[name]; !ok {
			out = append(out, fmt.Sprintf("extra collection %q", name))
		}
	}
	slices.Sort(out)
	return strings.Join(out, "; ")
}

// damage is a bad migration: a fifth of the first collection deleted, the
// documents of ten records of the second changed.
func (st *stack) damage() {
	st.t.Helper()
	ctx := context.Background()
	s := st.dump()
	c0, err := st.cc.GetCollection(ctx, tenant, st.db, "workload_00")
	if err != nil {
		st.t.Fatal(err)
	}
	ids := s["workload_00"].Records.IDs
	if err := st.cc.Delete(ctx, tenant, st.db, c0.ID, ids[:len(ids)/5]); err != nil {
		st.t.Fatal(err)
	}
	if w1, ok := s["workload_01"]; ok {
		c1, err := st.cc.GetCollection(ctx, tenant, st.db, "workload_01")
		if err != nil {
			st.t.Fatal(err)
		}
		b := w1.Records
		n := min(10, b.Len())
		changed := &record.Batch{IDs: b.IDs[:n], Embeddings: b.Embeddings[:n], Metadatas: b.Metadatas[:n], URIs: b.URIs[:n]}
		for i := range n {
			doc := fmt.Sprintf("damaged %d", i)
			changed.Documents = append(changed.Documents, &doc)
		}
		if err := st.cc.Upsert(ctx, tenant, st.db, c1.ID, changed); err != nil {
			st.t.Fatal(err)
		}
	}
	if st.dump().diff(s) == "" {
		st.t.Fatal("the damage changed nothing")
	}
}

// audit reads the whole audit stream with an ordered consumer, trying
// again when a read comes up short: right after a node rejoined, the
// stream's leadership can still move, taking a new consumer with it.
func (st *stack) audit() []testenv.AuditMessage {
	st.t.Helper()
	for try := 1; ; try++ {
		msgs, err := readAudit(st.js)
		if err == nil {
			return msgs
		}
		if try == 5 {
			st.t.Fatalf("read the audit stream: %v", err)
		}
		st.t.Logf("read the audit stream: %v; trying again", err)
		time.Sleep(time.Second)
	}
}

func readAudit(js jetstream.JetStream) ([]testenv.AuditMessage, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, contract.StreamAudit)
	if err != nil {
		return nil, err
	}
	want := int(stream.CachedInfo().State.Msgs)
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, err
	}
	var out []testenv.AuditMessage
	for len(out) < want {
		batch, err := cons.Fetch(want-len(out), jetstream.FetchMaxWait(3*time.Second))
		if err != nil {
			return nil, err
		}
		got := len(out)
		for m := range batch.Messages() {
			am := testenv.AuditMessage{Subject: m.Subject(), Data: m.Data()}
			if md, err := m.Metadata(); err == nil {
				am.Seq = md.Sequence.Stream
			}
			if err := json.Unmarshal(m.Data(), &am.Event); err != nil {
				return nil, fmt.Errorf("audit message %d on %s: %w", am.Seq, am.Subject, err)
			}
			out = append(out, am)
		}
		if len(out) == got {
			return nil, fmt.Errorf("read %d of %d audit messages: %v", got, want, batch.Error())
		}
	}
	return out, nil
}

// events counts the audit events of service and action with outcome for
// the snapshot or operation id (either may be "" to match any).
func events(msgs []testenv.AuditMessage, service, action, outcome, snapshotID, opID string) int {
	n := 0
	for _, m := range msgs {
		e := m.Event
		if e.Service == service && e.Action == action && e.Outcome == outcome &&
			(snapshotID == "" || e.SnapshotID == snapshotID) && (opID == "" || e.OpID == opID) {
			n++
		}
	}
	return n
}

// logAudit logs the audit stream, for a failed test.
func logAudit(t *testing.T, msgs []testenv.AuditMessage) {
	t.Helper()
	for _, m := range msgs {
		e := m.Event
		t.Logf("audit %d: %s %s %s snapshot=%s op=%s %s %s %v", m.Seq, e.Service, e.Action, e.Outcome, e.SnapshotID, e.OpID, e.Reason, e.Error, e.Figures)
	}
}
