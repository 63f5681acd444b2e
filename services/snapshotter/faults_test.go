package snapshotter_test

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/metrics"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
	"github.com/nats-io/nats.go"
)

// TestChromaKilledDuringSnapshot: the snapshot fails after bounded retries,
// leaves no manifest and no object, is audited, and the next one succeeds
// once Chroma is back.
func TestChromaKilledDuringSnapshot(t *testing.T) {
	e := newEnv(t)
	if err := testenv.SeedWorkload(t.Context(), e.cc, "default_tenant", "default_database", 1, 4000, 64, 100); err != nil {
		t.Fatal(err)
	}
	e.startService(t, snapshotter.Config{MaxPageRecords: 20})

	// Subscribe before the job can start: the reply and the first page race.
	killed := make(chan struct{})
	var once sync.Once
	sub, err := e.nats.Conn.Subscribe(e.subj.Progress("*"), func(m *nats.Msg) {
		var p contract.Progress
		if json.Unmarshal(m.Data, &p) == nil && p.Phase == "exporting" && p.DoneRecords > 0 {
			once.Do(func() { e.chroma.Stop(); close(killed) })
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	rep := e.create(t, contract.SnapshotCreateRequest{Name: "chroma_dies"})
	op := e.waitOp(t, rep.OpID, time.Minute)
	_ = sub.Unsubscribe()
	select {
	case <-killed:
	default:
		t.Fatal("the snapshot ended before Chroma could be killed; make the workload larger")
	}
	if op.Status != contract.StatusFailed {
		t.Fatalf("snapshot with Chroma killed ended %s, want failed", op.Status)
	}
	if !strings.Contains(op.Error, "read collection") {
		t.Errorf("error %q does not say what failed", op.Error)
	}
	if op.FailureReason != metrics.ReasonChroma {
		t.Errorf("failure reason %q, want %q", op.FailureReason, metrics.ReasonChroma)
	}
	if _, ok := e.manifest(t, rep.SnapshotID); ok {
		t.Errorf("a failed snapshot left a manifest")
	}
	if objs := e.objects(t); len(objs) != 0 {
		t.Errorf("a failed snapshot left objects %v", objs)
	}
	failed := findAudit(e.auditEvents(t), "snapshot.create", contract.OutcomeFailed)
	if len(failed) != 1 || failed[0].SnapshotID != rep.SnapshotID || failed[0].Error == "" {
		t.Errorf("want one failed audit event for %s with the error, got %+v", rep.SnapshotID, failed)
	}

	e.chroma.Restart(t)
	rep2 := e.create(t, contract.SnapshotCreateRequest{Name: "chroma_back"})
	if op := e.waitOp(t, rep2.OpID, time.Minute); op.Status != contract.StatusCompleted {
		t.Fatalf("snapshot after Chroma came back: %s %s", op.Status, op.Error)
	}
	m, ok := e.manifest(t, rep2.SnapshotID)
	if !ok || m.TotalRecords != 4000 {
		t.Fatalf("snapshot after restart: manifest %v, %+v", ok, m)
	}
}

// TestSnapshotterKilledMidSnapshot: a worker dies mid-export; the command is
// redelivered to another instance and yields exactly one verified snapshot.
func TestSnapshotterKilledMidSnapshot(t *testing.T) {
	e := newEnv(t)
	if err := testenv.SeedWorkload(t.Context(), e.cc, "default_tenant", "default_database", 1, 4000, 64, 100); err != nil {
		t.Fatal(err)
	}
	cfg := snapshotter.Config{MaxPageRecords: 20, AckWait: 2 * time.Second, Instance: "a"}
	stopA := e.startService(t, cfg)

	died := make(chan struct{})
	var once sync.Once
	sub, err := e.nats.Conn.Subscribe(e.subj.Progress("*"), func(m *nats.Msg) {
		var p contract.Progress
		if json.Unmarshal(m.Data, &p) == nil && p.Phase == "exporting" && p.DoneRecords > 0 {
			once.Do(func() { close(died) })
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	rep := e.create(t, contract.SnapshotCreateRequest{Name: "worker_dies"})
	select {
	case <-died:
	case <-time.After(30 * time.Second):
		t.Fatal("no export progress within 30s")
	}
	_ = sub.Unsubscribe()
	stopA()
	if _, ok := e.manifest(t, rep.SnapshotID); ok {
		t.Fatal("the snapshot finished before its worker was stopped; make the workload larger")
	}

	cfg.Instance = "b"
	e.startService(t, cfg)
	op := e.waitOp(t, rep.OpID, time.Minute)
	e.redelivered(t, op, rep.SnapshotID, 4000)
	keys, err := e.nats.Assets.Manifests.Keys(t.Context())
	if err != nil || len(keys) != 1 {
		t.Errorf("manifests %v (%v), want exactly one", keys, err)
	}
	evs := e.auditEvents(t)
	if n := len(findAudit(evs, "snapshot.create", contract.OutcomeCompleted)); n != 1 {
		t.Errorf("%d completed audit events, want 1", n)
	}
	if n := len(findAudit(evs, "snapshot.create", contract.OutcomeStarted)); n < 2 {
		t.Errorf("%d started audit events, want one per attempt (>= 2)", n)
	}
}

// TestSnapshotterStoppedWhileReporting: a worker stops after it wrote the
// manifest, once before it audited the snapshot and once after, in both
// cases before it recorded the operation completed. The next delivery
// finds the manifest and reports the snapshot: the operation ends
// completed (it used to stay "running" until retention failed it, a week
// on) and the completion is audited exactly once (the second worker sends
// the event again under the same id). Whoever sees the operation
// completed finds the event stored.
func TestSnapshotterStoppedWhileReporting(t *testing.T) {
	for _, step := range []string{"manifest", "audited"} {
		t.Run("after_"+step, func(t *testing.T) {
			e := newEnv(t)
			if err := testenv.SeedWorkload(t.Context(), e.cc, "default_tenant", "default_database", 1, 300, 16, 50); err != nil {
				t.Fatal(err)
			}
			completions := func() int {
				return len(findAudit(e.auditEvents(t), "snapshot.create", contract.OutcomeCompleted))
			}
			cfg := snapshotter.Config{AckWait: 2 * time.Second, Instance: "a"}
			release := snapshotter.HoldAfter(step)
			t.Cleanup(release)
			stopA := e.startService(t, cfg)
			rep := e.create(t, contract.SnapshotCreateRequest{Name: "stopped_after_" + step})
			deadline := time.Now().Add(time.Minute)
			want := 0 // completion events stored when the worker stops
			if step == "audited" {
				want = 1
			}
			for {
				if _, ok := e.manifest(t, rep.SnapshotID); ok && completions() == want {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no manifest with %d completion events within a minute", want)
				}
				time.Sleep(20 * time.Millisecond)
			}
			stopA()
			release()
			entry, err := e.nats.Assets.State.Get(t.Context(), contract.OperationKey(rep.OpID))
			if err != nil {
				t.Fatal(err)
			}
			var op contract.Operation
			if err := json.Unmarshal(entry.Value(), &op); err != nil || op.Status != contract.StatusRunning {
				t.Fatalf("operation once the first worker stopped: %s (%v); want it still running", entry.Value(), err)
			}
			if n := completions(); n != want {
				t.Fatalf("%d completion events once the first worker stopped, want %d", n, want)
			}

			cfg.Instance = "b"
			e.startService(t, cfg)
			op = e.waitOp(t, rep.OpID, time.Minute)
			if n := completions(); n != 1 {
				t.Errorf("%d completion events once the operation completed, want 1", n)
			}
			e.redelivered(t, op, rep.SnapshotID, 300)
			if keys, err := e.nats.Assets.Manifests.Keys(t.Context()); err != nil || len(keys) != 1 {
				t.Errorf("manifests %v (%v), want exactly one", keys, err)
			}
		})
	}
}

// TestSnapshotGivenUpAfterMaxDeliver: every delivery of a snapshot command
// dies mid-export (MaxDeliver 2: two workers stopped in turn). The work
// queue gives up on it; a running instance hears so and fails the
// operation, saying why, instead of leaving it "running" for ever: the
// failure is audited, info says it, and neither an object nor a chunk of
// the attempts is left.
func TestSnapshotGivenUpAfterMaxDeliver(t *testing.T) {
	e := newEnv(t)
	if err := testenv.SeedWorkload(t.Context(), e.cc, "default_tenant", "default_database", 1, 4000, 64, 100); err != nil {
		t.Fatal(err)
	}
	cfg := snapshotter.Config{MaxPageRecords: 20, AckWait: 2 * time.Second, MaxDeliver: 2}
	exporting := make(chan struct{}, 1)
	sub, err := e.nats.Conn.Subscribe(e.subj.Progress("*"), func(m *nats.Msg) {
		var p contract.Progress
		if json.Unmarshal(m.Data, &p) == nil && p.Phase == "exporting" && p.DoneRecords > 0 {
			select {
			case exporting <- struct{}{}:
			default:
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	// Each worker takes the command (a delivery) and is stopped mid-export.
	midExport := func(instance string) {
		t.Helper()
		select {
		case <-exporting:
		case <-time.After(30 * time.Second):
			t.Fatalf("no export progress on %s within 30s", instance)
		}
	}
	cfg.Instance = "a"
	stop := e.startService(t, cfg)
	rep := e.create(t, contract.SnapshotCreateRequest{Name: "never_done", Actor: "test"})
	midExport("a")
	stop()
	<-time.After(200 * time.Millisecond)
	for len(exporting) > 0 { // what a sent last
		<-exporting
	}
	cfg.Instance = "b"
	stop = e.startService(t, cfg)
	midExport("b")
	stop()
	cfg.Instance, cfg.Metrics = "c", metrics.New()
	e.startService(t, cfg)

	op := e.waitOp(t, rep.OpID, time.Minute)
	if n, _ := cfg.Metrics.Value(metrics.Namespace+"_operation_failures_total",
		map[string]string{"service": "snapshotter", "operation": "snapshot.create", "reason": metrics.ReasonGivenUp}); n != 1 {
		t.Errorf("operation_failures_total given_up: %v, want 1", n)
	}
	if op.Status != contract.StatusFailed || op.Attempt != 2 || !strings.Contains(op.Error, "given up after 2 deliveries of its command") || op.FailureReason != metrics.ReasonGivenUp {
		t.Fatalf("operation: %s, attempt %d, %q (%s); want failed after 2 deliveries (given_up)", op.Status, op.Attempt, op.Error, op.FailureReason)
	}
	if _, ok := e.manifest(t, rep.SnapshotID); ok {
		t.Error("a manifest was written")
	}
	if objs := e.objects(t); len(objs) != 0 {
		t.Errorf("objects left: %v", objs)
	}
	if orphans, err := bus.OrphanChunks(t.Context(), e.nats.JS, contract.ObjectSnapshots); err != nil || len(orphans) != 0 {
		t.Errorf("chunks left: %v (%v)", orphans, err)
	}
	failed := findAudit(e.auditEvents(t), "snapshot.create", contract.OutcomeFailed)
	if len(failed) != 1 || failed[0].OpID != rep.OpID || failed[0].Figures["attempt"] != 2.0 || !strings.Contains(failed[0].Error, "given up") {
		t.Errorf("failed audit events: %+v; want one, of attempt 2, saying it was given up", failed)
	}
	code, data := e.request(t, e.subj.API("snapshot", "info"), mustJSON(t, contract.SnapshotRef{Snapshot: rep.SnapshotID}))
	if code != contract.CodeNotFound || !strings.Contains(string(data), "failed at") || !strings.Contains(string(data), "given up after 2 deliveries") {
		t.Errorf("info: %d %s; want why there is no snapshot", code, data)
	}
}

// TestSnapshotterSIGKILLedMidPut: a snapshotter process killed outright
// (SIGKILL: no cleanup runs) while its archive's chunks are being stored.
// The redelivered command yields exactly one verified snapshot, and none
// of the chunks the killed put stored is left in the object store, where
// no object would name them.
func TestSnapshotterSIGKILLedMidPut(t *testing.T) {
	e := newEnv(t)
	// Three pages of 16 MB as Chroma sends them: the put is still going
	// when its first chunks are stored.
	if err := testenv.SeedWorkload(t.Context(), e.cc, "default_tenant", "default_database", 1, 6000, 384, 100); err != nil {
		t.Fatal(err)
	}
	p := e.startSnapshotterProcess(t, 2*time.Second)
	rep := e.createMidPut(t, p, "process_killed")
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.exited
	if _, ok := e.manifest(t, rep.SnapshotID); ok {
		t.Fatal("the snapshot finished before its process was killed; make the workload larger")
	}
	orphans, err := bus.OrphanChunks(t.Context(), e.nats.JS, contract.ObjectSnapshots)
	if err != nil || len(orphans) == 0 {
		t.Fatalf("after the kill: chunks no object names %v (%v); the kill came too late to test anything", orphans, err)
	}

	e.startService(t, snapshotter.Config{AckWait: 2 * time.Second, Instance: "b"})
	e.redelivered(t, e.waitOp(t, rep.OpID, time.Minute), rep.SnapshotID, 6000)
}

// snapshotterProcess is a snapshotter run as a process of its own
// (instance a), built from ./cmd/snapshotter.
type snapshotterProcess struct {
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // how it exited, once exited is closed
}

// startSnapshotterProcess builds and starts it with ackWait and waits until
// it answers; it is killed at cleanup, its output logged if the test failed.
func (e *env) startSnapshotterProcess(t *testing.T, ackWait time.Duration) *snapshotterProcess {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "snapshotter")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/snapshotter").CombinedOutput(); err != nil {
		t.Fatalf("build the snapshotter: %v\n%s", err, out)
	}
	logs := &testenv.SyncBuffer{}
	p := &snapshotterProcess{exited: make(chan struct{})}
	p.cmd = exec.Command(bin, "--nats-url", e.nats.URL, "--chroma-url", e.chroma.URL, "--instance", "a", "--ack-wait", ackWait.String())
	p.cmd.Stdout, p.cmd.Stderr = logs, logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("snapshotter a:\n%s", logs.String())
		}
	})
	waitForService(t, e.nats.Conn, e.subj.API("snapshot", "list"))
	return p
}

// createMidPut asks for a snapshot named name and returns once the first
// chunk of its archive is stored: the put is under way.
func (e *env) createMidPut(t *testing.T, p *snapshotterProcess, name string) contract.SnapshotCreateReply {
	t.Helper()
	stored := make(chan struct{})
	var once sync.Once
	sub, err := e.nats.Conn.Subscribe(bus.ChunkSubject(contract.ObjectSnapshots, ">"), func(*nats.Msg) { once.Do(func() { close(stored) }) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	rep := e.create(t, contract.SnapshotCreateRequest{Name: name})
	select {
	case <-stored:
	case <-p.exited:
		t.Fatalf("snapshotter a exited before storing a chunk: %v", p.err)
	case <-time.After(time.Minute):
		t.Fatal("no chunk stored within a minute")
	}
	return rep
}

// redelivered checks a snapshot whose first worker died: completed by a
// later attempt, with a manifest of records records, its object the only
// one, no chunk of the cut-short put left (which no object would name),
// and its archive verifying.
func (e *env) redelivered(t *testing.T, op contract.Operation, snapshotID string, records int64) {
	t.Helper()
	if op.Status != contract.StatusCompleted || op.Attempt < 2 {
		t.Fatalf("redelivered snapshot: status %s attempt %d (%s)", op.Status, op.Attempt, op.Error)
	}
	m, ok := e.manifest(t, snapshotID)
	if !ok || m.TotalRecords != records {
		t.Fatalf("manifest after redelivery: %v %+v", ok, m)
	}
	if objs := e.objects(t); len(objs) != 1 || objs[0] != m.Object {
		t.Errorf("objects %v, want only %s", objs, m.Object)
	}
	if orphans, err := bus.OrphanChunks(t.Context(), e.nats.JS, contract.ObjectSnapshots); err != nil || len(orphans) > 0 {
		t.Errorf("chunks no object names: %v (%v)", orphans, err)
	}
	code, data := e.request(t, e.subj.API("snapshot", "verify"), mustJSON(t, contract.SnapshotRef{Snapshot: snapshotID}))
	if code != 0 {
		t.Errorf("verify after redelivery: %d %s", code, data)
	}
}

// TestBadRequests: every bad request gets an error naming the problem (and
// the request's field at fault, where there is one: a tenant, database or
// collection Chroma does not have too) and an audit event, and nothing is
// enqueued or created.
func TestBadRequests(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	if _, err := testenv.SeedFixture(ctx, e.cc); err != nil {
		t.Fatal(err)
	}
	e.startService(t, snapshotter.Config{})
	create := e.subj.API("snapshot", "create")
	cases := []struct {
		name      string
		body      string
		wantCode  int
		wantText  string
		wantField string
	}{
		{"malformed JSON", `{"name":`, contract.CodeBadRequest, "malformed JSON", ""},
		{"not an object", `[1,2]`, contract.CodeBadRequest, "malformed JSON", ""},
		{"empty body", ``, contract.CodeBadRequest, "empty request", ""},
		{"missing name", `{"tenant":"acme","database":"prod"}`, contract.CodeBadRequest, "name is required", "name"},
		{"invalid name", `{"name":"bad name!","tenant":"acme","database":"prod"}`, contract.CodeBadRequest, `name "bad name!" is invalid`, "name"},
		{"unknown tenant", `{"name":"x","tenant":"nobody","database":"prod"}`, contract.CodeNotFound, `tenant "nobody" not found`, "tenant"},
		{"unknown database", `{"name":"x","tenant":"acme","database":"nope"}`, contract.CodeNotFound, `database "nope" of tenant "acme" not found`, "database"},
		{"unknown collection", `{"name":"x","tenant":"acme","database":"prod","collections":["corpus.v1","ghost"]}`, contract.CodeNotFound, `collection "ghost"`, "collections"},
		{"collection twice", `{"name":"x","tenant":"acme","database":"prod","collections":["empty","empty"]}`, contract.CodeBadRequest, "named twice", "collections"},
		{"oversized payload", `{"name":"x","reason":"` + strings.Repeat("a", contract.MaxRequestBytes) + `"}`, contract.CodeTooLarge, "at most", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, data := e.request(t, create, []byte(tc.body))
			var body contract.ErrorBody
			if err := json.Unmarshal(data, &body); err != nil {
				t.Fatalf("error body %q: %v", data, err)
			}
			if code != tc.wantCode || body.Code != tc.wantCode {
				t.Errorf("code %d (body %d), want %d: %s", code, body.Code, tc.wantCode, body.Error)
			}
			if !strings.Contains(body.Error, tc.wantText) {
				t.Errorf("error %q does not say %q", body.Error, tc.wantText)
			}
			if body.Field != tc.wantField {
				t.Errorf("error %q names field %q, want %q", body.Error, body.Field, tc.wantField)
			}
		})
	}
	if n := len(findAudit(e.auditEvents(t), "snapshot.create", contract.OutcomeRejected)); n != len(cases) {
		t.Errorf("%d rejected audit events, want %d", n, len(cases))
	}
	info, err := e.nats.Assets.Commands.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 || info.State.LastSeq != 0 {
		t.Errorf("bad requests enqueued %d commands", info.State.LastSeq)
	}
	if keys, _ := e.nats.Assets.Manifests.Keys(ctx); len(keys) != 0 {
		t.Errorf("bad requests created manifests %v", keys)
	}
	if objs := e.objects(t); len(objs) != 0 {
		t.Errorf("bad requests created objects %v", objs)
	}

	// A listing needs no request: an empty body or {} lists, one that is
	// not JSON is refused, not read as a listing.
	t.Run("list", func(t *testing.T) {
		list := e.subj.API("snapshot", "list")
		for _, body := range []string{``, `{}`} {
			if code, data := e.request(t, list, []byte(body)); code != 0 || !strings.Contains(string(data), `"snapshots"`) {
				t.Errorf("list with body %q: %d %s, want the listing", body, code, data)
			}
		}
		for _, body := range []string{`garbage`, `[1]`} {
			if code, data := e.request(t, list, []byte(body)); code != contract.CodeBadRequest || !strings.Contains(string(data), "malformed JSON") {
				t.Errorf("list with body %q: %d %s, want 400 malformed JSON", body, code, data)
			}
		}
	})

	t.Run("unknown snapshot", func(t *testing.T) {
		for _, verb := range []string{"info", "verify", "delete"} {
			code, data := e.request(t, e.subj.API("snapshot", verb), []byte(`{"snapshot":"snap_nope"}`))
			if code != contract.CodeNotFound || !strings.Contains(string(data), "no snapshot with id or name") {
				t.Errorf("%s of an unknown snapshot: %d %s", verb, code, data)
			}
		}
	})
}

// TestCreateWhileChromaHangs: a Chroma that takes connections and answers
// nothing (stopped, overloaded) gets a create refused within the check
// timeout, saying Chroma did not answer; before, the CLI's request timed
// out first, with only "context deadline exceeded". Nothing is enqueued,
// and once Chroma answers again the same request succeeds.
func TestCreateWhileChromaHangs(t *testing.T) {
	e := newEnv(t)
	e.startService(t, snapshotter.Config{ChromaCheckTimeout: time.Second})
	resume := e.chroma.Freeze(t)

	start := time.Now()
	code, data := e.request(t, e.subj.API("snapshot", "create"), []byte(`{"name":"while_hung"}`))
	took := time.Since(start)
	var body contract.ErrorBody
	if err := json.Unmarshal(data, &body); err != nil {
		t.Fatalf("reply %q: %v", data, err)
	}
	if code != contract.CodeUnavailable || !strings.Contains(body.Error, `check tenant "default_tenant" in Chroma: Chroma did not answer in time`) ||
		!strings.Contains(body.Error, "health-check") {
		t.Errorf("reply %d: %s", code, body.Error)
	}
	if took > 10*time.Second {
		t.Errorf("answered after %s; the check is bounded by 1s", took)
	}
	if ev := findAudit(e.auditEvents(t), "snapshot.create", contract.OutcomeRejected); len(ev) != 1 || !strings.Contains(ev[0].Error, "did not answer in time") {
		t.Errorf("rejected audit events: %+v", ev)
	}
	if info, err := e.nats.Assets.Commands.Info(t.Context()); err != nil || info.State.LastSeq != 0 {
		t.Errorf("a refused create enqueued a command (%v)", err)
	}

	resume()
	rep := e.create(t, contract.SnapshotCreateRequest{Name: "while_hung"})
	if op := e.waitOp(t, rep.OpID, time.Minute); op.Status != contract.StatusCompleted {
		t.Fatalf("snapshot once Chroma answers: %s %s", op.Status, op.Error)
	}
}
