package snapshotter

import (
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
)

// TestRetentionSparesSnapshotPinnedDuringRun: a run decides on a manifest
// at one revision; if the snapshot is pinned before the run deletes it, the
// deletion is refused and manifest and object stay. Without the revision
// (chroma.api.snapshot.delete) the same snapshot is deleted, manifest
// first, then object.
func TestRetentionSparesSnapshotPinnedDuringRun(t *testing.T) {
	s, n := storeOnlyService(t)
	ctx := t.Context()

	m := contract.SnapshotManifest{Envelope: contract.NewEnvelope(contract.TypeSnapshotManifest), SnapshotID: "snap_pin",
		Name: "pin", Tenant: "t", Database: "d", Object: objectName("snap_pin"), StartedAt: time.Now().Add(-30 * 24 * time.Hour)}
	if _, err := n.Assets.Snapshots.PutBytes(ctx, m.Object, []byte("archive")); err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(m)
	if _, err := n.Assets.Manifests.Create(ctx, m.SnapshotID, data); err != nil {
		t.Fatal(err)
	}

	entries, err := s.manifestEntries(ctx)
	if err != nil || len(entries) != 1 {
		t.Fatalf("manifest entries: %v, %v", entries, err)
	}
	if _, changed, e := s.setKeep(ctx, m.SnapshotID, true); e != nil || !changed {
		t.Fatalf("pin: changed %v, %v", changed, e)
	}
	if err := s.deleteSnapshot(ctx, &entries[0].m, entries[0].rev); !errors.Is(err, errManifestChanged) {
		t.Fatalf("delete at the old revision: %v, want errManifestChanged", err)
	}
	entry, err := n.Assets.Manifests.Get(ctx, m.SnapshotID)
	if err != nil {
		t.Fatalf("pinned manifest gone: %v", err)
	}
	var got contract.SnapshotManifest
	if err := json.Unmarshal(entry.Value(), &got); err != nil || !got.Keep {
		t.Fatalf("manifest after the refused delete: keep %v, %v", got.Keep, err)
	}
	if _, err := n.Assets.Snapshots.GetInfo(ctx, m.Object); err != nil {
		t.Fatalf("object of the pinned snapshot gone: %v", err)
	}

	if err := s.deleteSnapshot(ctx, &got, 0); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := n.Assets.Manifests.Get(ctx, m.SnapshotID); err == nil {
		t.Errorf("manifest still there after delete")
	}
	if _, err := n.Assets.Snapshots.GetInfo(ctx, m.Object); err == nil {
		t.Errorf("object still there after delete")
	}
	if _, _, e := s.setKeep(ctx, m.SnapshotID, false); e == nil || e.code != contract.CodeNotFound {
		t.Errorf("keep of a deleted snapshot: %v, want not found", e)
	}
}

// storeOnlyService is a snapshotter on an embedded JetStream, its streams
// and buckets made, that is not running and has no Chroma: for testing
// what it does to the store.
func storeOnlyService(t *testing.T) (*Service, *testenv.NATS) {
	t.Helper()
	n := testenv.StartNATS(t)
	s, err := New(Config{ChromaURL: "http://127.0.0.1:1"}, n.Conn, contract.Subjects{Prefix: contract.DefaultPrefix}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.assets = n.Assets
	return s, n
}

// TestRetentionNewestByTakenAt: the newest snapshot of a database, which
// retention keeps whatever its age, is the one whose data was taken last.
// An archive of 60 days ago imported yesterday is kept as younger than 7
// days (its import), not as the newest; the snapshot taken 10 days ago is
// the newest and stays. An import that does not say when its original was
// taken counts from its import.
func TestRetentionNewestByTakenAt(t *testing.T) {
	now := time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	man := func(id, db string, started time.Time, source *time.Time) manifestEntry {
		m := contract.SnapshotManifest{SnapshotID: id, Name: id, Tenant: "t", Database: db,
			StartedAt: started, VerifiedAt: started.Add(time.Second)}
		if source != nil {
			m.ImportedFrom = &contract.ImportOrigin{Format: contract.ImportFormatNative, SourceCreatedAt: source}
		}
		return manifestEntry{m: m}
	}
	sixtyDays, tenDaysAgo := now.Add(-60*day), now.Add(-10*day)
	all := []manifestEntry{ // newest started first, as manifestEntries sorts them
		man("c_reimport", "c", now.Add(-day), &tenDaysAgo),
		man("b_import_undated", "b", now.Add(-day), nil),
		man("a_import", "a", now.Add(-day), &sixtyDays),
		man("z_original", "c", tenDaysAgo, nil),
		man("b_taken", "b", tenDaysAgo, nil),
		man("a_taken", "a", tenDaysAgo, nil),
		man("a_old", "a", now.Add(-30*day), nil),
	}
	rep := &contract.CleanupReport{Now: now, Cutoff: now.Add(-7 * day), OlderThan: "7d"}
	expired := (&Service{}).decide(all, &snapshotUse{refs: map[string][]keepReason{}}, nil, nil, rep, cleanupOptions{olderThan: 7 * day})

	kept := map[string]string{}
	for _, it := range rep.Kept {
		kept[it.SnapshotID] = it.Reason
	}
	// c_reimport is z_original imported again: the same data, taken at
	// the same time; the tie goes to the one made last, as status breaks
	// it.
	want := map[string]string{
		"a_import":         contract.KeepRecent,
		"a_taken":          contract.KeepNewest,
		"b_import_undated": contract.KeepNewest,
		"c_reimport":       contract.KeepNewest,
	}
	if !maps.Equal(kept, want) {
		t.Errorf("kept %v, want %v", kept, want)
	}
	var gone []string
	for _, e := range expired {
		gone = append(gone, e.m.SnapshotID)
	}
	if want := []string{"z_original", "b_taken", "a_old"}; !slices.Equal(gone, want) {
		t.Errorf("expired %v, want %v", gone, want)
	}
}

// TestSnapshotUseReasonsOnce: a migration that named a snapshot and was
// pinned to its id uses it once, not once per reference (delete said
// "migration job5 (running) depends on it" twice).
func TestSnapshotUseReasonsOnce(t *testing.T) {
	u := &snapshotUse{refs: map[string][]keepReason{}}
	m := &contract.SnapshotManifest{SnapshotID: "snap_1", Name: "before", Tenant: "t", Database: "d"}
	const job = "migration job5 (running) depends on it"
	u.add("before", "t", "d", contract.KeepMigration, job) // the name it gave
	u.add("snap_1", "t", "d", contract.KeepMigration, job) // the id it was pinned to
	u.add("before", "", "", contract.KeepRollback, "rollback op_1 (running) uses it")
	u.add("before", "t", "other", contract.KeepMigration, "migration elsewhere depends on it") // another database's snapshot of that name
	want := []keepReason{{contract.KeepMigration, job}, {contract.KeepRollback, "rollback op_1 (running) uses it"}}
	if got := u.reasons(m); !slices.Equal(got, want) {
		t.Errorf("reasons = %v, want %v", got, want)
	}
}

// TestMigrationBusyAfterFailedRollback: a run that had ended when its
// triggered rollback failed is listed in the status's alerts with the
// command that restores its snapshot, for a day: retention keeps that
// snapshot as long. It let it expire as soon as the run had ended.
func TestMigrationBusyAfterFailedRollback(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	rec := func(status string, rollbackEnded time.Time) *contract.MigrationRecord {
		return &contract.MigrationRecord{Job: "j", Status: contract.MigrationFailed, EndedAt: now.Add(-48 * time.Hour),
			Trigger: contract.TriggerTime, RollbackStatus: status, RollbackEndedAt: rollbackEnded}
	}
	for _, c := range []struct {
		name string
		r    *contract.MigrationRecord
		busy bool
	}{
		{"failed an hour ago", rec(contract.StatusFailed, now.Add(-time.Hour)), true},
		{"cancelled an hour ago", rec(contract.StatusCancelled, now.Add(-time.Hour)), true},
		{"failed a day ago", rec(contract.StatusFailed, now.Add(-contract.EndedRunAlertFor)), false},
		{"completed", rec(contract.StatusCompleted, now.Add(-time.Hour)), false},
		{"no trigger", &contract.MigrationRecord{Job: "j", Status: contract.MigrationCompleted, EndedAt: now.Add(-time.Hour)}, false},
	} {
		if got := migrationBusy(c.r, now); (got != "") != c.busy {
			t.Errorf("%s: migrationBusy = %q, want busy %v", c.name, got, c.busy)
		}
	}
}
