package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/nats-io/nats.go"
)

// statusReport is a report as the watchdog sends it, with every section.
func statusReport(now time.Time) contract.StatusReport {
	return contract.StatusReport{
		Envelope: contract.Envelope{Type: contract.TypeStatusReport, ID: "r1", Time: now},
		Watchdog: "wd-1",
		Migrations: []contract.MigrationRecord{{
			Job: "reindex-7", Tenant: "acme", Database: "prod", Status: contract.MigrationRunning,
			StartedAt: now.Add(-10 * time.Minute), Deadline: now.Add(50 * time.Minute),
			Validation: &contract.MigrationValidation{ValidChunks: 900, TotalChunks: 1000, Ratio: 0.9, Threshold: 0.95},
			Trigger:    contract.TriggerValidation, RollbackOpID: "op_rb_reindex-7_12_validation", RollbackStatus: contract.StatusRunning,
			RollbackCollections: []string{"docs"}, SnapshotID: "pre_reindex", PinnedSnapshotID: "snap_0",
			LastHeartbeat: now.Add(-30 * time.Second), Phase: "copy docs", DoneRecords: 1200,
		}, {
			Job: "nightly", Tenant: "beta", Database: "main", Status: contract.MigrationPaused, SnapshotID: "before_nightly",
			StartedAt: now.Add(-2 * time.Hour), Deadline: now.Add(-time.Hour),
			PausedBy: []contract.PauseReason{{Reason: contract.PauseConnectivity, Instance: "wd-1"}},
		}, {
			Job: "gone-archive", Tenant: "acme", Database: "prod", Status: contract.MigrationRunning, SnapshotID: "doomed",
			StartedAt: now.Add(-time.Minute), Deadline: now.Add(time.Hour),
			SnapshotError: "the archive of snapshot snap_9 (object snap_9.tar.zst) is missing from CHROMA_SNAPSHOTS: no rollback to it can run; take a new snapshot",
		}},
		Fences: []contract.Fence{{Tenant: "acme", Database: "prod", OpID: "op_rb_reindex-7_12_validation", Reason: "rollback", RaisedAt: now}},
		Operations: []contract.OperationStatus{{
			Operation: contract.Operation{OpID: "op_rb_reindex-7_12_validation", Kind: "rollback", Status: contract.StatusRunning, Phase: "restoring", Tenant: "acme", Database: "prod",
				Attempt: 2, Instance: "restorer-b"},
			Progress: &contract.Progress{Phase: "restoring", DoneRecords: 400, TotalRecords: 1000, RatePerSec: 1200, ETASeconds: 0.5},
		}},
		Snapshots: []contract.DatabaseSnapshot{
			{Tenant: "acme", Database: "prod", SnapshotID: "snap_2", Name: "safety_op_9", TotalRecords: 300, Size: 1024, VerifiedAt: now, Partial: true, ArchiveMissing: true},
			{Tenant: "acme", Database: "prod", SnapshotID: "snap_1", Name: "pre_migration_reindex-7", TotalRecords: 1000, Size: 4096, VerifiedAt: now,
				StartedAt: now.Add(-time.Hour), TakenAt: now.Add(-48 * time.Hour)},
		},
		Alerts: []contract.StatusAlert{{Name: "connectivity", Detail: "Chroma failed 3 heartbeats in a row", Since: now}, {
			Name: "rollback", Since: now.Add(-time.Minute), Figures: map[string]any{"job": "reindex-8"},
			Detail: "migration reindex-8 of acme/prod: the validation trigger fired (validation ratio 0.9000), but its rollback op_rb_reindex-8_3_validation is failed: " +
				"the restorer refused the rollback: snapshot snap_3 is encrypted with age; the job is paused. Roll back by hand: chromadb-rollback rollback snap_3 --reason 'validation trigger of migration reindex-8' --yes; then end the run",
		}},
	}
}

// TestCLIStatus: `status` prints the watchdog's report as tables, and as
// the report itself with --json. The watchdog's own end-to-end tests
// build the report against real services; here a responder stands in.
func TestCLIStatus(t *testing.T) {
	n := testenv.StartNATS(t)
	c := cli{t: t, url: n.URL}
	now := time.Now().UTC().Truncate(time.Second)
	want := statusReport(now)
	sub, err := n.Conn.Subscribe("chroma.api.status", func(m *nats.Msg) {
		var req contract.StatusRequest
		if err := json.Unmarshal(m.Data, &req); err != nil || req.Type != contract.TypeStatusRequest || req.Actor == "" {
			t.Errorf("status request %s: %v", m.Data, err)
		}
		data, _ := json.Marshal(want)
		_ = m.Respond(data)
	})
	if err != nil {
		t.Fatal(err)
	}
	// The CLI runs on a connection of its own: the server must know
	// the subscription before it starts.
	if err := n.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	code, stdout, stderr := c.run("status")
	if code != exitOK {
		t.Fatalf("status: exit %d: %s", code, stderr)
	}
	for _, s := range []string{
		"Status from watchdog wd-1",
		"Migrations (3)", "reindex-7", "acme/prod", "900/1000 = 0.9000 < 0.95", "op_rb_reindex-7_12_validation running (partial: docs)",
		"(in 50m0s)", "(1h0m0s ago)", "nightly", "paused", "connectivity",
		"SNAPSHOT", "snap_0 (pre_reindex)", "before_nightly (not found yet)",
		"Fences (1)", "Operations (1)", "restoring 400/1000 records (40%), 1200/s, ETA 1s",
		"rollback  running on restorer-b  restoring", // which instance's logs to read
		"Newest verified snapshots (2)", "HOLDS",
		"snap_2    safety_op_9              some collections", "snap_1    pre_migration_reindex-7  all collections ",
		"TAKEN", "4.0 KiB  " + stamp(now.Add(-48*time.Hour)) + "  " + stamp(now),
		"Alerts (2)", "Chroma failed 3 heartbeats in a row",
		// A run whose automatic rollback failed, and the command to run.
		"rollback      " + stamp(now.Add(-time.Minute)) + "  migration reindex-8 of acme/prod: the validation trigger fired",
		"Roll back by hand: chromadb-rollback rollback snap_3 --reason 'validation trigger of migration reindex-8' --yes; then end the run\n",
		// What the job's latest heartbeat said, under the table.
		"\n  heartbeat of reindex-7: copy docs, 1200 records done (30s ago)\n",
		// Why a run's snapshot is unusable, under the table.
		"gone-archive  acme/prod  running  unusable (see snapshot_error)",
		// A run on a fenced database was told to pause by the rollback.
		"fence of op_rb_reindex-7_12_validation\n  nightly",
		"connectivity\n  gone-archive",
		"\n  snapshot_error of gone-archive: the archive of snapshot snap_9 (object snap_9.tar.zst) is missing from CHROMA_SNAPSHOTS: no rollback to it can run; take a new snapshot\n\nFences (1)",
	} {
		if !strings.Contains(stdout, s) {
			t.Errorf("status output lacks %q:\n%s", s, stdout)
		}
	}
	if n := strings.Count(stdout, stamp(now)+", ARCHIVE MISSING: cannot be restored\n"); n != 1 {
		t.Errorf("status output marks %d snapshots as missing their archive, want snap_2:\n%s", n, stdout)
	}

	code, stdout, _ = c.run("status", "--json")
	var got contract.StatusReport
	if code != exitOK || json.Unmarshal([]byte(stdout), &got) != nil {
		t.Fatalf("status --json: exit %d, output %q", code, stdout)
	}
	if len(got.Migrations) != 3 || got.Migrations[0].RollbackOpID != want.Migrations[0].RollbackOpID || len(got.Alerts) != 2 ||
		got.Migrations[2].SnapshotError != want.Migrations[2].SnapshotError {
		t.Errorf("status --json: %+v", got)
	}

	want = contract.StatusReport{Envelope: want.Envelope, Watchdog: "wd-1"}
	code, stdout, _ = c.run("status")
	if code != exitOK || strings.Count(stdout, "  none") != 5 {
		t.Errorf("empty status: exit %d\n%s", code, stdout)
	}
}

func TestCLIStatusErrors(t *testing.T) {
	n := testenv.StartNATS(t)
	c := cli{t: t, url: n.URL}
	code, _, stderr := c.run("status")
	if code != exitFailed || !strings.Contains(stderr, "no service answers on chroma.api.status") {
		t.Errorf("without a watchdog: exit %d, %q", code, stderr)
	}
	sub, err := n.Conn.Subscribe("chroma.api.status", func(m *nats.Msg) {
		r := nats.NewMsg(m.Reply)
		r.Header.Set("Nats-Service-Error", "read state: timeout")
		r.Header.Set("Nats-Service-Error-Code", "503")
		r.Data = []byte(`{"type":"chromadb-rollback.v1.error","code":503,"error":"read state: timeout"}`)
		_ = m.RespondMsg(r)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	code, _, stderr = c.run("status")
	if code != exitFailed || !strings.Contains(stderr, "read state: timeout") {
		t.Errorf("error reply: exit %d, %q", code, stderr)
	}
	if code, _, stderr = c.run("status", "extra"); code != exitUsage {
		t.Errorf("status with an argument: exit %d, %q", code, stderr)
	}
}

func TestBytesText(t *testing.T) {
	for n, want := range map[int64]string{-1: "0 B", 0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 24274: "23.7 KiB", 153_600_000: "146.5 MiB", 5 << 30: "5.0 GiB"} {
		if got := sizeText(n); got != want {
			t.Errorf("sizeText(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestBarLabel: the progress bar names the phase and collection, and the
// rate and time left only once the service has measured them (never the
// "0 records/hr" a rate of zero read as).
func TestBarLabel(t *testing.T) {
	for _, c := range []struct {
		p    contract.Progress
		want string
	}{
		{contract.Progress{Phase: "listing"}, "listing"},
		{contract.Progress{Phase: "exporting", Collection: "docs", TotalRecords: 3000}, "exporting docs"},
		{contract.Progress{Phase: "exporting", Collection: "docs", DoneRecords: 1200, TotalRecords: 3000, RatePerSec: 1234.4, ETASeconds: 1.46},
			"exporting docs, 1234 records/s, about 1s left"},
		{contract.Progress{Phase: "restoring", Collection: "big", RatePerSec: 980, ETASeconds: 0.4}, "restoring big, 980 records/s"},
		{contract.Progress{Phase: "verifying", ETASeconds: 125}, "verifying, about 2m5s left"},
	} {
		if got := barLabel(c.p); got != c.want {
			t.Errorf("barLabel(%+v) = %q, want %q", c.p, got, c.want)
		}
	}
}
