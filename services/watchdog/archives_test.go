package watchdog_test

import (
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
)

// TestArchiveMissingAlert: an archive deleted behind the tools' back (the
// manifest still says the snapshot exists) is found by the watchdogs'
// periodic look, raised once as alert.archive_missing however many
// watchdogs look how often, and listed in the status's alerts until its
// snapshot is deleted. A running migration is not paused for it: it
// relies on another snapshot.
func TestArchiveMissingAlert(t *testing.T) {
	e := newEnv(t, false)
	tenant := e.tenant("wd_archive")
	const db, job = "main", "unrelated"
	e.seed(t, tenant, db)
	e.services(t)
	for _, name := range []string{"wd", "wd2"} {
		cfg := e.fast(name)
		cfg.ArchiveCheckInterval = 50 * time.Millisecond
		e.watchdog(t, cfg)
	}
	kept := e.snapshot(t, tenant, db, "kept")
	doomed := e.snapshot(t, tenant, db, "doomed")
	ctl := e.controls(t, job)
	e.publish(t, job, contract.EventStarted, "", started(tenant, db, kept, time.Hour))
	e.waitRecord(t, job, 30*time.Second, "snapshot pinned", func(r contract.MigrationRecord) bool {
		return r.PinnedSnapshotID != "" || r.SnapshotError != ""
	})

	m := e.manifest(t, doomed)
	if err := e.nats.Assets.Snapshots.Delete(t.Context(), m.Object); err != nil {
		t.Fatal(err)
	}
	isAlert := func(a auditEntry) bool { return a.Action == "alert.archive_missing" && a.SnapshotID == doomed }
	a := e.waitAudit(t, 10*time.Second, "the missing archive's alert", isAlert)
	if a.Outcome != contract.OutcomeAlert || a.Tenant != tenant || a.Database != db || figure(a, "object") != m.Object ||
		!strings.Contains(a.Reason, "the archive of snapshot "+doomed+" (doomed)") || !strings.Contains(a.Reason, "is missing from CHROMA_SNAPSHOTS") {
		t.Errorf("alert: %s", mustJSON(t, a))
	}
	var alert *contract.StatusAlert
	for deadline := time.Now().Add(10 * time.Second); alert == nil && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for _, al := range e.status(t).Alerts {
			if al.Name == "archive_missing" {
				alert = &al
			}
		}
	}
	if alert == nil || !strings.HasPrefix(alert.Detail, "the archive of snapshot "+doomed+" is missing") || strings.Contains(alert.Detail, kept) {
		t.Fatalf("status alert: %+v", alert)
	}

	time.Sleep(500 * time.Millisecond) // ten more looks by each watchdog
	var alerts, pauses int
	for _, a := range e.audit(t) {
		if isAlert(a) {
			alerts++
		}
		if byWatchdog(job, "control.pause")(a) {
			pauses++
		}
	}
	if alerts != 1 || pauses != 0 || ctl.count(contract.ControlPause) != 0 {
		t.Errorf("%d alerts for the archive (want 1), %d pauses (want none)", alerts, pauses)
	}

	// Deleted, the snapshot leaves the alerts.
	var del contract.SnapshotManifest
	e.request(t, e.subj.API("snapshot", "delete"), contract.SnapshotRef{Snapshot: doomed, Actor: "test"}, &del)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		left := false
		for _, al := range e.status(t).Alerts {
			left = left || al.Name == "archive_missing"
		}
		if !left {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the alert stayed after the snapshot was deleted")
		}
	}
	e.publish(t, job, contract.EventCompleted, "", contract.MigrationEvent{})
}
