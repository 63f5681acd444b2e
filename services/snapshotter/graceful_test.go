package snapshotter_test

import (
	"os/exec"
	"path/filepath"
	"sync"
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
	bin := filepath.Join(t.TempDir(), "snapshotter")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/snapshotter").CombinedOutput(); err != nil {
		t.Fatalf("build the snapshotter: %v\n%s", err, out)
	}
	const ackWait = 30 * time.Second
	logs := &testenv.SyncBuffer{}
	cmd := exec.Command(bin, "--nats-url", e.nats.URL, "--chroma-url", e.chroma.URL, "--instance", "a", "--ack-wait", ackWait.String())
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("snapshotter a:\n%s", logs.String())
		}
	})
	waitForService(t, e.nats.Conn, e.subj.API("snapshot", "list"))

	stored := make(chan struct{})
	var once sync.Once
	sub, err := e.nats.Conn.Subscribe(bus.ChunkSubject(contract.ObjectSnapshots, ">"), func(*nats.Msg) { once.Do(func() { close(stored) }) })
	if err != nil {
		t.Fatal(err)
	}
	rep := e.create(t, contract.SnapshotCreateRequest{Name: "process_stopped"})
	select {
	case <-stored:
	case <-exited:
		t.Fatalf("snapshotter a exited before storing a chunk: %v", waitErr)
	case <-time.After(time.Minute):
		t.Fatal("no chunk stored within a minute")
	}
	_ = sub.Unsubscribe()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("snapshotter a did not stop within 10s of SIGTERM")
	}
	if waitErr != nil {
		t.Errorf("snapshotter a after SIGTERM: %v", waitErr)
	}
	if _, ok := e.manifest(t, rep.SnapshotID); ok {
		t.Fatal("the snapshot finished before its process was stopped; make the workload larger")
	}
	stoppedAt := time.Now()
	e.startService(t, snapshotter.Config{AckWait: ackWait, Instance: "b"})
	e.redelivered(t, e.waitOp(t, rep.OpID, ackWait/2), rep.SnapshotID, 6000)
	t.Logf("instance b completed the snapshot %s after instance a stopped", time.Since(stoppedAt).Round(time.Millisecond))
}
