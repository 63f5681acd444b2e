package watchdog_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/crypt"
	"github.com/chromadb-rollback/chromadb-rollback/services/restorer"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
	"github.com/nats-io/nats.go"
)

// TestSnapshotNamePinned: a job names its pre-migration snapshot by name,
// and names are not unique. The rollback restores the snapshot the name
// stood for when the run started, in the migrated database: not one taken
// later under that name (after the damage), nor one of another database.
// A snapshot id of another database is an alert at once, and no rollback
// restores another database.
func TestSnapshotNamePinned(t *testing.T) {
	e := newEnv(t, false)
	tenant := e.tenant("wd_pin")
	const db, other = "main", "other"
	e.seed(t, tenant, db)
	e.seed(t, tenant, other)
	e.services(t)
	e.watchdog(t, e.fast("wd"))
	pre := e.dump(t, tenant, db)
	before := e.snapshot(t, tenant, db, "before")

	t.Run("a name", func(t *testing.T) {
		const job = "pinned"
		e.publish(t, job, contract.EventStarted, "", started(tenant, db, "before", time.Hour))
		rec := e.waitRecord(t, job, 30*time.Second, "snapshot pinned", func(r contract.MigrationRecord) bool {
			return r.PinnedSnapshotID != "" || r.SnapshotError != ""
		})
		if rec.PinnedSnapshotID != before || rec.SnapshotID != "before" {
			t.Fatalf("record: %s; want %s pinned", mustJSON(t, rec), before)
		}
		lost := e.migrate(t, tenant, db, 0.10, "workload_00", "workload_01")
		// Taken after the damage under the same name, and in another
		// database: both newer than the one the run started from.
		later := e.snapshot(t, tenant, db, "before")
		elsewhere := e.snapshot(t, tenant, other, "before")
		otherPre := e.dump(t, tenant, other)

		e.publish(t, job, contract.EventValidation, "", validation(int64(300-lost), 300))
		rec = e.waitRecord(t, job, 2*time.Minute, "rolled back", func(r contract.MigrationRecord) bool {
			return r.Status == contract.MigrationRolledBack || r.RollbackStatus == contract.StatusFailed
		})
		if rec.Status != contract.MigrationRolledBack {
			t.Fatalf("record: %s", mustJSON(t, rec))
		}
		op, ok := e.op(t, rec.RollbackOpID)
		if !ok || op.SnapshotID != before {
			t.Errorf("the rollback restored %q, want %s (not %s taken later, nor %s of %s)", op.SnapshotID, before, later, elsewhere, other)
		}
		compareDB(t, e.dump(t, tenant, db), pre)
		compareDB(t, e.dump(t, tenant, other), otherPre)

		// The audit trail names the pinned id, not the name the job gave,
		// in every event of the run, the watchdog's and the restorer's:
		// one query by snapshot id finds its whole history. The start
		// keeps the name as a figure.
		e.waitAudit(t, 10*time.Second, "migration.rolled_back", byWatchdog(job, "migration.rolled_back"))
		actions := map[string]bool{}
		for _, a := range e.audit(t) {
			if a.Figures["job"] != job && a.OpID != rec.RollbackOpID {
				continue
			}
			actions[a.Action] = true
			if a.SnapshotID != before && a.Action != "rollback.step" && a.Action != "snapshot.create" && !strings.HasPrefix(a.Action, "control.") {
				t.Errorf("%s %s of the run names snapshot %q, want the pinned %s", a.Service, a.Action, a.SnapshotID, before)
			}
			if a.Action == "migration.started" && (figure(a, "snapshot") != "before" || !strings.Contains(a.Reason, "pre-migration snapshot "+before+" (before)")) {
				t.Errorf("migration.started: figures %v, reason %q; want the name the job gave", a.Figures, a.Reason)
			}
		}
		for _, want := range []string{"migration.started", "migration.validation", "trigger.validation", "rollback", "migration.rolled_back"} {
			if !actions[want] {
				t.Errorf("no %s event of the run (got %v)", want, actions)
			}
		}
	})

	t.Run("a name still being made", func(t *testing.T) {
		// The job asks for its snapshot and starts at once, as the
		// README's nats example does; an older one has the same name.
		const job, db2 = "asked", "nightly_db"
		e.seed(t, tenant, db2)
		older := e.snapshot(t, tenant, db2, "nightly")
		var reply contract.SnapshotCreateReply
		e.request(t, e.subj.API("snapshot", "create"), contract.SnapshotCreateRequest{Name: "nightly", Tenant: tenant, Database: db2, Actor: "job"}, &reply)
		e.publish(t, job, contract.EventStarted, "", started(tenant, db2, "nightly", time.Hour))
		if op, _ := e.op(t, reply.OpID); !contract.Ended(op.Status) {
			t.Logf("the snapshot was still being made (%s) when the run started", op.Status)
		}
		rec := e.waitRecord(t, job, time.Minute, "snapshot pinned", func(r contract.MigrationRecord) bool {
			return r.PinnedSnapshotID != "" || r.SnapshotError != ""
		})
		if rec.PinnedSnapshotID != reply.SnapshotID {
			t.Fatalf("pinned %q, want %s (the one being made, not %s made before)", rec.PinnedSnapshotID, reply.SnapshotID, older)
		}
		if op, _ := e.op(t, reply.OpID); op.Status != contract.StatusCompleted || op.Name != "nightly" || op.Database != db2 {
			t.Errorf("snapshot operation: %s", mustJSON(t, op))
		}
		e.publish(t, job, contract.EventCompleted, "", contract.MigrationEvent{})
	})

	t.Run("an id of another database", func(t *testing.T) {
		const job = "wrongdb"
		otherSnap := e.snapshot(t, tenant, other, "other_before")
		e.publish(t, job, contract.EventStarted, "", started(tenant, db, otherSnap, time.Hour))
		rec := e.waitRecord(t, job, 30*time.Second, "snapshot refused", func(r contract.MigrationRecord) bool {
			return r.PinnedSnapshotID != "" || r.SnapshotError != ""
		})
		if rec.PinnedSnapshotID != "" || !strings.Contains(rec.SnapshotError, "is of "+tenant+"/"+other) {
			t.Fatalf("record: %s", mustJSON(t, rec))
		}
		a := e.waitAudit(t, 30*time.Second, "pre-migration snapshot alert", func(a auditEntry) bool {
			return byWatchdog(job, "snapshot.pre_migration")(a) && a.Outcome == contract.OutcomeAlert
		})
		if !strings.Contains(a.Reason, "cannot be used") || !strings.Contains(a.Reason, "another database") || !strings.Contains(a.Reason, "must not go on") {
			t.Errorf("alert: %q", a.Reason)
		}
		otherPre := e.dump(t, tenant, other)
		e.publish(t, job, contract.EventValidation, "", validation(200, 300))
		rec = e.waitRecord(t, job, time.Minute, "rollback failed", func(r contract.MigrationRecord) bool {
			return r.RollbackStatus == contract.StatusFailed || r.Status == contract.MigrationRolledBack
		})
		if rec.RollbackStatus != contract.StatusFailed || !strings.Contains(rec.RollbackError, "another database") {
			t.Fatalf("record: %s", mustJSON(t, rec))
		}
		compareDB(t, e.dump(t, tenant, other), otherPre)
	})

	t.Run("a snapshot whose archive is gone", func(t *testing.T) {
		// Deleted from the object store behind the tools' back (or lost
		// with a JetStream replica): the manifest still says it exists.
		const job = "noarchive"
		doomed := e.snapshot(t, tenant, db, "doomed")
		m := e.manifest(t, doomed)
		if err := e.nats.Assets.Snapshots.Delete(t.Context(), m.Object); err != nil {
			t.Fatal(err)
		}
		e.publish(t, job, contract.EventStarted, "", started(tenant, db, "doomed", time.Hour))
		rec := e.waitRecord(t, job, 30*time.Second, "snapshot refused", func(r contract.MigrationRecord) bool {
			return r.PinnedSnapshotID != "" || r.SnapshotError != ""
		})
		if rec.PinnedSnapshotID != "" || !strings.Contains(rec.SnapshotError, "the archive of snapshot "+doomed+" (object "+m.Object+") is missing from CHROMA_SNAPSHOTS") {
			t.Fatalf("record: %s", mustJSON(t, rec))
		}
		a := e.waitAudit(t, 30*time.Second, "pre-migration snapshot alert", func(a auditEntry) bool {
			return byWatchdog(job, "snapshot.pre_migration")(a) && a.Outcome == contract.OutcomeAlert
		})
		if !strings.Contains(a.Reason, "cannot be used") || !strings.Contains(a.Reason, "no rollback to it can run") || !strings.Contains(a.Reason, "must not go on") {
			t.Errorf("alert: %q", a.Reason)
		}
		e.publish(t, job, contract.EventCompleted, "", contract.MigrationEvent{})
		// Status shows it as the newest snapshot of the database, that it
		// cannot be restored, and after it the newest that can: the first
		// subtest's rollback's safety snapshot, taken after its damage,
		// which holds the whole database (that rollback overwrote every
		// collection). The other databases' are whole.
		var ofDB []contract.DatabaseSnapshot
		for _, s := range e.status(t).Snapshots {
			switch {
			case s.Tenant != tenant:
			case s.Database == db:
				ofDB = append(ofDB, s)
			case s.ArchiveMissing:
				t.Errorf("status snapshot %s of %s: archive missing", s.SnapshotID, s.Database)
			}
		}
		if len(ofDB) != 2 || ofDB[0].SnapshotID != doomed || !ofDB[0].ArchiveMissing || ofDB[1].ArchiveMissing || ofDB[1].Partial || !strings.HasPrefix(ofDB[1].Name, "safety_") {
			t.Errorf("status snapshots of %s: %s; want %s (archive missing), then the newest restorable one", db, mustJSON(t, ofDB), doomed)
		}
	})

	t.Run("a name of another database only", func(t *testing.T) {
		const job = "elsewhere"
		e.publish(t, job, contract.EventStarted, "", started(tenant, db, "other_before", time.Hour))
		e.publish(t, job, contract.EventHeartbeat, "", contract.MigrationEvent{Phase: "copy"})
		e.publish(t, job, contract.EventValidation, "", validation(200, 300))
		rec := e.waitRecord(t, job, time.Minute, "rollback failed", func(r contract.MigrationRecord) bool {
			return r.RollbackStatus == contract.StatusFailed || r.Status == contract.MigrationRolledBack
		})
		if rec.RollbackStatus != contract.StatusFailed || rec.PinnedSnapshotID != "" ||
			!strings.Contains(rec.RollbackError, "other databases ("+tenant+"/"+other+")") {
			t.Fatalf("record: %s", mustJSON(t, rec))
		}
		if ops := e.rollbackOps(t); len(ops) != 1 { // the first subtest's
			t.Errorf("%d rollback operations, want only the first subtest's", len(ops))
		}
	})
}

// TestEncryptedSnapshotNoRestorerCanDecrypt: a pre-migration snapshot
// encrypted with age to keys no running restorer holds an identity for is
// refused when the run starts (snapshot_error, an alert), whether the job
// named it or the watchdog took it, as one whose archive is gone is: its
// rollback would be refused. Found by hand: serve --age-recipients
// without an identity pinned such snapshots, and only the automatic
// rollback failed. Once a restorer holds the identity, it is pinned.
func TestEncryptedSnapshotNoRestorerCanDecrypt(t *testing.T) {
	e := newEnv(t, false)
	tenant := e.tenant("wd_sealed")
	const db = "main"
	e.seed(t, tenant, db)
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	pub := id.Recipient().String()
	recipients, err := crypt.ParseRecipients(pub)
	if err != nil {
		t.Fatal(err)
	}
	e.run(t, "snapshotter", func(nc *nats.Conn) (runner, error) {
		return snapshotter.New(snapshotter.Config{ChromaURL: e.chroma.URL, Instance: "snapshotter", Recipients: recipients}, nc, e.subj, e.cc, testLogger(t))
	})
	stopRestorer := e.run(t, "restorer", func(nc *nats.Conn) (runner, error) {
		return restorer.New(restorer.Config{ChromaURL: e.chroma.URL, Instance: "restorer-without-key"}, nc, e.subj, e.cc, testLogger(t))
	})
	waitForService(t, e.nats.Conn, e.subj.API("snapshot", "list"))
	waitForService(t, e.nats.Conn, e.subj.API("rollback", "status"))
	e.watchdog(t, e.fast("wd"))
	sealed := e.snapshot(t, tenant, db, "sealed")
	if m := e.manifest(t, sealed); m.Encryption != contract.EncryptionAge {
		t.Fatalf("snapshot not encrypted: %s", mustJSON(t, m))
	}
	refused := func(t *testing.T, job string, ev contract.MigrationEvent) {
		t.Helper()
		e.publish(t, job, contract.EventStarted, "", ev)
		rec := e.waitRecord(t, job, time.Minute, "snapshot settled", func(r contract.MigrationRecord) bool {
			return r.PinnedSnapshotID != "" || r.SnapshotError != ""
		})
		if rec.PinnedSnapshotID != "" || !strings.Contains(rec.SnapshotError, "is encrypted with age to "+pub+" and no restorer holds an identity for it (restorer-without-key)") ||
			!strings.Contains(rec.SnapshotError, "--age-identity-file") {
			t.Fatalf("record: %s; want the snapshot refused as undecryptable", mustJSON(t, rec))
		}
		a := e.waitAudit(t, 30*time.Second, "pre-migration snapshot alert", func(a auditEntry) bool {
			return byWatchdog(job, "snapshot.pre_migration")(a) && a.Outcome == contract.OutcomeAlert
		})
		if !strings.Contains(a.Reason, "cannot be used") || !strings.Contains(a.Reason, "must not go on") {
			t.Errorf("alert: %q", a.Reason)
		}
		e.publish(t, job, contract.EventCompleted, "", contract.MigrationEvent{})
	}
	t.Run("named by the job", func(t *testing.T) { refused(t, "sealed_named", started(tenant, db, "sealed", time.Hour)) })
	t.Run("taken by the watchdog", func(t *testing.T) { refused(t, "sealed_taken", started(tenant, db, "", time.Hour)) })

	t.Run("a restorer with the identity", func(t *testing.T) {
		stopRestorer()
		keyFile := filepath.Join(t.TempDir(), "key.txt")
		if err := os.WriteFile(keyFile, []byte(id.String()+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		ids, err := crypt.LoadIdentities(keyFile)
		if err != nil {
			t.Fatal(err)
		}
		e.run(t, "restorer with key", func(nc *nats.Conn) (runner, error) {
			return restorer.New(restorer.Config{ChromaURL: e.chroma.URL, Instance: "restorer-with-key", Identities: ids}, nc, e.subj, e.cc, testLogger(t))
		})
		waitForService(t, e.nats.Conn, e.subj.API("rollback", "status"))
		const job = "sealed_ok"
		e.publish(t, job, contract.EventStarted, "", started(tenant, db, "sealed", time.Hour))
		rec := e.waitRecord(t, job, time.Minute, "snapshot pinned", func(r contract.MigrationRecord) bool {
			return r.PinnedSnapshotID != "" || r.SnapshotError != ""
		})
		if rec.PinnedSnapshotID != sealed {
			t.Fatalf("record: %s; want %s pinned", mustJSON(t, rec), sealed)
		}
		e.publish(t, job, contract.EventCompleted, "", contract.MigrationEvent{})
	})
}
