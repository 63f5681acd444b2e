package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/chromadb-rollback/chromadb-rollback/services/restorer"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
	"github.com/chromadb-rollback/chromadb-rollback/services/watchdog"
)

const (
	tTenant = "default_tenant"
	tDB     = "default_database"
)

// runIn executes the CLI with stdin.
func (c cli) runIn(stdin string, args ...string) (int, string, string) {
	c.t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := cliContext(c.t, 3*time.Minute)
	defer cancel()
	code := run(ctx, append([]string{"--nats-url", c.url}, args...), strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

// startRollbackStack runs what `serve` runs (snapshotter, restorer and
// watchdog) on a real Chroma with two seeded collections and an embedded
// JetStream.
func startRollbackStack(t *testing.T) (cli, *chroma.Client, *testenv.NATS) {
	return startRollbackStackVia(t, nil)
}

// startRollbackStackVia is startRollbackStack with the restorer reaching
// Chroma at via(Chroma's URL) when via is set (a proxy in front of it).
func startRollbackStackVia(t *testing.T, via func(chromaURL string) string) (cli, *chroma.Client, *testenv.NATS) {
	t.Helper()
	ch := testenv.StartChroma(t)
	cc := ch.Client(t)
	if err := testenv.SeedWorkload(t.Context(), cc, tTenant, tDB, 2, 400, 16, 80); err != nil {
		t.Fatal(err)
	}
	n := testenv.StartNATS(t)
	subj := contract.Subjects{Prefix: "chroma"}
	snap, err := snapshotter.New(snapshotter.Config{ChromaURL: ch.URL, DataDir: t.TempDir()}, n.Connect(t), subj, cc, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	rc, rurl := cc, ch.URL
	if via != nil {
		rurl = via(ch.URL)
		if rc, err = chroma.New(rurl); err != nil {
			t.Fatal(err)
		}
	}
	rest, err := restorer.New(restorer.Config{ChromaURL: rurl}, n.Connect(t), subj, rc, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	wd, err := watchdog.New(watchdog.Config{ChromaURL: ch.URL}, n.Connect(t), subj, ch.Client(t, chroma.WithRetryMaxElapsed(0)), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runAll(ctx, snap.Run, rest.Run, wd.Run) }()
	t.Cleanup(func() { cancel(); <-done })
	c := cli{t: t, url: n.URL}
	// Both services answer once their endpoints are registered.
	for _, subject := range []string{subj.API("snapshot", "list"), subj.API("rollback", "status"), subj.API("status")} {
		deadline := time.Now().Add(20 * time.Second)
		for {
			_, err := n.Conn.Request(subject, []byte(`{}`), time.Second)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %v", subject, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return c, cc, n
}

// state reads every record of every collection, by name.
func state(t *testing.T, cc *chroma.Client) map[string]*record.Batch {
	t.Helper()
	colls, err := cc.ListCollections(t.Context(), tTenant, tDB)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*record.Batch{}
	for _, c := range colls {
		b, err := testenv.ReadAll(t.Context(), cc, tTenant, tDB, c.ID, 500)
		if err != nil {
			t.Fatal(err)
		}
		out[c.Name] = b
	}
	return out
}

func sameState(t *testing.T, what string, got, want map[string]*record.Batch) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d collections, want %d", what, len(got), len(want))
	}
	for name, w := range want {
		g, ok := got[name]
		if !ok {
			t.Fatalf("%s: collection %q missing", what, name)
		}
		if !reflect.DeepEqual(g, w) {
			t.Fatalf("%s: collection %q differs (%d records, want %d)", what, name, g.Len(), w.Len())
		}
	}
}

// badMigration damages the seeded database as a bad migration would:
// 200 records of workload_00 deleted (before is its state), workload_01
// dropped.
func badMigration(t *testing.T, cc *chroma.Client, before map[string]*record.Batch) {
	t.Helper()
	ctx := t.Context()
	w0, err := cc.GetCollection(ctx, tTenant, tDB, "workload_00")
	if err != nil {
		t.Fatal(err)
	}
	if err := cc.Delete(ctx, tTenant, tDB, w0.ID, before["workload_00"].IDs[:200]); err != nil {
		t.Fatal(err)
	}
	if err := cc.DeleteCollection(ctx, tTenant, tDB, "workload_01"); err != nil {
		t.Fatal(err)
	}
}

func TestCLIRollback(t *testing.T) {
	c, cc, n := startRollbackStack(t)
	m := c.createSnapshot("pre_migration")
	before := state(t, cc)

	badMigration(t, cc, before)
	ctx := t.Context()
	damaged := state(t, cc)

	t.Run("flags are checked before anything is asked", func(t *testing.T) {
		for _, args := range [][]string{
			{"rollback", "pre_migration", "--partial"},
			{"rollback", "pre_migration", "--failed-collections", "a"},
			{"rollback", "pre_migration", "--batches", "workload_00"},
			{"rollback", "pre_migration", "--partial", "--failed-collections", "a", "--drop-extra"},
			{"rollback", "pre_migration", "--rename", "workload_00"},
		} {
			if code, _, stderr := c.run(args...); code != exitUsage {
				t.Errorf("%v: exit %d (%s), want %d", args, code, stderr, exitUsage)
			}
		}
	})

	code, stdout, stderr := c.run("rollback", "pre_migration", "--dry-run")
	if code != exitOK {
		t.Fatalf("dry run: exit %d: %s", code, stderr)
	}
	for _, want := range []string{m.SnapshotID, "verified", "workload_00", "replace", "workload_01", "create", "Dry run: nothing was changed"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("dry-run output lacks %q:\n%s", want, stdout)
		}
	}
	sameState(t, "after dry run", state(t, cc), damaged)

	// --failed-collections and --rename are repeatable like --batches:
	// every occurrence counts, not only the last.
	code, stdout, stderr = c.run("rollback", "pre_migration", "--dry-run", "--json", "--partial",
		"--failed-collections", "workload_00", "--failed-collections", "workload_01",
		"--rename", "workload_00:w00_copy", "--rename", "workload_01:w01_copy")
	var rp contract.RollbackPlan
	if code != exitOK || json.Unmarshal([]byte(stdout), &rp) != nil {
		t.Fatalf("dry run with repeated flags: exit %d: %s %s", code, stdout, stderr)
	}
	restored := map[string]string{}
	for _, it := range rp.Items {
		if it.Action != contract.PlanUntouched {
			restored[it.Collection] = it.Target
		}
	}
	if want := map[string]string{"workload_00": "w00_copy", "workload_01": "w01_copy"}; !maps.Equal(restored, want) {
		t.Errorf("repeated --failed-collections and --rename restore %v, want %v", restored, want)
	}

	// What the service refuses as a bad request exits 2, and --json prints
	// its error reply.
	code, stdout, stderr = c.run("rollback", "pre_migration", "--partial", "--failed-collections", "no_such", "--dry-run", "--json")
	var eb contract.ErrorBody
	if code != exitUsage || json.Unmarshal([]byte(stdout), &eb) != nil || eb.Code != contract.CodeBadRequest ||
		!strings.Contains(eb.Error, `"no_such"`) || !strings.Contains(stderr, "collections not in snapshot") {
		t.Errorf("a collection not in the snapshot: exit %d, stdout %q, stderr %q; want %d and the error reply", code, stdout, stderr, exitUsage)
	}

	if code, _, stderr = c.runIn("no\n", "rollback", "pre_migration"); code != exitFailed || !strings.Contains(stderr, "not confirmed") {
		t.Errorf("answered no: exit %d, stderr %q", code, stderr)
	}
	if code, _, stderr = c.runIn("", "rollback", "pre_migration"); code != exitUsage || !strings.Contains(stderr, "--yes") {
		t.Errorf("no answer: exit %d, stderr %q", code, stderr)
	}
	sameState(t, "after refused confirmations", state(t, cc), damaged)

	code, stdout, stderr = c.runIn("yes\n", "rollback", "pre_migration", "--no-safety-snapshot", "--reason", "bad migration")
	if code != exitOK {
		t.Fatalf("rollback: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stderr, "Type 'yes' to confirm") || !strings.Contains(stdout, "completed") ||
		!strings.Contains(stderr, "WARNING: CRITICAL: this will RESTORE "+tTenant+"/"+tDB+" from snapshot") ||
		!strings.Contains(stderr, "will be LOST; nothing keeps it (--no-safety-snapshot)") {
		t.Errorf("rollback output:\n%s\n%s", stdout, stderr)
	}
	sameState(t, "after rollback", state(t, cc), before)

	// The operation id is on the status line; rollback-status reports it.
	var opID string
	for _, f := range strings.Fields(stdout) {
		if strings.HasPrefix(f, "op_") {
			opID = strings.TrimSuffix(f, ":")
			break
		}
	}
	if opID == "" {
		t.Fatalf("no operation id in %q", stdout)
	}
	code, stdout, stderr = c.run("rollback-status", opID, "--json")
	if code != exitOK {
		t.Fatalf("rollback-status: exit %d: %s", code, stderr)
	}
	var op contract.Operation
	if err := json.Unmarshal([]byte(stdout), &op); err != nil {
		t.Fatal(err)
	}
	if op.Status != contract.StatusCompleted || op.Restore == nil || !op.Restore.Verified || op.Actor == "" {
		t.Errorf("status of %s: %+v", opID, op)
	}
	if code, _, stderr = c.run("rollback-status", "op_nonexistent"); code != exitFailed {
		t.Errorf("status of an unknown op: exit %d: %s", code, stderr)
	}

	// status, answered by the watchdog that serve also runs: the newest
	// verified snapshot of the database, no fence left raised, nothing running.
	code, stdout, stderr = c.run("status", "--json")
	if code != exitOK {
		t.Fatalf("status: exit %d: %s", code, stderr)
	}
	var rep contract.StatusReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Snapshots) != 1 || rep.Snapshots[0].SnapshotID != m.SnapshotID || rep.Snapshots[0].Database != tDB {
		t.Errorf("status snapshots: %+v, want %s of %s", rep.Snapshots, m.SnapshotID, tDB)
	}
	if len(rep.Fences) != 0 || len(rep.Operations) != 0 || len(rep.Migrations) != 0 {
		t.Errorf("status after the rollback: fences %+v, operations %+v, migrations %+v", rep.Fences, rep.Operations, rep.Migrations)
	}

	// A rollback into another database says where it restored, in its
	// report and in rollback-status, which shows no plan once it ended.
	code, stdout, stderr = c.run("rollback", "pre_migration", "--target-database", "copy_of_"+tDB, "--yes")
	where := "Restored into: " + tTenant + "/copy_of_" + tDB + " (snapshot " + m.SnapshotID + " of " + tTenant + "/" + tDB + ")"
	if code != exitOK || !strings.Contains(stdout, where) {
		t.Errorf("rollback into another database: exit %d, want %q in\n%s%s", code, where, stdout, stderr)
	}
	if i := strings.Index(stdout, "Rollback op_"); i >= 0 {
		opID = strings.TrimSuffix(strings.Fields(stdout[i:])[1], ":")
	}
	if code, stdout, _ = c.run("rollback-status", opID); code != exitOK || !strings.Contains(stdout, where) {
		t.Errorf("rollback-status %s of a rollback into another database: exit %d, want %q in\n%s", opID, code, where, stdout)
	}

	// A damaged archive is refused before anything changes, with the
	// verification exit code, for a dry run and for a confirmed rollback.
	// (The rollback swapped a new workload_00 in.)
	w0, err := cc.GetCollection(ctx, tTenant, tDB, "workload_00")
	if err != nil {
		t.Fatal(err)
	}
	if err := cc.Delete(ctx, tTenant, tDB, w0.ID, before["workload_00"].IDs[:10]); err != nil {
		t.Fatal(err)
	}
	damaged = state(t, cc)
	data, err := n.Assets.Snapshots.GetBytes(ctx, m.Object)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if _, err := n.Assets.Snapshots.PutBytes(ctx, m.Object, data); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"rollback", "pre_migration", "--dry-run"},
		{"rollback", "pre_migration", "--yes", "--no-safety-snapshot"},
	} {
		code, _, stderr = c.run(args...)
		if code != exitVerification || !strings.Contains(stderr, "refusing to restore") || !strings.Contains(stderr, "nothing was changed") {
			t.Errorf("%v of a damaged archive: exit %d, want %d; stderr %q", args, code, exitVerification, stderr)
		}
	}
	code, stdout, _ = c.run("rollback", "pre_migration", "--yes", "--json")
	var refusal struct {
		Code  int    `json:"code"`
		Error string `json:"error"`
	}
	if code != exitVerification || json.Unmarshal([]byte(stdout), &refusal) != nil || refusal.Code != contract.CodeVerificationFailed {
		t.Errorf("rollback --json of a damaged archive: exit %d, stdout %q", code, stdout)
	}
	sameState(t, "after refused rollbacks of a damaged archive", state(t, cc), damaged)

	// The same name in another database: create warns, and by name a
	// rollback is refused as ambiguous (exit 2), before anything changes.
	if err := cc.CreateDatabase(ctx, tTenant, "other"); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = c.run("snapshot", "create", "--name", "pre_migration", "--database", "other")
	if code != exitOK || !strings.Contains(stderr, `warning: the name "pre_migration" is also used by snapshots of `+tTenant+"/"+tDB) ||
		!strings.Contains(stderr, "refer to this one by its id "+strings.TrimSpace(stdout)) {
		t.Errorf("create under a name used in another database: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, _, stderr = c.run("rollback", "pre_migration", "--yes", "--no-safety-snapshot")
	if code != exitUsage || !strings.Contains(stderr, "more than one tenant/database") || !strings.Contains(stderr, m.SnapshotID) {
		t.Errorf("rollback by an ambiguous name: exit %d, stderr %q", code, stderr)
	}
	sameState(t, "after a rollback by an ambiguous name", state(t, cc), damaged)
}

// TestCLIRollbackStatusWhileRunning: rollback-status of a running rollback
// shows its phase, plan and latest progress and how to follow it;
// --wait follows it to its end, prints the report and exits as rollback
// does. It used to print the phase alone, and following a rollback the CLI
// had stopped waiting for meant running rollback-status again and again.
func TestCLIRollbackStatusWhileRunning(t *testing.T) {
	var hold *holdWrites
	c, cc, _ := startRollbackStackVia(t, func(u string) string {
		var proxy string
		hold, proxy = startHoldWrites(t, u)
		hold.pass.Store(1) // the first collection's add goes through
		return proxy
	})
	if code, _, stderr := c.run("snapshot", "create", "--name", "pre"); code != exitOK {
		t.Fatalf("snapshot create: exit %d: %s", code, stderr)
	}
	before := state(t, cc)
	badMigration(t, cc, before)
	code, stdout, stderr := c.run("rollback", "pre", "--yes", "--no-safety-snapshot", "--no-wait")
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	op := lines[len(lines)-1] // after the plan
	if code != exitOK || !strings.HasPrefix(op, "op_") {
		t.Fatalf("rollback --no-wait: exit %d, %q %s", code, stdout, stderr)
	}
	for deadline := time.Now().Add(time.Minute); hold.held.Load() == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the second collection's add never came")
		}
	}
	var rec contract.Operation
	if code, stdout, _ := c.run("rollback-status", op, "--json"); code != exitOK || json.Unmarshal([]byte(stdout), &rec) != nil || rec.Plan == nil {
		t.Fatalf("rollback-status --json: exit %d\n%s", code, stdout)
	}
	code, stdout, stderr = c.run("rollback-status", op)
	for _, want := range []string{
		"Rollback " + op + ": running\n",
		"Phase: restoring (attempt 1, on restorer)\n", // the instance that works on it
		fmt.Sprintf("Plan: %d records to write into 2 collections, estimated ", rec.Plan.WriteRecords),
		fmt.Sprintf("/%d records (", rec.Plan.WriteRecords), // the progress line, from the watchdog
		"Follow it to its end with `chromadb-rollback rollback-status --wait " + op + "`",
	} {
		if code != exitOK || !strings.Contains(stdout, want) {
			t.Errorf("rollback-status of a running rollback: exit %d, want %q in\n%s%s", code, want, stdout, stderr)
		}
	}
	if !strings.Contains(stdout, "Progress: restoring ") {
		t.Errorf("no progress line:\n%s", stdout)
	}

	waited := c.start("", "rollback-status", "--wait", op)
	time.Sleep(300 * time.Millisecond) // it waits while the add is held
	select {
	case r := <-waited:
		t.Fatalf("rollback-status --wait returned while the rollback ran: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	default:
	}
	hold.Release()
	r := await(t, waited, 2*time.Minute, "rollback-status --wait")
	if r.code != exitOK || !strings.Contains(r.stdout, "Rollback "+op+": completed") || !strings.Contains(r.stdout, fmt.Sprintf("Records written: %d in ", rec.Plan.WriteRecords)) {
		t.Errorf("rollback-status --wait: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	sameState(t, "after the rollback", state(t, cc), before)
	// Of an ended rollback --wait prints the report at once.
	if code, stdout, _ := c.run("rollback-status", "--wait", op); code != exitOK || !strings.Contains(stdout, ": completed") || strings.Contains(stdout, "Phase:") {
		t.Errorf("rollback-status --wait of an ended rollback: exit %d\n%s", code, stdout)
	}
}
