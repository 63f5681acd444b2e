package watchdog_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
)

// TestStatusNewestByTakenAt: the status's newest snapshot of a database is
// the one whose data was taken last. An archive of two days ago imported
// just now is not shown as a recent restore point over yesterday's
// snapshot; an import that does not say when its original was taken
// counts from its import.
func TestStatusNewestByTakenAt(t *testing.T) {
	e := newEnv(t, false)
	e.watchdog(t, e.fast("wd"))

	now := time.Now().UTC()
	twoDaysAgo := now.Add(-48 * time.Hour)
	put := func(id, db string, started time.Time, source *time.Time) {
		m := contract.SnapshotManifest{Envelope: contract.NewEnvelope(contract.TypeSnapshotManifest), SnapshotID: id, Name: id,
			Tenant: "t", Database: db, StartedAt: started, VerifiedAt: started.Add(time.Second)}
		if source != nil {
			m.ImportedFrom = &contract.ImportOrigin{Format: contract.ImportFormatNative, SourceCreatedAt: source}
		}
		data, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.nats.Assets.Manifests.Put(t.Context(), id, data); err != nil {
			t.Fatal(err)
		}
	}
	put("a_yesterday", "a", now.Add(-24*time.Hour), nil)
	put("a_import", "a", now.Add(-time.Minute), &twoDaysAgo)
	put("b_yesterday", "b", now.Add(-24*time.Hour), nil)
	put("b_import_undated", "b", now.Add(-time.Minute), nil)

	got := map[string]string{}
	for _, s := range e.status(t).Snapshots {
		got[s.Tenant+"/"+s.Database] = s.SnapshotID
		if !s.TakenAt.Equal(s.StartedAt) {
			t.Errorf("snapshot %s: taken at %s, started %s", s.SnapshotID, s.TakenAt, s.StartedAt)
		}
	}
	if want := map[string]string{"t/a": "a_yesterday", "t/b": "b_import_undated"}; len(got) != len(want) || got["t/a"] != want["t/a"] || got["t/b"] != want["t/b"] {
		t.Errorf("newest snapshots %v, want %v", got, want)
	}

	// Once the import is the newest, status dates it by its original.
	hourAgo := now.Add(-time.Hour)
	put("a_import_recent", "a", now.Add(-time.Second), &hourAgo)
	var shown []contract.DatabaseSnapshot
	for _, s := range e.status(t).Snapshots {
		if s.Database == "a" {
			shown = append(shown, s)
		}
	}
	if len(shown) != 1 || shown[0].SnapshotID != "a_import_recent" || !shown[0].TakenAt.Equal(hourAgo) {
		t.Errorf("newest snapshot of t/a: %+v, want a_import_recent taken at %s", shown, hourAgo)
	}

	// An import of the newest snapshot holds the same data, taken at the
	// same time: the tie goes to the one made last, as retention breaks
	// it, whatever the ids.
	put("z_original", "c", hourAgo, nil)
	put("a_reimport", "c", now.Add(-time.Second), &hourAgo)
	for _, s := range e.status(t).Snapshots {
		if s.Database == "c" && s.SnapshotID != "a_reimport" {
			t.Errorf("newest snapshot of t/c: %s, want a_reimport (made last)", s.SnapshotID)
		}
	}
}

// TestStatusRollbackLeftovers: while what a stopped rollback left (Chroma
// did not answer its cleanup) is not taken back, status lists it as alert
// rollback_leftovers, naming the collections; once a restorer took it
// back (the record is gone), the alert goes.
func TestStatusRollbackLeftovers(t *testing.T) {
	e := newEnv(t, false)
	e.watchdog(t, e.fast("wd"))

	since := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	rec := contract.Leftovers{Envelope: contract.NewEnvelope(contract.TypeLeftovers), OpID: "op_x", Tenant: "acme", Database: "prod",
		Since: since, Attempts: 7, LastError: "chroma: connection refused",
		Collections: []contract.LeftoverCollection{
			{Target: "corpus.v1", Staging: "corpus.v1__rb_1a2b", Old: "corpus.v1__old_1a2b"},
			{Target: "notes", Staging: "notes__rb_1a2b", Old: "notes__old_1a2b", Swapped: true},
		}}
	data, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.nats.Assets.State.Put(t.Context(), contract.LeftoversKey("op_x"), data); err != nil {
		t.Fatal(err)
	}
	alert := func() *contract.StatusAlert {
		for _, a := range e.status(t).Alerts {
			if a.Name == "rollback_leftovers" {
				return &a
			}
		}
		return nil
	}
	a := alert()
	if a == nil {
		t.Fatal("no rollback_leftovers alert while the leftovers are there")
	}
	for _, want := range []string{"op_x", "acme/prod", `"corpus.v1__rb_1a2b"`, `"corpus.v1__old_1a2b"`, `"notes" is restored`, `"notes__old_1a2b"`,
		"tried 7 times", "connection refused", "rollback-status op_x"} {
		if !strings.Contains(a.Detail, want) {
			t.Errorf("alert detail does not say %q: %s", want, a.Detail)
		}
	}
	if !a.Since.Equal(since) || a.Figures["op_id"] != "op_x" || a.Figures["collections"] != float64(2) || a.Figures["attempts"] != float64(7) {
		t.Errorf("alert since %s, figures %v", a.Since, a.Figures)
	}

	// Hundreds of collections are counted, not listed.
	for i := range 300 {
		rec.Collections = append(rec.Collections, contract.LeftoverCollection{Target: fmt.Sprintf("c%03d", i), Staging: fmt.Sprintf("c%03d__rb_1a2b", i), Old: fmt.Sprintf("c%03d__old_1a2b", i)})
	}
	if data, err = json.Marshal(rec); err != nil {
		t.Fatal(err)
	}
	if _, err := e.nats.Assets.State.Put(t.Context(), contract.LeftoversKey("op_x"), data); err != nil {
		t.Fatal(err)
	}
	if a := alert(); a == nil || !strings.Contains(a.Detail, "and 297 more") || strings.Contains(a.Detail, "c005") || len(a.Detail) > 2000 || a.Figures["collections"] != float64(302) {
		t.Errorf("alert of 302 collections: %+v", a)
	}

	if err := e.nats.Assets.State.Purge(t.Context(), contract.LeftoversKey("op_x")); err != nil {
		t.Fatal(err)
	}
	if a := alert(); a != nil {
		t.Errorf("alert kept after the leftovers were taken back: %+v", a)
	}
}

// TestStatusMigrationsOverlap: two runs on one database undo each other's
// writes when either is rolled back; status says so with alert
// migrations_overlap for as long as both run, naming them in start order.
// A run on another database is not part of it.
func TestStatusMigrationsOverlap(t *testing.T) {
	e := newEnv(t, false)
	tenant, snap := e.seededDB(t, "overlap", "prod", e.fast("wd"), "pre_overlap")
	overlap := func() []contract.StatusAlert {
		var out []contract.StatusAlert
		for _, a := range e.status(t).Alerts {
			if a.Name == "migrations_overlap" {
				out = append(out, a)
			}
		}
		return out
	}
	running := func(job string) contract.MigrationRecord {
		return e.waitRecord(t, job, 10*time.Second, "running", func(r contract.MigrationRecord) bool { return r.Status == contract.MigrationRunning })
	}
	e.publish(t, "ov_first", contract.EventStarted, "", started(tenant, "prod", snap, time.Hour))
	running("ov_first")
	e.publish(t, "ov_elsewhere", contract.EventStarted, "", started(tenant, "other", snap, time.Hour))
	running("ov_elsewhere")
	if a := overlap(); len(a) != 0 {
		t.Errorf("one run on each database: %+v", a)
	}
	e.publish(t, "ov_second", contract.EventStarted, "", started(tenant, "prod", snap, time.Hour))
	second := running("ov_second")
	a := overlap()
	if len(a) != 1 {
		t.Fatalf("two runs on %s/prod: alerts %+v, want one", tenant, a)
	}
	if jobs := fmt.Sprint(a[0].Figures["jobs"]); jobs != "[ov_first ov_second]" || a[0].Figures["tenant"] != tenant || a[0].Figures["database"] != "prod" {
		t.Errorf("alert figures %v", a[0].Figures)
	}
	if !a[0].Since.Equal(second.StartedAt) {
		t.Errorf("alert since %s, want the second start %s", a[0].Since, second.StartedAt)
	}
	for _, want := range []string{`"ov_first" (started `, `and "ov_second" (started `, "migrate " + tenant + "/prod at once",
		"restores its pre-migration snapshot over the others' writes too", "Ending a run"} {
		if !strings.Contains(a[0].Detail, want) {
			t.Errorf("alert detail does not say %q: %s", want, a[0].Detail)
		}
	}
	// Once one of them ended, the other migrates alone.
	e.publish(t, "ov_first", contract.EventCompleted, "", contract.MigrationEvent{})
	e.waitRecord(t, "ov_first", 10*time.Second, "completed", func(r contract.MigrationRecord) bool { return !r.EndedAt.IsZero() })
	if a := overlap(); len(a) != 0 {
		t.Errorf("after the first run ended: %+v", a)
	}
	for _, job := range []string{"ov_second", "ov_elsewhere"} {
		e.publish(t, job, contract.EventCompleted, "", contract.MigrationEvent{})
	}
}
