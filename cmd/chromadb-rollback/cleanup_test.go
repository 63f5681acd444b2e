package main

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
)

// laterClock is the system clock moved ahead, so that snapshots taken now
// are that old to retention. Its timers never fire: the daily run must not
// happen in the middle of the test.
type laterClock struct{ ahead time.Duration }

func (c laterClock) Now() time.Time                     { return time.Now().Add(c.ahead) }
func (laterClock) After(time.Duration) <-chan time.Time { return nil }

// TestCLICleanup: snapshot create --keep, snapshot keep, cleanup --dry-run
// (tables and --json; nothing deleted) and cleanup (the expired snapshot
// gone, the pinned and the newest kept), against a snapshotter whose clock
// is 30 days ahead.
func TestCLICleanup(t *testing.T) {
	ch := testenv.StartChroma(t)
	cc := ch.Client(t)
	if err := testenv.SeedWorkload(t.Context(), cc, "default_tenant", "default_database", 1, 8, 4, 16); err != nil {
		t.Fatal(err)
	}
	n := testenv.StartNATS(t)
	c := startSnapshotter(t, n, snapshotter.Config{ChromaURL: ch.URL, Clock: laterClock{30 * 24 * time.Hour}}, cc)

	create := func(args ...string) string {
		t.Helper()
		code, stdout, stderr := c.run(append([]string{"snapshot", "create"}, args...)...)
		if code != exitOK {
			t.Fatalf("snapshot create %v: exit %d: %s", args, code, stderr)
		}
		return strings.TrimSpace(stdout)
	}
	old := create("--name", "old")
	pinned := create("--name", "pinned", "--keep")
	newest := create("--name", "newest")
	listed := func() []string {
		t.Helper()
		code, stdout, stderr := c.run("snapshot", "list", "--json")
		var list contract.SnapshotList
		if code != exitOK || json.Unmarshal([]byte(stdout), &list) != nil {
			t.Fatalf("snapshot list: exit %d: %s%s", code, stdout, stderr)
		}
		var ids []string
		for _, m := range list.Snapshots {
			ids = append(ids, m.SnapshotID)
		}
		return ids
	}

	code, stdout, _ := c.run("snapshot", "list")
	if code != exitOK || !regexp.MustCompile(`KEEP\n`).MatchString(stdout) || !regexp.MustCompile(pinned+`.*true\n`).MatchString(stdout) ||
		!regexp.MustCompile(old+`.*false\n`).MatchString(stdout) {
		t.Errorf("snapshot list does not show keep true for %s only:\n%s", pinned, stdout)
	}

	// A snapshot queued now, that no snapshotter took: 30 days on, its
	// command has left the work queue.
	stuck, _ := json.Marshal(contract.Operation{OpID: "op_stuck", Kind: "snapshot", SnapshotID: "snap_stuck", Status: contract.StatusQueued, UpdatedAt: time.Now()})
	if _, err := n.Assets.State.Put(t.Context(), contract.OperationKey("op_stuck"), stuck); err != nil {
		t.Fatal(err)
	}

	code, stdout, stderr := c.run("cleanup", "--dry-run")
	if code != exitOK {
		t.Fatalf("cleanup --dry-run: exit %d: %s", code, stderr)
	}
	for _, want := range []string{
		"Dry run: nothing was deleted.",
		"Would delete (1)",
		"Kept (2)",
		"older than 7d",
		"1 to delete, 2 kept; would free",
		// The service's clock is 30 days ahead: the three snapshots'
		// operations ended before the cutoff.
		"Would prune the records of work that ended before the cutoff: 3 operations, 0 migrations, 0 retention claims",
		"Would fail the operations that no worker can end, their commands gone from CHROMA_CMDS: op_stuck",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("cleanup --dry-run output lacks %q:\n%s", want, stdout)
		}
	}
	for id, why := range map[string]string{old: "-", pinned: "keep: pinned with keep", newest: "newest_verified: the newest verified snapshot of default_tenant/default_database"} {
		if !regexp.MustCompile(regexp.QuoteMeta(id) + `\s+\S+\s+default_tenant/default_database\s+\S+\s+30d\s+[\d.]+ (B|KiB)\s+` + regexp.QuoteMeta(why)).MatchString(stdout) {
			t.Errorf("cleanup --dry-run: no row for %s, 30 days old, %q:\n%s", id, why, stdout)
		}
	}
	if got := listed(); len(got) != 3 {
		t.Fatalf("after a dry run %d snapshots remain, want 3", len(got))
	}

	code, stdout, _ = c.run("cleanup", "--dry-run", "--json")
	var rep contract.CleanupReport
	if code != exitOK || json.Unmarshal([]byte(stdout), &rep) != nil {
		t.Fatalf("cleanup --dry-run --json: exit %d: %s", code, stdout)
	}
	if !rep.DryRun || len(rep.Deleted) != 1 || rep.Deleted[0].SnapshotID != old || rep.Deleted[0].Size <= 0 || rep.BytesFreed != rep.Deleted[0].Size {
		t.Errorf("dry run report: dry_run %v, deleted %+v, bytes %d; want %s alone", rep.DryRun, rep.Deleted, rep.BytesFreed, old)
	}

	// Pin by name, see it in info, unpin.
	code, stdout, _ = c.run("snapshot", "keep", "old")
	if code != exitOK || !strings.Contains(stdout, old+" (old) is kept") {
		t.Errorf("snapshot keep old: exit %d: %s", code, stdout)
	}
	code, stdout, _ = c.run("snapshot", "info", "old")
	if code != exitOK || !regexp.MustCompile(`keep:\s+true`).MatchString(stdout) {
		t.Errorf("snapshot info after keep: exit %d:\n%s", code, stdout)
	}
	code, stdout, _ = c.run("snapshot", "keep", old, "--off")
	if code != exitOK || !strings.Contains(stdout, "no longer pinned") {
		t.Errorf("snapshot keep --off: exit %d: %s", code, stdout)
	}
	code, stdout, _ = c.run("snapshot", "info", old)
	if code != exitOK || !regexp.MustCompile(`keep:\s+false`).MatchString(stdout) {
		t.Errorf("snapshot info after keep --off: exit %d:\n%s", code, stdout)
	}

	code, stdout, stderr = c.run("cleanup", "--reason", "test")
	if code != exitOK {
		t.Fatalf("cleanup: exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "Deleted (1)") || !strings.Contains(stdout, "1 deleted, 2 kept, 0 failed; freed") || strings.Contains(stdout, "Dry run") ||
		!strings.Contains(stdout, "Pruned the records of work that ended before the cutoff: 3 operations") ||
		!strings.Contains(stdout, "Failed the operations that no worker can end, their commands gone from CHROMA_CMDS: op_stuck") {
		t.Errorf("cleanup output:\n%s", stdout)
	}
	if got, want := listed(), []string{newest, pinned}; !slices.Equal(got, want) {
		t.Errorf("after cleanup: %v, want %v", got, want)
	}

	for _, args := range [][]string{
		{"cleanup", "--older-than", "a week"},
		{"cleanup", "--older-than", "-1h"},
		{"cleanup", "--database", "prod"},
		{"snapshot", "keep"},
	} {
		if code, _, stderr := c.run(args...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d (usage): %s", args, code, exitUsage, stderr)
		}
	}
	if code, _, stderr := c.run("snapshot", "keep", "nope"); code != exitFailed || !strings.Contains(stderr, `no snapshot with id or name "nope"`) {
		t.Errorf("snapshot keep of an unknown snapshot: exit %d: %s", code, stderr)
	}

	// A pinned snapshot is deleted only on purpose.
	if code, _, stderr := c.run("snapshot", "delete", pinned); code != exitFailed || !strings.Contains(stderr, "pinned") || !strings.Contains(stderr, "force") {
		t.Errorf("snapshot delete of a pinned snapshot: exit %d: %s", code, stderr)
	}
	if code, stdout, stderr := c.run("snapshot", "delete", pinned, "--force"); code != exitOK || !strings.Contains(stdout, "deleted snapshot "+pinned) {
		t.Errorf("snapshot delete --force: exit %d: %s%s", code, stdout, stderr)
	}
}
