package main

import (
	"context"
	"encoding/json"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/migration"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/nats-io/nats.go"
)

// TestServeWatchdogSettings: serve's watchdog takes the trigger settings
// bin/watchdog takes, as flags and from the environment. With
// --validation-threshold 0.99 a validation of 0.98 fires (the default 0.95
// would not); with AUTOMATIC_ROLLBACK_ENABLED=false it raises an alert
// naming the command instead of rolling back; MIGRATION_TIME_LIMIT sets
// the deadline of a run that gives none.
func TestServeWatchdogSettings(t *testing.T) {
	ch := testenv.StartChroma(t)
	if err := testenv.SeedWorkload(t.Context(), ch.Client(t), "default_tenant", "default_database", 1, 20, 8, 40); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NATS_URL", "")
	t.Setenv("AUTOMATIC_ROLLBACK_ENABLED", "false")
	t.Setenv("MIGRATION_TIME_LIMIT", "2h")

	c := cli{t: t, url: "nats://127.0.0.1:1"}
	if code, _, stderr := c.run("serve", "--chroma-url", ch.URL, "--data-dir", t.TempDir(), "--listen", freeAddr(t), "--metrics-listen", "off", "--validation-threshold", "1.5"); code != exitUsage || !strings.Contains(stderr, "validation threshold 1.5") {
		t.Errorf("serve --validation-threshold 1.5: exit %d, %s; want %d naming it", code, stderr, exitUsage)
	}
	t.Setenv("HEARTBEAT_FAILURES", "many")
	if code, _, stderr := c.run("serve", "--chroma-url", ch.URL, "--data-dir", t.TempDir(), "--listen", freeAddr(t), "--metrics-listen", "off"); code != exitUsage || !strings.Contains(stderr, "HEARTBEAT_FAILURES") {
		t.Errorf("serve with HEARTBEAT_FAILURES=many: exit %d, %s; want %d naming it", code, stderr, exitUsage)
	}
	t.Setenv("HEARTBEAT_FAILURES", "")

	c = startServe(t, "--chroma-url", ch.URL, "--data-dir", t.TempDir(), "--validation-threshold", "0.99")
	if code, _, stderr := c.run("snapshot", "create", "--name", "pre"); code != exitOK {
		t.Fatalf("snapshot create: exit %d: %s", code, stderr)
	}

	nc, err := nats.Connect(c.url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	job, err := migration.New(nc, "strict")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := job.Start(t.Context(), migration.StartOptions{Tenant: "default_tenant", Database: "default_database", SnapshotID: "pre"}); err != nil {
		t.Fatal(err)
	}
	if err := job.ReportValidation(t.Context(), 98, 100); err != nil {
		t.Fatal(err)
	}

	var rec contract.MigrationRecord
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		code, stdout, stderr := c.run("status", "--json")
		var rep contract.StatusReport
		if code != exitOK || json.Unmarshal([]byte(stdout), &rep) != nil {
			t.Fatalf("status: exit %d: %s%s", code, stdout, stderr)
		}
		for _, m := range rep.Migrations {
			if m.Job == "strict" {
				rec = m
			}
		}
		if rec.RollbackCommand != "" || time.Now().After(deadline) {
			break
		}
	}
	if rec.Trigger != "validation" || rec.RollbackStatus != contract.RollbackAlerted || !strings.Contains(rec.RollbackCommand, "chromadb-rollback rollback snap_") {
		t.Errorf("a validation of 0.98 under --validation-threshold 0.99 with AUTOMATIC_ROLLBACK_ENABLED=false: trigger %q, rollback %q, command %q; want the validation trigger and an alert naming the command instead of a rollback",
			rec.Trigger, rec.RollbackStatus, rec.RollbackCommand)
	}
	if got := rec.Deadline.Sub(rec.StartedAt); got < 2*time.Hour-time.Minute || got > 2*time.Hour+time.Minute {
		t.Errorf("deadline %s after the start under MIGRATION_TIME_LIMIT=2h", got)
	}
	// The text status lists the run among the alerts, with the command,
	// until the run ends.
	if code, stdout, stderr := c.run("status"); code != exitOK || !strings.Contains(stdout, "\nAlerts (1)\n") ||
		!strings.Contains(stdout, "  rollback  ") || !strings.Contains(stdout, "migration strict of default_tenant/default_database: the validation trigger fired") ||
		!strings.Contains(stdout, "Roll back by hand: "+rec.RollbackCommand+"; then end the run") {
		t.Errorf("status: exit %d, want the run's alert with its command:\n%s%s", code, stdout, stderr)
	}
}

// startServe runs serve in this process with args, its NATS on a free port
// and no metrics listener, and returns a CLI for it once health-check
// passes. It is stopped at cleanup, and the test fails if it then exits
// with an error.
func startServe(t *testing.T, args ...string) cli {
	t.Helper()
	c, serveLog := launchServe(t, args...)
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		if code, _, _ := c.run("health-check"); code == exitOK {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve not healthy:\n%s", serveLog.String())
		}
	}
}

// launchServe is startServe without waiting for health-check; it returns
// what serve logs too.
func launchServe(t *testing.T, args ...string) (cli, *testenv.SyncBuffer) {
	t.Helper()
	natsAddr := freeAddr(t)
	serveLog := &testenv.SyncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan int, 1)
	go func() {
		served <- run(ctx, append([]string{"serve", "--listen", natsAddr, "--metrics-listen", "off"}, args...), strings.NewReader(""), io.Discard, serveLog)
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-served; code != exitOK {
			t.Errorf("serve exited %d:\n%s", code, serveLog.String())
		}
	})
	return cli{t: t, url: "nats://" + natsAddr}, serveLog
}

// TestServeListenAddressesAreUsage: a listen address that is no host:port
// (--listen, --gate-listen, --metrics-listen) is a flag to fix, exit 2 as
// the README's exit codes say, refused before serve starts anything (it
// was exit 1, the --listen one after the store was locked).
func TestServeListenAddressesAreUsage(t *testing.T) {
	c := cli{t: t, url: "nats://127.0.0.1:1"}
	for _, tc := range [][]string{
		{"--listen", "bogus"},
		{"--listen", "127.0.0.1:notaport"},
		{"--gate-listen", "bogus"},
		{"--metrics-listen", "127.0.0.1:99999"},
	} {
		dataDir := filepath.Join(t.TempDir(), "data")
		args := append([]string{"serve", "--chroma-url", "http://127.0.0.1:1", "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--metrics-listen", "off"}, tc...)
		code, _, stderr := c.run(args...)
		if code != exitUsage || !strings.Contains(stderr, tc[0]) || !strings.Contains(stderr, tc[1]) {
			t.Errorf("serve %v: exit %d, %s; want %d naming the flag", tc, code, stderr, exitUsage)
		}
		if _, err := os.Stat(dataDir); err == nil {
			t.Errorf("serve %v made its data dir before refusing", tc)
		}
	}
}

// TestServeBadLogLevel: serve took any LOG_LEVEL, logging at info when it
// could not read it, where the standalone services refuse it: an operator
// who set LOG_LEVEL=verbose to see more got no more and no word why.
func TestServeBadLogLevel(t *testing.T) {
	t.Setenv("LOG_LEVEL", "verbose")
	c := cli{t: t, url: "nats://127.0.0.1:1"}
	dataDir := filepath.Join(t.TempDir(), "data")
	code, _, stderr := c.run("serve", "--chroma-url", "http://127.0.0.1:1", "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--metrics-listen", "off")
	if code != exitUsage || !strings.Contains(stderr, `LOG_LEVEL "verbose"`) {
		t.Errorf("serve with LOG_LEVEL=verbose: exit %d, %s; want %d naming it", code, stderr, exitUsage)
	}
	if _, err := os.Stat(dataDir); err == nil {
		t.Error("serve made its data dir before refusing LOG_LEVEL")
	}
}

// TestServeMemoryLimit: serve sets a soft limit of the heap its services
// and JetStream server share (they had none, and grew to 585 MB), as the
// standalone services do: --memory-limit-mib, 512 MiB by default.
func TestServeMemoryLimit(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "")
	t.Setenv("MEMORY_LIMIT_MIB", "")
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) }) // after serve stops: cleanups run last first
	for _, tc := range []struct {
		args []string
		want int64
	}{
		{nil, serveMemoryLimitMiB << 20},
		{[]string{"--memory-limit-mib", "700"}, 700 << 20},
	} {
		debug.SetMemoryLimit(math.MaxInt64)
		_, serveLog := launchServe(t, append([]string{"--chroma-url", "http://127.0.0.1:1", "--data-dir", t.TempDir()}, tc.args...)...)
		for deadline := time.Now().Add(30 * time.Second); debug.SetMemoryLimit(-1) != tc.want; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("serve %v: memory limit %d, want %d:\n%s", tc.args, debug.SetMemoryLimit(-1), tc.want, serveLog.String())
			}
		}
	}
}
