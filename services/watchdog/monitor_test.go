package watchdog_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/disk"
	"github.com/chromadb-rollback/chromadb-rollback/services/watchdog"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// heartbeats is the fast config of watchdog "wd" checking Chroma's
// heartbeat every interval, each check bounded by timeout, pausing after
// failures in a row.
func (e *env) heartbeats(interval, timeout time.Duration, failures int) watchdog.Config {
	cfg := e.fast("wd")
	cfg.HeartbeatInterval, cfg.HeartbeatTimeout, cfg.HeartbeatFailures = interval, timeout, failures
	return cfg
}

// TestHungChromaPausesAndResumes: a Chroma that takes connections and
// answers nothing (frozen) pauses the job as a stopped one does, and the
// reason says it did not answer in time, not "context deadline exceeded".
func TestHungChromaPausesAndResumes(t *testing.T) {
	e := newEnv(t, true)
	const job = "hung-job"
	e.watchdog(t, e.heartbeats(200*time.Millisecond, 300*time.Millisecond, 2))
	ctl := e.controls(t, job)
	e.publish(t, job, contract.EventStarted, "", started("acme", "prod", "snap_unused", time.Hour))
	e.waitRecord(t, job, 10*time.Second, "recorded", func(r contract.MigrationRecord) bool { return r.Run > 0 })

	thaw := e.chroma.Freeze(t)
	pause := ctl.wait(t, contract.ControlPause, 10*time.Second)
	if want := "no answer within 300ms"; !strings.Contains(pause.Reason, want) || strings.Contains(pause.Reason, "deadline exceeded") {
		t.Errorf("pause reason %q, want it to say %q", pause.Reason, want)
	}
	thaw()
	if resume := ctl.wait(t, contract.ControlResume, 10*time.Second); !strings.Contains(resume.Reason, "recovered") {
		t.Errorf("resume reason %q", resume.Reason)
	}
}

// TestChromaOutagePausesAndResumes: Chroma stopped mid-migration: the job
// gets pause within the configured detection time (failures x interval,
// plus one check's timeout); Chroma back: resume. Nothing is rolled back.
func TestChromaOutagePausesAndResumes(t *testing.T) {
	e := newEnv(t, true)
	const job = "outage-job"
	cfg := e.heartbeats(200*time.Millisecond, 200*time.Millisecond, 3)
	e.watchdog(t, cfg)
	ctl := e.controls(t, job)
	// Another run, ended, is left alone.
	e.publish(t, "done-job", contract.EventStarted, "", started("acme", "other", "snap_unused", time.Hour))
	e.publish(t, "done-job", contract.EventCompleted, "", contract.MigrationEvent{})
	e.publish(t, job, contract.EventStarted, "", started("acme", "prod", "snap_unused", time.Hour))
	e.waitRecord(t, job, 10*time.Second, "recorded", func(r contract.MigrationRecord) bool { return r.Run > 0 })
	e.waitRecord(t, "done-job", 10*time.Second, "completed", func(r contract.MigrationRecord) bool { return r.Status == contract.MigrationCompleted })
	time.Sleep(2 * cfg.HeartbeatInterval) // a healthy check or two first

	stopped := time.Now()
	e.chroma.Stop()
	detection := time.Duration(cfg.HeartbeatFailures)*cfg.HeartbeatInterval + cfg.HeartbeatTimeout
	pause := ctl.wait(t, contract.ControlPause, detection+5*time.Second)
	if took := pause.At.Sub(stopped); took > detection+time.Second {
		t.Errorf("pause came %s after Chroma stopped; detection time is %s", took, detection)
	}
	if !strings.Contains(pause.Reason, "heartbeats in a row") {
		t.Errorf("pause reason %q", pause.Reason)
	}
	rec := e.waitRecord(t, job, 5*time.Second, "paused", func(r contract.MigrationRecord) bool { return r.Status == contract.MigrationPaused })
	if len(rec.PausedBy) != 1 || rec.PausedBy[0].Reason != contract.PauseConnectivity || rec.PausedBy[0].Instance != "wd" {
		t.Errorf("paused by %+v", rec.PausedBy)
	}
	rep := e.status(t)
	if len(rep.Alerts) != 1 || rep.Alerts[0].Name != "connectivity" || len(rep.Migrations) != 1 || rep.Migrations[0].Status != contract.MigrationPaused {
		t.Errorf("status during the outage: alerts %s, migrations %s", mustJSON(t, rep.Alerts), mustJSON(t, rep.Migrations))
	}

	e.chroma.Restart(t)
	resume := ctl.wait(t, contract.ControlResume, 10*time.Second)
	if !strings.Contains(resume.Reason, "recovered") {
		t.Errorf("resume reason %q", resume.Reason)
	}
	rec = e.waitRecord(t, job, 5*time.Second, "running", func(r contract.MigrationRecord) bool { return r.Status == contract.MigrationRunning })
	if len(rec.PausedBy) != 0 || rec.Trigger != "" {
		t.Errorf("record after the outage: %s", mustJSON(t, rec))
	}
	if n, m := ctl.count(contract.ControlPause), ctl.count(contract.ControlResume); n != 1 || m != 1 {
		t.Errorf("%d pause and %d resume commands, want one each: %v", n, m, ctl.commands())
	}
	evs := e.audit(t)
	alerts := find(evs, func(a auditEntry) bool { return a.Action == "alert.connectivity" })
	if len(alerts) != 2 || alerts[0].Outcome != contract.OutcomeAlert || alerts[1].Outcome != contract.OutcomeCompleted ||
		figure(alerts[0], "consecutive_failures") != "3" {
		t.Errorf("connectivity alerts: %s", mustJSON(t, alerts))
	}
	if got := find(evs, byWatchdog(job, "control.pause")); len(got) != 1 {
		t.Errorf("pause audit events: %d", len(got))
	}
	if got := find(evs, byWatchdog("done-job", "control.pause")); len(got) != 0 {
		t.Errorf("the ended run was paused")
	}
	if ops := e.rollbackOps(t); len(ops) != 0 || len(find(evs, func(a auditEntry) bool { return strings.HasPrefix(a.Action, "trigger.") })) != 0 {
		t.Errorf("a trigger fired during the outage: %+v", ops)
	}
}

// TestDiskAndJetStreamPause: a free-space threshold set above the free
// space measured on a watched path raises an alert and pauses the job; the
// threshold restored, it resumes (once no rollback fences its database).
// The same for a JetStream stream filled near its byte limit, and purged.
func TestDiskAndJetStreamPause(t *testing.T) {
	e := newEnv(t, false)
	const job = "disk-job"
	cfg := e.fast("wd")
	cfg.JetStreamNear = 0.9
	d := e.diskPaused(t, &cfg, job)
	svc, ctl, pause, dir := d.svc, d.ctl, d.pause, d.dir
	if !strings.Contains(pause.Reason, "free disk space under the threshold") || !strings.Contains(pause.Reason, dir) {
		t.Errorf("pause reason %q", pause.Reason)
	}
	rec := e.waitRecord(t, job, 5*time.Second, "paused", func(r contract.MigrationRecord) bool { return r.Status == contract.MigrationPaused })
	if len(rec.PausedBy) != 1 || rec.PausedBy[0].Reason != contract.PauseDiskPrefix+"wd" {
		t.Errorf("paused by %+v", rec.PausedBy)
	}
	alert := e.waitAudit(t, 5*time.Second, "disk alert", func(a auditEntry) bool { return a.Action == "alert.disk" && a.Outcome == contract.OutcomeAlert })
	if alert.Figures["min_free_bytes"] != float64(d.minFree) {
		t.Errorf("disk alert figures %v", alert.Figures)
	}
	// Recovered while a rollback fences the database: the job stays paused
	// until the fence is lowered.
	fence := contract.Fence{Envelope: contract.NewEnvelope(contract.TypeFence), Tenant: "acme", Database: "prod", OpID: "op_other", RaisedAt: time.Now().UTC()}
	if _, err := e.nats.Assets.State.Put(t.Context(), contract.FenceKey("acme", "prod"), []byte(mustJSON(t, fence))); err != nil {
		t.Fatal(err)
	}
	svc.SetDiskMinFree(1 << 20)
	time.Sleep(5 * cfg.DiskInterval)
	if n := ctl.count(contract.ControlResume); n != 0 {
		t.Fatalf("resumed into a fenced database")
	}
	if err := e.nats.Assets.State.Purge(t.Context(), contract.FenceKey("acme", "prod")); err != nil {
		t.Fatal(err)
	}
	ctl.wait(t, contract.ControlResume, 5*time.Second)
	e.waitRecord(t, job, 5*time.Second, "running", func(r contract.MigrationRecord) bool { return r.Status == contract.MigrationRunning })

	// JetStream: a stream filled past 90% of its byte limit.
	ctx := t.Context()
	st, err := e.nats.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "WD_TEST_FULL", Subjects: []string{"wdtest.>"}, MaxBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 1<<10)
	for range 62 {
		if _, err := e.nats.JS.Publish(ctx, "wdtest.fill", payload); err != nil {
			t.Fatal(err)
		}
	}
	pause = ctl.wait(t, contract.ControlPause, 5*time.Second)
	if !strings.Contains(pause.Reason, "JetStream storage is near its limit") || !strings.Contains(pause.Reason, "WD_TEST_FULL") {
		t.Errorf("pause reason %q", pause.Reason)
	}
	rec = e.waitRecord(t, job, 5*time.Second, "paused", func(r contract.MigrationRecord) bool { return r.Status == contract.MigrationPaused })
	if len(rec.PausedBy) != 1 || rec.PausedBy[0].Reason != contract.PauseJetStream {
		t.Errorf("paused by %+v", rec.PausedBy)
	}
	if err := st.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	ctl.wait(t, contract.ControlResume, 5*time.Second)
	if n, m := ctl.count(contract.ControlPause), ctl.count(contract.ControlResume); n != 2 || m != 2 {
		t.Errorf("%d pause and %d resume commands, want two each: %v", n, m, ctl.commands())
	}
	if got := find(e.audit(t), func(a auditEntry) bool { return a.Action == "alert.jetstream_storage" }); len(got) != 2 {
		t.Errorf("JetStream alerts: %s", mustJSON(t, got))
	}
}

// TestDiskPauseOfGoneInstanceLifted: a disk pause is lifted only by the
// instance that watches those paths, so one whose instance stopped while
// the disk was low held the job paused for ever once the disk recovered
// (a restarted serve is a new instance: its name has its pid). Another
// instance lifts it once the one that paused no longer answers, and not
// while it does.
func TestDiskPauseOfGoneInstanceLifted(t *testing.T) {
	e := newEnv(t, false)
	const job = "disk-gone"
	cfg := e.fast("wd-old")
	d := e.diskPaused(t, &cfg, job)
	stopOld, ctl := d.stop, d.ctl
	e.waitRecord(t, job, 5*time.Second, "paused", func(r contract.MigrationRecord) bool { return r.Status == contract.MigrationPaused })

	// The new instance finds the disk fine; the old one still runs and
	// still finds it low: the job stays paused.
	cfg.Instance = "wd-new"
	e.watchdog(t, cfg)
	time.Sleep(20 * cfg.DiskInterval)
	if n := ctl.count(contract.ControlResume); n != 0 {
		t.Fatalf("resumed while the instance that paused it still finds its disk low: %v", ctl.commands())
	}
	stopOld()
	ctl.wait(t, contract.ControlResume, 10*time.Second)
	rec := e.waitRecord(t, job, 5*time.Second, "running", func(r contract.MigrationRecord) bool { return r.Status == contract.MigrationRunning })
	if len(rec.PausedBy) != 0 {
		t.Errorf("paused by %+v", rec.PausedBy)
	}
}

// diskRun is a job paused for low disk space by a watchdog (diskPaused).
type diskRun struct {
	svc     *watchdog.Service
	stop    func()
	ctl     *controlLog
	pause   timedControl
	dir     string // the directory the watchdog watches
	minFree uint64 // the threshold it was given: a GiB over dir's free space
}

// diskPaused starts a watchdog of cfg, set to watch a fresh directory
// every 100 ms, and a run of job; then it sets the watchdog's free-space
// threshold a GiB above what the directory has, and waits for the pause.
func (e *env) diskPaused(t *testing.T, cfg *watchdog.Config, job string) diskRun {
	t.Helper()
	d := diskRun{dir: t.TempDir()}
	cfg.DiskPaths, cfg.DiskInterval = []string{d.dir}, 100*time.Millisecond
	d.svc, d.stop = e.watchdog(t, *cfg)
	d.ctl = e.controls(t, job)
	e.publish(t, job, contract.EventStarted, "", started("acme", "prod", "snap_unused", time.Hour))
	e.waitRecord(t, job, 10*time.Second, "recorded", func(r contract.MigrationRecord) bool { return r.Run > 0 })
	free, err := disk.Free(d.dir)
	if err != nil {
		t.Fatal(err)
	}
	d.minFree = free + 1<<30
	d.svc.SetDiskMinFree(d.minFree)
	d.pause = d.ctl.wait(t, contract.ControlPause, 5*time.Second)
	return d
}

// TestRunStartedWhileFencedIsPaused: a run that starts while a rollback
// fences its database was never told to pause: the restorer pauses the
// runs it finds when it raises the fence, and this one came later, so it
// wrote into the database being restored (status said "fence of" the
// rollback all the same). The watchdog pauses it, and resumes it once
// that fence is lowered: one pause, one resume.
func TestRunStartedWhileFencedIsPaused(t *testing.T) {
	e := newEnv(t, false)
	const job = "late-job"
	e.watchdog(t, e.fast("wd"))
	ctl := e.controls(t, job)
	fence := contract.Fence{Envelope: contract.NewEnvelope(contract.TypeFence), Tenant: "acme", Database: "fenced", OpID: "op_running", RaisedAt: time.Now().UTC()}
	if _, err := e.nats.Assets.State.Put(t.Context(), contract.FenceKey("acme", "fenced"), []byte(mustJSON(t, fence))); err != nil {
		t.Fatal(err)
	}
	e.publish(t, job, contract.EventStarted, "", started("acme", "fenced", "snap_unused", time.Hour))
	pause := ctl.wait(t, contract.ControlPause, 5*time.Second)
	if !strings.Contains(pause.Reason, "op_running") {
		t.Errorf("pause reason %q", pause.Reason)
	}
	rec := e.waitRecord(t, job, 5*time.Second, "paused", func(r contract.MigrationRecord) bool { return r.Status == contract.MigrationPaused })
	if len(rec.PausedBy) != 1 || rec.PausedBy[0].Reason != contract.PauseFencePrefix+"op_running" {
		t.Errorf("paused by %+v", rec.PausedBy)
	}
	time.Sleep(500 * time.Millisecond) // ticks while the fence holds resume nothing
	if n := ctl.count(contract.ControlResume); n != 0 {
		t.Fatalf("resumed while the fence holds: %v", ctl.commands())
	}
	if err := e.nats.Assets.State.Purge(t.Context(), contract.FenceKey("acme", "fenced")); err != nil {
		t.Fatal(err)
	}
	ctl.wait(t, contract.ControlResume, 5*time.Second)
	rec = e.waitRecord(t, job, 5*time.Second, "running", func(r contract.MigrationRecord) bool { return r.Status == contract.MigrationRunning })
	if len(rec.PausedBy) != 0 {
		t.Errorf("paused by %+v", rec.PausedBy)
	}
	time.Sleep(300 * time.Millisecond)
	if n, m := ctl.count(contract.ControlPause), ctl.count(contract.ControlResume); n != 1 || m != 1 {
		t.Errorf("%d pause and %d resume commands, want one each: %v", n, m, ctl.commands())
	}

	// A run started on a database no rollback fences is not paused.
	const free = "free-job"
	ctl2 := e.controls(t, free)
	e.publish(t, free, contract.EventStarted, "", started("acme", "prod", "snap_unused", time.Hour))
	e.waitRecord(t, free, 5*time.Second, "recorded", func(r contract.MigrationRecord) bool { return r.Run > 0 })
	time.Sleep(300 * time.Millisecond)
	if got := ctl2.commands(); len(got) != 0 {
		t.Errorf("commands to a run of an unfenced database: %v", got)
	}
}

// TestResumeRacingAFenceHolds: the watchdog checks for a fence before it
// lifts a run's last pause reason; a rollback that raises its fence right
// after that check lists the runs then, finds this one still paused and
// leaves it alone, and the resume that follows let the job write into the
// database being restored. The watchdog looks again once the run is
// recorded running: a fence raised meanwhile holds the run paused (its
// reason fence@<op>) instead, until that fence is lowered.
func TestResumeRacingAFenceHolds(t *testing.T) {
	e := newEnv(t, false)
	const job = "race-job"
	cfg := e.fast("wd")
	d := e.diskPaused(t, &cfg, job)
	e.waitRecord(t, job, 5*time.Second, "paused", func(r contract.MigrationRecord) bool { return r.Status == contract.MigrationPaused })

	fence := contract.Fence{Envelope: contract.NewEnvelope(contract.TypeFence), Tenant: "acme", Database: "prod", OpID: "op_racing", RaisedAt: time.Now().UTC()}
	var raised sync.Once
	release := watchdog.HangAfterRecordWrite(func(r *contract.MigrationRecord) bool {
		if r.Job == job && r.Status == contract.MigrationRunning && len(r.PausedBy) == 0 {
			raised.Do(func() {
				if _, err := e.nats.Assets.State.Put(context.Background(), contract.FenceKey("acme", "prod"), []byte(mustJSON(t, fence))); err != nil {
					t.Error(err)
				}
			})
		}
		return false
	})
	t.Cleanup(release)
	d.svc.SetDiskMinFree(1 << 20)
	rec := e.waitRecord(t, job, 5*time.Second, "held by the fence", func(r contract.MigrationRecord) bool {
		return len(r.PausedBy) == 1 && r.PausedBy[0].Reason == contract.PauseFencePrefix+"op_racing"
	})
	if rec.Status != contract.MigrationPaused {
		t.Errorf("record: %s", mustJSON(t, rec))
	}
	time.Sleep(300 * time.Millisecond)
	if n := d.ctl.count(contract.ControlResume); n != 0 {
		t.Fatalf("resumed into a fenced database: %v", d.ctl.commands())
	}
	release()
	if err := e.nats.Assets.State.Purge(t.Context(), contract.FenceKey("acme", "prod")); err != nil {
		t.Fatal(err)
	}
	d.ctl.wait(t, contract.ControlResume, 5*time.Second)
	e.waitRecord(t, job, 5*time.Second, "running", func(r contract.MigrationRecord) bool {
		return r.Status == contract.MigrationRunning && len(r.PausedBy) == 0
	})
	time.Sleep(300 * time.Millisecond)
	if n := d.ctl.count(contract.ControlResume); n != 1 {
		t.Errorf("%d resume commands, want one: %v", n, d.ctl.commands())
	}
}

// TestConnectivityPauseOfOtherInstanceHolds: two instances that disagree
// about Chroma (one cannot reach it: a partition, a wrong URL) paused and
// resumed the job at every tick, the one lifting what the other had just
// set. A connectivity pause is lifted by the instance that set it, or,
// once that instance has stopped, by another (as a disk pause is).
func TestConnectivityPauseOfOtherInstanceHolds(t *testing.T) {
	e := newEnv(t, false)
	const job = "split-job"
	healthy := e.heartbeats(200*time.Millisecond, 200*time.Millisecond, 2)
	healthy.Instance = "wd-sees-chroma"
	healthy.DiskInterval = 100 * time.Millisecond // the check for stopped instances
	e.watchdog(t, healthy)
	ctl := e.controls(t, job)
	e.publish(t, job, contract.EventStarted, "", started("acme", "prod", "snap_unused", time.Hour))
	e.waitRecord(t, job, 10*time.Second, "recorded", func(r contract.MigrationRecord) bool { return r.Run > 0 })

	cut := e.heartbeats(200*time.Millisecond, 200*time.Millisecond, 2)
	cut.Instance, cut.ChromaURL = "wd-cut-off", "http://127.0.0.1:1" // nothing answers there
	cc, err := chroma.New(cut.ChromaURL, chroma.WithRetryMaxElapsed(0))
	if err != nil {
		t.Fatal(err)
	}
	stopCut := e.run(t, "watchdog "+cut.Instance, func(nc *nats.Conn) (runner, error) {
		return watchdog.New(cut, nc, e.subj, cc, testLogger(t))
	})
	ctl.wait(t, contract.ControlPause, 10*time.Second)
	time.Sleep(2 * time.Second)
	if p, r := ctl.count(contract.ControlPause), ctl.count(contract.ControlResume); p != 1 || r != 0 {
		t.Fatalf("%d pause and %d resume commands while one instance cannot reach Chroma, want one pause: %v", p, r, ctl.commands())
	}
	rec, _ := e.record(t, job)
	if rec.Status != contract.MigrationPaused || len(rec.PausedBy) != 1 || rec.PausedBy[0].Instance != cut.Instance {
		t.Errorf("record: %s", mustJSON(t, rec))
	}
	stopCut()
	ctl.wait(t, contract.ControlResume, 10*time.Second)
	e.waitRecord(t, job, 5*time.Second, "running", func(r contract.MigrationRecord) bool {
		return r.Status == contract.MigrationRunning && len(r.PausedBy) == 0
	})
}
