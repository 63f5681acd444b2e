package deploytest

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/migration"
	"github.com/nats-io/nats.go/jetstream"
)

// A migration job's user publishes its own events, hears its control
// subject and waits for its pre-migration snapshot through the SDK, and
// nothing else: no rollback, no archive, no other job's events or control,
// no other key of CHROMA_STATE, no other user's replies.
func TestDeployMigrationJobPermissions(t *testing.T) {
	url, pw := startSingle(t)
	ctx := t.Context()
	snap := connect(t, url, pw, "snapshotter")
	assets := bootstrap(t, snap)
	archive, err := assets.Snapshots.PutBytes(ctx, "snap_1.tar.zst", []byte("an archive"))
	if err != nil {
		t.Fatal(err)
	}
	rest := connect(t, url, pw, "restorer")
	starts := respond(t, rest, subj.API("rollback", "start"), `{"status":"queued"}`)
	wd := connect(t, url, pw, "watchdog")

	job := connect(t, url, pw, "job_reindex")
	j, err := migration.New(job.nc, "reindex", migration.WithPublishRetry(2*time.Second, 1))
	if err != nil {
		t.Fatalf("migration.New as the job: %v", err)
	}
	defer j.Close()

	t.Run("publishes its own events", func(t *testing.T) {
		r, err := j.Start(ctx, migration.StartOptions{Tenant: "acme", Database: "prod", TakeSnapshot: true})
		if err != nil {
			t.Fatalf("start: %v", err)
		}
		if err := j.Heartbeat(ctx, "copy", 10); err != nil {
			t.Fatalf("heartbeat: %v", err)
		}
		if n := streamMsgs(t, snap, contract.StreamMigrations); n != 2 {
			t.Errorf("CHROMA_MIGRATIONS holds %d events, want the job's 2", n)
		}

		// The watchdog records the snapshot it took; the job, watching
		// its own record, gets it.
		rec := contract.MigrationRecord{Envelope: contract.NewEnvelope("chromadb-rollback.v1.migration_record"), Job: "reindex",
			Tenant: "acme", Database: "prod", Status: contract.MigrationRunning, SnapshotID: "snap_1", StartedAt: time.Now().UTC(), Run: r.Sequence}
		data, _ := json.Marshal(rec)
		kv, err := wd.js.KeyValue(ctx, contract.BucketState)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, contract.MigrationKey("reindex"), data); err != nil {
			t.Fatalf("watchdog writes the record: %v", err)
		}
		wctx, cancel := contextWithTimeout(t, 5*time.Second)
		defer cancel()
		if id, err := j.WaitForSnapshot(wctx); err != nil || id != "snap_1" {
			t.Errorf("WaitForSnapshot = %q, %v; want snap_1", id, err)
		}
	})

	t.Run("hears its control subject", func(t *testing.T) {
		c := contract.Control{Envelope: contract.NewEnvelope(contract.TypeControl), Job: "reindex", Command: contract.ControlPause, Reason: "backup window"}
		data, _ := json.Marshal(c)
		if err := wd.nc.Publish(subj.Control("reindex"), data); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the job to be paused", j.Paused)
	})
	job.noViolations(t)

	t.Run("cannot start a rollback", func(t *testing.T) {
		req := `{"snapshot_id":"snap_1","confirm":true,"actor":"job"}`
		if _, err := job.nc.Request(subj.API("rollback", "start"), []byte(req), denied); err == nil {
			t.Error("the job's rollback start was answered")
		}
		job.wantViolation(t, "Publish", subj.API("rollback", "start"))
		if n := starts.get(); n != 0 {
			t.Errorf("the restorer received %d rollback starts from the job", n)
		}
		if _, err := job.nc.Request(subj.API("snapshot", "create"), []byte(`{"name":"x"}`), denied); err == nil {
			t.Error("the job's snapshot create was answered")
		}
		job.wantViolation(t, "Publish", subj.API("snapshot", "create"))
	})

	t.Run("cannot read archives", func(t *testing.T) {
		if _, err := job.js.ObjectStore(short(t), contract.ObjectSnapshots); err == nil {
			t.Error("the job opened the object store")
		}
		job.wantViolation(t, "Publish", "$JS.API.STREAM.INFO.OBJ_CHROMA_SNAPSHOTS")
		// Around the object store API: a consumer on the archive's chunks,
		// and a direct get of a message of the object stream.
		chunks := "$O." + contract.ObjectSnapshots + ".C." + archive.NUID
		cons, err := job.js.OrderedConsumer(short(t), "OBJ_"+contract.ObjectSnapshots, jetstream.OrderedConsumerConfig{FilterSubjects: []string{chunks}})
		if err == nil {
			if _, err = cons.Next(jetstream.FetchMaxWait(denied)); err == nil {
				t.Error("the job read an archive chunk")
			}
		}
		job.wantViolation(t, "Publish", "$JS.API.CONSUMER.CREATE.OBJ_CHROMA_SNAPSHOTS.")
		if _, err := job.nc.Request("$JS.API.DIRECT.GET.OBJ_CHROMA_SNAPSHOTS", []byte(`{"seq":1}`), denied); err == nil {
			t.Error("the job's direct get on the object stream was answered")
		}
		job.wantViolation(t, "Publish", "$JS.API.DIRECT.GET.OBJ_CHROMA_SNAPSHOTS")
	})

	t.Run("cannot act as another job", func(t *testing.T) {
		other := subj.MigrationEvent("dedupe", contract.EventStarted)
		if _, err := job.js.Publish(short(t), other, []byte(`{}`)); err == nil {
			t.Error("the job published another job's event")
		}
		job.wantViolation(t, "Publish", other)
		if n := streamMsgs(t, snap, contract.StreamMigrations); n != 2 {
			t.Errorf("CHROMA_MIGRATIONS holds %d events, want still 2", n)
		}
		if _, err := job.nc.SubscribeSync(subj.Control("dedupe")); err != nil {
			t.Fatal(err)
		}
		job.wantViolation(t, "Subscription", subj.Control("dedupe"))
	})

	t.Run("reads only its own record", func(t *testing.T) {
		kv, err := job.js.KeyValue(ctx, contract.BucketState)
		if err != nil {
			t.Fatalf("the job cannot open %s: %v", contract.BucketState, err)
		}
		if _, err := kv.Get(short(t), contract.OperationKey("op_1")); err == nil || errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Errorf("get of another key: %v, want a refusal", err)
		}
		job.wantViolation(t, "Publish", "$JS.API.DIRECT.GET.KV_CHROMA_STATE.$KV.CHROMA_STATE.op.op_1")
		if _, err := kv.Watch(short(t), "lease.>"); err == nil {
			t.Error("the job watched the leases")
		}
		job.wantViolation(t, "Publish", "$JS.API.CONSUMER.CREATE.KV_CHROMA_STATE.")
		if _, err := job.nc.SubscribeSync("_INBOX.>"); err != nil {
			t.Fatal(err)
		}
		job.wantViolation(t, "Subscription", "_INBOX.>")
	})
}

// A dashboard's user replays the audit stream (an ordered consumer from
// the start, or a durable of its own that it acks) and cannot delete,
// purge or publish to it, nor touch the auditor's consumer.
func TestDeployDashboardPermissions(t *testing.T) {
	url, pw := startSingle(t)
	ctx := t.Context()
	snap := connect(t, url, pw, "snapshotter")
	bootstrap(t, snap)
	ids := auditEvents(t, snap, 5)
	dash := connect(t, url, pw, "dashboard")

	t.Run("replays the audit stream", func(t *testing.T) {
		stream, err := dash.js.Stream(ctx, contract.StreamAudit)
		if err != nil {
			t.Fatalf("stream info: %v", err)
		}
		cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
		if err != nil {
			t.Fatalf("ordered consumer: %v", err)
		}
		if got := fetchIDs(t, cons, len(ids), false); !equal(got, ids) {
			t.Errorf("ordered replay got %q, want %q", got, ids)
		}
		durable, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "grafana", AckPolicy: jetstream.AckExplicitPolicy})
		if err != nil {
			t.Fatalf("durable consumer: %v", err)
		}
		if got := fetchIDs(t, durable, len(ids), true); !equal(got, ids) {
			t.Errorf("durable replay got %q, want %q", got, ids)
		}
		info, err := durable.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.AckFloor.Stream != uint64(len(ids)) {
			t.Errorf("durable's ack floor %d, want %d: the dashboard's acks were refused", info.AckFloor.Stream, len(ids))
		}
	})
	dash.noViolations(t)

	t.Run("cannot delete or purge it", func(t *testing.T) {
		if err := dash.js.DeleteStream(short(t), contract.StreamAudit); err == nil {
			t.Error("the dashboard deleted the audit stream")
		}
		dash.wantViolation(t, "Publish", "$JS.API.STREAM.DELETE.CHROMA_AUDIT")
		stream, err := dash.js.Stream(ctx, contract.StreamAudit)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Purge(short(t)); err == nil {
			t.Error("the dashboard purged the audit stream")
		}
		dash.wantViolation(t, "Publish", "$JS.API.STREAM.PURGE.CHROMA_AUDIT")
		if err := stream.DeleteMsg(short(t), 1); err == nil {
			t.Error("the dashboard deleted an audit event")
		}
		dash.wantViolation(t, "Publish", "$JS.API.STREAM.MSG.DELETE.CHROMA_AUDIT")
	})

	t.Run("cannot publish to it", func(t *testing.T) {
		forged := subj.Audit("snapshotter", "snapshot.delete")
		if _, err := dash.js.Publish(short(t), forged, []byte(`{"type":"chromadb-rollback.v1.audit_event"}`)); err == nil {
			t.Error("the dashboard published an audit event")
		}
		dash.wantViolation(t, "Publish", forged)
	})

	t.Run("cannot touch the auditor's consumer", func(t *testing.T) {
		stream, err := dash.js.Stream(ctx, contract.StreamAudit)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stream.CreateOrUpdateConsumer(short(t), jetstream.ConsumerConfig{Durable: "auditor", AckPolicy: jetstream.AckAllPolicy}); err == nil {
			t.Error("the dashboard made the auditor's consumer")
		}
		dash.wantViolation(t, "Publish", "$JS.API.CONSUMER.CREATE.CHROMA_AUDIT.auditor")
		if _, err := dash.nc.Request("$JS.API.CONSUMER.MSG.NEXT.CHROMA_AUDIT.auditor", []byte(`{"batch":1}`), denied); err == nil {
			t.Error("the dashboard's fetch from the auditor's consumer was answered")
		}
		dash.wantViolation(t, "Publish", "$JS.API.CONSUMER.MSG.NEXT.CHROMA_AUDIT.auditor")
	})

	t.Run("cannot read other streams or replies", func(t *testing.T) {
		if _, err := dash.js.Stream(short(t), contract.StreamMigrations); err == nil {
			t.Error("the dashboard read the migration stream's info")
		}
		dash.wantViolation(t, "Publish", "$JS.API.STREAM.INFO.CHROMA_MIGRATIONS")
		if _, err := dash.nc.SubscribeSync("_INBOX.>"); err != nil {
			t.Fatal(err)
		}
		dash.wantViolation(t, "Subscription", "_INBOX.>")
	})

	if n := streamMsgs(t, snap, contract.StreamAudit); n != uint64(len(ids)) {
		t.Errorf("the audit stream holds %d events, want the %d published", n, len(ids))
	}
}

// An operator calls the API and reads what an export or the nats CLI
// runbook reads, and cannot delete the audit stream, publish audit events
// or commands past the API, or write manifests.
func TestDeployOperatorPermissions(t *testing.T) {
	url, pw := startSingle(t)
	ctx := t.Context()
	snap := connect(t, url, pw, "snapshotter")
	assets := bootstrap(t, snap)
	if _, err := assets.Snapshots.PutBytes(ctx, "snap_1.tar.zst", []byte("an archive")); err != nil {
		t.Fatal(err)
	}
	if _, err := assets.Manifests.Put(ctx, "snap_1", []byte(`{"snapshot_id":"snap_1"}`)); err != nil {
		t.Fatal(err)
	}
	ids := auditEvents(t, snap, 3)
	creates := respond(t, snap, subj.API("snapshot", "create"), `{"snapshot_id":"snap_2","status":"queued"}`)
	rest := connect(t, url, pw, "restorer")
	starts := respond(t, rest, subj.API("rollback", "start"), `{"op_id":"op_1","status":"queued"}`)
	op := connect(t, url, pw, "operator")

	t.Run("calls the API", func(t *testing.T) {
		for _, c := range []struct {
			subject string
			n       *counter
		}{{subj.API("snapshot", "create"), creates}, {subj.API("rollback", "start"), starts}} {
			msg, err := op.nc.Request(c.subject, []byte(`{"snapshot_id":"snap_1","confirm":true}`), 5*time.Second)
			if err != nil || !json.Valid(msg.Data) {
				t.Errorf("operator's request to %s: %v", c.subject, err)
			}
			if c.n.get() != 1 {
				t.Errorf("%s received %d requests, want 1", c.subject, c.n.get())
			}
		}
	})

	t.Run("reads manifests, archives and the audit stream", func(t *testing.T) {
		kv, err := op.js.KeyValue(ctx, contract.BucketManifests)
		if err != nil {
			t.Fatal(err)
		}
		if e, err := kv.Get(ctx, "snap_1"); err != nil || len(e.Value()) == 0 {
			t.Errorf("manifest get: %v", err)
		}
		obs, err := op.js.ObjectStore(ctx, contract.ObjectSnapshots)
		if err != nil {
			t.Fatal(err)
		}
		if data, err := obs.GetBytes(ctx, "snap_1.tar.zst"); err != nil || string(data) != "an archive" {
			t.Errorf("archive get: %q, %v", data, err)
		}
		stream, err := op.js.Stream(ctx, contract.StreamAudit)
		if err != nil {
			t.Fatal(err)
		}
		cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
		if err != nil {
			t.Fatal(err)
		}
		if got := fetchIDs(t, cons, len(ids), false); !equal(got, ids) {
			t.Errorf("audit replay got %q, want %q", got, ids)
		}
	})
	op.noViolations(t)

	t.Run("cannot delete the audit stream", func(t *testing.T) {
		if err := op.js.DeleteStream(short(t), contract.StreamAudit); err == nil {
			t.Error("the operator deleted the audit stream")
		}
		op.wantViolation(t, "Publish", "$JS.API.STREAM.DELETE.CHROMA_AUDIT")
		stream, err := op.js.Stream(ctx, contract.StreamAudit)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Purge(short(t)); err == nil {
			t.Error("the operator purged the audit stream")
		}
		op.wantViolation(t, "Publish", "$JS.API.STREAM.PURGE.CHROMA_AUDIT")
		if _, err := op.js.UpdateStream(short(t), jetstream.StreamConfig{Name: contract.StreamAudit, Subjects: []string{subj.AuditAll()}, MaxAge: time.Second}); err == nil {
			t.Error("the operator changed the audit stream")
		}
		op.wantViolation(t, "Publish", "$JS.API.STREAM.UPDATE.CHROMA_AUDIT")
		if n := streamMsgs(t, snap, contract.StreamAudit); n != uint64(len(ids)) {
			t.Errorf("the audit stream holds %d events, want %d", n, len(ids))
		}
	})

	t.Run("cannot go around the API", func(t *testing.T) {
		for _, subject := range []string{subj.Audit("restorer", "rollback"), subj.Command("rollback"), subj.MigrationEvent("reindex", contract.EventCompleted)} {
			if _, err := op.js.Publish(short(t), subject, []byte(`{}`)); err == nil {
				t.Errorf("the operator published to %s", subject)
			}
			op.wantViolation(t, "Publish", subject)
		}
		kv, err := op.js.KeyValue(ctx, contract.BucketManifests)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(short(t), "snap_1", []byte(`{"forged":true}`)); err == nil {
			t.Error("the operator wrote a manifest")
		}
		op.wantViolation(t, "Publish", "$KV.CHROMA_MANIFESTS.snap_1")
	})
}

// fetchIDs reads n audit events from cons (acking each when ack) and
// returns their ids.
func fetchIDs(t *testing.T, cons jetstream.Consumer, n int, ack bool) []string {
	t.Helper()
	var ids []string
	for len(ids) < n {
		batch, err := cons.Fetch(n-len(ids), jetstream.FetchMaxWait(3*time.Second))
		if err != nil {
			t.Fatalf("fetch: %v", err)
		}
		got := len(ids)
		for m := range batch.Messages() {
			var ev contract.AuditEvent
			if err := json.Unmarshal(m.Data(), &ev); err != nil {
				t.Fatalf("audit message: %v", err)
			}
			ids = append(ids, ev.ID)
			if ack {
				if err := m.DoubleAck(t.Context()); err != nil {
					t.Fatalf("ack: %v", err)
				}
			}
		}
		if err := batch.Error(); err != nil {
			t.Fatalf("fetch: %v", err)
		}
		if len(ids) == got {
			t.Fatalf("fetched %d of %d events", got, n)
		}
	}
	return ids
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestDeployServiceDiscovery: each service's user answers the micro
// discovery of its own service; the operator asks every service
// (health-check checks that each runs), and the watchdog asks the
// restorers (whether one can decrypt an encrypted pre-migration
// snapshot) and the watchdogs (whether the one that paused a job for its
// disk still runs), and nothing else.
func TestDeployServiceDiscovery(t *testing.T) {
	url, pw := startSingle(t)
	answers := map[string]*counter{}
	for user, service := range map[string]string{"snapshotter": "chromadb-snapshotter", "restorer": "chromadb-restorer",
		"watchdog": "chromadb-watchdog", "auditor": "chromadb-auditor"} {
		answers[service] = respond(t, connect(t, url, pw, user), "$SRV.INFO."+service, `{"name":"`+service+`"}`)
	}
	op := connect(t, url, pw, "operator")
	for service, n := range answers {
		msg, err := op.nc.Request("$SRV.INFO."+service, nil, 5*time.Second)
		if err != nil || !json.Valid(msg.Data) || n.get() != 1 {
			t.Errorf("operator asks %s: %v, %d answered", service, err, n.get())
		}
	}
	op.noViolations(t)

	wd := connect(t, url, pw, "watchdog")
	if msg, err := wd.nc.Request("$SRV.INFO.chromadb-restorer", nil, 5*time.Second); err != nil || !json.Valid(msg.Data) {
		t.Errorf("watchdog asks the restorers: %v", err)
	}
	if msg, err := wd.nc.Request("$SRV.INFO.chromadb-watchdog", nil, 5*time.Second); err != nil || !json.Valid(msg.Data) {
		t.Errorf("watchdog asks the watchdogs: %v", err)
	}
	wd.noViolations(t)
	if _, err := wd.nc.RequestWithContext(short(t), "$SRV.INFO.chromadb-snapshotter", nil); err == nil {
		t.Error("the watchdog asked the snapshotters for their info")
	}
	wd.wantViolation(t, "Publish", "$SRV.INFO.chromadb-snapshotter")
}
