package auditor

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/nats-io/nats.go"
)

// TestAuditQuery: every filter, alone and combined, the limit and paging,
// newest first, and clear errors for bad requests.
func TestAuditQuery(t *testing.T) {
	n := testenv.StartNATS(t)
	svc, _ := startAuditor(t, n, Config{})
	t0 := time.Date(2025, 11, 30, 14, 0, 0, 0, time.UTC)
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	with := func(ev contract.AuditEvent, f func(*contract.AuditEvent)) contract.AuditEvent { f(&ev); return ev }
	evs := []contract.AuditEvent{
		with(event("e1", "snapshotter", "snapshot.create", contract.OutcomeStarted, at(0)), func(e *contract.AuditEvent) { e.SnapshotID = "snap_a" }),
		with(event("e2", "snapshotter", "snapshot.create", contract.OutcomeCompleted, at(1)), func(e *contract.AuditEvent) { e.SnapshotID = "snap_a" }),
		with(event("e3", "restorer", "rollback.plan", contract.OutcomeCompleted, at(2)), func(e *contract.AuditEvent) { e.SnapshotID = "snap_a" }),
		with(event("e4", "restorer", "rollback", contract.OutcomeStarted, at(3)), func(e *contract.AuditEvent) { e.SnapshotID, e.OpID = "snap_a", "op_1" }),
		with(event("e5", "watchdog", "trigger.validation", contract.OutcomeStarted, at(4)), func(e *contract.AuditEvent) {
			e.SnapshotID, e.OpID, e.Figures = "snap_a", "op_rb_job1", map[string]any{"job": "job1", "ratio": 0.9}
		}),
		with(event("e6", "restorer", "rollback", contract.OutcomeCompleted, at(5)), func(e *contract.AuditEvent) { e.SnapshotID, e.OpID = "snap_a", "op_1" }),
		with(event("e7", "snapshotter", "snapshot.delete", contract.OutcomeRejected, at(6)), func(e *contract.AuditEvent) { e.SnapshotID, e.Error = "snap_b", "no such snapshot" }),
		with(event("e8", "watchdog", "migration.started", contract.OutcomeCompleted, at(7)), func(e *contract.AuditEvent) { e.Figures = map[string]any{"job": "job2"} }),
		with(event("e9", "watchdog", "migration.heartbeat", contract.OutcomeCompleted, at(8)), func(e *contract.AuditEvent) { e.Figures = map[string]any{"job": 42} }),
	}
	seq := map[string]uint64{}
	for _, ev := range evs {
		seq[ev.ID] = publish(t, n.JS, ev, "")
	}
	// An event with a top-level job (a newer schema), and a message that is not JSON.
	raw := func(subject, data string) uint64 {
		m := nats.NewMsg(subject)
		m.Data = []byte(data)
		ack, err := n.JS.PublishMsg(t.Context(), m)
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	seq["e10"] = raw("chroma.audit.migration-job.finished", `{"type":"chromadb-rollback.v1.audit_event","id":"e10","time":"2025-11-30T14:09:00Z","service":"migration-job","action":"job.finished","outcome":"completed","job":"job3"}`)
	seq["junk"] = raw("chroma.audit.someone.junk", "not json <at all>")
	waitWritten(t, svc, seq["junk"])
	nc := n.Connect(t)

	ptr := func(t time.Time) *time.Time { return &t }
	cases := []struct {
		name string
		q    contract.AuditQueryRequest
		want []string
	}{
		{"everything, newest first", contract.AuditQueryRequest{}, []string{"junk", "e10", "e9", "e8", "e7", "e6", "e5", "e4", "e3", "e2", "e1"}},
		{"exact action", contract.AuditQueryRequest{Action: "rollback"}, []string{"e6", "e4"}},
		{"action prefix", contract.AuditQueryRequest{Action: "rollback*"}, []string{"e6", "e4", "e3"}},
		{"outcome", contract.AuditQueryRequest{Outcome: contract.OutcomeCompleted}, []string{"e10", "e9", "e8", "e6", "e3", "e2"}},
		{"snapshot", contract.AuditQueryRequest{SnapshotID: "snap_a"}, []string{"e6", "e5", "e4", "e3", "e2", "e1"}},
		{"job in figures", contract.AuditQueryRequest{Job: "job1"}, []string{"e5"}},
		{"job at the top", contract.AuditQueryRequest{Job: "job3"}, []string{"e10"}},
		{"op", contract.AuditQueryRequest{OpID: "op_1"}, []string{"e6", "e4"}},
		{"service", contract.AuditQueryRequest{Service: "watchdog"}, []string{"e9", "e8", "e5"}},
		{"since inclusive, until exclusive", contract.AuditQueryRequest{Since: ptr(at(2)), Until: ptr(at(5))}, []string{"e5", "e4", "e3"}},
		{"combined", contract.AuditQueryRequest{Since: ptr(at(1)), Action: "snapshot*", SnapshotID: "snap_a"}, []string{"e2"}},
		{"nothing matches", contract.AuditQueryRequest{Action: "cleanup"}, []string{}},
		{"limit", contract.AuditQueryRequest{SnapshotID: "snap_a", Limit: 2}, []string{"e6", "e5"}},
		{"next page", contract.AuditQueryRequest{SnapshotID: "snap_a", Limit: 2, BeforeSeq: seq["e5"]}, []string{"e4", "e3"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.q.Envelope = contract.NewEnvelope(contract.TypeAuditQueryRequest)
			var rep contract.AuditQueryReply
			if err := request(t, nc, "query", tc.q, &rep); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range rep.Entries {
				id := eventID(e.Event)
				if e.Raw != nil {
					id = "junk"
				}
				got = append(got, id)
				if e.Seq != seq[id] || e.Line != int(e.Seq) || e.Hash == "" {
					t.Errorf("entry %s: seq %d line %d hash %q; want seq %d on line %d", id, e.Seq, e.Line, e.Hash, seq[id], seq[id])
				}
			}
			if !slices.Equal(got, tc.want) && (len(got) > 0 || len(tc.want) > 0) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
			if rep.Type != contract.TypeAuditQueryReply || rep.TrailLastSeq != seq["junk"] {
				t.Errorf("reply type %q, trail_last_seq %d", rep.Type, rep.TrailLastSeq)
			}
			if tc.q.Limit > 0 {
				if !rep.More || rep.Matched <= tc.q.Limit || rep.NextBeforeSeq != seq[tc.want[len(tc.want)-1]] {
					t.Errorf("limited reply: more %v, matched %d, next_before_seq %d", rep.More, rep.Matched, rep.NextBeforeSeq)
				}
			} else if rep.More || rep.Matched != len(tc.want) {
				t.Errorf("whole reply: more %v, matched %d", rep.More, rep.Matched)
			}
		})
	}

	t.Run("empty request", func(t *testing.T) {
		var rep contract.AuditQueryReply
		if err := request(t, nc, "query", []byte{}, &rep); err != nil || len(rep.Entries) != 11 {
			t.Errorf("empty request: %d entries, %v", len(rep.Entries), err)
		}
	})
	t.Run("the raw message", func(t *testing.T) {
		var rep contract.AuditQueryReply
		if err := request(t, nc, "query", contract.AuditQueryRequest{Limit: 1}, &rep); err != nil {
			t.Fatal(err)
		}
		if e := rep.Entries[0]; string(e.Raw) != "not json <at all>" || e.Event != nil || e.Subject != "chroma.audit.someone.junk" {
			t.Errorf("raw entry: %+v", e)
		}
	})
	t.Run("reply size", func(t *testing.T) {
		rep, _, err := svc.query(contract.AuditQueryRequest{}, 2000)
		if err != nil || len(rep.Entries) == 0 || len(rep.Entries) >= 11 || !rep.More || rep.Matched != 11 ||
			rep.NextBeforeSeq != rep.Entries[len(rep.Entries)-1].Seq {
			t.Errorf("a reply capped at 2000 bytes: %d entries, more %v, matched %d, %v", len(rep.Entries), rep.More, rep.Matched, err)
		}
	})

	bad := []struct {
		name  string
		req   any
		code  int
		field string
		msg   string
	}{
		{"negative limit", contract.AuditQueryRequest{Limit: -1}, 400, "limit", "limit -1"},
		{"limit too big", contract.AuditQueryRequest{Limit: contract.MaxAuditQueryLimit + 1}, 400, "limit", "give 1 to 10000"},
		{"star inside action", contract.AuditQueryRequest{Action: "roll*back"}, 400, "action", "may only end a prefix"},
		{"until before since", contract.AuditQueryRequest{Since: ptr(at(5)), Until: ptr(at(1))}, 400, "until", "is not after since"},
		// A misspelt outcome matched nothing, which read as "none".
		{"unknown outcome", contract.AuditQueryRequest{Outcome: "complete"}, 400, "outcome", `outcome "complete": want one of started, completed, failed, rejected, alert`},
		{"unknown service", contract.AuditQueryRequest{Service: "snapshoter"}, 400, "service", `service "snapshoter": want one of snapshotter, restorer, watchdog, auditor`},
		{"malformed JSON", []byte(`{"limit":`), 400, "", "malformed JSON"},
		{"wrong type", []byte(`{"limit":"ten"}`), 400, "", "malformed JSON"},
		{"too large", []byte(`{"action":"` + strings.Repeat("a", contract.MaxRequestBytes) + `"}`), 413, "", "at most"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			var rep contract.AuditQueryReply
			err := request(t, nc, "query", tc.req, &rep)
			ae, ok := err.(*apiError)
			if !ok || ae.code != tc.code || ae.field != tc.field || !strings.Contains(ae.msg, tc.msg) {
				t.Errorf("got %v; want %d on field %q saying %q", err, tc.code, tc.field, tc.msg)
			}
		})
	}
}

// TestAuditFilterMatchesRawEvents: the filter reads events of any shape
// without failing: mistyped fields read as empty, and a bad time falls
// back to the time the stream stored the event.
func TestAuditFilterMatchesRawEvents(t *testing.T) {
	stored := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	ptr := func(t time.Time) *time.Time { return &t }
	cases := []struct {
		name  string
		event string
		q     contract.AuditQueryRequest
		want  bool
	}{
		{"action prefix", `{"action":"rollback.cancel"}`, contract.AuditQueryRequest{Action: "rollback*"}, true},
		{"prefix is not substring", `{"action":"pre_rollback"}`, contract.AuditQueryRequest{Action: "rollback*"}, false},
		{"bare star matches all", `{"action":"x"}`, contract.AuditQueryRequest{Action: "*"}, true},
		{"mistyped outcome", `{"outcome":5,"action":"a"}`, contract.AuditQueryRequest{Action: "a"}, true},
		{"mistyped outcome does not match", `{"outcome":5}`, contract.AuditQueryRequest{Outcome: "failed"}, false},
		{"bad time uses stored", `{"time":"yesterday"}`, contract.AuditQueryRequest{Since: ptr(stored)}, true},
		{"event time wins", `{"time":"2024-01-01T00:00:00Z"}`, contract.AuditQueryRequest{Since: ptr(stored)}, false},
		{"not an object", `[1,2]`, contract.AuditQueryRequest{Until: ptr(stored.Add(time.Second))}, true},
		{"figures job not a string", `{"figures":{"job":7}}`, contract.AuditQueryRequest{Job: "7"}, false},
		{"top-level job wins", `{"job":"a","figures":{"job":"b"}}`, contract.AuditQueryRequest{Job: "a"}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, _, err := NewFilter(tc.q)
			if err != nil {
				t.Fatal(err)
			}
			e := NewEntry(1, stored, "chroma.audit.x.y", []byte(tc.event))
			if e.Event == nil || !json.Valid(e.Event) {
				t.Fatalf("entry of %s has no event", tc.event)
			}
			if got := f.Match(&e); got != tc.want {
				t.Errorf("Match = %v, want %v", got, tc.want)
			}
		})
	}
}
