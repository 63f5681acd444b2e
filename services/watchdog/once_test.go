package watchdog_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/services/watchdog"
	"github.com/nats-io/nats.go"
)

// TestExactlyOnce: two watchdog instances at once, each killed and started
// again mid-migration, duplicate validation events (a resent message id and
// three distinct ones): each run gets exactly one pre-migration snapshot,
// one trigger, one rollback command and one rollback, and the time trigger
// of the other run still fires on time (within a tick or so of its
// deadline) and aborts its job once.
func TestExactlyOnce(t *testing.T) {
	e := newEnv(t, false)
	const jobV, jobT = "once-validation", "once-time"
	tenant := e.tenant("wd_once")
	e.seed(t, tenant, "one")
	e.seed(t, tenant, "two")
	e.services(t)
	cfg := func(name string) watchdog.Config {
		c := e.fast(name)
		c.PartialOnCollectionFailure = true
		c.AbortGrace = 500 * time.Millisecond
		return c
	}
	_, stopA := e.watchdog(t, cfg("wd-a"))
	_, stopB := e.watchdog(t, cfg("wd-b"))
	ctlV, ctlT := e.controls(t, jobV), e.controls(t, jobT)
	commands := e.rollbackCommands(t)
	preOne, preTwo := e.dump(t, tenant, "one"), e.dump(t, tenant, "two")
	snapTwo := e.snapshot(t, tenant, "two", "before_once_time")

	const limit = 6 * time.Second
	e.publish(t, jobT, contract.EventStarted, "", started(tenant, "two", snapTwo, limit))
	e.publish(t, jobV, contract.EventStarted, "start-v", started(tenant, "one", "", time.Hour))
	e.publish(t, jobV, contract.EventStarted, "start-v", started(tenant, "one", "", time.Hour)) // resent: stored once
	recT := e.waitRecord(t, jobT, 10*time.Second, "recorded", func(r contract.MigrationRecord) bool { return r.Run > 0 })
	recV := e.waitRecord(t, jobV, time.Minute, "pre-migration snapshot", func(r contract.MigrationRecord) bool {
		return r.SnapshotID != "" || r.SnapshotError != ""
	})
	if recV.SnapshotError != "" {
		t.Fatal(recV.SnapshotError)
	}

	// Kill one instance mid-migration and start it again.
	stopA()
	e.watchdog(t, cfg("wd-a"))
	lost := e.migrate(t, tenant, "one", 0.2, "workload_00")
	e.migrate(t, tenant, "two", 0.5, "workload_01")
	val := validation(int64(300-lost), 300,
		contract.CollectionValidation{Collection: "workload_00", ValidChunks: int64(150 - lost), TotalChunks: 150},
		contract.CollectionValidation{Collection: "workload_01", ValidChunks: 150, TotalChunks: 150})
	for i := range 3 {
		e.publish(t, jobV, contract.EventValidation, fmt.Sprintf("val-%d", i), val)
	}
	e.publish(t, jobV, contract.EventValidation, "val-0", val)
	// And the other, while the rollback and the deadline are pending.
	stopB()
	e.watchdog(t, cfg("wd-b"))
	if time.Now().After(recT.Deadline.Add(-500 * time.Millisecond)) {
		t.Fatalf("the restarts took too long to come before the deadline of %s", recT.Deadline)
	}

	abort := ctlT.wait(t, contract.ControlAbort, limit+10*time.Second)
	if late := abort.At.Sub(recT.Deadline); late < 0 || late > time.Second {
		t.Errorf("abort came %s after the deadline; want within 1s", late)
	}
	isOver := func(r contract.MigrationRecord) bool {
		return r.Status == contract.MigrationRolledBack || r.RollbackStatus == contract.StatusFailed
	}
	recV = e.waitRecord(t, jobV, 2*time.Minute, "rolled back", isOver)
	recT = e.waitRecord(t, jobT, 2*time.Minute, "rolled back", isOver)
	for _, r := range []contract.MigrationRecord{recV, recT} {
		if r.Status != contract.MigrationRolledBack || r.RollbackStatus != contract.StatusCompleted {
			t.Fatalf("record: %s", mustJSON(t, r))
		}
	}
	compareDB(t, e.dump(t, tenant, "one"), preOne)
	compareDB(t, e.dump(t, tenant, "two"), preTwo)

	// Exactly one of everything.
	ops := e.rollbackOps(t)
	var ids []string
	for _, op := range ops {
		ids = append(ids, op.OpID)
		if op.OpID == recV.RollbackOpID && (op.Plan == nil || op.Plan.Mode != "partial") {
			t.Errorf("validation rollback plan: %s", mustJSON(t, op.Plan))
		}
	}
	slices.Sort(ids)
	if want := []string{recT.RollbackOpID, recV.RollbackOpID}; !slices.Equal(ids, want) {
		t.Errorf("rollback operations %q, want %q", ids, want)
	}
	if !slices.Equal(recV.RollbackCollections, []string{"workload_00"}) {
		t.Errorf("partial rollback of %q, want workload_00", recV.RollbackCollections)
	}
	time.Sleep(300 * time.Millisecond) // any late duplicate would be published by now
	if got := commands.counts(); len(got) != 2 || got[recV.RollbackOpID] != 1 || got[recT.RollbackOpID] != 1 {
		t.Errorf("rollback commands published: %v; want one per run", got)
	}
	evs := e.audit(t)
	for _, c := range []struct {
		what string
		ok   func(a auditEntry) bool
	}{
		{"validation trigger", byWatchdog(jobV, "trigger.validation")},
		{"time trigger", byWatchdog(jobT, "trigger.time")},
		{"validation rollback started", func(a auditEntry) bool {
			return a.Service == "restorer" && a.Action == "rollback" && a.Outcome == contract.OutcomeStarted && a.OpID == recV.RollbackOpID
		}},
		{"time rollback started", func(a auditEntry) bool {
			return a.Service == "restorer" && a.Action == "rollback" && a.Outcome == contract.OutcomeStarted && a.OpID == recT.RollbackOpID
		}},
		{"started of the validation run", byWatchdog(jobV, "migration.started")},
		{"pre-migration snapshot", func(a auditEntry) bool {
			return a.Action == "snapshot.pre_migration" && a.Outcome == contract.OutcomeCompleted && a.Figures["job"] == jobV
		}},
	} {
		if got := find(evs, c.ok); len(got) != 1 {
			t.Errorf("%d %s audit events, want 1", len(got), c.what)
		}
	}
	if got := find(evs, byWatchdog(jobV, "migration.validation")); len(got) != 3 {
		t.Errorf("%d validation audit events, want 3 (one per stored event)", len(got))
	}
	if n := e.manifestsNamed(t, "pre_migration_"+jobV); n != 1 {
		t.Errorf("%d pre-migration snapshots of %s, want 1", n, jobV)
	}
	if n := ctlT.count(contract.ControlAbort); n != 1 {
		t.Errorf("%d aborts sent to %s, want 1: %v", n, jobT, ctlT.commands())
	}
	if n := ctlV.count(contract.ControlAbort); n != 1 {
		t.Errorf("%d aborts sent to %s after its rollback, want 1: %v", n, jobV, ctlV.commands())
	}
}

// commandLog counts the rollback commands published, duplicates included
// (a core subscription sees every publish, stored or deduplicated).
type commandLog struct {
	mu sync.Mutex
	n  map[string]int
}

func (l *commandLog) counts() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.n)
}

func (e *env) rollbackCommands(t *testing.T) *commandLog {
	t.Helper()
	l := &commandLog{n: map[string]int{}}
	sub, err := e.nats.Conn.Subscribe(e.subj.Command("rollback"), func(m *nats.Msg) {
		var c contract.RollbackCommand
		if json.Unmarshal(m.Data, &c) != nil {
			return
		}
		l.mu.Lock()
		l.n[c.OpID]++
		l.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.nats.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return l
}

// manifestsNamed counts the snapshot manifests of a name.
func (e *env) manifestsNamed(t *testing.T, name string) int {
	t.Helper()
	keys, err := e.nats.Assets.Manifests.Keys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, k := range keys {
		entry, err := e.nats.Assets.Manifests.Get(t.Context(), k)
		if err != nil {
			continue
		}
		var m contract.SnapshotManifest
		if json.Unmarshal(entry.Value(), &m) == nil && m.Name == name {
			n++
		}
	}
	return n
}

// TestAuditBeforeRecord holds the watchdog, as if it had died, right after
// it records that the pre-migration snapshot is there, then right after it
// records that the migration was rolled back: each time the audit event
// must be stored already. Sent after the record, it would be lost with the
// instance, as a later one finds the record done and sends nothing.
func TestAuditBeforeRecord(t *testing.T) {
	e := newEnv(t, false)
	const job = "audit-first"
	tenant := e.tenant("wd_first")
	e.seed(t, tenant, "one")
	e.services(t)
	e.watchdog(t, e.fast("wd-first"))
	// Registered after the instance, so released before it is stopped.
	release := watchdog.HangAfterRecordWrite(func(r *contract.MigrationRecord) bool {
		return r.Job == job && r.SnapshotID != ""
	})
	t.Cleanup(release)
	pre := e.dump(t, tenant, "one")

	e.publish(t, job, contract.EventStarted, "", started(tenant, "one", "", time.Hour))
	rec := e.waitRecord(t, job, time.Minute, "pre-migration snapshot", func(r contract.MigrationRecord) bool {
		return r.SnapshotID != "" || r.SnapshotError != ""
	})
	if rec.SnapshotError != "" {
		t.Fatal(rec.SnapshotError)
	}
	snapshotDone := func(a auditEntry) bool {
		return a.Action == "snapshot.pre_migration" && a.Outcome == contract.OutcomeCompleted && a.Figures["job"] == job
	}
	if got := find(e.audit(t), snapshotDone); len(got) != 1 {
		t.Fatalf("%d pre-migration snapshot events once the record names the snapshot, want 1", len(got))
	}
	release()

	releaseRolledBack := watchdog.HangAfterRecordWrite(func(r *contract.MigrationRecord) bool {
		return r.Job == job && r.Status == contract.MigrationRolledBack
	})
	t.Cleanup(releaseRolledBack)
	lost := e.migrate(t, tenant, "one", 0.2, "workload_00")
	e.publish(t, job, contract.EventValidation, "val", validation(int64(300-lost), 300,
		contract.CollectionValidation{Collection: "workload_00", ValidChunks: int64(150 - lost), TotalChunks: 150},
		contract.CollectionValidation{Collection: "workload_01", ValidChunks: 150, TotalChunks: 150}))
	rec = e.waitRecord(t, job, 2*time.Minute, "rolled back", func(r contract.MigrationRecord) bool {
		return r.Status == contract.MigrationRolledBack || r.RollbackStatus == contract.StatusFailed
	})
	if rec.Status != contract.MigrationRolledBack {
		t.Fatalf("record: %s", mustJSON(t, rec))
	}
	if got := find(e.audit(t), byWatchdog(job, "migration.rolled_back")); len(got) != 1 {
		t.Fatalf("%d rolled-back events once the record says rolled back, want 1", len(got))
	}
	compareDB(t, e.dump(t, tenant, "one"), pre)
}

// manifest reads a snapshot's manifest.
func (e *env) manifest(t *testing.T, id string) contract.SnapshotManifest {
	t.Helper()
	entry, err := e.nats.Assets.Manifests.Get(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	var m contract.SnapshotManifest
	if err := json.Unmarshal(entry.Value(), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestClaimOfStoppedInstanceTakenOver: an instance that claimed a run's
// rollback request and stopped before sending it (a serve killed while its
// rollback start verified the archive, or while Chroma did not answer) held
// the request back for RequestTimeout plus a minute, 31 minutes by default:
// the instance that followed saw the claim and waited, the loss in place.
// A claim of an instance missing from the micro discovery is taken over.
func TestClaimOfStoppedInstanceTakenOver(t *testing.T) {
	e := newEnv(t, false)
	const db, job = "main", "claim-gone"
	tenant := e.tenant("wd_claim")
	e.seed(t, tenant, db)
	e.services(t)
	_, stopA := e.watchdog(t, e.fast("wd-a"))
	snap := e.snapshot(t, tenant, db, "before_claim")
	pre := e.dump(t, tenant, db)
	// wd-a stops right after it records its claim, before its request.
	release := watchdog.HangAfterRecordWrite(func(r *contract.MigrationRecord) bool {
		return r.Job == job && r.RollbackRequestedBy == "wd-a" && r.RollbackStatus == contract.RollbackRequested
	})
	t.Cleanup(release)

	e.publish(t, job, contract.EventStarted, "", started(tenant, db, snap, time.Hour))
	lost := e.migrate(t, tenant, db, 0.2, "workload_00")
	e.publish(t, job, contract.EventValidation, "", validation(int64(300-lost), 300))
	e.waitRecord(t, job, 10*time.Second, "claimed by wd-a", func(r contract.MigrationRecord) bool { return r.RollbackRequestedBy == "wd-a" })
	stopped := make(chan struct{})
	go func() { stopA(); close(stopped) }() // its connection closes at once; it ends once released
	t.Cleanup(func() { release(); <-stopped })

	e.watchdog(t, e.fast("wd-b"))
	rec := e.waitRecord(t, job, 30*time.Second, "taken over", func(r contract.MigrationRecord) bool { return r.RollbackRequestedBy == "wd-b" })
	release()
	rec = e.waitRecord(t, job, 2*time.Minute, "rolled back", func(r contract.MigrationRecord) bool {
		return r.Status == contract.MigrationRolledBack || r.RollbackStatus == contract.StatusFailed
	})
	if rec.Status != contract.MigrationRolledBack {
		t.Fatalf("record: %s", mustJSON(t, rec))
	}
	compareDB(t, e.dump(t, tenant, db), pre)
}
