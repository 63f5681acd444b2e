package cluster

import (
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/services/restorer"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
)

// The fixture of the fault tests: two collections of 600 records with
// 320-dimensional embeddings, about 1.7 MB of archive (13 object chunks of
// 128 KiB, more than a restore's reader holds); pages of 50 records (24
// pages, so 24 archive batches and 24 adds in a restore), slowed down a
// little, so that a fault lands while an operation streams.
const (
	faultCollections = 2
	faultRecords     = 1200
	faultDim         = 320
	faultPage        = 50
	faultDelay       = 40 * time.Millisecond
)

// dbName makes a Chroma database name of a test's name.
func dbName(t *testing.T) string {
	return strings.NewReplacer("/", "_", "-", "_").Replace(strings.ToLower(t.Name()))
}

// snapshotOK checks a completed snapshot: its manifest holds every record
// of want, the archive verifies in full, and the snapshot was completed
// (and audited as completed) exactly once.
func (st *stack) snapshotOK(id string, want dbState) *contract.SnapshotManifest {
	st.t.Helper()
	m, ok := st.manifest(id)
	if !ok {
		st.t.Fatalf("snapshot %s completed without a manifest", id)
	}
	if m.TotalRecords != int64(want.records()) || len(m.Collections) != len(want) {
		st.t.Errorf("snapshot %s: %d records in %d collections, want %d in %d", id, m.TotalRecords, len(m.Collections), want.records(), len(want))
	}
	for _, c := range m.Collections {
		if w, ok := want[c.Name]; !ok || c.Count != int64(w.Records.Len()) {
			st.t.Errorf("snapshot %s: collection %q has %d records, want %d", id, c.Name, c.Count, w.Records.Len())
		}
	}
	st.verify(id)
	msgs := st.audit()
	if n := events(msgs, "snapshotter", "snapshot.create", contract.OutcomeCompleted, id, ""); n != 1 {
		logAudit(st.t, msgs)
		st.t.Errorf("snapshot %s: %d completed audit events, want 1", id, n)
	}
	if n := events(msgs, "snapshotter", "snapshot.create", contract.OutcomeFailed, id, ""); n != 0 {
		st.t.Errorf("snapshot %s completed but %d failed audit events", id, n)
	}
	return m
}

// snapshotFailedCleanly checks a failed snapshot: no manifest, and the
// object store holds no object of it.
func (st *stack) snapshotFailedCleanly(id string) {
	st.t.Helper()
	if _, ok := st.manifest(id); ok {
		st.t.Errorf("failed snapshot %s left a manifest", id)
	}
	for _, o := range st.objectNames() {
		if strings.HasPrefix(o, id) {
			st.t.Errorf("failed snapshot %s left object %s", id, o)
		}
	}
	if n := events(st.audit(), "snapshotter", "snapshot.create", contract.OutcomeCompleted, id, ""); n != 0 {
		st.t.Errorf("failed snapshot %s audited as completed %d times", id, n)
	}
}

// TestLeaderKilledDuringSnapshot kills the leader of the object store's
// stream, or of the command stream, while two snapshotters' export streams
// into the object store (at its fifth page of 24). The snapshot ends
// verified, holding every record, completed once, with no orphan object;
// or it fails with no manifest and no object, and the next one succeeds.
func TestLeaderKilledDuringSnapshot(t *testing.T) {
	for _, stream := range []string{"OBJ_" + contract.ObjectSnapshots, contract.StreamCommands} {
		t.Run(stream, func(t *testing.T) {
			st := newStack(t, dbName(t), faultCollections, faultRecords, faultDim)
			want := st.dump()
			cfg := snapshotter.Config{MaxPageRecords: faultPage, AckWait: 10 * time.Second}
			a, b := st.snapshotter("snapshotter-a", cfg), st.snapshotter("snapshotter-b", cfg)
			ta, tb := a.proxy.at("get", 5, true), b.proxy.at("get", 5, true)
			a.proxy.slowDown("get", faultDelay)
			b.proxy.slowDown("get", faultDelay)

			rep := st.createSnapshot("leader_dies")
			if firstTrap(time.Minute, ta, tb) < 0 {
				t.Fatal("no snapshotter fetched its fifth page within a minute")
			}
			if _, ok := st.manifest(rep.SnapshotID); ok {
				t.Fatal("the snapshot was done before the leader was killed")
			}
			killed := st.killLeaderDuring(stream, ta, tb)
			op := st.waitOp(rep.OpID, 2*time.Minute)
			t.Logf("killed node %d (leader of %s); snapshot %s, attempt %d, pages fetched %d + %d (24 per export)",
				killed, stream, op.Status, op.Attempt, a.proxy.count("get"), b.proxy.count("get"))
			st.restart(killed)

			switch op.Status {
			case contract.StatusCompleted:
				st.snapshotOK(rep.SnapshotID, want)
			case contract.StatusFailed:
				t.Logf("the snapshot failed: %s", op.Error)
				st.snapshotFailedCleanly(rep.SnapshotID)
				next := st.createSnapshot("after_the_election")
				if op := st.waitOp(next.OpID, 2*time.Minute); op.Status != contract.StatusCompleted {
					t.Fatalf("the next snapshot: %s %s", op.Status, op.Error)
				}
				st.snapshotOK(next.SnapshotID, want)
			default:
				t.Fatalf("snapshot ended %s: %s", op.Status, op.Error)
			}
			st.checkStore("after the election")
		})
	}
}

// rollbackEnded checks a rollback that ended: completed, the database holds
// exactly the snapshot's records, and it was completed and audited as such
// once; or failed, and every collection holds either what it held before
// the rollback or the snapshot's records, never a half state; then a
// second rollback completes exactly.
func (st *stack) rollbackEnded(op contract.Operation, snapshotID string, before, want dbState) {
	st.t.Helper()
	switch op.Status {
	case contract.StatusCompleted:
		if d := st.dump().diff(want); d != "" {
			st.t.Fatalf("completed rollback %s: the database differs from the snapshot: %s", op.OpID, d)
		}
		if op.Restore == nil || !op.Restore.Verified {
			st.t.Errorf("completed rollback %s: report %+v, want verified", op.OpID, op.Restore)
		}
		msgs := st.audit()
		if n := events(msgs, "restorer", "rollback", contract.OutcomeCompleted, "", op.OpID); n != 1 {
			logAudit(st.t, msgs)
			st.t.Errorf("rollback %s: %d completed audit events, want 1", op.OpID, n)
		}
		if n := events(msgs, "restorer", "rollback", contract.OutcomeFailed, "", op.OpID); n != 0 {
			st.t.Errorf("rollback %s completed but %d failed audit events", op.OpID, n)
		}
	case contract.StatusFailed:
		st.t.Logf("the rollback failed: %s", op.Error)
		got := st.dump()
		for name, g := range got {
			b, w := dbState{name: before[name]}, dbState{name: want[name]}
			if (dbState{name: g}).diff(b) != "" && (dbState{name: g}).diff(w) != "" {
				st.t.Errorf("failed rollback %s left collection %q half restored", op.OpID, name)
			}
		}
		if d := got.diff(want); d == "" {
			st.t.Logf("the failed rollback had restored everything")
		}
		again := st.startRollback(contract.RollbackRequest{SnapshotID: snapshotID, NoSafetySnapshot: true})
		op2 := st.waitOp(again.OpID, 2*time.Minute)
		if op2.Status != contract.StatusCompleted {
			st.t.Fatalf("the rollback after the failure: %s %s", op2.Status, op2.Error)
		}
		st.rollbackEnded(op2, snapshotID, before, want)
	default:
		st.t.Fatalf("rollback %s ended %s: %s", op.OpID, op.Status, op.Error)
	}
}

// restoreStack is a stack with one snapshotter and two restorers whose
// adds are slowed down, a verified snapshot of the fixture, and the
// database damaged after it.
func restoreStack(t *testing.T, rcfg restorer.Config) (st *stack, a, b *instance, snapshotID string, before, want dbState) {
	t.Helper()
	st = newStack(t, dbName(t), faultCollections, faultRecords, faultDim)
	want = st.dump()
	// Archive batches of 50 records: a restore adds them one by one.
	st.snapshotter("snapshotter", snapshotter.Config{MaxPageRecords: faultPage})
	a, b = st.restorer("restorer-a", rcfg), st.restorer("restorer-b", rcfg)
	rep := st.createSnapshot("before_damage")
	if op := st.waitOp(rep.OpID, 2*time.Minute); op.Status != contract.StatusCompleted {
		t.Fatalf("snapshot: %s %s", op.Status, op.Error)
	}
	st.damage()
	before = st.dump()
	a.proxy.slowDown("add", faultDelay)
	b.proxy.slowDown("add", faultDelay)
	return st, a, b, rep.SnapshotID, before, want
}

// TestLeaderKilledDuringRestore kills the leader of the object store's
// stream (the archive being read) or of the state bucket's (checkpoints,
// lease, fence, operation) while a rollback writes its fifth batch of 24.
// The rollback ends with the database exactly as in the snapshot, record
// by record, completed once; or it fails without a half-restored
// collection and the next rollback ends exact.
func TestLeaderKilledDuringRestore(t *testing.T) {
	for _, stream := range []string{"OBJ_" + contract.ObjectSnapshots, "KV_" + contract.BucketState} {
		t.Run(stream, func(t *testing.T) {
			st, a, b, id, before, want := restoreStack(t, restorer.Config{AckWait: 10 * time.Second, LeaseTTL: 10 * time.Second})
			ta, tb := a.proxy.at("add", 5, true), b.proxy.at("add", 5, true)
			rep := st.startRollback(contract.RollbackRequest{SnapshotID: id, NoSafetySnapshot: true})
			if firstTrap(time.Minute, ta, tb) < 0 {
				t.Fatal("no restorer sent its fifth add within a minute")
			}
			killed := st.killLeaderDuring(stream, ta, tb)
			op := st.waitOp(rep.OpID, 2*time.Minute)
			t.Logf("killed node %d (leader of %s); rollback %s, attempt %d, adds %d + %d (24 per restore)",
				killed, stream, op.Status, op.Attempt, a.proxy.count("add"), b.proxy.count("add"))
			st.restart(killed)
			st.rollbackEnded(op, id, before, want)
		})
	}
}

// TestInstanceKilledMidOperation kills the snapshotter instance in the
// middle of its export (at its fifth page of 24), or the restorer instance
// in the middle of its restore (at its fifth add of 24), while a second
// instance runs. The killed instance can touch neither Chroma nor NATS from
// then on. The second instance takes the command over once its ack wait
// passed and finishes it: one verified snapshot with no orphan object, or
// the database exactly as in the snapshot; completed once.
func TestInstanceKilledMidOperation(t *testing.T) {
	t.Run("snapshotter", func(t *testing.T) {
		st := newStack(t, dbName(t), faultCollections, faultRecords, faultDim)
		want := st.dump()
		cfg := snapshotter.Config{MaxPageRecords: faultPage, AckWait: 2 * time.Second}
		ins := []*instance{st.snapshotter("snapshotter-a", cfg), st.snapshotter("snapshotter-b", cfg)}
		traps := []*trap{ins[0].proxy.at("get", 5, true), ins[1].proxy.at("get", 5, true)}
		for _, in := range ins {
			in.proxy.slowDown("get", faultDelay)
		}
		rep := st.createSnapshot("worker_dies")
		i := firstTrap(time.Minute, traps...)
		if i < 0 {
			t.Fatal("no snapshotter fetched its fifth page within a minute")
		}
		ins[i].kill(t)
		freeAll(traps...)
		other := ins[1-i]
		op := st.waitOp(rep.OpID, 2*time.Minute)
		t.Logf("killed %s; snapshot %s, attempt %d, pages fetched by %s: %d", ins[i].name, op.Status, op.Attempt, other.name, other.proxy.count("get"))
		if op.Status != contract.StatusCompleted || op.Attempt < 2 {
			t.Fatalf("snapshot after its worker died: %s, attempt %d (%s); want completed by a second attempt", op.Status, op.Attempt, op.Error)
		}
		if other.proxy.count("get") < 24 {
			t.Errorf("%s fetched %d pages; it did not export the snapshot", other.name, other.proxy.count("get"))
		}
		st.snapshotOK(rep.SnapshotID, want)
		st.checkStore("after the takeover")
		if n := events(st.audit(), "snapshotter", "snapshot.create", contract.OutcomeStarted, rep.SnapshotID, ""); n != 2 {
			t.Errorf("%d started audit events for the snapshot, want 2 (one per instance)", n)
		}
	})

	t.Run("restorer", func(t *testing.T) {
		st, a, b, id, before, want := restoreStack(t, restorer.Config{AckWait: 2 * time.Second, LeaseTTL: 3 * time.Second})
		ins := []*instance{a, b}
		traps := []*trap{a.proxy.at("add", 5, true), b.proxy.at("add", 5, true)}
		rep := st.startRollback(contract.RollbackRequest{SnapshotID: id, NoSafetySnapshot: true})
		i := firstTrap(time.Minute, traps...)
		if i < 0 {
			t.Fatal("no restorer sent its fifth add within a minute")
		}
		ins[i].kill(t)
		freeAll(traps...)
		other := ins[1-i]
		op := st.waitOp(rep.OpID, 2*time.Minute)
		t.Logf("killed %s; rollback %s, attempt %d, adds by %s: %d", ins[i].name, op.Status, op.Attempt, other.name, other.proxy.count("add"))
		if op.Status != contract.StatusCompleted || op.Attempt < 2 {
			t.Fatalf("rollback after its worker died: %s, attempt %d (%s); want completed by a second attempt", op.Status, op.Attempt, op.Error)
		}
		if other.proxy.count("add") == 0 {
			t.Errorf("%s sent no add; it did not finish the rollback", other.name)
		}
		st.rollbackEnded(op, id, before, want)
		if n := events(st.audit(), "restorer", "rollback", contract.OutcomeStarted, "", op.OpID); n != 2 {
			t.Errorf("%d started audit events for the rollback, want 2 (one per instance)", n)
		}
	})
}

// TestChromaRestartedMidRestore kills Chroma (SIGKILL) while a rollback
// writes its fifth add of 24 and starts it again on the same data. The
// restorer's requests fail meanwhile and are retried; the rollback ends
// with the database exactly as in the snapshot, completed once, or fails
// without a half-restored collection and the next rollback ends exact.
func TestChromaRestartedMidRestore(t *testing.T) {
	st, a, b, id, before, want := restoreStack(t, restorer.Config{AckWait: 10 * time.Second, LeaseTTL: 10 * time.Second})
	traps := []*trap{a.proxy.at("add", 5, true), b.proxy.at("add", 5, true)}
	rep := st.startRollback(contract.RollbackRequest{SnapshotID: id, NoSafetySnapshot: true})
	if firstTrap(time.Minute, traps...) < 0 {
		t.Fatal("no restorer sent its fifth add within a minute")
	}
	st.chroma.Stop()
	freeAll(traps...) // the add meets a dead server
	start := time.Now()
	st.chroma.Restart(t)
	t.Logf("Chroma killed, and answering again %s later", time.Since(start).Round(time.Millisecond))
	op := st.waitOp(rep.OpID, 2*time.Minute)
	t.Logf("rollback %s, attempt %d, adds %d + %d (24 per restore)", op.Status, op.Attempt, a.proxy.count("add"), b.proxy.count("add"))
	st.rollbackEnded(op, id, before, want)
}
