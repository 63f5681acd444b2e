package main

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
)

// TestServeKilledMidRollback: the one-process deployment (`serve`, the
// embedded JetStream and every service) is killed outright (SIGKILL: no
// cleanup, no ack) while a rollback writes a collection, then started
// again on the same data directory. The rollback, redelivered from the
// restarted JetStream, resumes from its checkpoint and ends with the
// database exactly as in the snapshot: no staging collection left, no
// fence raised, nothing running.
func TestServeKilledMidRollback(t *testing.T) {
	ch := testenv.StartChroma(t)
	cc := ch.Client(t)
	ctx := t.Context()
	if err := testenv.SeedWorkload(ctx, cc, tTenant, tDB, 3, 600, 32, 120); err != nil {
		t.Fatal(err)
	}

	// Between serve and Chroma: the second add waits here until serve
	// is dead, so the kill lands in the middle of the restore.
	up, err := url.Parse(ch.URL)
	if err != nil {
		t.Fatal(err)
	}
	var adds atomic.Int64
	held, killed := make(chan struct{}), make(chan struct{})
	rp := httputil.NewSingleHostReverseProxy(up)
	proxy := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/add") && adds.Add(1) == 2 {
			close(held)
			<-killed
			http.Error(w, "serve was killed", http.StatusServiceUnavailable)
			return
		}
		rp.ServeHTTP(w, r)
	})}
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = proxy.Serve(pl) }()
	t.Cleanup(func() { _ = proxy.Close() })

	bin := filepath.Join(t.TempDir(), "chromadb-rollback")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build chromadb-rollback: %v\n%s", err, out)
	}
	nl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := nl.Addr().String()
	nl.Close()
	dataDir := t.TempDir()
	logs := &testenv.SyncBuffer{}
	serve := func() (*exec.Cmd, chan struct{}) {
		cmd := exec.Command(bin, "serve", "--chroma-url", "http://"+pl.Addr().String(), "--data-dir", dataDir,
			"--listen", listen, "--metrics-listen", "off")
		cmd.Env = append(os.Environ(), "LOG_LEVEL=info")
		cmd.Stdout, cmd.Stderr = logs, logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-exited
		})
		return cmd, exited
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("serve:\n%s", logs.String())
		}
	})
	c := cli{t: t, url: "nats://" + listen}
	// waitAnswer retries a CLI command until it exits 0 (serve starting).
	waitAnswer := func(args ...string) string {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for {
			code, stdout, stderr := c.run(append(args, "--timeout", "5s")...)
			if code == exitOK {
				return stdout
			}
			if time.Now().After(deadline) {
				t.Fatalf("%v: exit %d: %s", args, code, stderr)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	first, exited := serve()
	waitAnswer("health-check")
	if code, _, stderr := c.run("snapshot", "create", "--name", "pre_migration", "--json"); code != exitOK {
		t.Fatalf("snapshot create: exit %d: %s", code, stderr)
	}
	before := state(t, cc)

	badMigration(t, cc, before)

	code, stdout, stderr := c.run("rollback", "pre_migration", "--yes", "--no-wait", "--json")
	if code != exitOK {
		t.Fatalf("rollback: exit %d: %s", code, stderr)
	}
	var reply contract.RollbackReply
	if err := json.Unmarshal([]byte(stdout), &reply); err != nil || reply.OpID == "" {
		t.Fatalf("rollback --no-wait --json: %v\n%s", err, stdout)
	}
	select {
	case <-held:
	case <-exited:
		t.Fatal("serve exited before its second add")
	case <-time.After(2 * time.Minute):
		t.Fatal("no second add within two minutes")
	}
	if err := first.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-exited
	close(killed)
	// The damaged database had two collections; the first add went into
	// a staging collection besides them.
	if colls, err := cc.ListCollections(ctx, tTenant, tDB); err != nil || len(colls) <= 2 {
		t.Fatalf("when serve was killed: %d collections (%v), want the two damaged ones and staging ones", len(colls), err)
	}

	serve()
	var op contract.Operation
	deadline := time.Now().Add(3 * time.Minute)
	for {
		out := waitAnswer("rollback-status", reply.OpID, "--json")
		if err := json.Unmarshal([]byte(out), &op); err != nil {
			t.Fatalf("rollback-status --json: %v\n%s", err, out)
		}
		if op.Status == contract.StatusCompleted || op.Status == contract.StatusFailed || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if op.Status != contract.StatusCompleted || op.Attempt < 2 {
		t.Fatalf("rollback after serve was killed: %s, attempt %d (%s); want completed by a second attempt", op.Status, op.Attempt, op.Error)
	}
	sameState(t, "after the resumed rollback", state(t, cc), before) // staging collections would be extra ones

	var st contract.StatusReport
	if err := json.Unmarshal([]byte(waitAnswer("status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Fences) != 0 || len(st.Operations) != 0 {
		t.Errorf("after the rollback: fences %+v, operations %+v; want none", st.Fences, st.Operations)
	}
}
