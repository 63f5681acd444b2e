package watchdog_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
)

// TestMalformedEventsRejected: every malformed or unknown event is audited
// as rejected with its reason and never crashes the service, which then
// still records a good run and answers its status.
func TestMalformedEventsRejected(t *testing.T) {
	e := newEnv(t, false)
	e.watchdog(t, e.fast("wd"))
	body := func(typ, job string, extra map[string]any) []byte {
		m := map[string]any{"type": typ, "id": contract.NewID("ev_"), "time": time.Now().UTC(), "job": job}
		for k, v := range extra {
			m[k] = v
		}
		b, _ := json.Marshal(m)
		return b
	}
	valid := map[string]any{"tenant": "acme", "database": "prod", "snapshot_id": "snap_x"}
	cases := []struct {
		name, subject string
		data          []byte
		reason        string
	}{
		{"unknown event", "chroma.migration.j1.bogus", []byte(`{}`), `unknown migration event "bogus"`},
		{"no event token", "chroma.migration.onlyjob", []byte(`{}`), "is not chroma.migration.<job>.<event>"},
		{"dotted event", "chroma.migration.j1.b.started", []byte(`{}`), `unknown migration event "b.started"`},
		{"not JSON", "chroma.migration.j1.started", []byte(`not json`), "malformed JSON"},
		{"wrong type", "chroma.migration.j1.started", body(contract.TypeMigrationCompleted, "j1", valid), "type"},
		{"job mismatch", "chroma.migration.j1.started", body(contract.TypeMigrationStarted, "j2", valid), `job "j2" in the body`},
		{"no tenant", "chroma.migration.j1.started", body(contract.TypeMigrationStarted, "j1", map[string]any{"snapshot_id": "s"}), "needs tenant and database"},
		{"no snapshot", "chroma.migration.j1.started", body(contract.TypeMigrationStarted, "j1", map[string]any{"tenant": "a", "database": "b"}), "snapshot_id, or take_snapshot"},
		{"bad ratio", "chroma.migration.j1.validation", body(contract.TypeMigrationValidation, "j1", map[string]any{"valid_chunks": 5, "total_chunks": 3}), "valid_chunks (5) <= total_chunks (3)"},
		// Absent, valid_chunks would read as 0: a total loss.
		{"no valid_chunks", "chroma.migration.j1.validation", body(contract.TypeMigrationValidation, "j1", map[string]any{"total_chunks": 100}), "valid_chunks is missing"},
		{"misspelt valid_chunks", "chroma.migration.j1.validation", body(contract.TypeMigrationValidation, "j1", map[string]any{"valid_chunk": 99, "total_chunks": 100}), "valid_chunks is missing"},
		{"no total_chunks", "chroma.migration.j1.validation", body(contract.TypeMigrationValidation, "j1", map[string]any{"valid_chunks": 0}), "total_chunks is missing"},
		{"unknown run", "chroma.migration.ghost.validation", body(contract.TypeMigrationValidation, "ghost", map[string]any{"valid_chunks": 1, "total_chunks": 3}), `no run of job "ghost"`},
		{"unknown run heartbeat", "chroma.migration.ghost.heartbeat", body(contract.TypeMigrationHeartbeat, "ghost", nil), `no run of job "ghost"`},
		{"job not a key", "chroma.migration.j@1.started", body(contract.TypeMigrationStarted, "j@1", valid), "cannot name a state key"},
		{"too large", "chroma.migration.j1.started", []byte(`{"pad":"` + strings.Repeat("x", 1<<20) + `"}`), "at most"},
	}
	for _, c := range cases {
		e.publishRaw(t, c.subject, c.data)
	}
	// A second started while the first run is in progress is refused too.
	e.publish(t, "busy", contract.EventStarted, "", started("acme", "prod", "snap_x", time.Hour))
	e.publish(t, "busy", contract.EventStarted, "", started("acme", "prod", "snap_y", time.Hour))
	// A record that is not a record must not block the events behind it.
	if _, err := e.nats.Assets.State.Put(t.Context(), contract.MigrationKey("broken"), []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	e.publish(t, "broken", contract.EventHeartbeat, "", contract.MigrationEvent{Phase: "copy"})

	deadline := time.Now().Add(20 * time.Second)
	var rejected []auditEntry
	for time.Now().Before(deadline) {
		rejected = find(e.audit(t), func(a auditEntry) bool { return a.Outcome == contract.OutcomeRejected })
		if len(rejected) >= len(cases)+2 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(rejected) != len(cases)+2 {
		t.Fatalf("%d rejected events, want %d: %s", len(rejected), len(cases)+2, mustJSON(t, rejected))
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := rejected[i]
			if a.Service != "watchdog" || !strings.Contains(a.Error, c.reason) || figure(a, "subject") != c.subject {
				t.Errorf("rejected event %q on %s; want the reason to contain %q", a.Error, figure(a, "subject"), c.reason)
			}
		})
	}
	if last := rejected[len(cases)]; !strings.Contains(last.Error, "already has a run in progress") || last.Action != "migration.started" {
		t.Errorf("second started: %q (%s)", last.Error, last.Action)
	}
	if last := rejected[len(cases)+1]; !strings.Contains(last.Error, "unreadable migration record migration.broken") || !strings.Contains(last.Error, "nats kv del") {
		t.Errorf("event of a broken record: %q", last.Error)
	}
	rec, _ := e.record(t, "busy")
	if rec.SnapshotID != "snap_x" {
		t.Errorf("the refused started event changed the run: %s", mustJSON(t, rec))
	}

	// Still working: a good run is recorded and the status answers.
	e.publish(t, "good", contract.EventStarted, "", started("acme", "prod", "snap_x", time.Hour))
	e.waitRecord(t, "good", 10*time.Second, "recorded", func(r contract.MigrationRecord) bool { return r.Status == contract.MigrationRunning })
	if rep := e.status(t); len(rep.Migrations) != 2 || rep.Watchdog != "wd" {
		t.Errorf("status: %s", mustJSON(t, rep))
	}
	// The status needs no request (`nats req chroma.api.status ''`), but
	// one that is not JSON is refused rather than ignored.
	for body, want := range map[string]string{``: `"migrations"`, `{}`: `"migrations"`, `garbage`: "malformed JSON"} {
		msg, err := e.nats.Conn.Request(e.subj.API("status"), []byte(body), 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		refused := msg.Header.Get("Nats-Service-Error-Code") == "400"
		if !strings.Contains(string(msg.Data), want) || refused != (want == "malformed JSON") {
			t.Errorf("status with body %q: %s %s, want %s", body, msg.Header.Get("Nats-Service-Error-Code"), msg.Data, want)
		}
	}
}
