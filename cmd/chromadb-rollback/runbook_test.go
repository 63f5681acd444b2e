package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/auditschema"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/chromadb-rollback/chromadb-rollback/services/auditor"
	"github.com/chromadb-rollback/chromadb-rollback/services/restorer"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
	"github.com/chromadb-rollback/chromadb-rollback/services/watchdog"
)

// The runbook restores acme/prod of testenv's fixture.
const (
	rbTenant = "acme"
	rbDB     = "prod"
	rbPath   = "../../docs/runbook.md"
)

// rbCommand is one command of the runbook.
type rbCommand struct {
	line    string // as written, placeholders included, comment stripped
	comment string
	block   int // which sh block it is in
}

// runbookCommands returns the commands of docs/runbook.md's sh blocks in
// document order. Every line of a block is a comment, a `chromadb-rollback`
// command or a `nats` command, and every block shows both tools.
func runbookCommands(t *testing.T) []rbCommand {
	t.Helper()
	lines, err := testenv.ShellBlocks(rbPath)
	if err != nil {
		t.Fatal(err)
	}
	var cmds []rbCommand
	kinds := map[int]map[string]bool{}
	last := 0
	for _, l := range lines {
		tool, _, _ := strings.Cut(l.Text, " ")
		if tool != "chromadb-rollback" && tool != "nats" {
			t.Fatalf("%s:%d: %q is neither a chromadb-rollback nor a nats command; the runbook test cannot run it", rbPath, l.Line, l.Text)
		}
		if kinds[l.Block] == nil {
			kinds[l.Block] = map[string]bool{}
		}
		kinds[l.Block][tool] = true
		last = max(last, l.Block)
		cmds = append(cmds, rbCommand{line: l.Text, comment: l.Comment, block: l.Block})
	}
	for b := 1; b <= last; b++ {
		if !kinds[b]["chromadb-rollback"] || !kinds[b]["nats"] {
			t.Errorf("%s: sh block %d shows %v; every step is shown with both chromadb-rollback and nats", rbPath, b, kinds[b])
		}
	}
	return cmds
}

// rbWords splits a command line into arguments.
func rbWords(t *testing.T, s string) []string {
	t.Helper()
	w, err := testenv.ShellWords(s)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// rbStack is what `serve` runs: the four services on a real Chroma holding
// the fixture, and an embedded JetStream.
type rbStack struct {
	t    *testing.T
	n    *testenv.NATS
	cc   *chroma.Client
	cli  cli
	nats string // the nats binary
}

func startRunbookStack(t *testing.T) *rbStack {
	t.Helper()
	natsBin := testenv.NatsCLI(t)
	ch := testenv.StartChroma(t)
	cc := ch.Client(t, chroma.WithRetryMaxElapsed(5*time.Second))
	if _, err := testenv.SeedFixture(t.Context(), cc); err != nil {
		t.Fatal(err)
	}
	n := testenv.StartNATS(t)
	subj := contract.Subjects{Prefix: contract.DefaultPrefix}
	snap, err := snapshotter.New(snapshotter.Config{ChromaURL: ch.URL, DataDir: t.TempDir()}, n.Connect(t), subj, cc, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	rest, err := restorer.New(restorer.Config{ChromaURL: ch.URL}, n.Connect(t), subj, cc, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	wd, err := watchdog.New(watchdog.Config{ChromaURL: ch.URL, DiskPaths: []string{t.TempDir()}}, n.Connect(t), subj,
		ch.Client(t, chroma.WithRetryMaxElapsed(0)), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	aud, err := auditor.New(auditor.Config{DataDir: t.TempDir()}, n.Connect(t), subj, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runAll(ctx, snap.Run, rest.Run, wd.Run, aud.Run) }()
	t.Cleanup(func() { cancel(); <-done })
	// Runs after the services stop: every event of the runbook matches its schema.
	t.Cleanup(func() { testenv.CheckAudit(t, n.JS) })
	for _, s := range []string{subj.API("snapshot", "list"), subj.API("rollback", "status"), subj.API("status"), subj.API("audit", "query")} {
		deadline := time.Now().Add(20 * time.Second)
		for {
			if _, err := n.Conn.Request(s, []byte(`{}`), time.Second); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no service answers on %s", s)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return &rbStack{t: t, n: n, cc: cc, cli: cli{t: t, url: n.URL}, nats: natsBin}
}

// rbResult is how a command ended.
type rbResult struct {
	code           int // exit code; -1 when stopped by the test (a command that follows)
	stdout, stderr string
}

// runCLI runs a chromadb-rollback command in-process, answering yes.
func (s *rbStack) runCLI(ctx context.Context, args []string) rbResult {
	var out, errb bytes.Buffer
	code := run(ctx, append([]string{"--nats-url", s.n.URL}, args...), strings.NewReader("yes\n"), &out, &errb)
	return rbResult{code: code, stdout: out.String(), stderr: errb.String()}
}

// runNATS runs the real nats binary against the stack.
func (s *rbStack) runNATS(ctx context.Context, args []string) rbResult {
	cmd := exec.CommandContext(ctx, s.nats, append([]string{"--no-context", "--server", s.n.URL}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+s.t.TempDir(), "NATS_URL=")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := rbResult{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		r.code = -1
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		s.t.Fatalf("run nats: %v", err)
	}
	return r
}

// dbState is every record of every collection of acme/prod, by name.
func (s *rbStack) dbState() map[string]*record.Batch {
	s.t.Helper()
	colls, err := s.cc.ListCollections(s.t.Context(), rbTenant, rbDB)
	if err != nil {
		s.t.Fatal(err)
	}
	out := map[string]*record.Batch{}
	for _, c := range colls {
		b, err := testenv.ReadAll(s.t.Context(), s.cc, rbTenant, rbDB, c.ID, 500)
		if err != nil {
			s.t.Fatal(err)
		}
		out[c.Name] = b
	}
	return out
}

// sameRecords compares two states of acme/prod: the same collections and
// records, embeddings bit-exact except in cosine spaces, which Chroma
// renormalises (within 1e-6 of the largest value there).
func sameRecords(t *testing.T, what string, got, want map[string]*record.Batch, only ...string) {
	t.Helper()
	names := only
	if len(names) == 0 {
		if len(got) != len(want) {
			t.Errorf("%s: %d collections, want %d", what, len(got), len(want))
		}
		for name := range want {
			names = append(names, name)
		}
	}
	for _, name := range names {
		g, w := got[name], want[name]
		if g == nil || w == nil {
			t.Errorf("%s: collection %q is missing", what, name)
			continue
		}
		if !reflect.DeepEqual(g.IDs, w.IDs) || !reflect.DeepEqual(g.Documents, w.Documents) ||
			!reflect.DeepEqual(g.Metadatas, w.Metadatas) || !reflect.DeepEqual(g.URIs, w.URIs) {
			t.Errorf("%s: collection %q has %d records, want %d, or their ids, documents, metadata or uris differ", what, name, g.Len(), w.Len())
			continue
		}
		for i := range w.Embeddings {
			if d := embeddingDiff(g.Embeddings[i], w.Embeddings[i], name == "cosine_768"); d != "" {
				t.Errorf("%s: %s record %q: %s", what, name, w.IDs[i], d)
				break
			}
		}
	}
}

func embeddingDiff(got, want []float32, tolerant bool) string {
	if len(got) != len(want) {
		return fmt.Sprintf("embedding of %d values, want %d", len(got), len(want))
	}
	scale := 0.0
	for _, v := range want {
		scale = max(scale, math.Abs(float64(v)))
	}
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) && (!tolerant || math.Abs(float64(got[i])-float64(want[i])) > 1e-6*scale) {
			return fmt.Sprintf("embedding value %d is %v, want %v", i, got[i], want[i])
		}
	}
	return ""
}

// breakData is a migration gone wrong: records of these collections deleted.
func (s *rbStack) breakData(collections ...string) {
	s.t.Helper()
	ctx := s.t.Context()
	for _, name := range collections {
		c, err := s.cc.GetCollection(ctx, rbTenant, rbDB, name)
		if err != nil {
			s.t.Fatal(err)
		}
		b, err := s.cc.Get(ctx, rbTenant, rbDB, c.ID, chroma.GetRequest{Limit: 25, Include: []chroma.Include{}})
		if err != nil {
			s.t.Fatal(err)
		}
		if err := s.cc.Delete(ctx, rbTenant, rbDB, c.ID, b.IDs); err != nil {
			s.t.Fatal(err)
		}
	}
}

// waitOp waits until an operation has ended and returns it.
func (s *rbStack) waitOp(opID string) contract.Operation {
	s.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if e, err := s.n.Assets.State.Get(s.t.Context(), contract.OperationKey(opID)); err == nil {
			var op contract.Operation
			if err := json.Unmarshal(e.Value(), &op); err != nil {
				s.t.Fatal(err)
			}
			switch op.Status {
			case contract.StatusCompleted, contract.StatusFailed, contract.StatusCancelled:
				return op
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("operation %s did not end", opID)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// damage takes a snapshot of acme/prod and flips a byte of its archive.
func (s *rbStack) damage() string {
	s.t.Helper()
	ctx := s.t.Context()
	data, _ := json.Marshal(contract.SnapshotCreateRequest{Name: "damaged_copy", Tenant: rbTenant, Database: rbDB, Actor: "runbook-test"})
	msg, err := s.n.Conn.Request(contract.Subjects{Prefix: contract.DefaultPrefix}.API("snapshot", "create"), data, time.Minute)
	if err != nil || msg.Header.Get("Nats-Service-Error-Code") != "" {
		s.t.Fatalf("snapshot to damage: %v %s", err, msg.Data)
	}
	var reply contract.SnapshotCreateReply
	if err := json.Unmarshal(msg.Data, &reply); err != nil {
		s.t.Fatal(err)
	}
	if op := s.waitOp(reply.OpID); op.Status != contract.StatusCompleted {
		s.t.Fatalf("snapshot to damage: %s %s", op.Status, op.Error)
	}
	m := s.manifest(reply.SnapshotID)
	archive, err := s.n.Assets.Snapshots.GetBytes(ctx, m.Object)
	if err != nil {
		s.t.Fatal(err)
	}
	archive[len(archive)/2] ^= 0xff
	if _, err := s.n.Assets.Snapshots.PutBytes(ctx, m.Object, archive); err != nil {
		s.t.Fatal(err)
	}
	return reply.SnapshotID
}

func (s *rbStack) manifest(id string) *contract.SnapshotManifest {
	s.t.Helper()
	e, err := s.n.Assets.Manifests.Get(s.t.Context(), id)
	if err != nil {
		s.t.Fatalf("manifest %s: %v", id, err)
	}
	var m contract.SnapshotManifest
	if err := json.Unmarshal(e.Value(), &m); err != nil {
		s.t.Fatal(err)
	}
	return &m
}

// firstJSON decodes the first JSON value of a command's output.
func firstJSON(t *testing.T, out string, v any) {
	t.Helper()
	i := strings.IndexByte(out, '{')
	if i < 0 {
		t.Fatalf("no JSON in %q", out)
	}
	if err := json.NewDecoder(strings.NewReader(out[i:])).Decode(v); err != nil {
		t.Fatalf("decode %q: %v", out, err)
	}
}

var (
	placeholder = regexp.MustCompile(`<[a-z_]+>`)
	cliOpLine   = regexp.MustCompile(`(?m)^Rollback (\S+): (\S+)$`)
	cliSafety   = regexp.MustCompile(`(?m)^Safety snapshot: (\S+) `)
)

// TestRunbook (issue 5, acceptance 4) runs every command of docs/runbook.md
// in document order against the running system: first each
// chromadb-rollback command (in-process), then, on a fresh system, each nats
// command with the real nats binary. Before each rollback the test deletes
// records as a bad migration would, and checks afterwards that the data is
// back. Commands that follow (until Ctrl-C) must still be running after a
// moment. Besides succeeding, the nats pass must: create a snapshot and start
// a confirmed rollback with nats req, list all four services with nats micro
// ls, show the archive with nats obj ls, read the manifest with nats kv get,
// and replay the audit stream, every event valid, with nats sub --stream.
func TestRunbook(t *testing.T) {
	cmds := runbookCommands(t)
	if len(cmds) < 40 {
		t.Fatalf("%d commands in %s: the parser lost some", len(cmds), rbPath)
	}
	for _, tool := range []string{"chromadb-rollback", "nats"} {
		t.Run(tool, func(t *testing.T) {
			s := startRunbookStack(t)
			r := &runbookPass{s: s, t: t, tool: tool, vars: map[string]string{}, seen: map[string]bool{}, pre: s.dbState()}
			for _, c := range cmds {
				if strings.HasPrefix(c.line, tool+" ") {
					r.step(c)
				}
				if t.Failed() {
					t.Fatalf("stopped after %q", c.line)
				}
			}
			want := []string{"snapshot created", "rollback restored", "partial rollback restored", "damaged verify refused", "audit replayed", "batch plan counted"}
			if tool == "nats" {
				want = append(want, "micro ls", "obj ls", "kv get manifest", "run ended")
			} else {
				want = append(want, "audit verified", "cleanup", "batches listed")
			}
			for _, w := range want {
				if !r.seen[w] {
					t.Errorf("the runbook's %s commands never did %q", tool, w)
				}
			}
		})
	}
}

// runbookPass runs one tool's commands of the runbook.
type runbookPass struct {
	s    *rbStack
	t    *testing.T
	tool string
	vars map[string]string // placeholder values set by earlier steps
	seen map[string]bool   // what the pass has checked
	pre  map[string]*record.Batch
}

func (r *runbookPass) step(c rbCommand) {
	t := r.t
	t.Helper()
	line := c.line
	if strings.Contains(line, "<damaged_snapshot_id>") && r.vars["<damaged_snapshot_id>"] == "" {
		r.vars["<damaged_snapshot_id>"] = r.s.damage()
	}
	line = placeholder.ReplaceAllStringFunc(line, func(p string) string {
		v, ok := r.vars[p]
		if !ok {
			t.Fatalf("%q uses %s before a step printed it", c.line, p)
		}
		return v
	})
	args := rbWords(t, line)[1:]
	rollback := r.isRollback(args)
	if rollback != nil {
		// A bad migration: records deleted from what the rollback restores
		// and, for a partial one, from a collection it must leave alone.
		broken := append(slices.Clone(rollback), "hnsw_meta")
		if len(rollback) == 0 {
			broken = []string{"corpus.v1", "personality", "hnsw_meta"}
		}
		r.s.breakData(broken...)
	}
	if job := r.endsRun(args); job != "" {
		r.s.startRun(job) // a run whose job is gone, for the command to end
	}
	follows := strings.Contains(c.comment, "until Ctrl-C")
	repeat := strings.HasPrefix(c.comment, "repeat until ")
	res := r.run(args, follows)
	deadline := time.Now().Add(time.Minute)
	for repeat && !strings.Contains(res.stdout, `"status":"completed"`) && res.code == 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		res = r.run(args, false)
	}
	t.Logf("%s %s: exit %d", r.tool, line, res.code)
	r.check(line, args, res, follows, repeat)
	if rollback != nil && !t.Failed() {
		r.restored(line, rollback)
	}
}

// isRollback says whether args start a rollback, and which collections it
// restores: the named ones of a partial rollback, nil for a full one.
func (r *runbookPass) isRollback(args []string) []string {
	full := []string{}
	switch {
	case r.tool == "chromadb-rollback" && args[0] == "rollback" && !strings.Contains(strings.Join(args, " "), "--dry-run"):
		for i, a := range args {
			if a == "--failed-collections" {
				return strings.Split(args[i+1], ",")
			}
		}
		return full
	case r.tool == "nats" && len(args) > 1 && args[0] == "req" && args[1] == "chroma.api.rollback.start":
		var req contract.RollbackRequest
		firstJSON(r.t, args[2], &req)
		if len(req.Collections) > 0 {
			return req.Collections
		}
		return full
	}
	return nil
}

func (r *runbookPass) run(args []string, follows bool) rbResult {
	timeout := 3 * time.Minute
	if follows {
		timeout = 1500 * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(r.t.Context(), timeout)
	defer cancel()
	if r.tool == "nats" {
		return r.s.runNATS(ctx, args)
	}
	res := r.s.runCLI(ctx, args)
	if follows && ctx.Err() != nil {
		res.code = -1 // it was still following when stopped
	}
	return res
}

// check applies what every command must do, then what this one must.
func (r *runbookPass) check(line string, args []string, res rbResult, follows, repeat bool) {
	t := r.t
	t.Helper()
	fail := func(format string, a ...any) {
		t.Helper()
		t.Errorf("%s %s: %s\nstdout:\n%s\nstderr:\n%s", r.tool, line, fmt.Sprintf(format, a...), res.stdout, res.stderr)
	}
	damaged := strings.Contains(line, r.vars["<damaged_snapshot_id>"]) && r.vars["<damaged_snapshot_id>"] != ""
	verify := strings.Contains(line, "verify")
	switch {
	case follows:
		if res.code != -1 {
			fail("exit %d: it should follow until stopped", res.code)
		}
	case damaged && verify && r.tool == "nats":
		if !strings.Contains(res.stderr, "Nats-Service-Error-Code: 422") {
			fail("want a 422 refusal for a damaged archive")
		}
		r.seen["damaged verify refused"] = true
		return
	case damaged && verify:
		if res.code != exitVerification {
			fail("exit %d, want %d for a damaged archive", res.code, exitVerification)
		}
		r.seen["damaged verify refused"] = true
		return
	case res.code != 0:
		fail("exit %d", res.code)
	case r.tool == "nats" && strings.Contains(res.stderr, "Nats-Service-Error"):
		fail("the service refused it")
	case r.tool == "nats" && (strings.Contains(res.stderr, "No responders") || strings.Contains(res.stderr, "nats: error")):
		fail("nats failed (it exits 0 on some failures)")
	case r.tool == "nats" && args[0] == "req" && !json.Valid([]byte(strings.TrimSpace(res.stdout))):
		fail("the reply is not JSON")
	case repeat && !strings.Contains(res.stdout, `"status":"completed"`):
		fail(`never reached "status":"completed"`)
	}
	if t.Failed() {
		return
	}
	if r.tool == "nats" {
		r.checkNATS(args, res)
	} else {
		r.checkCLI(args, res)
	}
}

func (r *runbookPass) checkCLI(args []string, res rbResult) {
	t := r.t
	t.Helper()
	switch {
	case args[0] == "snapshot" && args[1] == "create":
		id := strings.TrimSpace(res.stdout)
		m := r.s.manifest(id)
		if args[3] == "pre_migration_2025-11-30" {
			r.vars["<snapshot_id>"] = id
			r.seen["snapshot created"] = m.Name == args[3] && m.Tenant == rbTenant && m.TotalRecords == totalRecords(r.pre)
		}
	case args[0] == "rollback" && !strings.Contains(strings.Join(args, " "), "--dry-run"):
		op, safety := cliOpLine.FindStringSubmatch(res.stdout), cliSafety.FindStringSubmatch(res.stdout)
		if op == nil || op[2] != "completed" || safety == nil {
			t.Fatalf("rollback output lacks the completed operation or its safety snapshot:\n%s", res.stdout)
		}
		r.vars["<rollback_op_id>"], r.vars["<safety_snapshot_id>"] = op[1], safety[1]
	case args[0] == "snapshot" && args[1] == "info":
		r.seen["batches listed"] = r.seen["batches listed"] || strings.Contains(res.stdout, "\nbatches of corpus.v1 (records in insertion order):\n  BATCH ")
	case args[0] == "rollback" && hasArg(args, "--batches"):
		r.seen["batch plan counted"] = regexp.MustCompile(`\n  corpus\.v1 .* upsert .* batch_000000 \(\d+\)\n`).MatchString(res.stdout)
	case args[0] == "snapshot" && args[1] == "delete":
		r.gone(args[2])
	case args[0] == "audit-log" && !strings.Contains(strings.Join(args, " "), "--follow"):
		r.seen["audit replayed"] = r.seen["audit replayed"] || strings.Contains(res.stdout, "snapshot.create")
	case args[0] == "audit" && args[1] == "verify":
		r.seen["audit verified"] = true
	case args[0] == "cleanup":
		r.seen["cleanup"] = true
	}
}

func (r *runbookPass) checkNATS(args []string, res rbResult) {
	t := r.t
	t.Helper()
	switch {
	case args[0] == "req" && args[1] == "chroma.api.snapshot.create":
		var req contract.SnapshotCreateRequest
		firstJSON(t, args[2], &req)
		var reply contract.SnapshotCreateReply
		firstJSON(t, res.stdout, &reply)
		if reply.Status != contract.StatusQueued || reply.SnapshotID == "" || reply.OpID == "" {
			t.Fatalf("snapshot create reply %+v", reply)
		}
		r.vars["<op_id>"] = reply.OpID
		if req.Name == "pre_migration_2025-11-30" {
			r.vars["<snapshot_id>"] = reply.SnapshotID
		}
		// The runbook then polls op.<op_id>; it must end completed either way.
		if op := r.s.waitOp(reply.OpID); op.Status != contract.StatusCompleted {
			t.Fatalf("snapshot %s: %s %s", reply.SnapshotID, op.Status, op.Error)
		}
		m := r.s.manifest(reply.SnapshotID)
		if req.Name == "pre_migration_2025-11-30" {
			r.seen["snapshot created"] = m.Name == req.Name && m.TotalRecords == totalRecords(r.pre)
		}
	case args[0] == "req" && args[1] == "chroma.api.rollback.start":
		var reply contract.RollbackReply
		firstJSON(t, res.stdout, &reply)
		if reply.Status != contract.StatusQueued || reply.OpID == "" || reply.Refused != "" {
			t.Fatalf("a confirmed rollback start answered %+v", reply)
		}
		op := r.s.waitOp(reply.OpID)
		if op.Status != contract.StatusCompleted || op.Restore == nil || op.Restore.SafetySnapshotID == "" {
			t.Fatalf("rollback %s: %s %s", reply.OpID, op.Status, op.Error)
		}
		r.vars["<rollback_op_id>"], r.vars["<safety_snapshot_id>"] = reply.OpID, op.Restore.SafetySnapshotID
	case args[0] == "req" && args[1] == "chroma.api.snapshot.delete":
		var ref contract.SnapshotRef
		firstJSON(t, args[2], &ref)
		r.gone(ref.Snapshot)
	case args[0] == "micro" && args[1] == "ls":
		for _, name := range []string{"chromadb-snapshotter", "chromadb-restorer", "chromadb-watchdog", "chromadb-auditor"} {
			if !strings.Contains(res.stdout, name) {
				t.Errorf("nats micro ls does not list %s:\n%s", name, res.stdout)
			}
		}
		r.seen["micro ls"] = true
	case args[0] == "obj" && args[1] == "ls":
		if obj := r.vars["<snapshot_id>"] + ".tar.zst"; !strings.Contains(res.stdout, obj) {
			t.Errorf("nats obj ls does not show %s:\n%s", obj, res.stdout)
		}
		r.seen["obj ls"] = true
	case args[0] == "kv" && args[1] == "get" && args[2] == contract.BucketManifests:
		var m contract.SnapshotManifest
		firstJSON(t, res.stdout, &m)
		want := r.s.manifest(r.vars["<snapshot_id>"])
		if m.SnapshotID != want.SnapshotID || m.SHA256 != want.SHA256 || m.TotalRecords != totalRecords(r.pre) {
			t.Errorf("nats kv get shows manifest %s (sha256 %s, %d records), want %s (%s, %d)", m.SnapshotID, m.SHA256, m.TotalRecords,
				want.SnapshotID, want.SHA256, totalRecords(r.pre))
		}
		// Each batch's records, as the runbook says: they add up.
		for _, c := range m.Collections {
			var sum int64
			for _, b := range c.BatchRecords {
				sum += b.Count
			}
			if len(c.BatchRecords) != len(c.Batches) || sum != c.Count {
				t.Errorf("nats kv get shows collection %q of %d records with batch records %+v for batches %v", c.Name, c.Count, c.BatchRecords, c.Batches)
			}
		}
		r.seen["kv get manifest"] = true
	case args[0] == "req" && args[1] == "chroma.api.rollback.plan" && strings.Contains(args[2], `"batches"`):
		var reply contract.RollbackReply
		firstJSON(t, res.stdout, &reply)
		for _, it := range reply.Plan.Items {
			if it.Collection == "corpus.v1" {
				r.seen["batch plan counted"] = len(it.BatchCounts) == 1 && it.BatchCounts[0] == it.WriteRecords && it.WriteRecords > 0
			}
		}
	case args[0] == "sub" && strings.Contains(strings.Join(args, " "), "--stream "+contract.StreamAudit) && hasArg(args, "-T"):
		r.replayed(args, res.stdout)
	case r.endsRun(args) != "":
		job := r.endsRun(args)
		rec := r.s.waitRecord(job, "ended", func(rec contract.MigrationRecord) bool { return !rec.EndedAt.IsZero() })
		if rec.Status != contract.MigrationFailed || !strings.Contains(rec.Error, "ended by an operator") {
			t.Errorf("the run of %s after its failed event was published in its place: status %q, error %q", job, rec.Status, rec.Error)
		}
		r.seen["run ended"] = true
	}
}

// endsRun names the job whose failed event args publish in its place.
func (r *runbookPass) endsRun(args []string) string {
	if r.tool != "nats" || args[0] != "pub" || !hasArg(args, "--jetstream") {
		return ""
	}
	for _, a := range args {
		if job, ok := strings.CutPrefix(a, "chroma.migration."); ok && strings.HasSuffix(job, ".failed") {
			return strings.TrimSuffix(job, ".failed")
		}
	}
	return ""
}

// startRun starts a run of job on acme/prod, as a job that then dies
// would, and waits until the watchdog has it.
func (s *rbStack) startRun(job string) {
	s.t.Helper()
	ev := contract.MigrationEvent{Envelope: contract.NewEnvelope(contract.TypeMigrationStarted), Job: job, Tenant: rbTenant, Database: rbDB,
		SnapshotID: "pre_migration_2025-11-30", TimeLimitSeconds: 3600}
	data, _ := json.Marshal(ev)
	if _, err := s.n.JS.Publish(s.t.Context(), contract.Subjects{Prefix: contract.DefaultPrefix}.MigrationEvent(job, contract.EventStarted), data); err != nil {
		s.t.Fatal(err)
	}
	s.waitRecord(job, "running", func(rec contract.MigrationRecord) bool { return rec.Run > 0 && rec.EndedAt.IsZero() })
}

// waitRecord waits until job's migration record satisfies ok.
func (s *rbStack) waitRecord(job, what string, ok func(contract.MigrationRecord) bool) contract.MigrationRecord {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var rec contract.MigrationRecord
		if e, err := s.n.Assets.State.Get(s.t.Context(), contract.MigrationKey(job)); err == nil && json.Unmarshal(e.Value(), &rec) == nil && ok(rec) {
			return rec
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("migration %s: not %s within 30s; record %+v", job, what, rec)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func hasArg(args []string, flag string) bool {
	for _, a := range args {
		if a == flag {
			return true
		}
	}
	return false
}

// replayed checks a replay of the audit stream: one valid event per line,
// every one of the stream (or of the subject asked for), in order.
func (r *runbookPass) replayed(args []string, stdout string) {
	t := r.t
	t.Helper()
	filter := ""
	if last := args[len(args)-1]; strings.HasPrefix(last, "chroma.audit.") {
		filter = last
	}
	var want []string
	for _, m := range testenv.ReadAudit(t, r.s.n.JS) {
		if filter == "" || strings.HasPrefix(m.Subject, strings.TrimSuffix(filter, ">")) {
			want = append(want, m.Event.ID)
		}
	}
	var got []string
	actions := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		if line == "" {
			continue
		}
		if err := auditschema.Validate([]byte(line)); err != nil {
			t.Errorf("replayed event does not validate: %v", err)
		}
		var ev contract.AuditEvent
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("replayed line %q: %v", line, err)
		}
		got = append(got, ev.ID)
		actions[ev.Action+" "+ev.Outcome] = true
	}
	// Events emitted after the replay started may be missing at its end.
	if len(got) > len(want) || !reflect.DeepEqual(got, want[:len(got)]) || len(got) == 0 && len(want) > 0 {
		t.Errorf("replay of %s gave %d events, want the stream's %d in order", filter, len(got), len(want))
	}
	if filter == "" && actions["snapshot.create completed"] && actions["rollback completed"] {
		r.seen["audit replayed"] = true
	}
}

// gone checks that a deleted snapshot's manifest and archive are gone.
func (r *runbookPass) gone(id string) {
	r.t.Helper()
	if _, err := r.s.n.Assets.Manifests.Get(r.t.Context(), id); err == nil {
		r.t.Errorf("snapshot %s still has a manifest after delete", id)
	}
	if _, err := r.s.n.Assets.Snapshots.GetInfo(r.t.Context(), id+".tar.zst"); err == nil {
		r.t.Errorf("snapshot %s still has an archive after delete", id)
	}
}

// restored checks the data after a rollback: a full one restores the
// whole database; a partial one its collections, leaving hnsw_meta as the
// bad migration left it.
func (r *runbookPass) restored(line string, collections []string) {
	r.t.Helper()
	got := r.s.dbState()
	if len(collections) == 0 {
		sameRecords(r.t, line, got, r.pre)
		r.seen["rollback restored"] = true
		return
	}
	sameRecords(r.t, line, got, r.pre, collections...)
	if n, want := got["hnsw_meta"].Len(), r.pre["hnsw_meta"].Len()-25; n != want {
		r.t.Errorf("%s: hnsw_meta has %d records, want the %d the bad migration left", line, n, want)
	}
	r.seen["partial rollback restored"] = true
}

func totalRecords(s map[string]*record.Batch) int64 {
	var n int64
	for _, b := range s {
		n += int64(b.Len())
	}
	return n
}
