package snapshotter

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
)

// TestPruneState: the records of work that ended before the cutoff go
// (operations completed, failed or cancelled with their checkpoint and
// cancel keys, ended migrations, claims of days over); work not ended,
// young records, unreadable ones, migrations whose rollback an operator
// still has to run, and keys of other kinds stay. Operations not ended
// since before their command left the work queue are failed, saying why
// (and that a rollback's fence stays). A dry run counts the same and
// changes nothing. A record changed between the read and the purge (a new
// run of the same job) stays.
func TestPruneState(t *testing.T) {
	s, n := storeOnlyService(t)
	ctx := t.Context()
	kv := n.Assets.State
	now := time.Now().UTC()
	ago := func(days float64) time.Time { return now.Add(-time.Duration(days * 24 * float64(time.Hour))) }
	put := func(key string, v any) {
		t.Helper()
		data, ok := v.([]byte)
		if !ok {
			data, _ = json.Marshal(v)
		}
		if _, err := kv.Put(ctx, key, data); err != nil {
			t.Fatal(err)
		}
	}
	op := func(id, kind, status string, at time.Time) {
		put(contract.OperationKey(id), contract.Operation{Envelope: contract.Envelope{Time: at}, OpID: id, Kind: kind, Status: status, UpdatedAt: at})
	}
	mig := func(job, status string, at time.Time, edit func(*contract.MigrationRecord)) {
		r := contract.MigrationRecord{Envelope: contract.Envelope{Time: at}, Job: job, Status: status, UpdatedAt: at}
		if status != contract.MigrationRunning {
			r.EndedAt = at
		}
		if edit != nil {
			edit(&r)
		}
		put(contract.MigrationKey(job), r)
	}
	claim := func(day time.Time) string {
		key := RetentionClaimKey(day.Truncate(24 * time.Hour))
		put(key, retentionClaim{Instance: "x", Day: day.Format(time.DateOnly)})
		return key
	}

	// Ended before the cutoff (7 days): these go.
	op("op_snap_old", "snapshot", contract.StatusCompleted, ago(10))
	op("op_rb_failed", "rollback", contract.StatusFailed, ago(8))
	put(contract.CheckpointKey("op_rb_failed"), []byte(`{"op_id":"op_rb_failed"}`))
	put(contract.CancelKey("op_rb_failed"), []byte(`{"op_id":"op_rb_failed"}`))
	op("op_rb_cancelled", "rollback", contract.StatusCancelled, ago(30))
	mig("job_done", contract.MigrationCompleted, ago(9), nil)
	mig("job_rolled_back", contract.MigrationRolledBack, ago(12), func(r *contract.MigrationRecord) {
		r.Trigger, r.RollbackStatus = contract.TriggerValidation, contract.StatusCompleted
	})
	oldClaim := claim(ago(10))
	gone := []string{
		contract.OperationKey("op_snap_old"), contract.OperationKey("op_rb_failed"), contract.CheckpointKey("op_rb_failed"),
		contract.CancelKey("op_rb_failed"), contract.OperationKey("op_rb_cancelled"),
		contract.MigrationKey("job_done"), contract.MigrationKey("job_rolled_back"), oldClaim,
	}
	// These stay. The two not ended since before their commands left the
	// work queue are failed.
	put(contract.OperationKey("op_rb_running"), contract.Operation{OpID: "op_rb_running", Kind: "rollback", Status: contract.StatusRunning,
		Tenant: "acme", Database: "prod", UpdatedAt: ago(30)})
	put(contract.CheckpointKey("op_rb_running"), []byte(`{"op_id":"op_rb_running"}`))
	op("op_snap_queued", "snapshot", contract.StatusQueued, ago(30))
	// A failed rollback whose leftovers the restorer has not taken back
	// yet: its record stays with them.
	op("op_rb_leftovers", "rollback", contract.StatusFailed, ago(9))
	put(contract.LeftoversKey("op_rb_leftovers"), contract.Leftovers{OpID: "op_rb_leftovers", Tenant: "acme", Database: "prod"})
	op("op_snap_running_young", "snapshot", contract.StatusRunning, ago(6))
	op("op_snap_young", "snapshot", contract.StatusCompleted, ago(6))
	op("op_no_time", "snapshot", contract.StatusCompleted, time.Time{})
	put(contract.OperationKey("op_garbled"), []byte("not json"))
	mig("job_running", contract.MigrationRunning, ago(20), nil)
	mig("job_alerted", contract.MigrationFailed, ago(20), func(r *contract.MigrationRecord) {
		r.Trigger, r.RollbackStatus = contract.TriggerFailure, contract.RollbackAlerted
	})
	mig("job_rollback_running", contract.MigrationFailed, ago(20), func(r *contract.MigrationRecord) {
		r.Trigger, r.RollbackStatus = contract.TriggerFailure, contract.StatusRunning
	})
	mig("job_young", contract.MigrationCompleted, ago(2), nil)
	mig("job_rerun", contract.MigrationCompleted, ago(20), nil) // started again during the run
	claim(ago(7))                                               // the cutoff's own day, which ends after it
	claim(now)
	put("lease.acme/prod", []byte(`{"holder":"op_rb_running"}`))
	put(contract.FenceKey("acme", "prod"), contract.Fence{Tenant: "acme", Database: "prod", OpID: "op_rb_running"})
	put(contract.AddRateKey("http://chroma:8000"), []byte(`{"records_per_second":1000}`))

	keys := func() []string {
		t.Helper()
		l, err := kv.ListKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for k := range l.Keys() {
			out = append(out, k)
		}
		slices.Sort(out)
		return out
	}
	all := keys()
	cutoff := ago(7)
	want := map[string]int{prunedOperations: 3, prunedMigrations: 3, prunedClaims: 1}

	abandoned := []string{"op_rb_running", "op_snap_queued"}
	status := func(id string) contract.Operation {
		t.Helper()
		_, o, ok := getState[contract.Operation](ctx, kv, contract.OperationKey(id))
		if !ok {
			t.Fatalf("operation %s is gone", id)
		}
		return o
	}

	res, err := s.pruneState(ctx, now, cutoff, true, nil)
	if err != nil || !maps.Equal(res.counts, want) || !slices.Equal(res.abandoned, abandoned) {
		t.Errorf("dry run counted %v and %v (%v), want %v and %v", res.counts, res.abandoned, err, want, abandoned)
	}
	if got := keys(); !slices.Equal(got, all) {
		t.Fatalf("a dry run changed the keys: %v, was %v", got, all)
	}
	if o := status("op_rb_running"); o.Status != contract.StatusRunning {
		t.Errorf("a dry run failed %s: %s", o.OpID, o.Status)
	}

	// A new run of job_rerun starts between the read and the purge.
	rerun := contract.MigrationKey("job_rerun")
	beforeStatePurge = func(key string) {
		if key == rerun {
			mig("job_rerun", contract.MigrationRunning, now, nil)
		}
	}
	t.Cleanup(func() { beforeStatePurge = nil })
	want[prunedMigrations] = 2
	res, err = s.pruneState(ctx, now, cutoff, false, nil)
	if err != nil || !maps.Equal(res.counts, want) || !slices.Equal(res.abandoned, abandoned) {
		t.Errorf("run pruned %v and failed %v (%v), want %v and %v", res.counts, res.abandoned, err, want, abandoned)
	}
	for id, says := range map[string]string{
		"op_rb_running":  "no restorer took it in time, or the last one lost touch); the data may be half restored, and the write fence of acme/prod stays raised",
		"op_snap_queued": "no worker ended it: its command left CHROMA_CMDS, which keeps commands 7d (no snapshotter took it in time",
	} {
		if o := status(id); o.Status != contract.StatusFailed || !strings.Contains(o.Error, says) || o.UpdatedAt.Before(now) {
			t.Errorf("%s after the run: %s, %q, updated %s; want failed now, saying %q", id, o.Status, o.Error, o.UpdatedAt, says)
		}
	}
	if o := status("op_rb_running"); o.ErrorCode != contract.ErrorOther {
		t.Errorf("abandoned rollback: error_code %q, want %q as the restorer gives a rollback it ends", o.ErrorCode, contract.ErrorOther)
	}
	if o := status("op_snap_queued"); o.ErrorCode != "" {
		t.Errorf("abandoned snapshot: error_code %q, want none (rollbacks only)", o.ErrorCode)
	}
	if o := status("op_snap_running_young"); o.Status != contract.StatusRunning {
		t.Errorf("a young running operation was failed: %s", o.Error)
	}
	wantKeys := slices.DeleteFunc(slices.Clone(all), func(k string) bool { return slices.Contains(gone, k) })
	if got := keys(); !slices.Equal(got, wantKeys) {
		t.Errorf("keys after the run:\n  %v\nwant\n  %v", got, wantKeys)
	}
	e, err := kv.Get(ctx, rerun)
	var r contract.MigrationRecord
	if err != nil || json.Unmarshal(e.Value(), &r) != nil || r.Status != contract.MigrationRunning {
		t.Errorf("the record of the job started again: %v %+v, want it running", err, r)
	}

	// Nothing left to prune: a second run purges nothing.
	beforeStatePurge = nil
	res, err = s.pruneState(ctx, now, cutoff, false, nil)
	if err != nil || !maps.Equal(res.counts, map[string]int{prunedOperations: 0, prunedMigrations: 0, prunedClaims: 0}) || len(res.abandoned) != 0 {
		t.Errorf("second run pruned %v and failed %v (%v), want nothing", res.counts, res.abandoned, err)
	}
}
