package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/nats-io/nats.go"
)

// TestServeKilledMidRollback: the one-process deployment (`serve`, the
// embedded JetStream and every service) is killed outright (SIGKILL: no
// cleanup, no ack) while a rollback writes a collection, then started
// again on the same data directory. The rollback, redelivered from the
// restarted JetStream, resumes from its checkpoint and ends with the
// database exactly as in the snapshot: no staging collection left, no
// fence raised, nothing running. The CLI that started it waits through
// the crash, says that it lost the connection and got it back, and
// reports the rollback completed. An `audit-log --follow` started before
// the crash does the same, and prints the completion.
func TestServeKilledMidRollback(t *testing.T) {
	ch := testenv.StartChroma(t)
	cc := ch.Client(t)
	ctx := t.Context()
	if err := testenv.SeedWorkload(ctx, cc, tTenant, tDB, 3, 600, 32, 120); err != nil {
		t.Fatal(err)
	}

	// Between serve and Chroma: the second add waits here until serve
	// is dead, so the kill lands in the middle of the restore.
	var adds atomic.Int64
	hp := startHoldingProxy(t, ch.URL, func(r *http.Request) bool {
		return r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/add") && adds.Add(1) == 2
	})
	st := serveProcess(t, hp.url)
	c, listen, serve, waitAnswer := st.cli, strings.TrimPrefix(st.cli.url, "nats://"), st.start, st.answered

	first, exited := serve()
	waitAnswer("health-check")
	if code, _, stderr := c.run("snapshot", "create", "--name", "pre_migration", "--json"); code != exitOK {
		t.Fatalf("snapshot create: exit %d: %s", code, stderr)
	}
	before := state(t, cc)

	badMigration(t, cc, before)

	// An operator follows the trail of completed rollbacks, through the
	// crash: the one the restarted serve completes is printed.
	var follow, followErr testenv.SyncBuffer
	fctx, stopFollow := context.WithCancel(ctx)
	defer stopFollow()
	followed := make(chan int, 1)
	go func() {
		followed <- run(fctx, []string{"--nats-url", c.url, "audit-log", "--follow", "--action", "rollback", "--outcome", "completed"},
			strings.NewReader(""), &follow, &followErr)
	}()
	for deadline := time.Now().Add(time.Minute); !strings.Contains(follow.String(), "no matching audit entries"); {
		if time.Now().After(deadline) {
			t.Fatalf("audit-log --follow did not start: %s%s", follow.String(), followErr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	// An operator's CLI waits for the rollback, through the crash.
	waited := c.start("", "rollback", "pre_migration", "--yes", "--json")
	select {
	case <-hp.held:
	case <-exited:
		t.Fatal("serve exited before its second add")
	case <-time.After(2 * time.Minute):
		t.Fatal("no second add within two minutes")
	}
	if err := first.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-exited
	close(hp.killed)
	// The damaged database had two collections; the first add went into
	// a staging collection besides them.
	if colls, err := cc.ListCollections(ctx, tTenant, tDB); err != nil || len(colls) <= 2 {
		t.Fatalf("when serve was killed: %d collections (%v), want the two damaged ones and staging ones", len(colls), err)
	}

	serve()
	res := await(t, waited, 4*time.Minute, "the CLI waiting through the restart")
	var op contract.Operation
	if err := json.Unmarshal([]byte(res.stdout), &op); err != nil {
		t.Fatalf("rollback --json: exit %d: %v\nstdout: %s\nstderr: %s", res.code, err, res.stdout, res.stderr)
	}
	if res.code != exitOK || op.Status != contract.StatusCompleted || op.Attempt < 2 {
		t.Fatalf("rollback after serve was killed: exit %d, %s, attempt %d (%s); want completed by a second attempt\nstderr: %s",
			res.code, op.Status, op.Attempt, op.Error, res.stderr)
	}
	for _, want := range []string{"lost the connection to NATS", "The operation goes on", "reconnected to NATS at nats://" + listen} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("the waiting CLI did not say %q:\n%s", want, res.stderr)
		}
	}
	sameState(t, "after the resumed rollback", state(t, cc), before) // staging collections would be extra ones

	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(follow.String(), "op="+op.OpID); {
		if time.Now().After(deadline) {
			t.Fatalf("audit-log --follow did not print the completed rollback after the restart:\n%s%s", follow.String(), followErr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopFollow()
	if code := <-followed; code != exitOK {
		t.Errorf("audit-log --follow ended with exit %d: %s", code, followErr.String())
	}
	for _, want := range []string{"lost the connection to NATS", "Following resumes", "reconnected to NATS at nats://" + listen} {
		if !strings.Contains(followErr.String(), want) {
			t.Errorf("audit-log --follow did not say %q:\n%s", want, followErr.String())
		}
	}

	var rep contract.StatusReport
	if err := json.Unmarshal([]byte(waitAnswer("status", "--json")), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Fences) != 0 || len(rep.Operations) != 0 {
		t.Errorf("after the rollback: fences %+v, operations %+v; want none", rep.Fences, rep.Operations)
	}
}

// servedStack is `serve` built and run as a process, as operators run it,
// against chromaURL: start starts it (again, on the same data directory),
// cli talks to it, answer retries a command until it exits 0.
type servedStack struct {
	t        *testing.T
	cli      cli
	start    func() (*exec.Cmd, chan struct{})
	answered func(args ...string) string
}

func serveProcess(t *testing.T, chromaURL string) servedStack {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "chromadb-rollback")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build chromadb-rollback: %v\n%s", err, out)
	}
	listen, dataDir, logs := freeAddr(t), t.TempDir(), &testenv.SyncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("serve:\n%s", logs.String())
		}
	})
	c := cli{t: t, url: "nats://" + listen}
	return servedStack{t: t, cli: c,
		start: func() (*exec.Cmd, chan struct{}) {
			cmd := exec.Command(bin, "serve", "--chroma-url", chromaURL, "--data-dir", dataDir, "--listen", listen, "--metrics-listen", "off")
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
		},
		answered: func(args ...string) string {
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
		}}
}

// TestServeKilledMidImport: `serve` is killed outright while its
// snapshotter converts a `snapshot import`, and started again. An import
// is a request and its one reply, not a durable command: the snapshotter
// that would have answered is gone. The waiting CLI must not wait for it
// until --wait-timeout (two hours) behind a frozen progress bar: once the
// connection is back and the import shows no progress, it stops, exit 1,
// naming the operation and how to read how it ended; the file then
// imports again.
func TestServeKilledMidImport(t *testing.T) {
	stall := importStall
	importStall = 3 * time.Second
	t.Cleanup(func() { importStall = stall })

	ch := testenv.StartChroma(t)
	cc := ch.Client(t)
	if err := testenv.SeedWorkload(t.Context(), cc, tTenant, tDB, 2, 3000, 64, 120); err != nil {
		t.Fatal(err)
	}
	st := serveProcess(t, ch.URL)
	c := st.cli
	first, exited := st.start()
	st.answered("health-check")
	if code, _, stderr := c.run("snapshot", "create", "--name", "src"); code != exitOK {
		t.Fatalf("snapshot create: exit %d: %s", code, stderr)
	}
	file := filepath.Join(t.TempDir(), "src.tar.zst")
	if code, _, stderr := c.run("snapshot", "export", "src", "-o", file); code != exitOK {
		t.Fatalf("snapshot export: exit %d: %s", code, stderr)
	}

	// Kill serve when the conversion has begun copying records.
	nc, err := nats.Connect(c.url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	copying := make(chan struct{})
	var once sync.Once
	if _, err := nc.Subscribe("chroma.progress.>", func(m *nats.Msg) {
		var p contract.Progress
		if json.Unmarshal(m.Data, &p) == nil && p.Phase == "copying" {
			once.Do(func() { close(copying) })
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	imported := c.start("", "snapshot", "import", file, "--name", "copy")
	select {
	case <-copying:
	case r := <-imported:
		t.Fatalf("import ended before serve was killed: exit %d: %s", r.code, r.stderr)
	case <-time.After(2 * time.Minute):
		t.Fatal("the import did not start copying within two minutes")
	}
	if err := first.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-exited
	st.start()

	res := await(t, imported, 90*time.Second, "the CLI waiting for the import's reply from the killed serve")
	if res.code != exitFailed {
		t.Errorf("import whose snapshotter was killed: exit %d, want %d\nstderr: %s", res.code, exitFailed, res.stderr)
	}
	for _, want := range []string{"lost the connection to NATS", "reconnected to NATS", "no answer to the import", "chromadb-rollback audit-log --op op_", "import the file again"} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("the import's CLI did not say %q:\n%s", want, res.stderr)
		}
	}
	// As it says: the file imports again.
	st.answered("health-check")
	if code, stdout, stderr := c.run("snapshot", "import", file, "--name", "copy"); code != exitOK || !strings.HasPrefix(stdout, "snap_") {
		t.Errorf("import again: exit %d: %s%s", code, stdout, stderr)
	}
}

// TestServeKilledMidPlan: `serve` is killed outright while its restorer
// makes a rollback's plan (which reads the whole archive and Chroma's
// counts: minutes for a large database), and started again. The plan's
// answer will never come. `rollback` must not wait for it silently for
// the plan's hour: once the connection is back it stops, exit 1, saying
// the answer is lost; run again, the rollback's dry run answers.
func TestServeKilledMidPlan(t *testing.T) {
	ch := testenv.StartChroma(t)
	cc := ch.Client(t)
	if err := testenv.SeedWorkload(t.Context(), cc, tTenant, tDB, 2, 50, 16, 40); err != nil {
		t.Fatal(err)
	}
	// Between serve and Chroma: while holding, a request waits until serve
	// is dead, so the kill lands in the middle of the plan.
	var holding atomic.Bool
	hp := startHoldingProxy(t, ch.URL, func(*http.Request) bool { return holding.Load() })
	st := serveProcess(t, hp.url)
	c := st.cli
	first, exited := st.start()
	st.answered("health-check")
	if code, _, stderr := c.run("snapshot", "create", "--name", "pre_migration"); code != exitOK {
		t.Fatalf("snapshot create: exit %d: %s", code, stderr)
	}

	holding.Store(true)
	planned := c.start("", "rollback", "pre_migration", "--dry-run")
	select {
	case <-hp.held:
	case r := <-planned:
		t.Fatalf("the plan ended before serve was killed: exit %d: %s%s", r.code, r.stdout, r.stderr)
	case <-time.After(time.Minute):
		t.Fatal("the plan asked nothing of Chroma within a minute")
	}
	if err := first.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-exited
	holding.Store(false)
	close(hp.killed)
	st.start()

	res := await(t, planned, 90*time.Second, "rollback --dry-run waiting for the plan of the killed serve")
	if res.code != exitFailed {
		t.Errorf("plan whose restorer was killed: exit %d, want %d\nstdout: %s\nstderr: %s", res.code, exitFailed, res.stdout, res.stderr)
	}
	for _, want := range []string{"lost the connection to NATS", "reconnected to NATS", "no answer to chroma.api.rollback.plan"} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("rollback --dry-run did not say %q:\n%s", want, res.stderr)
		}
	}
	st.answered("health-check")
	if code, stdout, stderr := c.run("rollback", "pre_migration", "--dry-run"); code != exitOK || !strings.Contains(stdout, "Dry run: nothing was changed.") {
		t.Errorf("dry run again: exit %d: %s%s", code, stdout, stderr)
	}
}

// holdingProxy stands between serve and Chroma: a request that hold picks
// waits until killed is closed (serve was killed meanwhile), then fails as
// it would have; held is closed when the first one arrives. Others pass.
type holdingProxy struct {
	url    string
	held   chan struct{}
	killed chan struct{}
}

func startHoldingProxy(t *testing.T, chromaURL string, hold func(*http.Request) bool) *holdingProxy {
	t.Helper()
	up, err := url.Parse(chromaURL)
	if err != nil {
		t.Fatal(err)
	}
	hp := &holdingProxy{held: make(chan struct{}), killed: make(chan struct{})}
	var once sync.Once
	rp := httputil.NewSingleHostReverseProxy(up)
	proxy := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hold(r) {
			once.Do(func() { close(hp.held) })
			<-hp.killed
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
	hp.url = "http://" + pl.Addr().String()
	return hp
}
