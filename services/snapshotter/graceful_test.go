package snapshotter_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
	"github.com/nats-io/nats.go"
)

// TestSnapshotterSIGTERMedMidPut: a snapshotter process stopped gracefully
// (SIGTERM, as systemd and Kubernetes stop it in a rolling restart) while
// it stores an archive gives the command back, so another instance redoes
// it at once, not after the command's AckWait (30s by default) during which
// nothing ran and status showed the stopped instance's last progress. The
// command still yields exactly one verified snapshot.
func TestSnapshotterSIGTERMedMidPut(t *testing.T) {
	e := newEnv(t)
	if err := testenv.SeedWorkload(t.Context(), e.cc, "default_tenant", "default_database", 1, 6000, 384, 100); err != nil {
		t.Fatal(err)
	}
	const ackWait = 30 * time.Second
	p := e.startSnapshotterProcess(t, ackWait)
	rep := e.createMidPut(t, p, "process_stopped")
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("snapshotter a did not stop within 10s of SIGTERM")
	}
	if p.err != nil {
		t.Errorf("snapshotter a after SIGTERM: %v", p.err)
	}
	if _, ok := e.manifest(t, rep.SnapshotID); ok {
		t.Fatal("the snapshot finished before its process was stopped; make the workload larger")
	}
	stoppedAt := time.Now()
	e.startService(t, snapshotter.Config{AckWait: ackWait, Instance: "b"})
	op := e.waitOp(t, rep.OpID, ackWait/2)
	if op.Instance != "b" {
		t.Errorf("operation record names instance %q, want b, which made the snapshot", op.Instance)
	}
	e.redelivered(t, op, rep.SnapshotID, 6000)
	t.Logf("instance b completed the snapshot %s after instance a stopped", time.Since(stoppedAt).Round(time.Millisecond))
}

// startGraceful runs an instance that stops as its process does on
// SIGTERM: its context is cancelled, Run returns, and only then is its
// connection closed.
func (e *env) startGraceful(t *testing.T, cfg snapshotter.Config) (stop func()) {
	t.Helper()
	nc := e.nats.Connect(t)
	if cfg.ChromaURL == "" {
		cfg.ChromaURL = e.chroma.URL
	}
	svc, err := snapshotter.New(cfg, nc, e.subj, e.cc, testLogger(t))
	if err != nil {
		t.Fatalf("new snapshotter: %v", err)
	}
	stop = testenv.RunService(t, "snapshotter "+cfg.Instance, nc, svc, true)
	waitForService(t, e.nats.Conn, e.subj.API("snapshot", "list"))
	return stop
}

// TestGracefulStopsDoNotGiveUpSnapshot: the work queue delivers a command
// at most MaxDeliver times, against a crash each attempt repeats; graceful
// stops (rolling restarts) must not use that up. Two snapshotters stopped
// in turn while storing the archive, with MaxDeliver 2: before, the
// second stop made the work queue give up and the snapshot failed. Now
// the last delivery's snapshotter enqueues a new copy of the command and a
// third makes the snapshot, as attempt 3, leaving only its own archive.
func TestGracefulStopsDoNotGiveUpSnapshot(t *testing.T) {
	e := newEnv(t)
	if err := testenv.SeedWorkload(t.Context(), e.cc, "default_tenant", "default_database", 1, 6000, 384, 100); err != nil {
		t.Fatal(err)
	}
	chunks := make(chan struct{}, 1024)
	sub, err := e.nats.Conn.Subscribe(bus.ChunkSubject(contract.ObjectSnapshots, ">"), func(*nats.Msg) {
		select {
		case chunks <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	cfg := snapshotter.Config{AckWait: 30 * time.Second, MaxDeliver: 2, Instance: "a"}
	stop := e.startGraceful(t, cfg)
	rep := e.create(t, contract.SnapshotCreateRequest{Name: "stopped_twice", Actor: "test"})
	for _, next := range []string{"b", "c"} {
		select {
		case <-chunks:
		case <-time.After(time.Minute):
			t.Fatal("no chunk stored within a minute")
		}
		if _, ok := e.manifest(t, rep.SnapshotID); ok {
			t.Fatal("the snapshot finished before its instance was stopped; make the workload larger")
		}
		stop()
		for len(chunks) > 0 { // what the stopped instance stored
			<-chunks
		}
		cfg.Instance = next
		stop = e.startGraceful(t, cfg)
	}
	defer stop()
	op := e.waitOp(t, rep.OpID, time.Minute)
	if op.Attempt != 3 || op.Instance != cfg.Instance {
		t.Errorf("snapshot made by attempt %d on %q, want 3 on %q", op.Attempt, op.Instance, cfg.Instance)
	}
	e.redelivered(t, op, rep.SnapshotID, 6000)
}
