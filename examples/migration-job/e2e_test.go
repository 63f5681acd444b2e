package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
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

// The end-to-end tests migrate the fixture's acme/prod in place with the
// example job (in-process, through run) against a real Chroma server, with
// an embedded JetStream server and the snapshotter, restorer and watchdog
// running in-process.
const tenant, database = "acme", "prod"

type e2e struct {
	chroma *testenv.Chroma
	cc     *chroma.Client
	nats   *testenv.NATS
}

func testLogger(t *testing.T) *slog.Logger { return testenv.Logger(t) }

// newE2E seeds the fixture and starts the three services.
func newE2E(t *testing.T, wd watchdog.Config) *e2e {
	t.Helper()
	c := testenv.StartChroma(t)
	e := &e2e{chroma: c, cc: c.Client(t, chroma.WithRetryMaxElapsed(5*time.Second)), nats: testenv.StartNATS(t)}
	// Runs after the services stop: every event the test caused matches its schema.
	t.Cleanup(func() { testenv.CheckAudit(t, e.nats.JS) })
	if _, err := testenv.SeedFixture(t.Context(), e.cc); err != nil {
		t.Fatalf("seed fixture: %v", err)
	}
	e.run(t, "snapshotter", func(nc *nats.Conn) (runner, error) {
		return snapshotter.New(snapshotter.Config{ChromaURL: c.URL, Instance: "snapshotter"}, nc, subj, e.cc, testLogger(t))
	})
	e.run(t, "restorer", func(nc *nats.Conn) (runner, error) {
		return restorer.New(restorer.Config{ChromaURL: c.URL, AckWait: 2 * time.Second, LeaseTTL: 5 * time.Second, Instance: "restorer"},
			nc, subj, e.cc, testLogger(t))
	})
	wd.ChromaURL = c.URL
	wcc := c.Client(t, chroma.WithRetryMaxElapsed(0))
	e.run(t, "watchdog", func(nc *nats.Conn) (runner, error) {
		return watchdog.New(wd, nc, subj, wcc, testLogger(t))
	})
	for _, s := range []string{subj.API("snapshot", "list"), subj.API("rollback", "status"), subj.API("status")} {
		waitForService(t, e.nats.Conn, s)
	}
	// The watchdog's consumer takes only events stored after it exists.
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := e.nats.JS.Consumer(t.Context(), contract.StreamMigrations, watchdog.ConsumerName); err == nil {
			return e
		}
		if time.Now().After(deadline) {
			t.Fatal("the watchdog's consumer was not created")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fastWatchdog is a watchdog configuration with quick ticks and retries and
// no disk or JetStream checks; the thresholds are the defaults (0.95).
func fastWatchdog() watchdog.Config {
	return watchdog.Config{
		Instance:          "watchdog",
		TickInterval:      50 * time.Millisecond,
		RetryInterval:     200 * time.Millisecond,
		AbortGrace:        2 * time.Second,
		HeartbeatInterval: time.Second,
		DiskInterval:      time.Hour,
		JetStreamNear:     -1,
		RequestTimeout:    2 * time.Minute,
		AckWait:           2 * time.Second,
	}
}

type runner interface{ Run(context.Context) error }

// run starts a service on its own connection until the test ends.
func (e *e2e) run(t *testing.T, name string, svc func(nc *nats.Conn) (runner, error)) {
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
	t.Cleanup(func() {
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
	})
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

// jobArgs are the flags of an in-place migration of acme/prod.
func (e *e2e) jobArgs(job string, extra ...string) []string {
	return append([]string{"--nats-url", e.nats.URL, "--job", job, "--chroma-url", e.chroma.URL,
		"--tenant", tenant, "--database", database, "--page-size", "100"}, extra...)
}

// snapshot takes a snapshot through the API and waits until it is verified.
func (e *e2e) snapshot(t *testing.T, name string) string {
	t.Helper()
	data, _ := json.Marshal(contract.SnapshotCreateRequest{Name: name, Tenant: tenant, Database: database, Actor: "test"})
	msg, err := e.nats.Conn.Request(subj.API("snapshot", "create"), data, time.Minute)
	if err != nil || msg.Header.Get("Nats-Service-Error-Code") != "" {
		t.Fatalf("snapshot %s: %v %s", name, err, msg.Data)
	}
	var reply contract.SnapshotCreateReply
	if err := json.Unmarshal(msg.Data, &reply); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if entry, err := e.nats.Assets.State.Get(t.Context(), contract.OperationKey(reply.OpID)); err == nil {
			var op contract.Operation
			if err := json.Unmarshal(entry.Value(), &op); err != nil {
				t.Fatal(err)
			}
			switch op.Status {
			case contract.StatusCompleted:
				return reply.SnapshotID
			case contract.StatusFailed:
				t.Fatalf("snapshot %s: %s", name, op.Error)
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("snapshot %s did not end within a minute", name)
	return ""
}

// record reads a job's migration record.
func (e *e2e) record(t *testing.T, job string) (contract.MigrationRecord, bool) {
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

func (e *e2e) waitRecord(t *testing.T, job string, timeout time.Duration, what string, ok func(contract.MigrationRecord) bool) contract.MigrationRecord {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r, found := e.record(t, job)
		if found && ok(r) {
			return r
		}
		if time.Now().After(deadline) {
			data, _ := json.Marshal(r)
			t.Fatalf("migration %s: %s not reached within %s; record %s", job, what, timeout, data)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// auditEntry is an audit event with its stream sequence.
type auditEntry struct {
	Seq uint64
	contract.AuditEvent
}

// audit reads the whole audit stream with an ordered consumer, as a
// dashboard replaying it from the start does.
func (e *e2e) audit(t *testing.T) []auditEntry {
	t.Helper()
	ctx := t.Context()
	stream, err := e.nats.JS.Stream(ctx, contract.StreamAudit)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []auditEntry
	for uint64(len(out)) < info.State.Msgs {
		batch, err := cons.Fetch(int(info.State.Msgs)-len(out), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := len(out)
		for m := range batch.Messages() {
			meta, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			var ev contract.AuditEvent
			if err := json.Unmarshal(m.Data(), &ev); err != nil {
				t.Fatalf("audit event %d: %v", meta.Sequence.Stream, err)
			}
			out = append(out, auditEntry{Seq: meta.Sequence.Stream, AuditEvent: ev})
		}
		if len(out) == n {
			t.Fatalf("read %d of %d audit events", n, info.State.Msgs)
		}
	}
	return out
}

func find(evs []auditEntry, ok func(auditEntry) bool) []auditEntry {
	var out []auditEntry
	for _, a := range evs {
		if ok(a) {
			out = append(out, a)
		}
	}
	return out
}

func byWatchdog(job, action string) func(auditEntry) bool {
	return func(a auditEntry) bool {
		return a.Service == "watchdog" && a.Action == action && a.Figures["job"] == job
	}
}

// rolledBack waits for the run's triggered rollback to end and checks it
// completed.
func (e *e2e) rolledBack(t *testing.T, job, trigger string) contract.MigrationRecord {
	t.Helper()
	rec := e.waitRecord(t, job, 2*time.Minute, "rolled back", func(r contract.MigrationRecord) bool {
		return r.Status == contract.MigrationRolledBack || r.RollbackStatus == contract.StatusFailed
	})
	if rec.Status != contract.MigrationRolledBack || rec.Trigger != trigger || rec.RollbackStatus != contract.StatusCompleted {
		data, _ := json.Marshal(rec)
		t.Fatalf("record after the rollback: %s", data)
	}
	return rec
}

// TestTenPercentLossRollsBack: the job loses 10% of the records; its
// validation (about 0.90 < 0.95) makes the watchdog roll acme/prod back to
// the snapshot it took for the job, and the database equals the
// pre-migration state record by record. The audit stream reads started ->
// validation -> trigger -> rollback completed, with the ratio and reason,
// and holds exactly the flow's events in order, each valid against its
// schema (checkFlowAudit).
func TestTenPercentLossRollsBack(t *testing.T) {
	e := newE2E(t, fastWatchdog())
	pre := dump(t, e.cc, tenant, database)
	const job = "loss-10"

	if code := runJob(t, e.jobArgs(job, "--take-snapshot", "--lose", "0.10")...); code != exitOK {
		t.Fatalf("exit code %d, want %d (the job completes; the watchdog decides)", code, exitOK)
	}
	evs := jobEvents(t, e.nats, job)
	val := eventsOfType(evs, contract.TypeMigrationValidation)
	if len(val) != 1 {
		t.Fatalf("%d validation events", len(val))
	}
	ratio := float64(val[0].ValidChunks) / float64(val[0].TotalChunks)
	if val[0].TotalChunks != int64(pre.records()) || ratio < 0.85 || ratio > 0.93 {
		t.Fatalf("validation %d of %d (%.4f), want about 0.90 of %d", val[0].ValidChunks, val[0].TotalChunks, ratio, pre.records())
	}
	if len(val[0].PerCollection) != len(pre) {
		t.Errorf("per-collection figures for %d collections, want %d", len(val[0].PerCollection), len(pre))
	}

	rec := e.rolledBack(t, job, contract.TriggerValidation)
	if !strings.HasPrefix(rec.SnapshotID, "snap_") || rec.Validation == nil || rec.Validation.Ratio != ratio {
		t.Errorf("record: snapshot %q, validation %+v", rec.SnapshotID, rec.Validation)
	}
	compareDB(t, "after rollback", dump(t, e.cc, tenant, database), pre)

	audit := e.audit(t)
	start := find(audit, byWatchdog(job, "migration.started"))
	valid := find(audit, byWatchdog(job, "migration.validation"))
	trig := find(audit, byWatchdog(job, "trigger.validation"))
	done := find(audit, func(a auditEntry) bool {
		return a.Service == "restorer" && a.Action == "rollback" && a.OpID == rec.RollbackOpID && a.Outcome == contract.OutcomeCompleted
	})
	if len(start) != 1 || len(valid) != 1 || len(trig) != 1 || len(done) != 1 {
		for _, a := range audit {
			t.Logf("audit %d: %s %s %s: %s %v", a.Seq, a.Service, a.Action, a.Outcome, a.Reason, a.Figures)
		}
		t.Fatalf("audit: %d started, %d validation, %d trigger, %d rollback completed events; want one each",
			len(start), len(valid), len(trig), len(done))
	}
	if !(start[0].Seq < valid[0].Seq && valid[0].Seq < trig[0].Seq && trig[0].Seq < done[0].Seq) {
		t.Errorf("audit order: started %d, validation %d, trigger %d, rollback completed %d",
			start[0].Seq, valid[0].Seq, trig[0].Seq, done[0].Seq)
	}
	if t.Failed() {
		for _, a := range audit {
			t.Logf("audit %d: %s %s %s: %s %v", a.Seq, a.Service, a.Action, a.Outcome, a.Reason, a.Figures)
		}
	}
	for _, a := range []auditEntry{valid[0], trig[0]} {
		if a.Figures["ratio"] != ratio || a.Figures["threshold"] != 0.95 {
			t.Errorf("%s figures %v, want ratio %v and threshold 0.95", a.Action, a.Figures, ratio)
		}
	}
	if !strings.Contains(trig[0].Reason, "under the threshold") || !strings.Contains(trig[0].Reason, fmt.Sprintf("%.4f", ratio)) {
		t.Errorf("trigger reason %q", trig[0].Reason)
	}
	if a := find(audit, byWatchdog(job, "snapshot.pre_migration")); len(a) == 0 {
		t.Error("no audit event for the pre-migration snapshot the watchdog took")
	}
	checkFlowAudit(t, e, rec, len(pre))
}

// flowStep is an audit event the snapshot -> migration -> automatic
// rollback flow yields: its rank in the flow and how many of it.
type flowStep struct {
	rank                     int
	service, action, outcome string
	what                     string // the snapshot (pre or safety) or the rollback step
	n                        int
}

// checkFlowAudit (issue 5, acceptance 1): the flow yields exactly the
// expected audit events, in order, each valid against its action's schema.
// Events of one rank may come in either order: the services act
// concurrently (the snapshotter records an operation's status before it
// audits it, and the watchdog and restorer follow that status); the order
// inside a rank is checked where it is causal. The job's completed event
// follows its validation but races the rollback.
func checkFlowAudit(t *testing.T, e *e2e, rec contract.MigrationRecord, collections int) {
	t.Helper()
	// The watchdog audits the rollback's end after recording it.
	deadline := time.Now().Add(10 * time.Second)
	for len(find(e.audit(t), byWatchdog(rec.Job, "migration.rolled_back"))) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no migration.rolled_back audit event")
		}
		time.Sleep(25 * time.Millisecond)
	}
	msgs := testenv.CheckAudit(t, e.nats.JS)
	var safety string
	for _, m := range msgs {
		if m.Event.Action == "rollback" && m.Event.Outcome == contract.OutcomeCompleted {
			safety, _ = m.Event.Figures["safety_snapshot_id"].(string)
		}
	}
	want := []flowStep{
		{0, "watchdog", "migration.started", "started", "", 1},
		{1, "watchdog", "snapshot.pre_migration", "started", "", 1},
		{1, "snapshotter", "snapshot.create", "started", "pre", 1},
		{1, "snapshotter", "snapshot.create", "completed", "pre", 1},
		{1, "watchdog", "snapshot.pre_migration", "completed", "", 1},
		{2, "watchdog", "migration.validation", "completed", "", 1},
		{3, "watchdog", "trigger.validation", "started", "", 1},
		{4, "restorer", "rollback", "started", "", 1},
		{5, "restorer", "rollback.step", "completed", "fence raised", 1},
		{6, "snapshotter", "snapshot.create", "started", "safety", 1},
		{6, "snapshotter", "snapshot.create", "completed", "safety", 1},
		{6, "restorer", "rollback.step", "completed", "safety snapshot taken", 1},
		{7, "restorer", "rollback.step", "completed", "collection restored", collections},
		{8, "restorer", "rollback", "completed", "", 1},
		{9, "watchdog", "migration.rolled_back", "completed", "", 1},
		{-1, "watchdog", "migration.completed", "completed", "", 1}, // after the validation, otherwise free
	}
	stepOf := func(ev contract.AuditEvent) int {
		what := ""
		switch {
		case ev.Action == "snapshot.create" && ev.SnapshotID == rec.SnapshotID:
			what = "pre"
		case ev.Action == "snapshot.create" && ev.SnapshotID == safety:
			what = "safety"
		case ev.Action == "rollback.step":
			what = ev.Reason
		}
		for i, w := range want {
			if w.service == ev.Service && w.action == ev.Action && w.outcome == ev.Outcome && w.what == what {
				return i
			}
		}
		return -1
	}
	// The restorer's events name the job too: `audit-log --job` shows
	// the rollback it caused, to its end.
	for _, m := range msgs {
		if ev := m.Event; ev.Service == "restorer" && ev.Figures["job"] != rec.Job {
			t.Errorf("audit %d: %s %s %s names job %v, want %q", m.Seq, ev.Service, ev.Action, ev.Outcome, ev.Figures["job"], rec.Job)
		}
	}
	count := make([]int, len(want))
	seqOf := map[string]uint64{} // first sequence of a step, by "action outcome what"
	rank, validated := 0, false
	for _, m := range msgs {
		ev := m.Event
		i := stepOf(ev)
		if i < 0 {
			t.Errorf("audit %d: unexpected %s %s %s (snapshot %q): %s %s", m.Seq, ev.Service, ev.Action, ev.Outcome, ev.SnapshotID, ev.Reason, ev.Error)
			continue
		}
		w := want[i]
		count[i]++
		key := w.action + " " + w.outcome + " " + w.what
		if _, ok := seqOf[key]; !ok {
			seqOf[key] = m.Seq
		}
		switch {
		case w.rank < 0:
			if !validated {
				t.Errorf("audit %d: %s before the validation", m.Seq, ev.Action)
			}
		case w.rank < rank:
			t.Errorf("audit %d: %s %s (%s) of rank %d after rank %d", m.Seq, ev.Action, ev.Outcome, w.what, w.rank, rank)
		default:
			rank = w.rank
		}
		validated = validated || ev.Action == "migration.validation"
	}
	for i, w := range want {
		if count[i] != w.n {
			t.Errorf("%d audit events %s %s %s (%s), want %d", count[i], w.service, w.action, w.outcome, w.what, w.n)
		}
	}
	for _, p := range [][2]string{
		{"snapshot.create started pre", "snapshot.create completed pre"},
		{"snapshot.pre_migration started ", "snapshot.pre_migration completed "},
		{"snapshot.create started safety", "snapshot.create completed safety"},
		{"snapshot.create started safety", "rollback.step completed safety snapshot taken"},
	} {
		if a, b := seqOf[p[0]], seqOf[p[1]]; a == 0 || b == 0 || a > b {
			t.Errorf("audit: %q at %d, %q at %d; want the first before the second", p[0], a, p[1], b)
		}
	}
	if t.Failed() {
		for _, m := range msgs {
			t.Logf("audit %d: %s %s %s: %s %v", m.Seq, m.Event.Service, m.Event.Action, m.Event.Outcome, m.Event.Reason, m.Event.Figures)
		}
	}
}

// TestThreePercentLossCompletes: 3% loss stays above the threshold: no
// rollback, the migration is recorded completed, and acme/prod holds what
// the job wrote: every record transformed in place (documents normalised,
// "migrated_by" merged into the metadata, URIs and every other value kept)
// except the records it lost on purpose.
func TestThreePercentLossCompletes(t *testing.T) {
	e := newE2E(t, fastWatchdog())
	pre := dump(t, e.cc, tenant, database)
	snap := e.snapshot(t, "before_loss_3")
	const job = "loss-3"

	if code := runJob(t, e.jobArgs(job, "--snapshot-id", snap, "--lose", "0.03")...); code != exitOK {
		t.Fatalf("exit code %d", code)
	}
	rec := e.waitRecord(t, job, 30*time.Second, "completed", func(r contract.MigrationRecord) bool {
		return r.Status == contract.MigrationCompleted
	})
	if rec.Trigger != "" || rec.RollbackOpID != "" || rec.Validation == nil || rec.Validation.Ratio < 0.95 || rec.SnapshotID != snap || rec.EndedAt.IsZero() {
		data, _ := json.Marshal(rec)
		t.Fatalf("record: %s", data)
	}
	lostN := int(rec.Validation.TotalChunks - rec.Validation.ValidChunks)
	if lostN == 0 {
		t.Fatal("no record lost at 3%")
	}
	time.Sleep(500 * time.Millisecond) // a wrong trigger would act within a few ticks
	audit := e.audit(t)
	if got := find(audit, func(a auditEntry) bool { return strings.HasPrefix(a.Action, "trigger.") || a.Action == "rollback" }); len(got) != 0 {
		t.Errorf("trigger or rollback events: %+v", got)
	}
	if got := find(audit, byWatchdog(job, "migration.completed")); len(got) != 1 || !strings.Contains(got[0].Reason, "no trigger fired") {
		t.Errorf("migration.completed events: %+v", got)
	}

	// acme/prod now is the pre-migration state, transformed, minus the lost.
	want := dbState{}
	gone := 0
	for name, c := range pre {
		w := *c
		w.Records = &record.Batch{}
		for i, id := range c.Records.IDs {
			if lost(0.03, name, id) {
				gone++
				continue
			}
			doc, meta := migrated(c.Records, i, job)
			w.Records.IDs = append(w.Records.IDs, id)
			w.Records.Documents = append(w.Records.Documents, doc)
			w.Records.Metadatas = append(w.Records.Metadatas, meta)
			w.Records.URIs = append(w.Records.URIs, c.Records.URIs[i])
			w.Records.Embeddings = append(w.Records.Embeddings, c.Records.Embeddings[i])
		}
		want[name] = &w
	}
	if gone != lostN {
		t.Errorf("the job reported %d invalid records; %d were lost on purpose", lostN, gone)
	}
	compareDB(t, "after the migration", dump(t, e.cc, tenant, database), want)
}

// TestTimeLimitAbortsJob: a slow job (a pause after every page) overruns its
// 3 s time limit: abort reaches it, it stops and reports failed, and the
// rollback restores acme/prod.
func TestTimeLimitAbortsJob(t *testing.T) {
	e := newE2E(t, fastWatchdog())
	pre := dump(t, e.cc, tenant, database)
	snap := e.snapshot(t, "before_slow_job")
	const job, limit = "slow-job", 3 * time.Second

	began := time.Now()
	code := runJob(t, e.jobArgs(job, "--snapshot-id", snap, "--time-limit", limit.String(), "--page-size", "20", "--page-delay", "300ms")...)
	took := time.Since(began)
	if code != exitAborted {
		t.Fatalf("exit code %d, want %d (aborted)", code, exitAborted)
	}
	if took < limit || took > limit+5*time.Second {
		t.Errorf("the job ran %s with a time limit of %s", took, limit)
	}
	evs := jobEvents(t, e.nats, job)
	last := evs[len(evs)-1]
	if last.Type != contract.TypeMigrationFailed || !strings.Contains(last.Error, "aborted") || !strings.Contains(last.Error, "time limit") {
		t.Errorf("last event %s %q, want failed naming the abort", last.Type, last.Error)
	}
	if n := len(eventsOfType(evs, contract.TypeMigrationValidation)); n != 0 {
		t.Errorf("%d validation events from an aborted job", n)
	}

	rec := e.rolledBack(t, job, contract.TriggerTime)
	if rec.AbortSentAt.IsZero() {
		t.Error("no abort recorded")
	}
	compareDB(t, "after rollback", dump(t, e.cc, tenant, database), pre)
	if trig := find(e.audit(t), byWatchdog(job, "trigger.time")); len(trig) != 1 || trig[0].OpID != rec.RollbackOpID {
		t.Errorf("trigger.time events: %+v", trig)
	}
}

// TestChromaOutagePausesJob: Chroma stops while the job copies. The job
// failed at its first request that got no answer, before the watchdog's
// pause (after its heartbeats fail) could reach it, so an outage ended the
// run instead of pausing it. It tries the request again, waiting while
// paused; the watchdog pauses and resumes it, and the run completes with
// every record valid.
func TestChromaOutagePausesJob(t *testing.T) {
	wd := fastWatchdog()
	wd.HeartbeatInterval, wd.HeartbeatTimeout, wd.HeartbeatFailures = 200*time.Millisecond, 200*time.Millisecond, 3
	e := newE2E(t, wd)
	snap := e.snapshot(t, "before_outage")
	const job = "outage-job"

	var mu sync.Mutex
	var commands []string
	ctl, err := e.nats.Conn.Subscribe(subj.Control(job), func(m *nats.Msg) {
		var c contract.Control
		if json.Unmarshal(m.Data, &c) == nil {
			mu.Lock()
			commands = append(commands, c.Command)
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Unsubscribe()
	beats := make(chan struct{}, 1000)
	hb, err := e.nats.Conn.Subscribe(subj.MigrationEvent(job, contract.EventHeartbeat), func(*nats.Msg) { beats <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	defer hb.Unsubscribe()
	if err := e.nats.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	count := func(command string) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, c := range commands {
			if c == command {
				n++
			}
		}
		return n
	}

	exit := make(chan int, 1)
	go func() {
		exit <- runJob(t, e.jobArgs(job, "--snapshot-id", snap, "--page-size", "20", "--page-delay", "100ms")...)
	}()
	select {
	case <-beats:
	case code := <-exit:
		t.Fatalf("the job ended (exit code %d) before its first heartbeat", code)
	case <-time.After(30 * time.Second):
		t.Fatal("no heartbeat within 30s")
	}
	e.chroma.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for count(contract.ControlPause) == 0 && time.Now().Before(deadline) {
		select {
		case code := <-exit:
			t.Fatalf("the job ended (exit code %d) during the outage instead of pausing", code)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if count(contract.ControlPause) == 0 {
		t.Fatal("no pause within 10s of the outage")
	}
	time.Sleep(time.Second)
	e.chroma.Restart(t)
	select {
	case code := <-exit:
		if code != exitOK {
			t.Fatalf("exit code %d, want %d", code, exitOK)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the job did not end within 2m of Chroma's return")
	}
	if p, r := count(contract.ControlPause), count(contract.ControlResume); p != 1 || r != 1 {
		t.Errorf("%d pause and %d resume commands, want one each", p, r)
	}
	val := eventsOfType(jobEvents(t, e.nats, job), contract.TypeMigrationValidation)
	if len(val) != 1 || val[0].ValidChunks != val[0].TotalChunks {
		t.Errorf("validation events %+v, want one with every record valid", val)
	}
	rec := e.waitRecord(t, job, 10*time.Second, "completed", func(r contract.MigrationRecord) bool { return r.Status == contract.MigrationCompleted })
	if rec.Trigger != "" {
		t.Errorf("a trigger fired: %s", rec.TriggerReason)
	}
}
