package restorer_test

import (
	"context"
	"encoding/json"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/services/restorer"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestFullRollbackRoundTrip: snapshot the full fixture, damage it as a bad
// migration does, plan (nothing changes), start without confirmation
// (nothing changes), roll back (with a running migration paused and
// resumed, and a second rollback refused meanwhile), then every record of
// every collection equals the pre-migration state. Then the rollback's
// safety snapshot brings back the damaged state, and a rollback with
// drop_extra the exact pre-migration one.
func TestFullRollbackRoundTrip(t *testing.T) {
	e := seeded(t)
	ctx := t.Context()

	// Running migrations; only those on acme/prod are paused, and of
	// those only the one the watchdog does not hold paused itself (for
	// an outage, or because its trigger fired) is resumed at the end.
	for _, m := range []contract.MigrationRecord{
		{Job: "reindex", Tenant: "acme", Database: "prod", Status: contract.MigrationRunning},
		{Job: "elsewhere", Tenant: "beta", Database: "main", Status: contract.MigrationRunning},
		{Job: "held", Tenant: "acme", Database: "prod", Status: contract.MigrationRunning,
			PausedBy: []contract.PauseReason{{Reason: contract.PauseConnectivity, Instance: "wd", Since: time.Now().UTC()}}},
		{Job: "triggered", Tenant: "acme", Database: "prod", Status: contract.MigrationRunning, Trigger: contract.TriggerValidation},
	} {
		m.Envelope = contract.NewEnvelope(contract.TypeMigrationRecord)
		m.StartedAt = time.Now().UTC()
		if _, err := e.nats.Assets.State.Put(ctx, contract.MigrationKey(m.Job), []byte(mustJSON(t, m))); err != nil {
			t.Fatal(err)
		}
	}
	var cmu sync.Mutex
	var controls []contract.Control
	sub, err := e.nats.Conn.Subscribe(e.subj.Control("*"), func(m *nats.Msg) {
		var c contract.Control
		if err := json.Unmarshal(m.Data, &c); err != nil {
			t.Errorf("control message %s: %v", m.Data, err)
		}
		cmu.Lock()
		controls = append(controls, c)
		cmu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	var armed atomic.Bool
	reached := make(chan restorer.HookPoint, 1)
	release := make(chan struct{})
	stopRestorer := e.startRestorer(t, restorer.Config{}, func(ctx context.Context, p restorer.HookPoint) error {
		if p.Name == "batch" && armed.CompareAndSwap(true, false) {
			reached <- p
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})

	pre := e.dump(t, "acme", "prod")
	staging, beta := e.dump(t, "acme", "staging"), e.dump(t, "beta", "main")
	snap := e.snapshot(t, "acme", "prod", "pre_migration")
	damage(t, e.cc, 1)
	damaged := e.dump(t, "acme", "prod")

	t.Run("plan changes nothing", func(t *testing.T) {
		p := e.plan(t, contract.RollbackRequest{SnapshotID: "pre_migration"})
		if p.SnapshotID != snap || !p.ArchiveVerified || p.Mode != "full" || !p.SafetySnapshot {
			t.Errorf("plan %s", mustJSON(t, p))
		}
		want := map[string]struct {
			action       string
			current, snp int64
		}{
			"corpus.v1":       {contract.PlanReplace, 370, 400},
			"personality":     {contract.PlanReplace, 200, 200},
			"cosine_768":      {contract.PlanReplace, 100, 150},
			"empty":           {contract.PlanReplace, 1, 0},
			"hnsw_meta":       {contract.PlanCreate, -1, 50},
			"migration_added": {contract.PlanExtra, 2, 0},
		}
		if len(p.Items) != len(want) {
			t.Errorf("plan has %d items, want %d: %s", len(p.Items), len(want), mustJSON(t, p.Items))
		}
		for _, it := range p.Items {
			w, ok := want[it.Target]
			if !ok || it.Action != w.action || it.CurrentRecords != w.current || it.SnapshotRecords != w.snp {
				t.Errorf("plan item %+v, want %+v", it, w)
			}
		}
		if p.WriteRecords != 800 || p.AddRate <= 0 || p.EstimatedSeconds <= 0 {
			t.Errorf("plan writes %d records at %.0f/s in %.1fs; want 800 and an estimate", p.WriteRecords, p.AddRate, p.EstimatedSeconds)
		}
		// Nothing restored into this Chroma yet: the default 1,000
		// records/s, for 384-d records; a record of dimension d costs
		// (380+d)/(380+384) of one.
		values := planValues(t, p, fixtureDims)
		units := (380*800 + float64(values)) / (380 + 384)
		if p.AddRateMeasured || math.Abs(p.AddRate-800/(units/1000)) > 1e-9*p.AddRate {
			t.Errorf("plan assumes %.0f records/s, measured %v; want the default 1000 for 384-d records, %.0f for these, not measured", p.AddRate, p.AddRateMeasured, 800/(units/1000))
		}
		if p.SecondsPerCollection != 0.05 || !p.SecondsPerCollectionAssumed || p.WriteCollections != 5 || math.Abs(p.EstimatedSeconds-(5*0.05+units/1000)) > 1e-9 {
			t.Errorf("plan assumes %vs for each of %d collections (assumed %v), estimate %.3fs; want an assumed 0.05 s for each of 5, %.3f s",
				p.SecondsPerCollection, p.WriteCollections, p.SecondsPerCollectionAssumed, p.EstimatedSeconds, 5*0.05+units/1000)
		}
		if !slices.ContainsFunc(p.Warnings, func(w string) bool {
			return strings.Contains(w, `1 collection in acme/prod is not in the snapshot and is kept: "migration_added" (drop_extra, --drop-extra in the CLI, deletes it)`)
		}) {
			t.Errorf("plan does not warn about the extra collection: %q", p.Warnings)
		}
		compareDB(t, "after plan", e.dump(t, "acme", "prod"), damaged, nil)
	})

	t.Run("start without confirmation changes nothing", func(t *testing.T) {
		r := e.start(t, contract.RollbackRequest{SnapshotID: snap})
		if r.Status != "refused" || r.OpID != "" || !strings.Contains(r.Refused, `"confirm": true`) || r.Plan == nil {
			t.Errorf("unconfirmed start: %s", mustJSON(t, r))
		}
		if keys := e.stateKeys(t, "op."); len(keys) != 1 { // the snapshot's
			t.Errorf("operations %v after an unconfirmed start", keys)
		}
		if n := e.commands(t, "rollback"); n != 0 {
			t.Errorf("%d rollback commands enqueued without confirmation", n)
		}
		compareDB(t, "after unconfirmed start", e.dump(t, "acme", "prod"), damaged, nil)
	})

	var first contract.Operation
	t.Run("full rollback", func(t *testing.T) {
		armed.Store(true)
		r := e.start(t, contract.RollbackRequest{SnapshotID: snap, Confirm: true, Actor: "alice", Reason: "bad migration"})
		if r.OpID == "" || r.Status != contract.StatusQueued || r.Progress != e.subj.Progress(r.OpID) {
			t.Fatalf("start reply %s", mustJSON(t, r))
		}
		select {
		case <-reached:
		case <-time.After(time.Minute):
			t.Fatal("the rollback never wrote a batch")
		}
		// While it runs: the fence is raised and a second rollback is refused.
		entry, err := e.nats.Assets.State.Get(ctx, contract.FenceKey("acme", "prod"))
		if err != nil || !strings.Contains(string(entry.Value()), r.OpID) {
			t.Errorf("fence while restoring: %v %v", entry, err)
		}
		code, data := e.request(t, e.subj.API("rollback", "start"), contract.RollbackRequest{SnapshotID: snap, Collections: []string{"empty"}, Confirm: true, Actor: "bob"})
		if code != contract.CodeConflict || !strings.Contains(string(data), r.OpID) || !strings.Contains(string(data), "alice") {
			t.Errorf("second rollback: %d %s; want 409 naming %s and alice", code, data, r.OpID)
		}
		code, data = e.request(t, e.subj.API("rollback", "status"), contract.OperationRef{OpID: r.OpID})
		var running contract.Operation
		if code != 0 || json.Unmarshal(data, &running) != nil || running.Status != contract.StatusRunning || running.Phase != "restoring" {
			t.Errorf("status while restoring: %d %s", code, data)
		}
		close(release)
		first = e.waitOp(t, r.OpID, 2*time.Minute)
		if first.Status != contract.StatusCompleted {
			t.Fatalf("rollback ended %s: %s", first.Status, first.Error)
		}
		rep := first.Restore
		if rep == nil || !rep.Verified || rep.SafetySnapshotID == "" || rep.RecordsWritten != 800 {
			t.Fatalf("report %s", mustJSON(t, rep))
		}
		// The rollback kept migration_added: its safety snapshot holds
		// only some of the database's collections.
		if sm := e.storedManifest(t, rep.SafetySnapshotID); !sm.Partial {
			t.Errorf("safety snapshot of a rollback that leaves a collection alone is not partial: %+v", sm.Collections)
		}
		for _, c := range rep.Collections {
			wantCheck := "bit-exact"
			switch c.Collection {
			case "cosine_768":
				wantCheck = "tolerance"
			case "empty":
				wantCheck = "none"
			}
			if !c.Verified || c.EmbeddingCheck != wantCheck || len(c.Differences) > 0 {
				t.Errorf("collection report %+v", c)
			}
		}
		want := pre.clone()
		want["migration_added"] = damaged["migration_added"] // extra collections are kept
		compareDB(t, "after rollback", e.dump(t, "acme", "prod"), want, nil)
		compareDB(t, "acme/staging", e.dump(t, "acme", "staging"), staging, nil)
		compareDB(t, "beta/main", e.dump(t, "beta", "main"), beta, nil)
		e.assertReleased(t)

		// Control messages are core NATS: give the last one time to arrive.
		var got []contract.Control
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			cmu.Lock()
			got = slices.Clone(controls)
			cmu.Unlock()
			if len(got) >= 4 || time.Now().After(deadline) {
				break
			}
		}
		var seq []string
		for _, c := range got {
			seq = append(seq, c.Job+":"+c.Command)
			if c.OpID != r.OpID || c.Reason == "" {
				t.Errorf("control %+v lacks the op id or a reason", c)
			}
		}
		time.Sleep(100 * time.Millisecond) // and one too many
		cmu.Lock()
		extra := controls[len(got):]
		cmu.Unlock()
		for _, c := range extra {
			seq = append(seq, c.Job+":"+c.Command)
		}
		slices.Sort(seq[:min(3, len(seq))]) // the pauses, in any order
		if want := []string{"held:pause", "reindex:pause", "triggered:pause", "reindex:resume"}; !slices.Equal(seq, want) {
			t.Errorf("control messages %q, want %q", seq, want)
		}
		evs := e.auditEvents(t)
		for _, outcome := range []string{contract.OutcomeStarted, contract.OutcomeCompleted} {
			found := findAudit(evs, "rollback", outcome)
			if len(found) != 1 || found[0].OpID != r.OpID || found[0].Actor != "alice" || found[0].Reason != "bad migration" {
				t.Errorf("%s audit events %+v", outcome, found)
			}
		}
		if steps := findAudit(evs, "rollback.step", contract.OutcomeCompleted); len(steps) < 6 {
			t.Errorf("%d step audit events, want fence, safety snapshot and one per collection", len(steps))
		}
	})
	if first.Restore == nil {
		t.FailNow()
	}

	t.Run("safety snapshot restores the state before the rollback", func(t *testing.T) {
		e.rollback(t, contract.RollbackRequest{SnapshotID: first.Restore.SafetySnapshotID, NoSafetySnapshot: true})
		want := damaged.clone()
		want["hnsw_meta"] = pre["hnsw_meta"] // created by the rollback, not in its safety snapshot: kept as extra
		compareDB(t, "after undoing the rollback", e.dump(t, "acme", "prod"), want, nil)
	})

	t.Run("drop_extra", func(t *testing.T) {
		before := e.collectionIDs(t, "acme", "prod")
		op := e.rollback(t, contract.RollbackRequest{SnapshotID: snap, DropExtra: true})
		compareDB(t, "after rollback with drop_extra", e.dump(t, "acme", "prod"), pre, nil)
		// It overwrote or dropped every collection the database had: its
		// safety snapshot holds the whole database.
		if sm := e.storedManifest(t, op.Restore.SafetySnapshotID); sm.Partial || len(sm.Collections) != len(before) {
			t.Errorf("safety snapshot of a rollback over every collection: partial %v, %d collections, want %d", sm.Partial, len(sm.Collections), len(before))
		}
		if !slices.ContainsFunc(op.Restore.Collections, func(c contract.RestoreCollectionReport) bool {
			return c.Target == "migration_added" && c.Action == contract.PlanDrop
		}) {
			t.Errorf("report does not list the drop: %s", mustJSON(t, op.Restore))
		}
		e.assertReleased(t)
	})

	t.Run("plans estimate from the measured add rate, also after a restart", func(t *testing.T) {
		entry, err := e.nats.Assets.State.Get(ctx, contract.AddRateKey(e.chroma.URL))
		if err != nil {
			t.Fatalf("no add rate kept for %s: %v", e.chroma.URL, err)
		}
		var rec contract.AddRate
		if err := json.Unmarshal(entry.Value(), &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Type != contract.TypeAddRate || rec.ChromaURL != e.chroma.URL || rec.Records != 800 || rec.Seconds <= 0 || !(rec.RecordsPerSecond > 0) || rec.SecondsPerCollection < 0 {
			t.Errorf("kept add rate %s; want the last rollback's 800 records into %s", entry.Value(), e.chroma.URL)
		}
		// Every full rollback above is a sample, the last one last.
		// Each with the embedding values it wrote: the last rollback's
		// 800 records at the fixture's dimensions.
		n := len(rec.Samples)
		if n < 2 || n > 8 || rec.Samples[n-1] != (contract.AddRateSample{Collections: 5, Records: 800, Values: lastValues, Seconds: rec.Seconds}) {
			t.Errorf("kept samples %+v; want 2 to 8, the last one the last rollback's 5 collections, 800 records and %d values", rec.Samples, lastValues)
		}
		// The rate is for the samples' mean dimension.
		var records, values int64
		for _, s := range rec.Samples {
			records, values = records+s.Records, values+s.Values
		}
		if rec.Dimension != float64(values)/float64(records) {
			t.Errorf("kept rate for %v-d records, want the samples' mean %v", rec.Dimension, float64(values)/float64(records))
		}
		stopRestorer() // a new instance knows only what CHROMA_STATE keeps
		e.startRestorer(t, restorer.Config{Instance: "restorer-restarted"}, nil)
		p := e.plan(t, contract.RollbackRequest{SnapshotID: snap})
		recordSeconds := (380*800 + float64(planValues(t, p, fixtureDims))) / (380 + rec.Dimension) / rec.RecordsPerSecond
		if !p.AddRateMeasured || math.Abs(p.AddRate-800/recordSeconds) > 1e-9*p.AddRate || p.SecondsPerCollection != rec.SecondsPerCollection || p.SecondsPerCollectionAssumed != rec.SecondsPerCollectionAssumed {
			t.Errorf("plan after a restart assumes %v records/s and %vs a collection (measured %v, collection assumed %v); want the kept %v (%v for these dimensions) and %v (%v)",
				p.AddRate, p.SecondsPerCollection, p.AddRateMeasured, p.SecondsPerCollectionAssumed, rec.RecordsPerSecond, 800/recordSeconds, rec.SecondsPerCollection, rec.SecondsPerCollectionAssumed)
		}
		want := float64(p.WriteCollections)*rec.SecondsPerCollection + recordSeconds
		if p.WriteCollections != 5 || math.Abs(p.EstimatedSeconds-want) > 1e-9 {
			t.Errorf("estimate %.3fs for %d records in %d collections; want %.3fs for 5", p.EstimatedSeconds, p.WriteRecords, p.WriteCollections, want)
		}

		// A model kept by an older restorer, fitted to restores of a few
		// collections each to 2.85 s a collection, is fitted again from
		// its samples: none wrote enough collections to tell a
		// collection's cost, so it is assumed.
		old := rec
		old.SecondsPerCollection, old.SecondsPerCollectionAssumed, old.RecordsPerSecond = 2.85, false, 582
		old.Samples = []contract.AddRateSample{{Collections: 1, Records: 620, Seconds: 30.2}, {Collections: 3, Records: 1560, Seconds: 9.8},
			{Collections: 1, Records: 620, Seconds: 53.7}, {Collections: 1, Records: 4000, Seconds: 9.6}}
		if _, err := e.nats.Assets.State.Put(ctx, contract.AddRateKey(e.chroma.URL), []byte(mustJSON(t, old))); err != nil {
			t.Fatal(err)
		}
		p = e.plan(t, contract.RollbackRequest{SnapshotID: snap})
		if !p.AddRateMeasured || p.SecondsPerCollection != 0.05 || !p.SecondsPerCollectionAssumed {
			t.Errorf("plan from a model kept as 2.85 s a collection: %vs a collection (assumed %v, measured %v); want an assumed 0.05 s, fitted again from its samples",
				p.SecondsPerCollection, p.SecondsPerCollectionAssumed, p.AddRateMeasured)
		}
	})
}

// commands counts the commands ever enqueued on chroma.cmd.<kind>.
func (e *env) commands(t *testing.T, kind string) int {
	t.Helper()
	info, err := e.nats.Assets.Commands.Info(t.Context(), jetstream.WithSubjectFilter(e.subj.Command(kind)))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range info.State.Subjects {
		n += int(c)
	}
	return n
}

// auditEvents returns every event in the audit stream so far.
func (e *env) auditEvents(t *testing.T) []contract.AuditEvent {
	t.Helper()
	ctx := t.Context()
	info, err := e.nats.Assets.Audit.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := int(info.State.Msgs)
	if n == 0 {
		return nil
	}
	cons, err := e.nats.Assets.Audit.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var out []contract.AuditEvent
	for m := range batch.Messages() {
		var ev contract.AuditEvent
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			t.Fatalf("audit event %s: %v", m.Data(), err)
		}
		out = append(out, ev)
	}
	return out
}

func findAudit(evs []contract.AuditEvent, action, outcome string) []contract.AuditEvent {
	var out []contract.AuditEvent
	for _, ev := range evs {
		if ev.Action == action && ev.Outcome == outcome {
			out = append(out, ev)
		}
	}
	return out
}

// fixtureDims are the dimensions of acme/prod's collections in the fixture
// (testenv.SeedFixture); "empty" has none.
var fixtureDims = map[string]int{"corpus.v1": 384, "personality": 16, "cosine_768": 768, "hnsw_meta": 32}

// lastValues is the embedding values of a full rollback of acme/prod: its
// records times their dimensions.
const lastValues = 400*384 + 200*16 + 150*768 + 50*32

// planValues checks that each item of p gives its collection's dimension,
// as dims have it, and returns the embedding values p writes.
func planValues(t *testing.T, p *contract.RollbackPlan, dims map[string]int) int64 {
	t.Helper()
	var n int64
	for _, it := range p.Items {
		if it.Collection == "" {
			continue // an extra collection: not in the snapshot
		}
		if it.Dimension != dims[it.Collection] {
			t.Errorf("plan gives %q dimension %d, want %d", it.Collection, it.Dimension, dims[it.Collection])
		}
		n += it.WriteRecords * int64(dims[it.Collection])
	}
	return n
}
