package migration_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/migration"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

var subj = contract.Subjects{Prefix: contract.DefaultPrefix}

func newJob(t *testing.T, n *testenv.NATS, name string, opts ...migration.Option) *migration.Job {
	t.Helper()
	j, err := migration.New(n.Connect(t), name, opts...)
	if err != nil {
		t.Fatalf("New(%q): %v", name, err)
	}
	t.Cleanup(func() { _ = j.Close() })
	return j
}

// stored reads every message of the migration stream on subjects of job.
func stored(t *testing.T, n *testenv.NATS, job string) []jetstream.Msg {
	t.Helper()
	ctx := t.Context()
	filter := subj.MigrationEvent(job, ">")
	stream, err := n.JS.Stream(ctx, contract.StreamMigrations)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, c := range info.State.Subjects {
		want += int(c)
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		t.Fatal(err)
	}
	var out []jetstream.Msg
	for len(out) < want {
		batch, err := cons.Fetch(want-len(out), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := len(out)
		for m := range batch.Messages() {
			out = append(out, m)
		}
		if len(out) == n {
			t.Fatalf("read %d of the %d events on %s", n, want, filter)
		}
	}
	return out
}

func TestNewRejectsBadNames(t *testing.T) {
	n := testenv.StartNATS(t)
	nc := n.Connect(t)
	for _, tc := range []struct {
		job    string
		opts   []migration.Option
		substr string
	}{
		{job: "", substr: "empty"},
		{job: "a.b", substr: "may not contain"},
		{job: "reindex *", substr: "may not contain"},
		{job: "all>", substr: "may not contain"},
		{job: "ok", opts: []migration.Option{migration.WithSubjectPrefix("a..b")}, substr: "subject prefix"},
		{job: "ok", opts: []migration.Option{migration.WithPublishRetry(0, 1)}, substr: "publish retry"},
	} {
		t.Run(tc.job, func(t *testing.T) {
			_, err := migration.New(nc, tc.job, tc.opts...)
			if err == nil || !strings.Contains(err.Error(), tc.substr) {
				t.Errorf("New(%q) err = %v, want one saying %q", tc.job, err, tc.substr)
			}
		})
	}
	if _, err := migration.New(nil, "ok"); err == nil {
		t.Error("New(nil conn) succeeded")
	}
}

// TestEventsLandOnSubjects publishes every event and reads them back from
// the stream: subject, type, id header and fields, each valid by the
// contract the watchdog applies.
func TestEventsLandOnSubjects(t *testing.T) {
	n := testenv.StartNATS(t)
	j := newJob(t, n, "reindex-2025")
	ctx := t.Context()
	r, err := j.Start(ctx, migration.StartOptions{
		Tenant: "acme", Database: "prod", SnapshotID: "snap_1", TimeLimit: 90 * time.Second,
		Collections: []string{"corpus.v1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Sequence == 0 || r.Duplicate || r.Subject != "chroma.migration.reindex-2025.started" {
		t.Errorf("start receipt %+v", r)
	}
	per := []contract.CollectionValidation{{Collection: "corpus.v1", ValidChunks: 9, TotalChunks: 10}}
	steps := []struct {
		event string
		do    func() error
		check func(ev *contract.MigrationEvent) string
	}{
		{contract.EventHeartbeat, func() error { return j.Heartbeat(ctx, "copy", 42) }, func(ev *contract.MigrationEvent) string {
			if ev.Phase != "copy" || ev.DoneRecords != 42 {
				return fmt.Sprintf("phase %q done %d", ev.Phase, ev.DoneRecords)
			}
			return ""
		}},
		{contract.EventValidation, func() error { return j.ReportValidation(ctx, 9, 10, per...) }, func(ev *contract.MigrationEvent) string {
			if ev.ValidChunks != 9 || ev.TotalChunks != 10 || !reflect.DeepEqual(ev.PerCollection, per) {
				return fmt.Sprintf("validation %d/%d %+v", ev.ValidChunks, ev.TotalChunks, ev.PerCollection)
			}
			return ""
		}},
		{contract.EventCompleted, func() error { return j.Complete(ctx) }, func(*contract.MigrationEvent) string { return "" }},
		{contract.EventFailed, func() error { return j.Fail(ctx, errors.New("target unreachable")) }, func(ev *contract.MigrationEvent) string {
			if ev.Error != "target unreachable" {
				return fmt.Sprintf("error %q", ev.Error)
			}
			return ""
		}},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.event, err)
		}
	}

	msgs := stored(t, n, "reindex-2025")
	if len(msgs) != 1+len(steps) {
		t.Fatalf("stream holds %d events, want %d", len(msgs), 1+len(steps))
	}
	for i, m := range msgs {
		event := contract.EventStarted
		if i > 0 {
			event = steps[i-1].event
		}
		if want := subj.MigrationEvent("reindex-2025", event); m.Subject() != want {
			t.Errorf("event %d on %s, want %s", i, m.Subject(), want)
		}
		var ev contract.MigrationEvent
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if err := contract.ValidateMigrationEvent(event, "reindex-2025", &ev); err != nil {
			t.Errorf("%s event invalid: %v (%s)", event, err, m.Data())
		}
		if got := m.Headers().Get(jetstream.MsgIDHeader); got == "" || got != ev.ID {
			t.Errorf("%s: Nats-Msg-Id %q, body id %q", event, got, ev.ID)
		}
		if ev.Time.IsZero() || ev.Time.Location() != time.UTC {
			t.Errorf("%s: time %v, want a UTC time", event, ev.Time)
		}
		if i == 0 {
			if ev.Tenant != "acme" || ev.Database != "prod" || ev.SnapshotID != "snap_1" || ev.TakeSnapshot ||
				ev.TimeLimitSeconds != 90 || !reflect.DeepEqual(ev.Collections, []string{"corpus.v1"}) {
				t.Errorf("started %s", m.Data())
			}
			continue
		}
		if msg := steps[i-1].check(&ev); msg != "" {
			t.Errorf("%s: %s", event, msg)
		}
	}
}

func TestStartRejectsBadOptions(t *testing.T) {
	n := testenv.StartNATS(t)
	j := newJob(t, n, "bad-start")
	for _, tc := range []struct {
		name   string
		opts   migration.StartOptions
		substr string
	}{
		{"no tenant", migration.StartOptions{Database: "prod", SnapshotID: "s"}, "tenant"},
		{"no database", migration.StartOptions{Tenant: "acme", SnapshotID: "s"}, "database"},
		{"no snapshot", migration.StartOptions{Tenant: "acme", Database: "prod"}, "TakeSnapshot"},
		{"both", migration.StartOptions{Tenant: "acme", Database: "prod", SnapshotID: "s", TakeSnapshot: true}, "set one"},
		{"negative limit", migration.StartOptions{Tenant: "acme", Database: "prod", TakeSnapshot: true, TimeLimit: -time.Second}, "negative"},
		{"bad collection", migration.StartOptions{Tenant: "acme", Database: "prod", TakeSnapshot: true, Collections: []string{""}}, "collection"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := j.Start(t.Context(), tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.substr) {
				t.Errorf("Start err = %v, want one saying %q", err, tc.substr)
			}
		})
	}
	if msgs := stored(t, n, "bad-start"); len(msgs) != 0 {
		t.Errorf("%d events stored for rejected starts", len(msgs))
	}
	if _, err := j.Publish(t.Context(), contract.EventValidation, contract.MigrationEvent{ValidChunks: 3, TotalChunks: 2}); err == nil {
		t.Error("validation with valid > total was published")
	}
	if _, err := j.Publish(t.Context(), "finished", contract.MigrationEvent{}); err == nil {
		t.Error("an unknown event was published")
	}
	if err := j.Fail(t.Context(), nil); err == nil {
		t.Error("Fail(nil) succeeded")
	}
}

// TestRetriedPublishStoredOnce: the same event sent twice is stored once,
// and a Start repeated after the stream did not ack reuses its event id.
func TestRetriedPublishStoredOnce(t *testing.T) {
	n := testenv.StartNATS(t)
	ctx := t.Context()
	j := newJob(t, n, "dedupe", migration.WithPublishRetry(300*time.Millisecond, 2))

	first, err := j.Publish(ctx, contract.EventHeartbeat, contract.MigrationEvent{Phase: "copy", DoneRecords: 1})
	if err != nil {
		t.Fatal(err)
	}
	again, err := j.Publish(ctx, contract.EventHeartbeat, first.Event)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Duplicate || again.Sequence != first.Sequence || again.Event.ID != first.Event.ID {
		t.Errorf("resent event: %+v, want a duplicate of sequence %d", again, first.Sequence)
	}

	// Without the stream, Start fails; a listener on the subject sees what
	// was sent (and, being no stream, never acks).
	cfg, err := n.JS.Stream(ctx, contract.StreamMigrations)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.JS.DeleteStream(ctx, contract.StreamMigrations); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var sentIDs []string
	sub, err := n.Conn.Subscribe(subj.MigrationEvent("dedupe", contract.EventStarted), func(m *nats.Msg) {
		mu.Lock()
		sentIDs = append(sentIDs, m.Header.Get(jetstream.MsgIDHeader))
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	opts := migration.StartOptions{Tenant: "acme", Database: "prod", TakeSnapshot: true}
	if _, err := j.Start(ctx, opts); err == nil {
		t.Fatal("Start succeeded without a stream")
	}
	if _, ok := j.Started(); ok {
		t.Error("Started() after a failed Start")
	}
	_ = sub.Unsubscribe()
	mu.Lock()
	ids := append([]string(nil), sentIDs...)
	mu.Unlock()
	if len(ids) != 2 || ids[0] == "" || ids[0] != ids[1] {
		t.Fatalf("attempts sent ids %q, want 2 attempts with one id", ids)
	}

	if _, err := n.JS.CreateStream(ctx, cfg.CachedInfo().Config); err != nil {
		t.Fatal(err)
	}
	r, err := j.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if r.Event.ID != ids[0] {
		t.Errorf("retried Start sent id %q, want the failed attempt's %q", r.Event.ID, ids[0])
	}
	if _, err := j.Start(ctx, opts); !errors.Is(err, migration.ErrAlreadyStarted) {
		t.Errorf("second Start err = %v, want ErrAlreadyStarted", err)
	}
	if msgs := stored(t, n, "dedupe"); len(msgs) != 1 {
		t.Errorf("stream holds %d events of the job, want 1 (the started)", len(msgs))
	}
}

func putRecord(t *testing.T, n *testenv.NATS, rec contract.MigrationRecord) {
	t.Helper()
	if err := putRecordErr(t.Context(), n, rec); err != nil {
		t.Fatal(err)
	}
}

func putRecordErr(ctx context.Context, n *testenv.NATS, rec contract.MigrationRecord) error {
	rec.Envelope = contract.NewEnvelope(contract.TypeMigrationRecord)
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	_, err = n.Assets.State.Put(ctx, contract.MigrationKey(rec.Job), data)
	return err
}

func TestWaitForSnapshot(t *testing.T) {
	n := testenv.StartNATS(t)
	ctx := t.Context()

	t.Run("named by the job", func(t *testing.T) {
		j := newJob(t, n, "own-snap")
		if _, err := j.WaitForSnapshot(ctx); !errors.Is(err, migration.ErrNotStarted) {
			t.Errorf("before Start: err = %v, want ErrNotStarted", err)
		}
		r, err := j.Start(ctx, migration.StartOptions{Tenant: "acme", Database: "prod", SnapshotID: "pre"})
		if err != nil {
			t.Fatal(err)
		}
		// The watchdog's updates: the run's record, then the snapshot the
		// name stands for, pinned.
		rec := contract.MigrationRecord{Job: "own-snap", Tenant: "acme", Database: "prod",
			Status: contract.MigrationRunning, Run: r.Sequence, StartedAt: r.Event.Time, SnapshotID: "pre"}
		pinned := rec
		pinned.PinnedSnapshotID = "snap_pre"
		put := make(chan error, 1)
		go func() {
			time.Sleep(100 * time.Millisecond)
			err := putRecordErr(ctx, n, rec)
			time.Sleep(100 * time.Millisecond)
			put <- errors.Join(err, putRecordErr(ctx, n, pinned))
		}()
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if id, err := j.WaitForSnapshot(wctx); err != nil || id != "snap_pre" {
			t.Errorf("WaitForSnapshot = %q, %v; want snap_pre", id, err)
		}
		if err := <-put; err != nil {
			t.Fatal(err)
		}
	})

	t.Run("named by the job, of another database", func(t *testing.T) {
		j := newJob(t, n, "wrong-db")
		r, err := j.Start(ctx, migration.StartOptions{Tenant: "acme", Database: "prod", SnapshotID: "snap_staging"})
		if err != nil {
			t.Fatal(err)
		}
		putRecord(t, n, contract.MigrationRecord{Job: "wrong-db", Tenant: "acme", Database: "prod", Status: contract.MigrationRunning,
			Run: r.Sequence, SnapshotID: "snap_staging", SnapshotError: "snapshot snap_staging is of acme/staging"})
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := j.WaitForSnapshot(wctx); !errors.Is(err, migration.ErrSnapshotFailed) || !strings.Contains(err.Error(), "acme/staging") {
			t.Errorf("err = %v, want ErrSnapshotFailed naming the cause", err)
		}
	})

	t.Run("taken by the watchdog", func(t *testing.T) {
		// A record of an earlier run of the same name, with its snapshot.
		putRecord(t, n, contract.MigrationRecord{Job: "taken", Tenant: "acme", Database: "prod",
			Status: contract.MigrationCompleted, Run: 1, SnapshotID: "old", StartedAt: time.Now().Add(-time.Hour)})
		j := newJob(t, n, "taken")
		r, err := j.Start(ctx, migration.StartOptions{Tenant: "acme", Database: "prod", TakeSnapshot: true})
		if err != nil {
			t.Fatal(err)
		}
		// The watchdog's updates: the run's record, then its snapshot.
		rec := contract.MigrationRecord{Job: "taken", Tenant: "acme", Database: "prod",
			Status: contract.MigrationRunning, Run: r.Sequence, StartedAt: r.Event.Time, TakeSnapshot: true}
		withSnap := rec
		withSnap.SnapshotID = "snap_new"
		put := make(chan error, 1)
		go func() {
			time.Sleep(100 * time.Millisecond)
			err := putRecordErr(ctx, n, rec)
			time.Sleep(100 * time.Millisecond)
			put <- errors.Join(err, putRecordErr(ctx, n, withSnap))
		}()
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if id, err := j.WaitForSnapshot(wctx); err != nil || id != "snap_new" {
			t.Errorf("WaitForSnapshot = %q, %v; want snap_new", id, err)
		}
		if err := <-put; err != nil {
			t.Fatal(err)
		}
	})

	t.Run("snapshot failed", func(t *testing.T) {
		j := newJob(t, n, "snap-fails")
		r, err := j.Start(ctx, migration.StartOptions{Tenant: "acme", Database: "prod", TakeSnapshot: true})
		if err != nil {
			t.Fatal(err)
		}
		putRecord(t, n, contract.MigrationRecord{Job: "snap-fails", Tenant: "acme", Database: "prod",
			Status: contract.MigrationRunning, Run: r.Sequence, SnapshotError: "chroma unreachable"})
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := j.WaitForSnapshot(wctx); !errors.Is(err, migration.ErrSnapshotFailed) || !strings.Contains(err.Error(), "chroma unreachable") {
			t.Errorf("err = %v, want ErrSnapshotFailed naming the cause", err)
		}
	})

	t.Run("nobody answers", func(t *testing.T) {
		j := newJob(t, n, "unanswered")
		if _, err := j.Start(ctx, migration.StartOptions{Tenant: "acme", Database: "prod", TakeSnapshot: true}); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		if _, err := j.WaitForSnapshot(wctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v, want the context's deadline", err)
		}
	})
}

// controller sends control commands to a job and waits until its handler
// has seen them.
type controller struct {
	t    *testing.T
	nc   *nats.Conn
	job  string
	seen chan contract.Control
}

func newController(t *testing.T, n *testenv.NATS, j *migration.Job) *controller {
	c := &controller{t: t, nc: n.Connect(t), job: j.Name(), seen: make(chan contract.Control, 100)}
	j.OnControl(func(ctl contract.Control) { c.seen <- ctl })
	return c
}

func (c *controller) sendRaw(data []byte) {
	c.t.Helper()
	if err := c.nc.Publish(subj.Control(c.job), data); err != nil {
		c.t.Fatal(err)
	}
}

// send publishes a command and waits until the job's handler saw it.
func (c *controller) send(command, reason string) {
	c.t.Helper()
	ctl := contract.Control{Envelope: contract.NewEnvelope(contract.TypeControl), Job: c.job, Command: command, Reason: reason}
	data, _ := json.Marshal(ctl)
	c.sendRaw(data)
	select {
	case got := <-c.seen:
		if got.ID != ctl.ID {
			c.t.Fatalf("handler saw %s %q, want %s %q", got.Command, got.Reason, command, reason)
		}
	case <-time.After(5 * time.Second):
		c.t.Fatalf("job did not see %s", command)
	}
}

func TestControlDrivesWaitWhilePaused(t *testing.T) {
	n := testenv.StartNATS(t)
	j := newJob(t, n, "controlled")
	c := newController(t, n, j)
	ctx := t.Context()

	if j.Paused() {
		t.Fatal("paused before any command")
	}
	if err := j.WaitWhilePaused(ctx); err != nil {
		t.Fatalf("WaitWhilePaused while running: %v", err)
	}

	c.send(contract.ControlPause, "chroma unreachable")
	if !j.Paused() {
		t.Fatal("not paused after pause")
	}
	done := make(chan error, 1)
	go func() { done <- j.WaitWhilePaused(ctx) }()
	select {
	case err := <-done:
		t.Fatalf("WaitWhilePaused returned %v while paused", err)
	case <-time.After(200 * time.Millisecond):
	}
	c.send(contract.ControlResume, "chroma healthy")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("WaitWhilePaused after resume: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitWhilePaused still blocked after resume")
	}

	// Ignored: not JSON, another job, another type, an unknown command.
	c.sendRaw([]byte("pause"))
	c.sendRaw([]byte(`{"type":"chromadb-rollback.v1.control","job":"someone-else","command":"pause","reason":"x"}`))
	c.sendRaw([]byte(`{"type":"chromadb-rollback.v1.fence","job":"controlled","command":"pause","reason":"x"}`))
	c.sendRaw([]byte(`{"type":"chromadb-rollback.v1.control","job":"controlled","command":"explode","reason":"x"}`))
	c.send(contract.ControlPause, "disk low") // the handler sees this one first
	if last, _ := j.LastControl(); last.Reason != "disk low" {
		t.Errorf("last control %+v", last)
	}

	// Abort while paused: the waiter returns ErrAborted with the reason.
	go func() { done <- j.WaitWhilePaused(ctx) }()
	c.send(contract.ControlAbort, "time limit of 3s exceeded")
	select {
	case err := <-done:
		if !errors.Is(err, migration.ErrAborted) || !strings.Contains(err.Error(), "time limit of 3s exceeded") {
			t.Fatalf("WaitWhilePaused after abort: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitWhilePaused still blocked after abort")
	}
	select {
	case <-j.Aborted():
	default:
		t.Fatal("Aborted() not closed")
	}
	c.send(contract.ControlResume, "too late")
	if err := j.WaitWhilePaused(ctx); !errors.Is(err, migration.ErrAborted) {
		t.Errorf("resume after abort: WaitWhilePaused = %v, want ErrAborted", err)
	}
	if j.AbortReason() != "time limit of 3s exceeded" {
		t.Errorf("abort reason %q", j.AbortReason())
	}
	select {
	case extra := <-c.seen:
		t.Errorf("handler saw an ignored message: %+v", extra)
	default:
	}
}

func TestWaitWhilePausedEndsWithContext(t *testing.T) {
	n := testenv.StartNATS(t)
	j := newJob(t, n, "paused-long")
	newController(t, n, j).send(contract.ControlPause, "fence raised")
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if err := j.WaitWhilePaused(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want the context's deadline", err)
	}
}

func TestSubjectPrefixAndClose(t *testing.T) {
	n := testenv.StartNATS(t)
	j := newJob(t, n, "prefixed", migration.WithSubjectPrefix("eu.chroma"))
	if got := j.Subjects().Control("prefixed"); got != "eu.chroma.control.prefixed" {
		t.Fatalf("control subject %q", got)
	}
	seen := make(chan contract.Control, 10)
	j.OnControl(func(c contract.Control) { seen <- c })
	nc := n.Connect(t)
	publish := func(subject string) {
		if err := nc.Publish(subject, []byte(`{"type":"chromadb-rollback.v1.control","job":"prefixed","command":"pause","reason":"r"}`)); err != nil {
			t.Fatal(err)
		}
		_ = nc.Flush()
	}
	publish("chroma.control.prefixed") // the default prefix is not this job's
	publish("eu.chroma.control.prefixed")
	select {
	case <-seen:
	case <-time.After(5 * time.Second):
		t.Fatal("command on the prefixed subject not seen")
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := j.Heartbeat(t.Context(), "x", 1); !errors.Is(err, migration.ErrClosed) {
		t.Errorf("Heartbeat after Close: %v, want ErrClosed", err)
	}
	publish("eu.chroma.control.prefixed")
	time.Sleep(100 * time.Millisecond)
	if len(seen) != 0 {
		t.Errorf("%d commands seen, want only the prefixed one before Close", 1+len(seen))
	}
}

// TestConcurrentUse exercises the Job from many goroutines at once (run
// with -race): publishing, reading the state and waiting while commands
// arrive.
func TestConcurrentUse(t *testing.T) {
	n := testenv.StartNATS(t)
	j := newJob(t, n, "busy")
	c := newController(t, n, j)
	ctx := t.Context()
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for w := range 4 {
		wg.Go(func() {
			for i := range 10 {
				if err := j.Heartbeat(ctx, fmt.Sprintf("worker-%d", w), int64(i)); err != nil {
					errs <- err
					return
				}
				_ = j.Paused()
				wctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
				if err := j.WaitWhilePaused(wctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
					errs <- err
				}
				cancel()
			}
		})
	}
	for range 5 {
		c.send(contract.ControlPause, "p")
		c.send(contract.ControlResume, "r")
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := len(stored(t, n, "busy")); got != 40 {
		t.Errorf("%d heartbeats stored, want 40", got)
	}
}
