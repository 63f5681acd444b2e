package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/metrics"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/migration"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/chromadb-rollback/chromadb-rollback/services/auditor"
	"github.com/chromadb-rollback/chromadb-rollback/services/restorer"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
	"github.com/chromadb-rollback/chromadb-rollback/services/watchdog"
	"github.com/nats-io/nats.go"
	dto "github.com/prometheus/client_model/go"
)

// loadConfig sizes TestLoad; each field has an environment variable.
type loadConfig struct {
	duration        time.Duration // LOAD_DURATION: how long events flow (60s)
	eventsPerSecond int           // LOAD_EVENTS_PER_SECOND: all jobs together (100)
	snapshots       int           // LOAD_SNAPSHOTS: requested at once (20)
	jobs            int           // LOAD_JOBS: migration jobs publishing (5)
	databases       int           // LOAD_DATABASES: snapshotted databases (4)
}

func loadConfigFromEnv(t *testing.T) loadConfig {
	t.Helper()
	c := loadConfig{duration: time.Minute, eventsPerSecond: 100, snapshots: 20, jobs: 5, databases: 4}
	if v := os.Getenv("LOAD_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 5*time.Second {
			t.Fatalf("LOAD_DURATION=%q: want a Go duration of at least 5s", v)
		}
		c.duration = d
	}
	for _, f := range []struct {
		env string
		p   *int
	}{{"LOAD_EVENTS_PER_SECOND", &c.eventsPerSecond}, {"LOAD_SNAPSHOTS", &c.snapshots}, {"LOAD_JOBS", &c.jobs}, {"LOAD_DATABASES", &c.databases}} {
		if v := os.Getenv(f.env); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				t.Fatalf("%s=%q: want a positive integer", f.env, v)
			}
			*f.p = n
		}
	}
	return c
}

const loadTenant = "load"

// loadRecords are seeded into each database (two collections, 32-d, 100-char
// documents): small, so that 20 snapshots fit, yet each takes a while.
const loadRecords = 500

// latencies collects request durations from several goroutines.
type latencies struct {
	mu sync.Mutex
	ds []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.ds = append(l.ds, d)
	l.mu.Unlock()
}

// quantile is the nearest-rank q-quantile.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// report prints count, p50, p99 and max of l as load figures named name_*.
func (l *latencies) report(name string) {
	l.mu.Lock()
	s := slices.Clone(l.ds)
	l.mu.Unlock()
	slices.Sort(s)
	ms := func(d time.Duration) float64 { return math.Round(float64(d.Microseconds())/10) / 100 }
	testenv.Report("load", name+"_requests", float64(len(s)), "count")
	testenv.Report("load", name+"_p50", ms(quantile(s, 0.50)), "ms")
	testenv.Report("load", name+"_p99", ms(quantile(s, 0.99)), "ms")
	if len(s) > 0 {
		testenv.Report("load", name+"_max", ms(s[len(s)-1]), "ms")
	}
}

// loadRequest sends req and decodes the reply into out, returning how long
// the reply took; an error reply is an error.
func loadRequest(ctx context.Context, nc *nats.Conn, subject string, req, out any) (time.Duration, error) {
	data, err := json.Marshal(req)
	if err != nil {
		return 0, err
	}
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	start := time.Now()
	msg, err := nc.RequestWithContext(rctx, subject, data)
	took := time.Since(start)
	if err != nil {
		return took, fmt.Errorf("request %s: %w", subject, err)
	}
	if code := msg.Header.Get("Nats-Service-Error-Code"); code != "" {
		return took, fmt.Errorf("request %s: error %s: %s", subject, code, msg.Data)
	}
	return took, json.Unmarshal(msg.Data, out)
}

// loadJob is what one migration job published.
type loadJob struct {
	name          string
	database      string
	published     int
	validations   []int64 // valid_chunks of each validation, unique per job
	lastHeartbeat migration.Receipt
	lastDone      int64
	acks          []time.Duration
	err           error
}

// TestLoad runs the four services in-process on embedded JetStream (two
// snapshotters, a restorer, two watchdogs and an auditor) against a real
// Chroma while migration jobs publish LOAD_EVENTS_PER_SECOND events for
// LOAD_DURATION and, in the middle of it, LOAD_SNAPSHOTS snapshots of
// LOAD_DATABASES databases are requested at once; status is polled
// throughout. Nothing may be lost or run twice: every snapshot request
// ends in exactly one execution, one verified manifest and one completed
// audit event; the watchdog takes every event once (its records hold each
// job's last heartbeat and validation, the audit stream every validation
// once); the auditor's trail verifies and holds every audit event once. It
// reports the latency of chroma.api.snapshot.create and chroma.api.status
// and the event rate achieved as "load: NAME value=X unit=U" lines.
func TestLoad(t *testing.T) {
	cfg := loadConfigFromEnv(t)
	ch := testenv.StartChroma(t)
	cc := ch.Client(t)
	dbs := make([]string, cfg.databases)
	for i := range dbs {
		dbs[i] = fmt.Sprintf("db_%02d", i)
		if err := testenv.SeedWorkload(t.Context(), cc, loadTenant, dbs[i], 2, loadRecords, 32, 100); err != nil {
			t.Fatal(err)
		}
	}
	n := testenv.StartNATS(t)
	subj := contract.Subjects{Prefix: contract.DefaultPrefix}
	log := testenv.Logger(t)
	reg := metrics.New() // shared by the services, as in serve

	var services []func(context.Context) error
	for i := range 2 {
		s, err := snapshotter.New(snapshotter.Config{ChromaURL: ch.URL, DataDir: t.TempDir(), Instance: fmt.Sprintf("snapshotter-%d", i+1), Metrics: reg},
			n.Connect(t), subj, cc, log)
		if err != nil {
			t.Fatal(err)
		}
		services = append(services, s.Run)
	}
	rest, err := restorer.New(restorer.Config{ChromaURL: ch.URL, Instance: "restorer-1", Metrics: reg}, n.Connect(t), subj, cc, log)
	if err != nil {
		t.Fatal(err)
	}
	services = append(services, rest.Run)
	for i := range 2 {
		wd, err := watchdog.New(watchdog.Config{ChromaURL: ch.URL, Instance: fmt.Sprintf("watchdog-%d", i+1), Metrics: reg},
			n.Connect(t), subj, ch.Client(t, chroma.WithRetryMaxElapsed(0)), log)
		if err != nil {
			t.Fatal(err)
		}
		services = append(services, wd.Run)
	}
	trailDir := testenv.ArtifactDir(t, "trails")
	aud, err := auditor.New(auditor.Config{DataDir: trailDir, Instance: "auditor-1"}, n.Connect(t), subj, log)
	if err != nil {
		t.Fatal(err)
	}
	services = append(services, aud.Run)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runAll(ctx, services...) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("services: %v", err)
		}
	})

	client := n.Connect(t)
	waitLoadReady(t, n, client, subj)

	// Migration jobs publish their events at the rate asked for, each in
	// its own order, while status is polled and the snapshots run.
	var (
		status   latencies
		creates  latencies
		jobsWG   sync.WaitGroup
		pollWG   sync.WaitGroup
		jobs     = make([]*loadJob, cfg.jobs)
		interval = time.Duration(float64(time.Second) * float64(cfg.jobs) / float64(cfg.eventsPerSecond))
		start    = time.Now()
		end      = start.Add(cfg.duration)
	)
	for k := range jobs {
		jobs[k] = &loadJob{name: fmt.Sprintf("load-job-%02d", k), database: dbs[k%len(dbs)]}
		jobsWG.Go(func() { runLoadJob(t.Context(), n.Connect(t), jobs[k], start, end, interval) })
	}
	pollCtx, stopPolling := context.WithCancel(t.Context())
	var statusErrs errorList
	for range 2 {
		pollWG.Go(func() {
			for pollCtx.Err() == nil {
				var rep contract.StatusReport
				took, err := loadRequest(pollCtx, client, subj.API("status"), contract.StatusRequest{Envelope: contract.NewEnvelope(contract.TypeStatusRequest), Actor: "load"}, &rep)
				if pollCtx.Err() != nil {
					return
				}
				if err != nil {
					statusErrs.add(err)
				} else {
					status.add(took)
				}
				select {
				case <-pollCtx.Done():
				case <-time.After(200 * time.Millisecond):
				}
			}
		})
	}

	// The snapshots, requested all at once once the events flow.
	time.Sleep(min(10*time.Second, cfg.duration/4))
	replies := make([]contract.SnapshotCreateReply, cfg.snapshots)
	var createErrs errorList
	snapStart := time.Now()
	var swg sync.WaitGroup
	for i := range replies {
		swg.Go(func() {
			req := contract.SnapshotCreateRequest{Envelope: contract.NewEnvelope(contract.TypeSnapshotCreateRequest),
				Name: fmt.Sprintf("load_%02d", i), Tenant: loadTenant, Database: dbs[i%len(dbs)], Actor: "load-test", Reason: "load test"}
			took, err := loadRequest(t.Context(), client, subj.API("snapshot", "create"), req, &replies[i])
			if err != nil {
				createErrs.add(fmt.Errorf("snapshot %d: %w", i, err))
				return
			}
			creates.add(took)
		})
	}
	swg.Wait()
	if err := createErrs.err(); err != nil {
		stopPolling()
		pollWG.Wait()
		t.Fatalf("snapshot requests refused: %v", err)
	}
	ops := map[string]contract.SnapshotCreateReply{}
	for _, r := range replies {
		if r.SnapshotID == "" || r.OpID == "" || r.Status != contract.StatusQueued {
			t.Errorf("snapshot reply %+v: want a queued snapshot and operation", r)
		}
		ops[r.OpID] = r
	}
	if len(ops) != cfg.snapshots {
		t.Errorf("%d distinct operations for %d requests", len(ops), cfg.snapshots)
	}
	snapEnd := waitSnapshotOps(t, n, replies, end.Add(3*time.Minute))

	// The jobs end by themselves once their time is up; status is polled
	// until then.
	jobsDone := make(chan struct{})
	go func() { jobsWG.Wait(); close(jobsDone) }()
	select {
	case <-jobsDone:
	case <-time.After(time.Until(end) + 2*time.Minute):
		t.Fatal("the jobs did not end within 2 minutes of their time")
	}
	lastEvent := time.Now()
	stopPolling()
	pollWG.Wait()
	published := 0
	var acks latencies
	for _, j := range jobs {
		if j.err != nil {
			t.Fatalf("job %s: %v", j.name, j.err)
		}
		published += j.published
		for _, a := range j.acks {
			acks.add(a)
		}
	}
	if err := statusErrs.err(); err != nil {
		t.Errorf("status requests failed: %v", err)
	}

	// The watchdog must have taken every event; the auditor every audit event.
	drained := waitConsumerDrained(t, n, contract.StreamMigrations, watchdog.ConsumerName, 2*time.Minute)
	drainLag := drained.Sub(lastEvent)
	waitConsumerDrained(t, n, contract.StreamAudit, auditor.DefaultConsumer, 2*time.Minute)

	checkLoadSnapshots(t, n, reg, replies)
	checkLoadEvents(t, n, jobs)
	auditCount := checkLoadAudit(t, n, client, subj, trailDir)

	creates.report("snapshot_create_latency")
	status.report("status_latency")
	acks.report("event_publish_ack")
	testenv.Report("load", "duration", math.Round(cfg.duration.Seconds()), "s")
	testenv.Report("load", "events_published", float64(published), "count")
	testenv.Report("load", "events_per_second", math.Round(float64(published)/lastEvent.Sub(start).Seconds()*10)/10, "events/s")
	testenv.Report("load", "watchdog_drain_after_last_event", math.Round(max(0, drainLag.Seconds())*100)/100, "s")
	testenv.Report("load", "snapshots_completed", float64(cfg.snapshots), "count")
	testenv.Report("load", "snapshots_makespan", math.Round(snapEnd.Sub(snapStart).Seconds()*100)/100, "s")
	testenv.Report("load", "audit_events", float64(auditCount), "count")
	testenv.Report("load", "loadavg_1m", testenv.LoadAvg(), "load")
}

// errorList collects errors from several goroutines.
type errorList struct {
	mu   sync.Mutex
	errs []error
}

func (e *errorList) add(err error) {
	e.mu.Lock()
	e.errs = append(e.errs, err)
	e.mu.Unlock()
}

func (e *errorList) err() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return errors.Join(e.errs...)
}

// waitLoadReady waits until every service answers and the watchdog's
// consumer exists: it takes only events stored after it was created.
func waitLoadReady(t *testing.T, n *testenv.NATS, nc *nats.Conn, subj contract.Subjects) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, subject := range []string{subj.API("snapshot", "list"), subj.API("rollback", "status"), subj.API("status"), subj.API("audit", "health")} {
		for {
			if _, err := nc.Request(subject, []byte(`{}`), time.Second); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no service answers on %s", subject)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for {
		if _, err := n.JS.Consumer(t.Context(), contract.StreamMigrations, watchdog.ConsumerName); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the watchdog's consumer was not created")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runLoadJob starts job j, publishes one event every interval until end
// (every tenth a validation, the others heartbeats; late events go at
// once, so the rate catches up), then completes it.
func runLoadJob(ctx context.Context, nc *nats.Conn, j *loadJob, start, end time.Time, interval time.Duration) {
	job, err := migration.New(nc, j.name)
	if err != nil {
		j.err = err
		return
	}
	defer job.Close()
	timed := func(f func() (migration.Receipt, error)) (migration.Receipt, error) {
		t0 := time.Now()
		r, err := f()
		j.acks = append(j.acks, time.Since(t0))
		if err == nil {
			j.published++
			if r.Duplicate {
				err = fmt.Errorf("event %s stored as a duplicate", r.Event.ID)
			}
		}
		return r, err
	}
	if _, err := timed(func() (migration.Receipt, error) {
		return job.Start(ctx, migration.StartOptions{Tenant: loadTenant, Database: j.database, SnapshotID: "pre_" + j.name})
	}); err != nil {
		j.err = err
		return
	}
	for i := 1; ; i++ {
		due := start.Add(time.Duration(i) * interval)
		if due.After(end) {
			break
		}
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		if i%10 == 0 {
			valid := int64(i) // unique per job; valid/total = 1 fires nothing
			_, err = timed(func() (migration.Receipt, error) {
				return job.Publish(ctx, contract.EventValidation, contract.MigrationEvent{ValidChunks: valid, TotalChunks: valid})
			})
			j.validations = append(j.validations, valid)
		} else {
			done := int64(i)
			var r migration.Receipt
			r, err = timed(func() (migration.Receipt, error) {
				return job.Publish(ctx, contract.EventHeartbeat, contract.MigrationEvent{Phase: "copy", DoneRecords: done})
			})
			j.lastHeartbeat, j.lastDone = r, done
		}
		if err != nil {
			j.err = err
			return
		}
	}
	if _, err := timed(func() (migration.Receipt, error) {
		return job.Publish(ctx, contract.EventCompleted, contract.MigrationEvent{})
	}); err != nil {
		j.err = err
	}
}

// waitSnapshotOps waits until every snapshot operation has ended and
// returns when the last one did.
func waitSnapshotOps(t *testing.T, n *testenv.NATS, replies []contract.SnapshotCreateReply, deadline time.Time) time.Time {
	t.Helper()
	pending := map[string]bool{}
	for _, r := range replies {
		pending[r.OpID] = true
	}
	for len(pending) > 0 {
		for id := range pending {
			e, err := n.Assets.State.Get(t.Context(), contract.OperationKey(id))
			if err != nil {
				continue
			}
			var op contract.Operation
			if err := json.Unmarshal(e.Value(), &op); err != nil {
				t.Fatalf("operation %s: %v", id, err)
			}
			switch op.Status {
			case contract.StatusCompleted:
				delete(pending, id)
			case contract.StatusFailed, contract.StatusCancelled:
				t.Fatalf("snapshot operation %s ended %s: %s", id, op.Status, op.Error)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d snapshot operations did not end in time", len(pending))
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Now()
}

// waitConsumerDrained waits until the durable consumer has no message left
// to deliver or acknowledge, and returns when that was seen.
func waitConsumerDrained(t *testing.T, n *testenv.NATS, stream, consumer string, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c, err := n.JS.Consumer(t.Context(), stream, consumer)
		if err != nil {
			t.Fatalf("consumer %s on %s: %v", consumer, stream, err)
		}
		info, err := c.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if info.NumPending == 0 && info.NumAckPending == 0 {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer %s on %s: %d pending, %d unacknowledged after %s", consumer, stream, info.NumPending, info.NumAckPending, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// auditEvents reads the audit stream.
func auditEvents(t *testing.T, n *testenv.NATS) []testenv.AuditMessage {
	t.Helper()
	return testenv.ReadAudit(t, n.JS)
}

// checkLoadSnapshots: every request ran once and left one verified manifest
// and one completed audit event.
func checkLoadSnapshots(t *testing.T, n *testenv.NATS, reg *metrics.Registry, replies []contract.SnapshotCreateReply) {
	t.Helper()
	ctx := t.Context()
	keys, err := n.Assets.Manifests.Keys(ctx)
	if err != nil {
		t.Fatalf("manifest keys: %v", err)
	}
	if len(keys) != len(replies) {
		t.Errorf("%d manifests for %d snapshot requests", len(keys), len(replies))
	}
	started, completed := map[string]int{}, map[string]int{}
	for _, m := range auditEvents(t, n) {
		if m.Event.Action != "snapshot.create" {
			continue
		}
		switch m.Event.Outcome {
		case contract.OutcomeStarted:
			started[m.Event.SnapshotID]++
		case contract.OutcomeCompleted:
			completed[m.Event.SnapshotID]++
		default:
			t.Errorf("snapshot.create %s for %s: %s", m.Event.Outcome, m.Event.SnapshotID, m.Event.Error)
		}
	}
	for _, r := range replies {
		e, err := n.Assets.Manifests.Get(ctx, r.SnapshotID)
		if err != nil {
			t.Errorf("snapshot %s has no manifest: %v", r.SnapshotID, err)
			continue
		}
		var m contract.SnapshotManifest
		if err := json.Unmarshal(e.Value(), &m); err != nil || m.SnapshotID != r.SnapshotID || m.TotalRecords != loadRecords {
			t.Errorf("manifest of %s: %v, %+v; want its %d records", r.SnapshotID, err, m, loadRecords)
		}
		if started[r.SnapshotID] != 1 || completed[r.SnapshotID] != 1 {
			t.Errorf("snapshot %s: %d executions started, %d completed; want 1 and 1", r.SnapshotID, started[r.SnapshotID], completed[r.SnapshotID])
		}
		oe, err := n.Assets.State.Get(ctx, contract.OperationKey(r.OpID))
		if err != nil {
			t.Errorf("operation %s: %v", r.OpID, err)
			continue
		}
		var op contract.Operation
		if err := json.Unmarshal(oe.Value(), &op); err != nil || op.Attempt != 1 {
			t.Errorf("operation %s: %v, attempt %d; want the first", r.OpID, err, op.Attempt)
		}
	}
	if len(started) != len(replies) || len(completed) != len(replies) {
		t.Errorf("audit: %d snapshots started, %d completed; want %d each", len(started), len(completed), len(replies))
	}
	// Executions as the snapshotters counted them.
	fams, err := reg.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	runs := map[string]uint64{}
	for _, f := range fams {
		if f.GetName() != metrics.Namespace+"_snapshot_duration_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			runs[labelValue(m, "outcome")] += m.GetHistogram().GetSampleCount()
		}
	}
	if runs[metrics.OutcomeCompleted] != uint64(len(replies)) || len(runs) != 1 {
		t.Errorf("snapshot executions by outcome %v, want %d completed and nothing else", runs, len(replies))
	}
	// No command is left or was redelivered.
	c, err := n.JS.Consumer(ctx, contract.StreamCommands, "snapshotter")
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumPending != 0 || info.NumAckPending != 0 || info.NumRedelivered != 0 {
		t.Errorf("snapshot commands: %d pending, %d unacknowledged, %d redelivered; want none", info.NumPending, info.NumAckPending, info.NumRedelivered)
	}
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// checkLoadEvents: the watchdog took every migration event once.
func checkLoadEvents(t *testing.T, n *testenv.NATS, jobs []*loadJob) {
	t.Helper()
	ctx := t.Context()
	stream, err := n.JS.Stream(ctx, contract.StreamMigrations)
	if err != nil {
		t.Fatal(err)
	}
	sinfo, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, j := range jobs {
		total += j.published
	}
	if int(sinfo.State.Msgs) != total {
		t.Errorf("the migration stream holds %d events, the jobs published %d", sinfo.State.Msgs, total)
	}
	c, err := n.JS.Consumer(ctx, contract.StreamMigrations, watchdog.ConsumerName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.AckFloor.Stream != sinfo.State.LastSeq || info.Delivered.Stream != sinfo.State.LastSeq || info.NumRedelivered != 0 {
		t.Errorf("watchdog consumer: delivered through %d, acknowledged through %d, %d redelivered; want all %d once",
			info.Delivered.Stream, info.AckFloor.Stream, info.NumRedelivered, sinfo.State.LastSeq)
	}

	validations := map[string]int{}
	startedN, completedN := map[string]int{}, map[string]int{}
	for _, m := range auditEvents(t, n) {
		if m.Event.Service != "watchdog" {
			continue
		}
		job := fmt.Sprint(m.Event.Figures["job"])
		switch {
		case m.Event.Outcome == contract.OutcomeRejected:
			t.Errorf("the watchdog rejected an event: %s", m.Event.Error)
		case m.Event.Action == "migration.validation":
			v, _ := m.Event.Figures["valid_chunks"].(float64)
			validations[fmt.Sprintf("%s/%d", job, int64(v))]++
		case m.Event.Action == "migration.started":
			startedN[job]++
		case m.Event.Action == "migration.completed":
			completedN[job]++
		}
	}
	wantValidations := 0
	for _, j := range jobs {
		for _, v := range j.validations {
			wantValidations++
			if k := fmt.Sprintf("%s/%d", j.name, v); validations[k] != 1 {
				t.Errorf("validation %s audited %d times, want once", k, validations[k])
			}
		}
		if startedN[j.name] != 1 || completedN[j.name] != 1 {
			t.Errorf("job %s: started audited %d times, completed %d; want once each", j.name, startedN[j.name], completedN[j.name])
		}
		e, err := n.Assets.State.Get(ctx, contract.MigrationKey(j.name))
		if err != nil {
			t.Errorf("job %s has no record: %v", j.name, err)
			continue
		}
		var rec contract.MigrationRecord
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			t.Fatal(err)
		}
		var hbTime time.Time // zero when the job sent no heartbeat
		if j.lastHeartbeat.Sequence > 0 {
			hb, err := stream.GetMsg(ctx, j.lastHeartbeat.Sequence)
			if err != nil {
				t.Fatal(err)
			}
			hbTime = hb.Time
		}
		var got, last int64 = -1, -1 // -1: no validation
		if rec.Validation != nil {
			got = rec.Validation.ValidChunks
		}
		if len(j.validations) > 0 {
			last = j.validations[len(j.validations)-1]
		}
		if rec.Status != contract.MigrationCompleted || rec.Trigger != "" || !rec.LastHeartbeat.Equal(hbTime) || rec.DoneRecords != j.lastDone || got != last {
			t.Errorf("job %s record: status %s, trigger %q, last heartbeat %s (%d done), validation %d valid; want completed, none, %s (%d done), %d valid",
				j.name, rec.Status, rec.Trigger, rec.LastHeartbeat, rec.DoneRecords, got, hbTime, j.lastDone, last)
		}
	}
	if len(validations) != wantValidations {
		t.Errorf("%d validations audited, %d published", len(validations), wantValidations)
	}
}

// checkLoadAudit: the auditor's trail verifies against the stream and holds
// every audit event once. It returns the number of audit events.
func checkLoadAudit(t *testing.T, n *testenv.NATS, nc *nats.Conn, subj contract.Subjects, trailDir string) int {
	t.Helper()
	msgs := testenv.CheckAudit(t, n.JS)
	var rep contract.AuditVerifyReport
	if _, err := loadRequest(t.Context(), nc, subj.API("audit", "verify"), contract.AuditVerifyRequest{Envelope: contract.NewEnvelope(contract.TypeAuditVerifyRequest), Actor: "load"}, &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.Stream == nil || rep.Stream.Missing != 0 || rep.Stream.Duplicates != 0 || rep.Stream.Mismatched != 0 || rep.Stream.Pending != 0 ||
		rep.Lines < len(msgs) || rep.Stream.Matched < len(msgs) {
		t.Errorf("audit verify: %+v (stream %+v); want ok with every one of %d events matched once", rep, rep.Stream, len(msgs))
	}
	// The trail as written: each event of the stream once, in stream order.
	f, err := os.Open(filepath.Join(trailDir, contract.AuditTrailFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ids := map[string]int{}
	var seqs []uint64
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e contract.AuditTrailEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("trail line %d: %v", len(seqs)+1, err)
		}
		var ev contract.AuditEvent
		if err := json.Unmarshal(e.Event, &ev); err != nil {
			t.Fatalf("trail line %d: %v", len(seqs)+1, err)
		}
		ids[ev.ID]++
		seqs = append(seqs, e.Seq)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if ids[m.Event.ID] != 1 {
			t.Errorf("audit event %s (seq %d, %s) is %d times in the trail, want once", m.Event.ID, m.Seq, m.Event.Action, ids[m.Event.ID])
		}
	}
	if !slices.IsSorted(seqs) || len(seqs) < len(msgs) {
		t.Errorf("trail: %d lines, in stream order %v; want at least the %d events in order", len(seqs), slices.IsSorted(seqs), len(msgs))
	}
	return len(msgs)
}
