package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/archive"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/chromadb-rollback/chromadb-rollback/services/auditor"
	"github.com/chromadb-rollback/chromadb-rollback/services/restorer"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
	"github.com/chromadb-rollback/chromadb-rollback/services/watchdog"
)

type cli struct {
	t   *testing.T
	url string
}

// run executes the CLI in-process and returns exit code, stdout and stderr.
func (c cli) run(args ...string) (int, string, string) {
	c.t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := cliContext(c.t, 2*time.Minute)
	defer cancel()
	code := run(ctx, append([]string{"--nats-url", c.url}, args...), strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

// createSnapshot runs `snapshot create --name name --json` and returns
// the manifest it prints, failing the test unless it exits 0.
func (c cli) createSnapshot(name string) contract.SnapshotManifest {
	c.t.Helper()
	code, stdout, stderr := c.run("snapshot", "create", "--name", name, "--json")
	if code != exitOK {
		c.t.Fatalf("snapshot create %s: exit %d: %s", name, code, stderr)
	}
	var m contract.SnapshotManifest
	if err := json.Unmarshal([]byte(stdout), &m); err != nil {
		c.t.Fatalf("snapshot create %s --json output %q: %v", name, stdout, err)
	}
	return m
}

// cliContext is the context a CLI run in a test gets: cancelled after
// limit, but without a deadline, as main's (signal) context has none; a
// command that needs one must set its own. (health-check's service
// discovery needed one and worked only in tests.)
func cliContext(t *testing.T, limit time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(t.Context())
	stop := time.AfterFunc(limit, cancel)
	return ctx, func() { stop.Stop(); cancel() }
}

// cliResult is how a CLI run ended.
type cliResult struct {
	code           int
	stdout, stderr string
}

// start runs the CLI in the background (with stdin); the channel gets how
// it ended.
func (c cli) start(stdin string, args ...string) <-chan cliResult {
	ch := make(chan cliResult, 1)
	go func() {
		code, stdout, stderr := c.runIn(stdin, args...)
		ch <- cliResult{code, stdout, stderr}
	}()
	return ch
}

// await is how a CLI run started in the background ended, failing the
// test when it has not within limit.
func await(t *testing.T, ch <-chan cliResult, limit time.Duration, what string) cliResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(limit):
		t.Fatalf("%s did not return within %s", what, limit)
		return cliResult{}
	}
}

func startStack(t *testing.T) (cli, *testenv.NATS) {
	t.Helper()
	ch := testenv.StartChroma(t)
	cc := ch.Client(t)
	if err := testenv.SeedWorkload(t.Context(), cc, "default_tenant", "default_database", 2, 300, 32, 100); err != nil {
		t.Fatal(err)
	}
	n := testenv.StartNATS(t)
	svc, err := snapshotter.New(snapshotter.Config{ChromaURL: ch.URL, DataDir: t.TempDir()}, n.Connect(t), contract.Subjects{Prefix: "chroma"}, cc, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	aud, err := auditor.New(auditor.Config{DataDir: t.TempDir()}, n.Connect(t), contract.Subjects{Prefix: "chroma"}, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	runUntilCleanup(t, svc.Run)
	runUntilCleanup(t, aud.Run)
	// health-check wants all four services.
	startRestorer(t, n, restorer.Config{ChromaURL: ch.URL}, cc)
	startWatchdog(t, n, ch)
	return cli{t: t, url: n.URL}, n
}

// startRestorer runs a restorer on n until the test ends.
func startRestorer(t *testing.T, n *testenv.NATS, cfg restorer.Config, cc *chroma.Client) {
	t.Helper()
	rest, err := restorer.New(cfg, n.Connect(t), contract.Subjects{Prefix: "chroma"}, cc, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	runUntilCleanup(t, rest.Run)
}

// startWatchdog runs a watchdog on n, watching ch, until the test ends.
func startWatchdog(t *testing.T, n *testenv.NATS, ch *testenv.Chroma) {
	t.Helper()
	wd, err := watchdog.New(watchdog.Config{ChromaURL: ch.URL, DiskPaths: []string{t.TempDir()}}, n.Connect(t), contract.Subjects{Prefix: "chroma"},
		ch.Client(t, chroma.WithRetryMaxElapsed(0)), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	runUntilCleanup(t, wd.Run)
}

// runUntilCleanup runs a service's Run in the background until the test
// ends, and waits at cleanup until it returned.
func runUntilCleanup(t *testing.T, run func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// startSnapshotter runs a snapshotter on n, reaching Chroma through cc,
// until the test ends, and returns a CLI for n once the snapshotter
// answers.
func startSnapshotter(t *testing.T, n *testenv.NATS, cfg snapshotter.Config, cc *chroma.Client) cli {
	t.Helper()
	svc, err := snapshotter.New(cfg, n.Connect(t), contract.Subjects{Prefix: "chroma"}, cc, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	runUntilCleanup(t, svc.Run)
	c := cli{t: t, url: n.URL}
	for i := 0; i < 100; i++ { // the service may still be registering
		if code, _, _ := c.run("snapshot", "list"); code == exitOK {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return c
}

func TestCLISnapshotLifecycle(t *testing.T) {
	c, n := startStack(t)
	// The service may still be registering; health-check retries are the user's job, the test waits.
	var code int
	var stdout, stderr string
	for i := 0; i < 100; i++ {
		if code, stdout, stderr = c.run("health-check", "--json"); code == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code != exitOK {
		t.Fatalf("health-check: exit %d\n%s%s", code, stdout, stderr)
	}
	var h contract.Health
	if err := json.Unmarshal([]byte(stdout), &h); err != nil || !h.OK {
		t.Fatalf("health-check output %q: %v", stdout, err)
	}
	for _, want := range []string{"nats", "service_snapshotter", "service_restorer", "service_watchdog", "service_auditor", "archive_encryption",
		"chroma", "jetstream", "store_writable", "disk_free", "audit_stream", "audit_trail"} {
		found := false
		for _, ch := range h.Checks {
			found = found || (ch.Name == want && ch.OK)
		}
		if !found {
			t.Errorf("health-check lacks a passing %q check: %+v", want, h.Checks)
		}
	}

	m := c.createSnapshot("pre_migration_2025-11-30")
	if m.Name != "pre_migration_2025-11-30" || m.TotalRecords != 300 || len(m.Collections) != 2 {
		t.Errorf("created manifest: name %q, %d records in %d collections; want 300 in 2", m.Name, m.TotalRecords, len(m.Collections))
	}

	// --collections repeated counts every time, as comma-separated.
	code, stdout, stderr = c.run("snapshot", "create", "--name", "two", "--collections", m.Collections[0].Name, "--collections", m.Collections[1].Name, "--json")
	var two contract.SnapshotManifest
	if err := json.Unmarshal([]byte(stdout), &two); code != exitOK || err != nil || len(two.Collections) != 2 || two.TotalRecords != m.TotalRecords {
		t.Errorf("snapshot create with --collections twice: exit %d, %d collections, %d records (%v); want both, %d records\n%s", code, len(two.Collections), two.TotalRecords, err, m.TotalRecords, stderr)
	}

	code, stdout, _ = c.run("snapshot", "create", "--name", "plain", "--reason", "before the reindex", "--actor", "ops@example")
	if code != exitOK || !strings.HasPrefix(strings.TrimSpace(stdout), "snap_") {
		t.Errorf("snapshot create without --json: exit %d, output %q, want the id", code, stdout)
	}
	// Its info says what it holds, who took it and why.
	code, stdout, _ = c.run("snapshot", "info", "plain")
	if code != exitOK || !regexp.MustCompile(`holds:\s+the whole database\n`).MatchString(stdout) ||
		!regexp.MustCompile(`taken by:\s+ops@example\n`).MatchString(stdout) || !regexp.MustCompile(`reason:\s+before the reindex\n`).MatchString(stdout) {
		t.Errorf("snapshot info plain: exit %d\n%s", code, stdout)
	}

	// What a request said is printed, never obeyed by the terminal: an
	// actor holding an escape sequence (clear the screen) shows it escaped,
	// and a carriage return in a table cell as a space, as audit-log does
	// (at the end of a line, trimmed).
	if code, _, stderr = c.run("snapshot", "create", "--name", "escaped", "--actor", "ops\x1b[2J\r"); code != exitOK {
		t.Fatalf("snapshot create --actor with an escape: exit %d %s", code, stderr)
	}
	code, stdout, _ = c.run("snapshot", "info", "escaped")
	if code != exitOK || strings.ContainsAny(stdout, "\x1b\r") || !regexp.MustCompile(`taken by:\s+ops\\x1b\[2J\n`).MatchString(stdout) {
		t.Errorf("snapshot info of a snapshot taken by an actor with an escape: exit %d\n%q", code, stdout)
	}

	code, stdout, _ = c.run("snapshot", "list")
	if code != exitOK || !strings.Contains(stdout, m.SnapshotID) || !strings.Contains(stdout, "pre_migration_2025-11-30") {
		t.Errorf("snapshot list: exit %d\n%s", code, stdout)
	}
	// Sizes are for people in a table: 1.2 MiB, not 1234567.
	if want := sizeText(m.Size); !strings.Contains(stdout, "  "+want+"  ") || !strings.HasSuffix(want, "KiB") {
		t.Errorf("snapshot list shows the size of %d bytes as %q? (want it in KiB)\n%s", m.Size, want, stdout)
	}
	code, stdout, _ = c.run("snapshot", "info", "pre_migration_2025-11-30")
	if code != exitOK || !strings.Contains(stdout, m.SnapshotID) || !strings.Contains(stdout, "batch_000000") {
		t.Errorf("snapshot info by name: exit %d\n%s", code, stdout)
	}
	if want := fmt.Sprintf("size:        %s (%d bytes), %s before compression\n", sizeText(m.Size), m.Size, sizeText(m.RawBytes)); m.RawBytes <= m.Size || !strings.Contains(stdout, want) {
		t.Errorf("snapshot info: want the line %q (raw %d bytes)\n%s", want, m.RawBytes, stdout)
	}
	code, stdout, _ = c.run("snapshot", "verify", m.SnapshotID)
	if code != exitOK || !strings.HasPrefix(stdout, "OK") {
		t.Errorf("snapshot verify: exit %d\n%s", code, stdout)
	}

	file := filepath.Join(t.TempDir(), "snap.tar.zst")
	code, _, stderr = c.run("snapshot", "export", m.SnapshotID, "-o", file)
	if code != exitOK {
		t.Fatalf("snapshot export: exit %d: %s", code, stderr)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != m.SHA256 {
		t.Errorf("exported file sha256 differs from the manifest")
	}
	if rep, err := archive.Verify(bytes.NewReader(data)); err != nil || rep.TotalRecords != 300 {
		t.Errorf("exported archive: %v, %+v", err, rep)
	}
	// An existing file is an earlier export, perhaps the last copy of a
	// snapshot: it is replaced only with --force. Found by hand: export
	// overwrote it without a word.
	earlier := filepath.Join(filepath.Dir(file), "earlier.tar.zst")
	if err := os.WriteFile(earlier, []byte("an earlier export"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = c.run("snapshot", "export", m.SnapshotID, "-o", earlier)
	if got, _ := os.ReadFile(earlier); code != exitUsage || !strings.Contains(stderr, earlier+" exists") || !strings.Contains(stderr, "--force") || string(got) != "an earlier export" {
		t.Errorf("export onto an existing file: exit %d, %s; the file now holds %d bytes; want %d, the file kept", code, stderr, len(got), exitUsage)
	}
	if code, _, stderr = c.run("snapshot", "export", m.SnapshotID, "-o", filepath.Dir(file)); code != exitUsage || !strings.Contains(stderr, "is a directory") {
		t.Errorf("export onto a directory: exit %d, %s", code, stderr)
	}
	code, _, stderr = c.run("snapshot", "export", m.SnapshotID, "-o", earlier, "--force")
	if got, _ := os.ReadFile(earlier); code != exitOK || !bytes.Equal(got, data) {
		t.Errorf("export --force onto an existing file: exit %d, %s; holds %d bytes, want the archive's %d", code, stderr, len(got), len(data))
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(file), "*.partial")); len(left) != 0 {
		t.Errorf("exports left %v", left)
	}

	// A damaged archive: verify exits with the verification code.
	bad := bytes.Clone(data)
	bad[len(bad)/2] ^= 0xff
	if _, err := n.Assets.Snapshots.PutBytes(t.Context(), m.Object, bad); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = c.run("snapshot", "verify", m.SnapshotID, "--json")
	if code != exitVerification || !strings.Contains(stderr, "verification failed") {
		t.Errorf("verify of a damaged archive: exit %d, want %d; stderr %q", code, exitVerification, stderr)
	}
	var vr contract.VerifyReport
	if err := json.Unmarshal([]byte(stdout), &vr); err != nil || vr.OK || vr.Problem == "" {
		t.Errorf("verify --json of a damaged archive printed %q", stdout)
	}

	// An archive gone behind the tools' back: list warns, naming it.
	if err := n.Assets.Snapshots.Delete(t.Context(), m.Object); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = c.run("snapshot", "list")
	if want := "warning: the archive of snapshot " + m.SnapshotID + " is missing from CHROMA_SNAPSHOTS"; code != exitOK || !strings.Contains(stdout, m.SnapshotID) ||
		!strings.Contains(stderr, want) || strings.Count(stderr, "warning:") != 1 {
		t.Errorf("snapshot list with an archive missing: exit %d, want the warning %q once\n%s%s", code, want, stdout, stderr)
	}

	code, stdout, _ = c.run("snapshot", "delete", m.SnapshotID)
	if code != exitOK || !strings.Contains(stdout, "deleted") {
		t.Errorf("snapshot delete: exit %d %s", code, stdout)
	}
	code, _, stderr = c.run("snapshot", "info", m.SnapshotID)
	if code != exitFailed || !strings.Contains(stderr, fmt.Sprintf("no snapshot %q: it was made", m.SnapshotID)) || !strings.Contains(stderr, "deleted since") {
		t.Errorf("info after delete: exit %d %s", code, stderr)
	}
}

func TestCLIUsageAndErrors(t *testing.T) {
	c := cli{t: t, url: "nats://127.0.0.1:1"}
	cases := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"unknown command", []string{"frobnicate"}, exitUsage, "unknown command"},
		{"unknown flag", []string{"snapshot", "list", "--bogus"}, exitUsage, "unknown flag"},
		{"create without name", []string{"snapshot", "create"}, exitUsage, "name is required"},
		{"create with bad name", []string{"snapshot", "create", "--name", "a b"}, exitUsage, "invalid"},
		{"create with empty collections", []string{"snapshot", "create", "--name", "n", "--collections", ""}, exitUsage, `--collections "" names no collection`},
		{"create with blank collections", []string{"snapshot", "create", "--name", "n", "--collections", " , "}, exitUsage, "leave the flag out to snapshot the whole database"},
		{"verify without id", []string{"snapshot", "verify"}, exitUsage, "chromadb-rollback snapshot verify takes one argument, 0 given; usage: chromadb-rollback snapshot verify SNAPSHOT"},
		{"export without -o", []string{"snapshot", "export", "x"}, exitUsage, "-o FILE"},
		{"export to stdout", []string{"snapshot", "export", "x", "-o", "-"}, exitUsage, "-o - (stdout) is not supported"},
		// It asked NATS for the snapshot and opened its archive first,
		// then failed (exit 1) naming a FILE.<random>.partial the
		// operator never gave.
		{"export into a missing directory", []string{"snapshot", "export", "x", "-o", "/nonexistent-crb-dir/x.tar.zst"}, exitUsage,
			"-o /nonexistent-crb-dir/x.tar.zst: the directory /nonexistent-crb-dir does not exist"},
		{"no NATS", []string{"snapshot", "list"}, exitFailed, "connect to NATS"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := c.run(tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.msg) || stdout != "" {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d, nothing and %q", code, stdout, stderr, tc.code, tc.msg)
			}
			// With --json the same error is one JSON document on stdout.
			code, stdout, stderr = c.run(append(tc.args, "--json")...)
			var body cliErrorBody
			if err := json.Unmarshal([]byte(stdout), &body); err != nil {
				t.Fatalf("--json: stdout %q is not JSON: %v", stdout, err)
			}
			if code != tc.code || body.Type != contract.TypeError || body.ExitCode != tc.code || !strings.Contains(body.Error, tc.msg) || !strings.Contains(stderr, tc.msg) {
				t.Errorf("--json: exit %d, stdout %+v, stderr %q; want %d in both and %q", code, body, stderr, tc.code, tc.msg)
			}
		})
	}
}

// TestCLIWarnsOfMovingSnapshot makes a snapshot while a writer adds records
// (a proxy in front of the real Chroma adds them before the export's first
// read): the CLI prints the snapshot id and exits 0, as the snapshot holds
// every record it read, and warns on stderr that it is not consistent,
// naming the collection and its counts.
func TestCLIWarnsOfMovingSnapshot(t *testing.T) {
	ch := testenv.StartChroma(t)
	cc := ch.Client(t)
	const db, per, late = "moving", 150, 4
	if err := testenv.SeedWorkload(t.Context(), cc, "default_tenant", db, 2, 2*per, 16, 50); err != nil {
		t.Fatal(err)
	}
	lw := testenv.StartLateWriter(t, ch.URL, cc, "default_tenant", db, late, 16)
	via, err := chroma.New(lw.URL)
	if err != nil {
		t.Fatal(err)
	}
	n := testenv.StartNATS(t)
	c := startSnapshotter(t, n, snapshotter.Config{ChromaURL: ch.URL, DataDir: t.TempDir()}, via)

	code, stdout, stderr := c.run("snapshot", "create", "--name", "moving", "--database", db)
	if code != exitOK {
		t.Fatalf("snapshot create: exit %d: %s%s", code, stdout, stderr)
	}
	id := strings.TrimSpace(stdout)
	if !strings.HasPrefix(id, "snap_") || strings.Contains(id, "\n") {
		t.Fatalf("stdout %q, want the snapshot id alone", stdout)
	}
	coll, err := cc.ListCollections(t.Context(), "default_tenant", db)
	if err != nil {
		t.Fatal(err)
	}
	var name string
	for _, col := range coll {
		if col.ID == lw.Added() {
			name = col.Name
		}
	}
	if name == "" {
		t.Fatalf("no collection got the late records")
	}
	want := fmt.Sprintf("warning: snapshot %s is not consistent: collection counts changed during the export (writers were active): %q: %d before, %d exported, %d after\n",
		id, name, per, per+late, per+late)
	if stderr != want {
		t.Errorf("stderr:\n%s\nwant:\n%s", stderr, want)
	}
	// info says it too, on one line.
	code, stdout, stderr = c.run("snapshot", "info", id)
	if want := "consistent:  false (collection counts changed during the export"; code != exitOK || !strings.Contains(stdout, want) {
		t.Errorf("snapshot info: exit %d, %s%s; want %q", code, stdout, stderr, want)
	}
}

// TestCLICreateJSONWhenTheSnapshotFails: a snapshot that fails once
// queued (here Chroma answers its record reads 404, as when a collection is
// deleted during the export) exits 1 saying why and, with --json, prints
// the failed operation on stdout, as rollback does, for a script to read
// its status and error. It used to print nothing on stdout.
func TestCLICreateJSONWhenTheSnapshotFails(t *testing.T) {
	ch := testenv.StartChroma(t)
	cc := ch.Client(t)
	const db = "vanishing"
	if err := testenv.SeedWorkload(t.Context(), cc, "default_tenant", db, 1, 20, 8, 10); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(ch.URL)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/get") {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"error":"NotFoundError","message":"Collection does not exist."}`))
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	via, err := chroma.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	n := testenv.StartNATS(t)
	c := startSnapshotter(t, n, snapshotter.Config{ChromaURL: ch.URL, DataDir: t.TempDir()}, via)

	code, stdout, stderr := c.run("snapshot", "create", "--name", "vanishing", "--database", db, "--json")
	if code != exitFailed || !strings.Contains(stderr, "failed") {
		t.Fatalf("snapshot create of a failing snapshot: exit %d, stderr %q; want %d saying it failed", code, stderr, exitFailed)
	}
	var op contract.Operation
	if err := json.Unmarshal([]byte(stdout), &op); err != nil {
		t.Fatalf("--json stdout %q is not the operation: %v", stdout, err)
	}
	if op.Status != contract.StatusFailed || op.Error == "" || !strings.HasPrefix(op.SnapshotID, "snap_") {
		t.Errorf("--json printed %+v; want the failed operation with its error and snapshot id", op)
	}
}

// TestCLIExportOfAMissingArchive: exporting a snapshot whose archive is
// gone from the object store (deleted outside chromadb-rollback) exits 3,
// as snapshot verify does for it, says so and what to do, and leaves no
// file. It used to exit 1 with "nats: object not found".
func TestCLIExportOfAMissingArchive(t *testing.T) {
	ch := testenv.StartChroma(t)
	cc := ch.Client(t)
	const db = "lost"
	if err := testenv.SeedWorkload(t.Context(), cc, "default_tenant", db, 1, 10, 8, 10); err != nil {
		t.Fatal(err)
	}
	n := testenv.StartNATS(t)
	c := startSnapshotter(t, n, snapshotter.Config{ChromaURL: ch.URL, DataDir: t.TempDir()}, cc)
	code, stdout, stderr := c.run("snapshot", "create", "--name", "lost", "--database", db, "--json")
	if code != exitOK {
		t.Fatalf("snapshot create: exit %d: %s", code, stderr)
	}
	var m contract.SnapshotManifest
	if err := json.Unmarshal([]byte(stdout), &m); err != nil {
		t.Fatal(err)
	}
	if err := n.Assets.Snapshots.Delete(t.Context(), m.Object); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	code, _, stderr = c.run("snapshot", "export", m.SnapshotID, "-o", filepath.Join(dir, "lost.tar.zst"))
	if code != exitVerification || !strings.Contains(stderr, "is missing from "+contract.ObjectSnapshots) ||
		!strings.Contains(stderr, "`snapshot delete "+m.SnapshotID+"`") {
		t.Errorf("export of a snapshot without its archive: exit %d, stderr %q; want %d saying it is missing and how to remove the manifest",
			code, stderr, exitVerification)
	}
	if left, err := os.ReadDir(dir); err != nil || len(left) != 0 {
		t.Errorf("export left %v (%v); want nothing", left, err)
	}
}

// TestHealthCheckWhenChromaIsDown: with Chroma down, health-check says
// so, with why (the connection refused), answers within the checks'
// deadline, and does not fail the JetStream and store checks with it.
func TestHealthCheckWhenChromaIsDown(t *testing.T) {
	ch := testenv.StartChroma(t)
	n := testenv.StartNATS(t)
	c := startSnapshotter(t, n, snapshotter.Config{ChromaURL: ch.URL, DataDir: t.TempDir()}, ch.Client(t))
	ch.Stop()
	start := time.Now()
	code, stdout, stderr := c.run("health-check", "--json")
	took := time.Since(start)
	var h contract.Health
	if err := json.Unmarshal([]byte(stdout), &h); err != nil {
		t.Fatalf("health-check output %q (%s): %v", stdout, stderr, err)
	}
	if code != exitFailed || h.OK {
		t.Errorf("exit %d, ok %v; want a failed check", code, h.OK)
	}
	got := map[string]contract.HealthCheck{}
	for _, ch := range h.Checks {
		got[ch.Name] = ch
	}
	if chk := got["chroma"]; chk.OK || !strings.Contains(chk.Detail, "connection refused") {
		t.Errorf("chroma check %+v; want it failed, saying the connection was refused", chk)
	}
	for _, name := range []string{"nats", "jetstream", "store_writable", "disk_free"} {
		if chk, ok := got[name]; !ok || !chk.OK {
			t.Errorf("%s check %+v; want it to pass while Chroma is down", name, chk)
		}
	}
	if took > 12*time.Second {
		t.Errorf("health-check took %v with Chroma down", took)
	}
}

// TestPlaceFile: an export is moved into place over nothing, or over a file
// only when told to replace it.
func TestPlaceFile(t *testing.T) {
	dir := t.TempDir()
	tmp, out := filepath.Join(dir, "x.partial"), filepath.Join(dir, "x")
	write := func(path, s string) {
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	read := func(path string) string {
		b, _ := os.ReadFile(path)
		return string(b)
	}
	write(tmp, "new")
	if err := placeFile(tmp, out, false); err != nil || read(out) != "new" {
		t.Fatalf("place over nothing: %v, %q", err, read(out))
	}
	os.Remove(tmp) // as exportObject does
	write(tmp, "newer")
	if err := placeFile(tmp, out, false); err == nil || !strings.Contains(err.Error(), "created meanwhile") || read(out) != "new" {
		t.Errorf("place over a file: %v, %q; want refused, the file kept", err, read(out))
	}
	if err := placeFile(tmp, out, true); err != nil || read(out) != "newer" {
		t.Errorf("replace: %v, %q", err, read(out))
	}
}

// TestDefaultActorWithoutUSER: where $USER is unset (containers, systemd
// units, cron) the audit trail names the account of the process's uid, or
// the uid, rather than "unknown". Found by hand: every event of a cron job
// said unknown@host.
func TestDefaultActorWithoutUSER(t *testing.T) {
	host, _ := os.Hostname()
	t.Setenv("USER", "ops")
	if got := defaultActor(); got != "ops@"+host {
		t.Errorf("with USER=ops: %q", got)
	}
	t.Setenv("USER", "")
	u, err := user.Current()
	if err != nil {
		t.Fatalf("this test needs the current user: %v", err)
	}
	if got, want := defaultActor(), u.Username+"@"+host; got != want {
		t.Errorf("without USER: %q, want %q", got, want)
	}
	noAccount := func() (*user.User, error) { return nil, user.UnknownUserIdError(1000) }
	if got := actorName("", noAccount, 1000); got != "uid1000" {
		t.Errorf("without USER or an account: %q, want uid1000", got)
	}
	if got := actorName("", noAccount, -1); got != "unknown" {
		t.Errorf("without USER, account or uid: %q, want unknown", got)
	}
}

// TestCLINonPositiveTimeouts: --wait-timeout 0 (read by many as "no
// limit") made rollback --yes and snapshot create start the operation and
// then report only "watch operation ...: context deadline exceeded", exit
// 1, as if it had failed, while it ran to its end; --timeout 0 failed every
// request as unanswered. Both are refused before anything is asked (exit
// 2, no connection made: the URL here has no server).
func TestCLINonPositiveTimeouts(t *testing.T) {
	c := cli{t: t, url: "nats://127.0.0.1:1"}
	for _, args := range [][]string{
		{"rollback", "snap_x", "--yes", "--wait-timeout", "0"},
		{"rollback", "snap_x", "--yes", "--wait-timeout", "-5m"},
		{"snapshot", "create", "--name", "n", "--wait-timeout", "0s"},
		{"snapshot", "import", "file.tar.zst", "--wait-timeout", "0"},
		{"rollback-status", "op_x", "--wait", "--wait-timeout", "0"},
		{"rollback-cancel", "op_x", "--wait-timeout", "0"},
		{"--timeout", "0", "status"},
		{"snapshot", "list", "--timeout", "-1s"},
	} {
		code, _, stderr := c.run(args...)
		if code != exitUsage || !strings.Contains(stderr, "give a positive duration") || !strings.Contains(stderr, "nothing was done") {
			t.Errorf("%v: exit %d, %s", args, code, stderr)
		}
	}
	// Positive ones pass the check (and then find no NATS).
	if code, _, stderr := c.run("snapshot", "create", "--name", "n", "--wait-timeout", "1m", "--timeout", "2s"); code != exitFailed || !strings.Contains(stderr, "connect to NATS") {
		t.Errorf("positive timeouts: exit %d, %s", code, stderr)
	}
}

// TestCLIUnknownSubcommand: a mistyped subcommand of snapshot or audit
// (snapshot verfy ID, audit verfy) printed the group's help and exited 0,
// so a script or cron job checking the exit code took a verification
// that never ran for a pass. It is now exit 2 naming the command and the
// one meant; the group alone still prints its help.
func TestCLIUnknownSubcommand(t *testing.T) {
	c := cli{t: t, url: "nats://127.0.0.1:1"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"snapshot", "verfy", "pre_migration"}, `unknown command "verfy" for "chromadb-rollback snapshot"; did you mean verify?`},
		{[]string{"audit", "verfy"}, `unknown command "verfy" for "chromadb-rollback audit"; did you mean verify?`},
		{[]string{"snapshot", "bogus"}, `unknown command "bogus" for "chromadb-rollback snapshot"`},
	} {
		code, stdout, stderr := c.run(tc.args...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) || strings.Contains(stdout, "Available Commands") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit %d with %q", tc.args, code, stdout, stderr, exitUsage, tc.want)
		}
	}
	for _, group := range []string{"snapshot", "audit"} {
		if code, stdout, stderr := c.run(group); code != exitOK || !strings.Contains(stdout, "Available Commands") {
			t.Errorf("%s alone: exit %d, %s%s; want its help", group, code, stdout, stderr)
		}
	}
}
