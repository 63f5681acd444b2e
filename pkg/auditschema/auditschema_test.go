package auditschema_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/auditschema"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
)

type figs = map[string]any

// event builds an event the way the services do: contract.AuditEvent
// through encoding/json, so nil slices are null and times RFC 3339.
func event(service, action, outcome string, set func(*contract.AuditEvent)) contract.AuditEvent {
	ev := contract.AuditEvent{Envelope: contract.NewEnvelope(contract.TypeAuditEvent), Service: service, Action: action, Outcome: outcome}
	if set != nil {
		set(&ev)
	}
	return ev
}

func ids(ev *contract.AuditEvent) {
	ev.SnapshotID, ev.OpID, ev.Tenant, ev.Database = "snap_20251130T143022Z_9f2c1a3b4d5e", "op_20251130T143022Z_0a1b2c3d4e5f", "acme", "prod"
}

// wd is a watchdog event: its actor and instance are always set.
func wd(action, outcome string, f figs, set func(*contract.AuditEvent)) contract.AuditEvent {
	return event("watchdog", action, outcome, func(ev *contract.AuditEvent) {
		ev.Actor, ev.Reason, ev.Tenant, ev.Database = "watchdog", "because", "acme", "prod"
		ev.Figures = f
		f["instance"] = "watchdog"
		if set != nil {
			set(ev)
		}
	})
}

func rejectedEvent(action, job, name string) contract.AuditEvent {
	return event("watchdog", action, contract.OutcomeRejected, func(ev *contract.AuditEvent) {
		ev.Actor, ev.Error, ev.Reason = "watchdog", "no run of job is known", "migration event rejected: no run of job is known"
		ev.Figures = figs{"subject": "chroma.migration." + job + "." + name, "stream_seq": uint64(7), "job": job, "event": name, "instance": "w1"}
	})
}

var deadline = time.Date(2025, 11, 30, 15, 30, 22, 123456789, time.UTC)

// valid has at least one event per action and outcome the services emit.
var valid = []contract.AuditEvent{
	// snapshotter
	event("snapshotter", "snapshot.create", "rejected", func(ev *contract.AuditEvent) { ev.Error = "name: empty" }),
	event("snapshotter", "snapshot.create", "started", func(ev *contract.AuditEvent) {
		ids(ev)
		ev.Actor, ev.Reason = "ops@example", "before the reindex"
		ev.Figures = figs{"attempt": 1, "collections": []string(nil)}
	}),
	event("snapshotter", "snapshot.create", "started", func(ev *contract.AuditEvent) {
		ids(ev)
		ev.Figures = figs{"attempt": 2, "collections": []string{"a", "b"}}
	}),
	event("snapshotter", "snapshot.create", "completed", func(ev *contract.AuditEvent) {
		ids(ev)
		ev.Figures = figs{"records": int64(9832), "size": int64(28 << 20), "raw_bytes": int64(90 << 20), "collections": 4,
			"consistent": true, "seconds": 3.5, "attempt": 1}
	}),
	event("snapshotter", "snapshot.create", "completed", func(ev *contract.AuditEvent) {
		ids(ev)
		ev.Reason = "collection corpus: 10 records before, 12 after"
		ev.Figures = figs{"records": 12, "size": 100, "raw_bytes": 300, "collections": 1, "consistent": false, "seconds": 0.2, "attempt": 1}
	}),
	event("snapshotter", "snapshot.create", "failed", func(ev *contract.AuditEvent) {
		ids(ev)
		ev.Error = "chroma unavailable"
		ev.Figures = figs{"attempt": 1, "seconds": 0.1}
	}),
	event("snapshotter", "snapshot.verify", "completed", func(ev *contract.AuditEvent) {
		ids(ev)
		ev.Figures = figs{"records": 10, "size": 100}
	}),
	event("snapshotter", "snapshot.verify", "failed", func(ev *contract.AuditEvent) {
		ids(ev)
		ev.Error = "sha256 mismatch"
		ev.Figures = figs{"records": 0, "size": 100}
	}),
	event("snapshotter", "snapshot.delete", "completed", func(ev *contract.AuditEvent) {
		ids(ev)
		ev.Figures = figs{"records": 10, "size": 100}
	}),
	event("snapshotter", "snapshot.delete", "completed", func(ev *contract.AuditEvent) {
		ids(ev)
		ev.OpID, ev.Actor, ev.Reason = "ret_20251201T000000Z_0a1b2c3d4e5f", "retention", "retention"
		ev.Figures = figs{"records": 10, "size": 100, "age_seconds": 8 * 86400.0, "older_than_seconds": 7 * 86400.0, "trigger": "schedule"}
	}),
	event("snapshotter", "snapshot.delete", "failed", func(ev *contract.AuditEvent) {
		ids(ev)
		ev.OpID, ev.Reason, ev.Error = "ret_x", "retention", "purge manifest: timeout"
		ev.Figures = figs{"records": 10, "size": 100, "age_seconds": 8 * 86400.0, "older_than_seconds": 7 * 86400.0, "trigger": "request"}
	}),
	event("snapshotter", "snapshot.cleanup", "completed", func(ev *contract.AuditEvent) {
		ev.OpID, ev.Actor, ev.Reason = "ret_x", "retention", "daily retention of 2025-12-01"
		ev.Figures = figs{"dry_run": false, "trigger": "schedule", "older_than_seconds": 604800.0, "scanned": 5, "kept": 3, "failed": 0,
			"deleted": 2, "bytes_freed": int64(200)}
	}),
	event("snapshotter", "snapshot.cleanup", "completed", func(ev *contract.AuditEvent) {
		ev.OpID, ev.Tenant, ev.Database = "ret_y", "acme", "prod"
		ev.Figures = figs{"dry_run": true, "trigger": "request", "older_than_seconds": 60.0, "scanned": 5, "kept": 3, "failed": 0,
			"would_delete": 2, "would_free": int64(200)}
	}),
	event("snapshotter", "snapshot.cleanup", "failed", func(ev *contract.AuditEvent) {
		ev.OpID, ev.Error = "ret_z", "nothing deleted: list manifests: timeout"
		ev.Figures = figs{"dry_run": false, "trigger": "schedule", "older_than_seconds": 604800.0}
	}),
	event("snapshotter", "snapshot.cleanup", "failed", func(ev *contract.AuditEvent) {
		ev.OpID, ev.Error = "ret_z", "1 expired snapshots could not be deleted"
		ev.Figures = figs{"dry_run": false, "trigger": "schedule", "older_than_seconds": 604800.0, "scanned": 5, "kept": 3, "failed": 1,
			"deleted": 1, "bytes_freed": int64(100)}
	}),
	event("snapshotter", "snapshot.cleanup", "rejected", func(ev *contract.AuditEvent) { ev.Error = "older_than: bad" }),
	event("snapshotter", "snapshot.keep", "completed", func(ev *contract.AuditEvent) {
		ids(ev)
		ev.Actor, ev.Figures = "ops", figs{"keep": true, "changed": true}
	}),
	event("snapshotter", "snapshot.keep", "rejected", func(ev *contract.AuditEvent) { ev.Error = "keep is required" }),
	event("snapshotter", "snapshot.delete", "rejected", func(ev *contract.AuditEvent) { ev.Actor, ev.Error = "ops", "no snapshot with id or name \"x\"" }),
	event("snapshotter", "snapshot.import", "rejected", func(ev *contract.AuditEvent) {
		ev.Error = "object is not a staging name"
		ev.Figures = figs{"object": "x", "file": "old.tar.gz"}
	}),
	event("snapshotter", "snapshot.import", "started", func(ev *contract.AuditEvent) {
		ids(ev)
		ev.Figures = figs{"object": "import/1", "file": "old.tar.gz", "size": 10, "format": ""}
	}),
	event("snapshotter", "snapshot.import", "failed", func(ev *contract.AuditEvent) {
		ids(ev)
		ev.Error = "collections.json: duplicate id"
		ev.Figures = figs{"object": "import/1", "file": "old.tar.gz", "size": 10, "seconds": 0.5}
	}),
	event("snapshotter", "snapshot.import", "completed", func(ev *contract.AuditEvent) {
		ids(ev)
		ev.Figures = figs{"format": "seed", "file": "old.tar.gz", "source_size": 10, "source_sha256": strings.Repeat("ab", 32),
			"manifest_checked": true, "records": 5, "collections": 1, "size": 20, "seconds": 0.3, "warnings": 0}
	}),
	// restorer
	event("restorer", "rollback", "rejected", func(ev *contract.AuditEvent) {
		ev.Actor, ev.SnapshotID, ev.Error = "ops", "pre_migration", "confirmation missing"
		ev.Figures = figs{"write_records": int64(10), "mode": "full"}
	}),
	event("restorer", "rollback", "started", func(ev *contract.AuditEvent) {
		ids(ev)
		ev.Figures = figs{"attempt": 1, "mode": "partial", "write_records": int64(10), "in_place": false, "drop_extra": false, "job": "nightly"}
	}),
	event("restorer", "rollback", "completed", func(ev *contract.AuditEvent) {
		ids(ev)
		ev.Figures = figs{"attempt": 1, "status": "completed", "records_written": int64(10), "seconds": 1.5, "collections": 2, "verified": true,
			"safety_snapshot_id": "snap_x", "records_per_second": 1100.5, "cosine_max_abs_diff": 1e-8, "metadata_floats_off": int64(3),
			"chroma_url": "http://chroma-b:8000"}
	}),
	event("restorer", "rollback", "failed", func(ev *contract.AuditEvent) {
		ev.OpID, ev.Error = "op_x", "cancelled by ops"
		ev.Figures = figs{"attempt": 1, "status": "cancelled", "records_written": 0, "seconds": 0.5, "collections": 0, "verified": false}
	}),
	event("restorer", "rollback.plan", "rejected", func(ev *contract.AuditEvent) { ev.Error = "no snapshot" }),
	event("restorer", "rollback.cancel", "completed", func(ev *contract.AuditEvent) { ids(ev); ev.Reason = "cancel requested" }),
	event("restorer", "rollback.cancel", "rejected", func(ev *contract.AuditEvent) { ev.OpID, ev.Error = "op x", "no operation" }),
	event("restorer", "rollback.step", "completed", func(ev *contract.AuditEvent) {
		ids(ev)
		ev.Reason, ev.Figures = "fence raised", figs{"paused_jobs": []string(nil)}
	}),
	event("restorer", "rollback.cleanup", "completed", func(ev *contract.AuditEvent) {
		ids(ev)
		ev.Reason = `"corpus.v1" holds what it held before this rollback; staging collection "corpus.v1__rb_1a2b3c4d" deleted`
		ev.Figures = figs{"collections": 1, "attempts": 3, "seconds": 95.5}
	}),
	event("restorer", "rollback.step", "completed", func(ev *contract.AuditEvent) {
		ids(ev)
		ev.Reason, ev.Figures = "safety snapshot taken", figs{"safety_snapshot_id": "snap_y"}
	}),
	event("restorer", "rollback.step", "completed", func(ev *contract.AuditEvent) {
		ids(ev)
		ev.Reason, ev.Figures = "collection restored", figs{"collection": "corpus.v1", "target": "corpus.v1", "action": "replace", "how": "stage", "records": 10, "job": "nightly"}
	}),
	event("restorer", "rollback.step", "completed", func(ev *contract.AuditEvent) {
		ids(ev)
		ev.Reason, ev.Figures = "extra collections dropped", figs{"dropped": []string{"tmp"}}
	}),
	// watchdog
	wd("migration.started", "started", figs{"job": "nightly", "run": uint64(3), "deadline": deadline, "time_limit_seconds": 3600.0,
		"take_snapshot": true, "collections": []string(nil)}, nil),
	wd("migration.started", "started", figs{"job": "nightly", "run": uint64(4), "deadline": deadline, "time_limit_seconds": 3600.0,
		"take_snapshot": false, "collections": []string{"docs"}, "snapshot": "before_nightly"}, func(ev *contract.AuditEvent) {
		ev.SnapshotID = "snap_20251130T143022Z_9f2c1a3b4d5e" // pinned
	}),
	rejectedEvent("migration.started", "nightly", "started"),
	rejectedEvent("migration.heartbeat", "nightly", "heartbeat"),
	rejectedEvent("migration.event", "", ""),
	rejectedEvent("migration.event", "nightly", "progress"),
	wd("migration.validation", "completed", figs{"job": "nightly", "run": 3, "valid_chunks": int64(90), "total_chunks": int64(100),
		"ratio": 0.9, "threshold": 0.95, "failed_collections": []string{"corpus"}}, nil),
	rejectedEvent("migration.validation", "nightly", "validation"),
	wd("migration.completed", "completed", figs{"job": "nightly", "run": 3, "status": "rolled_back", "ratio": 0.9, "threshold": 0.95},
		func(ev *contract.AuditEvent) { ev.OpID = "op_rb_nightly_3_validation" }),
	rejectedEvent("migration.completed", "nightly", "completed"),
	wd("migration.failed", "failed", figs{"job": "nightly", "run": 3, "status": "failed"}, func(ev *contract.AuditEvent) { ev.Error = "oom" }),
	rejectedEvent("migration.failed", "nightly", "failed"),
	wd("migration.rolled_back", "completed", figs{"job": "nightly", "run": 3, "trigger": "validation", "records_written": int64(10), "verified": true},
		func(ev *contract.AuditEvent) { ids(ev) }),
	wd("snapshot.pre_migration", "started", figs{"job": "nightly", "run": 3}, func(ev *contract.AuditEvent) { ids(ev) }),
	wd("snapshot.pre_migration", "completed", figs{"job": "nightly", "run": 3}, func(ev *contract.AuditEvent) { ids(ev) }),
	wd("snapshot.pre_migration", "alert", figs{"job": "nightly", "run": 3}, func(ev *contract.AuditEvent) { ev.Error = "snapshotter refused" }),
	wd("trigger.validation", "started", figs{"job": "nightly", "run": 3, "trigger": "validation", "automatic_rollback": true,
		"ratio": 0.9, "threshold": 0.95, "valid_chunks": 90, "total_chunks": 100, "failed_collections": []string{"corpus"}, "collections": []string{"corpus"}},
		func(ev *contract.AuditEvent) { ids(ev) }),
	wd("trigger.time", "started", figs{"job": "nightly", "run": 3, "trigger": "time", "automatic_rollback": true,
		"deadline": deadline, "time_limit_seconds": 1.0, "late_seconds": 0.05}, func(ev *contract.AuditEvent) { ids(ev) }),
	wd("trigger.failure", "started", figs{"job": "nightly", "run": 3, "trigger": "failure", "automatic_rollback": false, "error": ""},
		func(ev *contract.AuditEvent) { ids(ev) }),
	wd("alert.rollback", "alert", figs{"job": "nightly", "run": 3, "trigger": "validation", "automatic_rollback": false, "ratio": 0.9,
		"threshold": 0.95, "valid_chunks": 90, "total_chunks": 100}, nil),
	wd("alert.rollback", "alert", figs{"job": "nightly", "run": 3, "trigger": "time", "records_written": 0, "verified": false},
		func(ev *contract.AuditEvent) { ev.Error = "rollback op_x failed: boom" }),
	wd("alert.connectivity", "alert", figs{"chroma_url": "http://127.0.0.1:8000", "threshold": 3, "interval_seconds": 10.0,
		"consecutive_failures": 3, "error": "connection refused"}, nil),
	wd("alert.connectivity", "completed", figs{"chroma_url": "http://127.0.0.1:8000", "threshold": 3, "interval_seconds": 10.0,
		"failures_before": 0, "alert_seconds": 12.5}, nil),
	wd("alert.disk", "alert", figs{"free_bytes": map[string]uint64{"/data": 1 << 20}, "min_free_bytes": uint64(100 << 20),
		"paths": []string{"/data"}, "low_paths": []string{"/data (1.0 MiB free)"}}, nil),
	wd("alert.disk", "completed", figs{"free_bytes": map[string]uint64{"/data": 1 << 30}, "min_free_bytes": uint64(100 << 20),
		"paths": []string{"/data"}, "alert_seconds": 60.0}, nil),
	wd("alert.jetstream_storage", "alert", figs{"near_share": 0.9, "account_store_bytes": uint64(95), "account_max_store_bytes": int64(100),
		"stream_shares": map[string]float64{}, "near_limit": []string{"account storage 95 B of 100 B (95%)"}}, nil),
	wd("alert.jetstream_storage", "completed", figs{"near_share": 0.9, "account_store_bytes": uint64(5), "account_max_store_bytes": int64(-1),
		"stream_shares": map[string]float64{"CHROMA_AUDIT": 0.1}, "alert_seconds": 1.0}, nil),
	wd("alert.archive_missing", "alert", figs{"object": "snap_1.tar.zst", "name": "nightly", "size": int64(4096)}, func(ev *contract.AuditEvent) {
		ev.SnapshotID, ev.Tenant, ev.Database = "snap_1", "acme", "prod"
	}),
	wd("control.pause", "completed", figs{"job": "nightly", "run": 3, "command": "pause"}, nil),
	wd("control.resume", "completed", figs{"job": "nightly", "run": 3, "command": "resume"}, nil),
	wd("control.abort", "completed", figs{"job": "nightly", "run": 3, "command": "abort"}, func(ev *contract.AuditEvent) { ev.OpID = "op_rb_nightly_3_time" }),
}

func marshal(t *testing.T, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestValidEvents(t *testing.T) {
	for i, ev := range valid {
		t.Run(fmt.Sprintf("%d_%s_%s", i, ev.Action, ev.Outcome), func(t *testing.T) {
			if err := auditschema.Validate(marshal(t, ev)); err != nil {
				t.Errorf("valid event rejected: %v", err)
			}
		})
	}
}

// TestEveryActionHasExamples: a schema without a valid example here is
// untested, and an example without a schema is an unknown action.
func TestEveryActionHasExamples(t *testing.T) {
	seen := map[string]bool{}
	for _, ev := range valid {
		seen[ev.Action] = true
	}
	actions := auditschema.Actions()
	if len(actions) < 20 {
		t.Fatalf("%d actions, want every action's schema: %v", len(actions), actions)
	}
	for _, a := range actions {
		if !seen[a] {
			t.Errorf("action %s has a schema but no valid example in this test", a)
		}
	}
}

// TestSchemaFiles: every file is named after its action, titled with it,
// has the $id it is published under, and pins service and action.
func TestSchemaFiles(t *testing.T) {
	names, err := filepath.Glob("v1/*.schema.json")
	if err != nil || len(names) == 0 {
		t.Fatalf("no schema files: %v", err)
	}
	var actions []string
	for _, name := range names {
		file := filepath.Base(name)
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Schema     string         `json:"$schema"`
			ID         string         `json:"$id"`
			Title      string         `json:"title"`
			Desc       string         `json:"description"`
			Ref        string         `json:"$ref"`
			Properties map[string]any `json:"properties"`
		}
		if err := json.Unmarshal(data, &doc); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if doc.Schema != "https://json-schema.org/draft/2020-12/schema" || doc.ID != auditschema.BaseURL+"v1/"+file || doc.Desc == "" {
			t.Errorf("%s: $schema %q, $id %q, description %q", file, doc.Schema, doc.ID, doc.Desc)
		}
		if file == auditschema.EnvelopeFile {
			if doc.Title != contract.TypeAuditEvent {
				t.Errorf("%s: title %q, want %q", file, doc.Title, contract.TypeAuditEvent)
			}
			continue
		}
		action := strings.TrimSuffix(file, ".schema.json")
		actions = append(actions, action)
		constOf := func(p string) any {
			m, _ := doc.Properties[p].(map[string]any)
			return m["const"]
		}
		if doc.Title != action || doc.Ref != auditschema.EnvelopeFile || constOf("action") != action || constOf("service") == nil {
			t.Errorf("%s: title %q, $ref %q, action %v, service %v", file, doc.Title, doc.Ref, constOf("action"), constOf("service"))
		}
		if got, ok := auditschema.Schema(action); !ok || string(got) != string(data) {
			t.Errorf("Schema(%q) does not return the file", action)
		}
	}
	slices.Sort(actions)
	if got := auditschema.Actions(); !slices.Equal(got, actions) {
		t.Errorf("Actions() = %v, want %v", got, actions)
	}
	if _, err := fs.Stat(os.DirFS("."), "v1/"+auditschema.EnvelopeFile); err != nil {
		t.Error(err)
	}
}

// mutate returns a valid event's JSON changed by f.
func mutate(t *testing.T, ev contract.AuditEvent, f func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(marshal(t, ev), &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	return marshal(t, m)
}

// example returns the first valid example of action and outcome.
func example(t *testing.T, action, outcome string) contract.AuditEvent {
	t.Helper()
	for _, ev := range valid {
		if ev.Action == action && ev.Outcome == outcome {
			return ev
		}
	}
	t.Fatalf("no valid example of %s %s", action, outcome)
	return contract.AuditEvent{}
}

func figures(m map[string]any) map[string]any { return m["figures"].(map[string]any) }

func TestInvalidEvents(t *testing.T) {
	created := example(t, "snapshot.create", "completed")
	rollback := example(t, "rollback", "completed")
	trig := example(t, "trigger.validation", "started")
	tests := []struct {
		name string
		data []byte
		want error  // a sentinel, or nil for a schema violation
		says string // in the error
	}{
		{"not JSON", []byte(`{"type":`), nil, "decode audit event"},
		{"trailing data", append(marshal(t, created), []byte(`{}`)...), nil, "decode audit event"},
		{"not an object", []byte(`[1]`), nil, "not a JSON object"},
		{"unknown type", mutate(t, created, func(m map[string]any) { m["type"] = "chromadb-rollback.v2.audit_event" }), auditschema.ErrUnknownType, "v2"},
		{"no type", mutate(t, created, func(m map[string]any) { delete(m, "type") }), auditschema.ErrUnknownType, ""},
		{"unknown action", mutate(t, created, func(m map[string]any) { m["action"] = "snapshot.retention" }), auditschema.ErrUnknownAction, "v1/snapshot.retention.schema.json"},
		{"no action", mutate(t, created, func(m map[string]any) { delete(m, "action") }), auditschema.ErrUnknownAction, ""},
		{"outcome not allowed for the action", mutate(t, created, func(m map[string]any) { m["outcome"] = "alert" }), nil, "outcome"},
		{"unknown outcome", mutate(t, created, func(m map[string]any) { m["outcome"] = "done" }), nil, "outcome"},
		{"wrong service", mutate(t, created, func(m map[string]any) { m["service"] = "restorer" }), nil, "service"},
		{"unknown field", mutate(t, created, func(m map[string]any) { m["user"] = "x" }), nil, "user"},
		{"unknown figure", mutate(t, created, func(m map[string]any) { figures(m)["bytes"] = 1 }), nil, "bytes"},
		{"missing figure of the outcome", mutate(t, created, func(m map[string]any) { delete(figures(m), "records") }), nil, "records"},
		{"figure of the wrong type", mutate(t, created, func(m map[string]any) { figures(m)["records"] = "9832" }), nil, "records"},
		{"negative count", mutate(t, created, func(m map[string]any) { figures(m)["size"] = -1 }), nil, "size"},
		{"count with a fraction", mutate(t, created, func(m map[string]any) { figures(m)["records"] = 1.5 }), nil, "records"},
		{"completed without its snapshot id", mutate(t, created, func(m map[string]any) { delete(m, "snapshot_id") }), nil, "snapshot_id"},
		{"not consistent without a reason", mutate(t, created, func(m map[string]any) { figures(m)["consistent"] = false }), nil, "reason"},
		{"collections as a list on completed", mutate(t, created, func(m map[string]any) { figures(m)["collections"] = []string{"a"} }), nil, "collections"},
		{"rejected without error", mutate(t, example(t, "snapshot.create", "rejected"), func(m map[string]any) { delete(m, "error") }), nil, "error"},
		{"rejected snapshot.create with figures", mutate(t, example(t, "snapshot.create", "rejected"), func(m map[string]any) { m["figures"] = map[string]any{"attempt": 1} }), nil, ""},
		{"retention delete without its run", mutate(t, example(t, "snapshot.delete", "failed"), func(m map[string]any) { delete(m, "op_id") }), nil, "op_id"},
		{"operator delete that failed", mutate(t, example(t, "snapshot.delete", "failed"), func(m map[string]any) { m["reason"] = "cleanup" }), nil, "reason"},
		{"dry run that deleted", mutate(t, example(t, "snapshot.cleanup", "completed"), func(m map[string]any) { figures(m)["dry_run"] = true }), nil, "would_delete"},
		{"completed cleanup with failures", mutate(t, example(t, "snapshot.cleanup", "completed"), func(m map[string]any) { figures(m)["failed"] = 1 }), nil, "failed"},
		{"bad time", mutate(t, created, func(m map[string]any) { m["time"] = "yesterday" }), nil, "time"},
		{"empty id", mutate(t, created, func(m map[string]any) { m["id"] = "" }), nil, "id"},
		{"empty actor", mutate(t, created, func(m map[string]any) { m["actor"] = "" }), nil, "actor"},
		{"verified rollback that is not", mutate(t, rollback, func(m map[string]any) { figures(m)["verified"] = false }), nil, "verified"},
		{"unknown rollback step", mutate(t, example(t, "rollback.step", "completed"), func(m map[string]any) { m["reason"] = "coffee break" }), nil, "reason"},
		{"figures on rollback.plan", mutate(t, example(t, "rollback.plan", "rejected"), func(m map[string]any) { m["figures"] = map[string]any{} }), nil, "figures"},
		{"watchdog event without instance", mutate(t, trig, func(m map[string]any) { delete(figures(m), "instance") }), nil, "instance"},
		{"trigger figure of another trigger", mutate(t, trig, func(m map[string]any) { figures(m)["trigger"] = "time" }), nil, "trigger"},
		{"validation trigger without its ratio", mutate(t, trig, func(m map[string]any) { delete(figures(m), "ratio") }), nil, "ratio"},
		{"ratio over 1", mutate(t, trig, func(m map[string]any) { figures(m)["ratio"] = 1.5 }), nil, "ratio"},
		{"bad deadline", mutate(t, example(t, "migration.started", "started"), func(m map[string]any) { figures(m)["deadline"] = "soon" }), nil, "deadline"},
		{"abort without its rollback", mutate(t, example(t, "control.abort", "completed"), func(m map[string]any) { delete(m, "op_id") }), nil, "op_id"},
		{"missing archive without its snapshot", mutate(t, example(t, "alert.archive_missing", "alert"), func(m map[string]any) { delete(m, "snapshot_id") }), nil, "snapshot_id"},
		{"missing archive without its object", mutate(t, example(t, "alert.archive_missing", "alert"), func(m map[string]any) { delete(figures(m), "object") }), nil, "object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := auditschema.Validate(tt.data)
			if err == nil {
				t.Fatalf("Validate(%s) = nil, want an error", tt.data)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("error %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.says) {
				t.Errorf("error %q does not mention %q", err, tt.says)
			}
		})
	}
}

func FuzzValidate(f *testing.F) {
	for _, ev := range valid {
		data, _ := json.Marshal(ev)
		f.Add(data)
	}
	f.Add([]byte(`{"type":"chromadb-rollback.v1.audit_event","action":"rollback","figures":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := auditschema.Validate(data); err == nil {
			var ev contract.AuditEvent
			if err := json.Unmarshal(data, &ev); err != nil {
				t.Fatalf("valid event does not decode as an AuditEvent: %v", err)
			}
			if ev.Type != contract.TypeAuditEvent || ev.Action == "" || ev.Outcome == "" {
				t.Fatalf("valid event without type, action or outcome: %s", data)
			}
		}
	})
}

// TestEnumsMatchContract: the outcomes and services an audit query accepts
// (contract.AuditOutcomes, contract.AuditServices) are the envelope
// schema's, so a query never refuses what an event may carry.
func TestEnumsMatchContract(t *testing.T) {
	data, err := os.ReadFile("v1/" + auditschema.EnvelopeFile)
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Properties map[string]struct {
			Enum []string `json:"enum"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(data, &s); err != nil {
		t.Fatal(err)
	}
	for field, want := range map[string][]string{"outcome": contract.AuditOutcomes, "service": contract.AuditServices} {
		if got := s.Properties[field].Enum; !slices.Equal(got, want) {
			t.Errorf("%s: the schema allows %v, the contract %v", field, got, want)
		}
	}
}
