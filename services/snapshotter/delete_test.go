package snapshotter_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
)

// TestDeleteRefusesPinnedAndInUse: what retention never deletes, an
// operator's delete refuses too unless forced: a pinned snapshot, one a
// running migration uses (by name), one a running rollback uses. Refused
// deletes change nothing; a forced one deletes and says so in the audit.
// Afterwards info of a deleted snapshot, of one still being made and of
// one whose operation failed says so, instead of only "no snapshot".
func TestDeleteRefusesPinnedAndInUse(t *testing.T) {
	e := newEnv(t)
	const tenant, db = "default_tenant", "del"
	e.seedSmall(t, tenant, db)
	e.startService(t, snapshotter.Config{})
	now := time.Now().UTC()
	req := func(name string, keep bool) contract.SnapshotCreateRequest {
		return contract.SnapshotCreateRequest{Name: name, Tenant: tenant, Database: db, Actor: "test", Keep: keep}
	}
	pinned := e.snap(t, req("pinned", true), now)
	migrated := e.snap(t, req("pre_migration", false), now)
	rolled := e.snap(t, req("rolled_back_to", false), now)
	plain := e.snap(t, req("plain", false), now)
	e.putState(t, contract.MigrationKey("reindex"), contract.MigrationRecord{Envelope: contract.NewEnvelope(contract.TypeMigrationRecord),
		Job: "reindex", Tenant: tenant, Database: db, Status: contract.MigrationRunning, SnapshotID: "pre_migration", StartedAt: now})
	e.putState(t, contract.OperationKey("op_rb_del"), contract.Operation{Envelope: contract.NewEnvelope(contract.TypeOperation),
		OpID: "op_rb_del", Kind: "rollback", SnapshotID: rolled.SnapshotID, Status: contract.StatusRunning, Tenant: tenant, Database: db})

	del := func(id string, force bool) (int, []byte) {
		ref := contract.SnapshotRef{Envelope: contract.NewEnvelope(contract.TypeSnapshotRef), Snapshot: id, Actor: "test", Force: force}
		return e.request(t, e.subj.API("snapshot", "delete"), mustJSON(t, ref))
	}
	for _, tc := range []struct {
		m    contract.SnapshotManifest
		want string
	}{
		{pinned, "pinned"},
		{migrated, "migration reindex"},
		{rolled, "rollback op_rb_del"},
	} {
		code, body := del(tc.m.SnapshotID, false)
		var eb contract.ErrorBody
		_ = json.Unmarshal(body, &eb)
		if code != contract.CodeConflict || !strings.Contains(eb.Error, tc.want) || !strings.Contains(eb.Error, `"force": true`) || !strings.Contains(eb.Error, "--force") {
			t.Errorf("delete %s: %d %q, want 409 naming %q, \"force\": true and --force", tc.m.Name, code, eb.Error, tc.want)
		}
		if _, ok := e.manifest(t, tc.m.SnapshotID); !ok {
			t.Errorf("refused delete of %s removed its manifest", tc.m.Name)
		}
	}
	if code, body := del(plain.SnapshotID, false); code != 0 {
		t.Errorf("delete of a plain snapshot: %d %s", code, body)
	}
	if code, body := del(pinned.SnapshotID, true); code != 0 {
		t.Errorf("forced delete of a pinned snapshot: %d %s", code, body)
	}
	for _, m := range []contract.SnapshotManifest{plain, pinned} {
		if _, ok := e.manifest(t, m.SnapshotID); ok {
			t.Errorf("%s still has a manifest after its delete", m.Name)
		}
	}
	objects := strings.Join(e.objects(t), " ")
	if strings.Contains(objects, plain.Object) || strings.Contains(objects, pinned.Object) || !strings.Contains(objects, migrated.Object) {
		t.Errorf("objects after the deletes: %s", objects)
	}
	var forced, rejected int
	for _, ev := range e.auditEvents(t) {
		switch {
		case ev.Action != "snapshot.delete":
		case ev.Outcome == contract.OutcomeCompleted && ev.SnapshotID == pinned.SnapshotID && ev.Figures["forced"] == true:
			forced++
		case ev.Outcome == contract.OutcomeRejected:
			rejected++
		}
	}
	if forced != 1 || rejected != 3 {
		t.Errorf("audit: %d forced deletes, %d refusals; want 1 and 3", forced, rejected)
	}

	// A snapshot id without a manifest: info says what became of it when
	// a snapshot operation names it.
	e.putState(t, contract.OperationKey("op_making"), contract.Operation{OpID: "op_making", Kind: "snapshot",
		SnapshotID: "snap_making", Name: "nightly_making", Status: contract.StatusRunning, UpdatedAt: now})
	// A failed snapshot's name is not one being made.
	e.putState(t, contract.OperationKey("op_gone"), contract.Operation{OpID: "op_gone", Kind: "snapshot",
		SnapshotID: "snap_gone", Name: "nightly_gone", Status: contract.StatusFailed, UpdatedAt: now})
	e.putState(t, contract.OperationKey("op_broke"), contract.Operation{OpID: "op_broke", Kind: "snapshot",
		SnapshotID: "snap_broke", Status: contract.StatusFailed, Error: "read collection \"c\": Chroma is unreachable", UpdatedAt: now})
	for id, want := range map[string]string{
		"snap_making":    `no snapshot "snap_making" yet: its operation op_making is running (since `,
		"snap_broke":     `no snapshot "snap_broke": its operation op_broke failed at ` + now.Format(time.RFC3339) + `: read collection "c": Chroma is unreachable`,
		plain.SnapshotID: `no snapshot "` + plain.SnapshotID + `": it was made (operation `,
		"snap_unknown":   `no snapshot with id or name "snap_unknown" (see ` + "`snapshot list`)",
		"nightly_making": `no snapshot named "nightly_making" yet: snapshot snap_making of that name is being made (operation op_making, running since `,
		"nightly_gone":   `no snapshot with id or name "nightly_gone"`,
	} {
		code, body := e.request(t, e.subj.API("snapshot", "info"), mustJSON(t, contract.SnapshotRef{Snapshot: id}))
		var eb contract.ErrorBody
		_ = json.Unmarshal(body, &eb)
		if code != contract.CodeNotFound || !strings.Contains(eb.Error, want) {
			t.Errorf("info %s: %d %q, want 404 saying %q", id, code, eb.Error, want)
		}
	}
}

// TestRunningRollbacksSafetySnapshotIsInUse: while a rollback runs, the
// safety snapshot it took is named only by its checkpoint (its operation's
// report is written when it ends). That snapshot is what undoes the
// rollback, and its report offers it, so neither an operator's delete
// without force nor retention may remove it meanwhile.
func TestRunningRollbacksSafetySnapshotIsInUse(t *testing.T) {
	e := newEnv(t)
	const tenant, db = "default_tenant", "del_safety"
	e.seedSmall(t, tenant, db)
	e.startService(t, snapshotter.Config{})
	now := time.Now().UTC()
	req := createIn(tenant, db)
	target := e.snap(t, req("rolled_back_to"), now.Add(-3*time.Hour))
	safety := e.snap(t, req("safety_rb_running"), now.Add(-2*time.Hour))
	e.snap(t, req("newer"), now.Add(-time.Hour)) // so the safety snapshot is not the newest
	const opID = "op_rb_running"
	e.putState(t, contract.OperationKey(opID), contract.Operation{Envelope: contract.NewEnvelope(contract.TypeOperation),
		OpID: opID, Kind: "rollback", SnapshotID: target.SnapshotID, Status: contract.StatusRunning, Phase: "restoring", Tenant: tenant, Database: db})
	// The restorer's checkpoint, as it is once the safety snapshot was asked for.
	e.putState(t, contract.CheckpointKey(opID), map[string]any{"op_id": opID, "safety_op_id": "op_safety",
		"safety_snapshot_id": safety.SnapshotID, "safety_done": true})

	ref := contract.SnapshotRef{Envelope: contract.NewEnvelope(contract.TypeSnapshotRef), Snapshot: safety.SnapshotID, Actor: "test"}
	code, body := e.request(t, e.subj.API("snapshot", "delete"), mustJSON(t, ref))
	var eb contract.ErrorBody
	_ = json.Unmarshal(body, &eb)
	if code != contract.CodeConflict || !strings.Contains(eb.Error, "safety snapshot of rollback "+opID) {
		t.Errorf("delete of a running rollback's safety snapshot: %d %s, want 409 naming the rollback", code, body)
	}
	if _, ok := e.manifest(t, safety.SnapshotID); !ok {
		t.Fatalf("the running rollback's safety snapshot was deleted")
	}

	rep := e.cleanup(t, contract.CleanupRequest{DryRun: true, OlderThan: "1m", Tenant: tenant, Database: db})
	if got := reasons(rep.Kept)[safety.SnapshotID]; got != contract.KeepRollback {
		t.Errorf("retention: the running rollback's safety snapshot is kept for %q (deleted: %v), want %q",
			got, reasons(rep.Deleted), contract.KeepRollback)
	}
}

// TestDeleteRacingKeep: a delete decides on the manifest it read (not
// pinned), and a keep may pin the snapshot before the delete removes it.
// The keep must then win: the delete is refused, so a snapshot that keep
// answered as pinned is never deleted without force. The delete used to
// remove the manifest whatever happened to it meanwhile: half of such
// races ended with the pin acknowledged and the snapshot gone. Two deletes
// of one snapshot: one deletes it, the other is told it was deleted.
func TestDeleteRacingKeep(t *testing.T) {
	e := newEnv(t)
	const tenant, db = "default_tenant", "del_race"
	e.seedSmall(t, tenant, db)
	e.startService(t, snapshotter.Config{})
	// Records of ended work, as CHROMA_STATE holds between retention
	// runs: the delete reads them all to know what is in use.
	for i := range 300 {
		id := fmt.Sprintf("op_done_%03d", i)
		e.putState(t, contract.OperationKey(id), contract.Operation{Envelope: contract.NewEnvelope(contract.TypeOperation),
			OpID: id, Kind: "snapshot", SnapshotID: "snap_gone", Status: contract.StatusCompleted})
	}
	now := time.Now().UTC()
	del := func(id string) (int, []byte) {
		ref := contract.SnapshotRef{Envelope: contract.NewEnvelope(contract.TypeSnapshotRef), Snapshot: id, Actor: "test"}
		return e.request(t, e.subj.API("snapshot", "delete"), mustJSON(t, ref))
	}
	keep := func(id string) (int, []byte) {
		k := true
		return e.request(t, e.subj.API("snapshot", "keep"), mustJSON(t, contract.SnapshotKeepRequest{
			Envelope: contract.NewEnvelope(contract.TypeKeepRequest), Snapshot: id, Keep: &k, Actor: "test"}))
	}
	for i := range 12 {
		m := e.snap(t, contract.SnapshotCreateRequest{Name: fmt.Sprintf("race_%d", i), Tenant: tenant, Database: db, Actor: "test"}, now)
		var wg sync.WaitGroup
		var delCode, keepCode int
		var delBody, keepBody []byte
		wg.Add(2)
		go func() { defer wg.Done(); delCode, delBody = del(m.SnapshotID) }()
		go func() { defer wg.Done(); keepCode, keepBody = keep(m.SnapshotID) }()
		wg.Wait()
		var kept contract.SnapshotManifest
		_ = json.Unmarshal(keepBody, &kept)
		_, exists := e.manifest(t, m.SnapshotID)
		switch {
		case keepCode == 0 && kept.Keep && !exists:
			t.Fatalf("race %d: keep answered the snapshot pinned, and the delete (%d %s) deleted it", i, delCode, delBody)
		case delCode == 0 && exists:
			t.Fatalf("race %d: the delete answered success and the manifest is still there", i)
		case delCode != 0 && delCode != contract.CodeConflict:
			t.Fatalf("race %d: delete answered %d %s; want success or 409", i, delCode, delBody)
		}
	}

	m := e.snap(t, contract.SnapshotCreateRequest{Name: "twice", Tenant: tenant, Database: db, Actor: "test"}, now)
	codes := make([]int, 2)
	var wg sync.WaitGroup
	for i := range codes {
		wg.Add(1)
		go func() { defer wg.Done(); codes[i], _ = del(m.SnapshotID) }()
	}
	wg.Wait()
	slices.Sort(codes)
	if codes[0] != 0 || codes[1] != contract.CodeNotFound {
		t.Errorf("two deletes of one snapshot answered %v; want one success and one 404", codes)
	}
	var completed int
	for _, ev := range findAudit(e.auditEvents(t), "snapshot.delete", contract.OutcomeCompleted) {
		if ev.SnapshotID == m.SnapshotID {
			completed++
		}
	}
	if completed != 1 {
		t.Errorf("%d completed deletes of %s audited; want 1", completed, m.SnapshotID)
	}
}
