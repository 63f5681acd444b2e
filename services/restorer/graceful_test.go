package restorer_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/chromadb-rollback/chromadb-rollback/services/restorer"
)

// startGraceful runs a restorer that stops as its process does on SIGTERM
// (systemd, Kubernetes): its context is cancelled, Run returns, and only
// then is its connection closed.
func (e *env) startGraceful(t *testing.T, cfg restorer.Config, hook func(context.Context, restorer.HookPoint) error) (stop func()) {
	t.Helper()
	if cfg.ChromaURL == "" {
		cfg.ChromaURL = e.chroma.URL
	}
	nc := e.nats.Connect(t)
	svc, err := restorer.New(cfg, nc, e.subj, e.cc, testLogger(t))
	if err != nil {
		t.Fatalf("new restorer %s: %v", cfg.Instance, err)
	}
	if hook != nil {
		restorer.SetHook(svc, hook)
	}
	stop = testenv.RunService(t, "restorer "+cfg.Instance, nc, svc, true)
	waitForService(t, e.nats.Conn, e.subj.API("rollback", "status"))
	return stop
}

// TestGracefulStopHandsOverAtOnce: a restorer stopped gracefully (SIGTERM,
// as a rolling restart does) in the middle of a rollback gives its command
// back to the work queue, so another instance resumes it at once instead of
// after the command's AckWait (30s by default), during which nothing
// restored and the database stayed fenced. The rollback still ends exactly
// once, in the snapshot's state.
func TestGracefulStopHandsOverAtOnce(t *testing.T) {
	e := seeded(t)
	pre, snap, damaged := e.snapshotThenDamage(t)

	const ackWait = 30 * time.Second
	reached := make(chan struct{}, 1)
	var once atomic.Bool
	stopA := e.startGraceful(t, restorer.Config{Instance: "a", AckWait: ackWait}, func(ctx context.Context, p restorer.HookPoint) error {
		if p.Attempt == 1 && p.Name == "batch" && p.Batch == 2 && once.CompareAndSwap(false, true) {
			reached <- struct{}{}
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	})
	r := e.start(t, contract.RollbackRequest{SnapshotID: snap, Confirm: true})
	select {
	case <-reached:
	case <-time.After(time.Minute):
		t.Fatal("the rollback never reached its second batch")
	}
	stopA()
	stoppedAt := time.Now()
	stopB := e.startGraceful(t, restorer.Config{Instance: "b", AckWait: ackWait}, nil)
	defer stopB()

	op := e.waitOp(t, r.OpID, ackWait/2)
	if op.Status != contract.StatusCompleted || op.Attempt != 2 || op.Instance != "b" {
		t.Fatalf("rollback after the graceful stop: %s attempt %d on %q: %s; want completed, attempt 2 on b", op.Status, op.Attempt, op.Instance, op.Error)
	}
	t.Logf("instance b completed the rollback %s after instance a stopped", time.Since(stoppedAt).Round(time.Millisecond))
	want := pre.clone()
	want["migration_added"] = damaged["migration_added"]
	compareDB(t, "after the handed-over rollback", e.dump(t, "acme", "prod"), want, nil)
	e.assertReleased(t)
	if n := e.safetySnapshots(t, r.OpID); n != 1 {
		t.Errorf("%d safety snapshots for one rollback, want 1", n)
	}
}

// TestGracefulStopsDoNotGiveUpRollback: the work queue delivers a command
// at most MaxDeliver times, so that a crash each attempt repeats ends in a
// failed operation instead of a loop; graceful stops (rolling restarts
// during a long rollback) must not use that up. Two restorers stopped in
// turn with MaxDeliver 2: before, the second stop made the work queue give
// up, failing the rollback half restored with its fence raised. Now the
// last delivery's restorer enqueues a new copy of the command, and a third
// restorer completes the rollback as attempt 3.
func TestGracefulStopsDoNotGiveUpRollback(t *testing.T) {
	e := seeded(t)
	pre, snap, damaged := e.snapshotThenDamage(t)

	reached := make(chan int, 2)
	hold := func(ctx context.Context, p restorer.HookPoint) error {
		if p.Name == "batch" && p.Batch == p.Attempt+1 {
			reached <- p.Attempt
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	}
	cfg := restorer.Config{Instance: "a", AckWait: 30 * time.Second, MaxDeliver: 2}
	stop := e.startGraceful(t, cfg, hold)
	r := e.start(t, contract.RollbackRequest{SnapshotID: snap, Confirm: true})
	for _, name := range []string{"b", "c"} {
		select {
		case a := <-reached:
			t.Logf("stopping the restorer of attempt %d", a)
		case <-time.After(time.Minute):
			t.Fatal("the rollback did not reach its hold point")
		}
		stop()
		cfg.Instance = name
		if name == "c" {
			stop = e.startGraceful(t, cfg, nil)
		} else {
			stop = e.startGraceful(t, cfg, hold)
		}
	}
	defer stop()
	op := e.waitOp(t, r.OpID, time.Minute)
	if op.Status != contract.StatusCompleted || op.Attempt != 3 {
		t.Fatalf("rollback after two graceful stops with MaxDeliver 2: %s attempt %d: %s", op.Status, op.Attempt, op.Error)
	}
	want := pre.clone()
	want["migration_added"] = damaged["migration_added"]
	compareDB(t, "after the rollback stopped twice", e.dump(t, "acme", "prod"), want, nil)
	e.assertReleased(t)
	if n := e.safetySnapshots(t, r.OpID); n != 1 {
		t.Errorf("%d safety snapshots for one rollback, want 1", n)
	}
	// The stream holds no command left over, nor a copy given up on.
	time.Sleep(time.Second)
	if info, err := e.nats.Assets.Commands.Info(t.Context()); err != nil || info.State.Msgs != 0 {
		t.Errorf("commands left in %s: %+v (%v)", contract.StreamCommands, info.State, err)
	}
}
