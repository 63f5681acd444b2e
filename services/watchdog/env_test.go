package watchdog_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/chromadb-rollback/chromadb-rollback/services/restorer"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
	"github.com/chromadb-rollback/chromadb-rollback/services/watchdog"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// shared is one Chroma server for the tests that do not stop it; each
// test works in its own tenant and has its own JetStream server.
var shared struct {
	once sync.Once
	c    *testenv.Chroma
	err  error
	dir  string
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.c != nil {
		_ = shared.c.Close()
	}
	if shared.dir != "" {
		_ = os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

func sharedChroma(t *testing.T) *testenv.Chroma {
	t.Helper()
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("", "watchdog-chroma-")
		if shared.err != nil {
			return
		}
		shared.c, shared.err = testenv.LaunchChroma(context.Background(), filepath.Join(shared.dir, "data"), 0, nil)
	})
	if shared.err != nil {
		t.Fatalf("start chroma: %v", shared.err)
	}
	return shared.c
}

// env is a Chroma server, an embedded JetStream server and the services a
// test runs in-process.
type env struct {
	chroma *testenv.Chroma
	cc     *chroma.Client
	nats   *testenv.NATS
	subj   contract.Subjects
	suffix string
}

// envs numbers the environments, so tests repeated in one process
// (-count) seed fresh tenants in the shared Chroma.
var envs atomic.Int64

// tenant is a tenant name unique to this environment.
func (e *env) tenant(base string) string { return base + e.suffix }

// newEnv uses the shared Chroma server, or its own when own is set (a test
// that stops it).
func newEnv(t *testing.T, own bool) *env {
	t.Helper()
	var c *testenv.Chroma
	if own {
		c = testenv.StartChroma(t)
	} else {
		c = sharedChroma(t)
	}
	e := &env{
		chroma: c,
		cc:     c.Client(t, chroma.WithRetryMaxElapsed(5*time.Second)),
		nats:   testenv.StartNATS(t),
		subj:   contract.Subjects{Prefix: contract.DefaultPrefix},
		suffix: fmt.Sprintf("_%d", envs.Add(1)),
	}
	// Runs after the services stop: every event the test caused matches its schema.
	t.Cleanup(func() { testenv.CheckAudit(t, e.nats.JS) })
	return e
}

func testLogger(t *testing.T) *slog.Logger { return testenv.Logger(t) }

type runner interface{ Run(context.Context) error }

// run starts a service on its own connection until stop is called (or the
// test ends). stop is a kill: the context is cancelled and the connection
// closed, nothing acknowledged.
func (e *env) run(t *testing.T, name string, svc func(nc *nats.Conn) (runner, error)) (stop func()) {
	t.Helper()
	nc := e.nats.Connect(t)
	s, err := svc(nc)
	if err != nil {
		t.Fatalf("new %s: %v", name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			nc.Close()
			select {
			case err := <-done:
				if err != nil && !errors.Is(err, context.Canceled) {
					t.Errorf("%s run: %v", name, err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("%s did not stop within 30s", name)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// services starts a snapshotter and a restorer.
func (e *env) services(t *testing.T) {
	t.Helper()
	e.run(t, "snapshotter", func(nc *nats.Conn) (runner, error) {
		return snapshotter.New(snapshotter.Config{ChromaURL: e.chroma.URL, Instance: "snapshotter"}, nc, e.subj, e.cc, testLogger(t))
	})
	e.run(t, "restorer", func(nc *nats.Conn) (runner, error) {
		return restorer.New(restorer.Config{ChromaURL: e.chroma.URL, AckWait: 2 * time.Second, LeaseTTL: 5 * time.Second, Instance: "restorer"},
			nc, e.subj, e.cc, testLogger(t))
	})
	waitForService(t, e.nats.Conn, e.subj.API("snapshot", "list"))
	waitForService(t, e.nats.Conn, e.subj.API("rollback", "status"))
}

// fast is a watchdog configuration for tests: quick ticks and retries,
// the connectivity check at a calm pace, no disk or JetStream checks.
func (e *env) fast(instance string) watchdog.Config {
	return watchdog.Config{
		ChromaURL:         e.chroma.URL,
		Instance:          instance,
		TickInterval:      50 * time.Millisecond,
		RetryInterval:     200 * time.Millisecond,
		AbortGrace:        300 * time.Millisecond,
		HeartbeatInterval: time.Second,
		DiskInterval:      time.Hour,
		JetStreamNear:     -1,
		RequestTimeout:    2 * time.Minute,
		AckWait:           2 * time.Second,
	}
}

// watchdog starts a watchdog; stop kills it.
func (e *env) watchdog(t *testing.T, cfg watchdog.Config) (*watchdog.Service, func()) {
	t.Helper()
	cc := e.chroma.Client(t, chroma.WithRetryMaxElapsed(0))
	var svc *watchdog.Service
	stop := e.run(t, "watchdog "+cfg.Instance, func(nc *nats.Conn) (runner, error) {
		var err error
		svc, err = watchdog.New(cfg, nc, e.subj, cc, testLogger(t))
		return svc, err
	})
	waitForService(t, e.nats.Conn, e.subj.API("status"))
	// The durable consumer delivers only events stored after it exists.
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := e.nats.JS.Consumer(t.Context(), contract.StreamMigrations, watchdog.ConsumerName); err == nil {
			return svc, stop
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("the watchdog consumer was not created")
	return nil, nil
}

func waitForService(t *testing.T, nc *nats.Conn, subject string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if msg, err := nc.Request(subject, []byte(`{}`), time.Second); err == nil && msg != nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no service answers on %s", subject)
}

// publish sends a migration event as a job does: typed, with its id as
// the message id. id "" makes a fresh one.
func (e *env) publish(t *testing.T, job, event, id string, ev contract.MigrationEvent) {
	t.Helper()
	ev.Envelope = contract.NewEnvelope(contract.MigrationEventTypes[event])
	if id != "" {
		ev.ID = id
	}
	ev.Job = job
	data, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg(e.subj.MigrationEvent(job, event))
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, ev.ID)
	if _, err := e.nats.JS.PublishMsg(t.Context(), msg); err != nil {
		t.Fatalf("publish %s %s: %v", job, event, err)
	}
}

// publishRaw stores any bytes on any subject of the migration stream.
func (e *env) publishRaw(t *testing.T, subject string, data []byte) {
	t.Helper()
	if _, err := e.nats.JS.Publish(t.Context(), subject, data); err != nil {
		t.Fatalf("publish %s: %v", subject, err)
	}
}

// controlLog records the control commands sent to jobs.
type controlLog struct {
	mu   sync.Mutex
	msgs []timedControl
	ch   chan timedControl
}

type timedControl struct {
	contract.Control
	At time.Time
}

func (e *env) controls(t *testing.T, job string) *controlLog {
	t.Helper()
	l := &controlLog{ch: make(chan timedControl, 64)}
	sub, err := e.nats.Conn.Subscribe(e.subj.Control(job), func(m *nats.Msg) {
		var c contract.Control
		if err := json.Unmarshal(m.Data, &c); err != nil {
			t.Errorf("control message %s: %v", m.Data, err)
			return
		}
		tc := timedControl{Control: c, At: time.Now()}
		l.mu.Lock()
		l.msgs = append(l.msgs, tc)
		l.mu.Unlock()
		select {
		case l.ch <- tc:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.nats.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return l
}

// wait returns the next command of the given kind, failing after timeout.
func (l *controlLog) wait(t *testing.T, command string, timeout time.Duration) timedControl {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case c := <-l.ch:
			if c.Command == command {
				return c
			}
		case <-deadline:
			t.Fatalf("no %s command within %s (got %v)", command, timeout, l.commands())
			return timedControl{}
		}
	}
}

func (l *controlLog) commands() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, c := range l.msgs {
		out = append(out, c.Command)
	}
	return out
}

func (l *controlLog) count(command string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, c := range l.msgs {
		if c.Command == command {
			n++
		}
	}
	return n
}

// record reads a job's migration record; ok is false when there is none.
func (e *env) record(t *testing.T, job string) (contract.MigrationRecord, bool) {
	t.Helper()
	entry, err := e.nats.Assets.State.Get(context.Background(), contract.MigrationKey(job))
	if err != nil {
		return contract.MigrationRecord{}, false
	}
	var r contract.MigrationRecord
	if err := json.Unmarshal(entry.Value(), &r); err != nil {
		t.Fatalf("decode migration record: %v", err)
	}
	return r, true
}

// waitRecord waits until the job's record satisfies ok.
func (e *env) waitRecord(t *testing.T, job string, timeout time.Duration, what string, ok func(r contract.MigrationRecord) bool) contract.MigrationRecord {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r, found := e.record(t, job)
		if found && ok(r) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("migration %s: %s not reached within %s; record %s", job, what, timeout, mustJSON(t, r))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// auditEntry is an audit event with its stream sequence.
type auditEntry struct {
	Seq uint64
	contract.AuditEvent
}

// audit returns every audit event stored so far, in stream order.
func (e *env) audit(t *testing.T) []auditEntry {
	t.Helper()
	ctx := t.Context()
	st, err := e.nats.JS.Stream(ctx, contract.StreamAudit)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []auditEntry
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		var ev contract.AuditEvent
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatalf("audit event %d: %v", seq, err)
		}
		out = append(out, auditEntry{Seq: seq, AuditEvent: ev})
	}
	return out
}

// find returns the audit events matching ok.
func find(evs []auditEntry, ok func(a auditEntry) bool) []auditEntry {
	var out []auditEntry
	for _, a := range evs {
		if ok(a) {
			out = append(out, a)
		}
	}
	return out
}

// waitAudit waits for an audit event matching ok and returns the first.
func (e *env) waitAudit(t *testing.T, timeout time.Duration, what string, ok func(a auditEntry) bool) auditEntry {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if got := find(e.audit(t), ok); len(got) > 0 {
			return got[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no audit event %s within %s", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// byWatchdog matches a watchdog audit event of a job by action.
func byWatchdog(job, action string) func(a auditEntry) bool {
	return func(a auditEntry) bool {
		return a.Service == "watchdog" && a.Action == action && a.Figures["job"] == job
	}
}

// seed creates tenant/db with two collections of 150 records each
// (workload_00, workload_01; 16-d, l2).
func (e *env) seed(t *testing.T, tenant, db string) {
	t.Helper()
	if err := testenv.SeedWorkload(t.Context(), e.cc, tenant, db, 2, 300, 16, 60); err != nil {
		t.Fatal(err)
	}
}

// seededDB seeds db in a fresh tenant named from prefix, starts the
// services and a watchdog of cfg, and snapshots the database as snapName.
func (e *env) seededDB(t *testing.T, prefix, db string, cfg watchdog.Config, snapName string) (tenant, snap string) {
	t.Helper()
	tenant = e.tenant(prefix)
	e.seed(t, tenant, db)
	e.services(t)
	e.watchdog(t, cfg)
	return tenant, e.snapshot(t, tenant, db, snapName)
}

// snapshot takes a snapshot through the API and waits until it is verified.
func (e *env) snapshot(t *testing.T, tenant, db, name string) string {
	t.Helper()
	var reply contract.SnapshotCreateReply
	e.request(t, e.subj.API("snapshot", "create"), contract.SnapshotCreateRequest{Name: name, Tenant: tenant, Database: db, Actor: "test"}, &reply)
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if op, ok := e.op(t, reply.OpID); ok && (op.Status == contract.StatusCompleted || op.Status == contract.StatusFailed) {
			if op.Status != contract.StatusCompleted {
				t.Fatalf("snapshot %s: %s", name, op.Error)
			}
			return reply.SnapshotID
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("snapshot %s did not end within a minute", name)
	return ""
}

// request sends a request and decodes the reply, failing on an error reply.
func (e *env) request(t *testing.T, subject string, req, out any) {
	t.Helper()
	msg := e.send(t, subject, req)
	if code := msg.Header.Get("Nats-Service-Error-Code"); code != "" {
		t.Fatalf("request %s: error %s: %s", subject, code, msg.Data)
	}
	if err := json.Unmarshal(msg.Data, out); err != nil {
		t.Fatalf("decode reply of %s: %v", subject, err)
	}
}

// send sends req as JSON and returns the reply, whatever it is.
func (e *env) send(t *testing.T, subject string, req any) *nats.Msg {
	t.Helper()
	data, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := e.nats.Conn.Request(subject, data, time.Minute)
	if err != nil {
		t.Fatalf("request %s: %v", subject, err)
	}
	return msg
}

// refusal sends a request that must be refused and returns the error reply.
func (e *env) refusal(t *testing.T, subject string, req any) contract.ErrorBody {
	t.Helper()
	msg := e.send(t, subject, req)
	var body contract.ErrorBody
	if code := msg.Header.Get("Nats-Service-Error-Code"); code == "" || json.Unmarshal(msg.Data, &body) != nil || fmt.Sprint(body.Code) != code {
		t.Fatalf("request %s: want an error reply, got %q: %s", subject, code, msg.Data)
	}
	return body
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

// rollbackOps lists the rollback operations in the state bucket.
func (e *env) rollbackOps(t *testing.T) []contract.Operation {
	t.Helper()
	keys, err := e.nats.Assets.State.Keys(t.Context())
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []contract.Operation
	for _, k := range keys {
		if !strings.HasPrefix(k, "op.") {
			continue
		}
		if op, ok := e.op(t, strings.TrimPrefix(k, "op.")); ok && op.Kind == "rollback" {
			out = append(out, op)
		}
	}
	return out
}

// status asks the watchdog for its report.
func (e *env) status(t *testing.T) contract.StatusReport {
	t.Helper()
	var rep contract.StatusReport
	e.request(t, e.subj.API("status"), contract.StatusRequest{Envelope: contract.NewEnvelope(contract.TypeStatusRequest), Actor: "test"}, &rep)
	return rep
}

// rollbackAlert is the status's alert for job's rollback, nil when none.
func (e *env) rollbackAlert(t *testing.T, job string) *contract.StatusAlert {
	t.Helper()
	return e.jobAlert(t, "rollback", job)
}

// snapshotDeletedAlert is the status's alert that job's restore point was
// deleted, nil when none.
func (e *env) snapshotDeletedAlert(t *testing.T, job string) *contract.StatusAlert {
	t.Helper()
	return e.jobAlert(t, "snapshot_deleted", job)
}

// jobAlert is the status's alert of that name about job, nil when none.
func (e *env) jobAlert(t *testing.T, name, job string) *contract.StatusAlert {
	t.Helper()
	for _, a := range e.status(t).Alerts {
		if a.Name == name && a.Figures["job"] == job {
			return &a
		}
	}
	return nil
}

// dbState is every record of every collection of a database, by name.
type dbState map[string]*record.Batch

func (e *env) dump(t *testing.T, tenant, db string) dbState {
	t.Helper()
	cols, err := e.cc.ListCollections(t.Context(), tenant, db)
	if err != nil {
		t.Fatalf("list collections of %s/%s: %v", tenant, db, err)
	}
	out := dbState{}
	for _, c := range cols {
		b, err := testenv.ReadAll(t.Context(), e.cc, tenant, db, c.ID, 1000)
		if err != nil {
			t.Fatal(err)
		}
		out[c.Name] = b
	}
	return out
}

// compareDB checks got equals want record by record: the same ids in the
// same order, every field equal, embeddings bit for bit (l2 space).
func compareDB(t *testing.T, got, want dbState) {
	t.Helper()
	var gn, wn []string
	for n := range got {
		gn = append(gn, n)
	}
	for n := range want {
		wn = append(wn, n)
	}
	slices.Sort(gn)
	slices.Sort(wn)
	if !slices.Equal(gn, wn) {
		t.Fatalf("collections %q, want %q", gn, wn)
	}
	for _, n := range wn {
		g, w := got[n], want[n]
		if !slices.Equal(g.IDs, w.IDs) {
			t.Errorf("%s: %d ids, want %d (or another order)", n, len(g.IDs), len(w.IDs))
			continue
		}
		for i := range w.IDs {
			if !reflect.DeepEqual(g.Documents[i], w.Documents[i]) || !reflect.DeepEqual(g.URIs[i], w.URIs[i]) ||
				!reflect.DeepEqual(g.Metadatas[i], w.Metadatas[i]) || !sameBits(g.Embeddings[i], w.Embeddings[i]) {
				t.Errorf("%s: record %q differs from the pre-migration state", n, w.IDs[i])
				break
			}
		}
	}
}

func sameBits(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

// migrate plays a lossy migration on a database: it drops share of every
// named collection's records (from its start) and rewrites one document.
func (e *env) migrate(t *testing.T, tenant, db string, share float64, collections ...string) (lost int) {
	t.Helper()
	ctx := t.Context()
	for _, name := range collections {
		col, err := e.cc.GetCollection(ctx, tenant, db, name)
		if err != nil {
			t.Fatal(err)
		}
		b, err := testenv.ReadAll(ctx, e.cc, tenant, db, col.ID, 1000)
		if err != nil {
			t.Fatal(err)
		}
		n := int(math.Round(share * float64(b.Len())))
		if n > 0 {
			if err := e.cc.Delete(ctx, tenant, db, col.ID, b.IDs[:n]); err != nil {
				t.Fatal(err)
			}
		}
		lost += n
		if n < b.Len() {
			doc := "migrated: " + strconv.Itoa(n)
			up := &record.Batch{IDs: []string{b.IDs[n]}, Embeddings: [][]float32{b.Embeddings[n]}, Documents: []*string{&doc},
				Metadatas: []record.Metadata{b.Metadatas[n]}}
			if err := e.cc.Upsert(ctx, tenant, db, col.ID, up); err != nil {
				t.Fatal(err)
			}
		}
	}
	return lost
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// started is a started event for tenant/db.
func started(tenant, db, snapshot string, limit time.Duration) contract.MigrationEvent {
	return contract.MigrationEvent{Tenant: tenant, Database: db, SnapshotID: snapshot, TakeSnapshot: snapshot == "",
		TimeLimitSeconds: limit.Seconds()}
}

func validation(valid, total int64, per ...contract.CollectionValidation) contract.MigrationEvent {
	return contract.MigrationEvent{ValidChunks: valid, TotalChunks: total, PerCollection: per}
}

func figure(a auditEntry, key string) string { return fmt.Sprint(a.Figures[key]) }
