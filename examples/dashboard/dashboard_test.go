package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
)

var (
	day1 = time.Date(2025, 11, 30, 14, 30, 22, 0, time.UTC)
	day2 = time.Date(2025, 12, 1, 9, 0, 0, 0, time.UTC)
)

// emitter publishes audit events the way the services do (bus.Auditor).
type emitter struct {
	t *testing.T
	n *testenv.NATS
}

func (e emitter) emit(service string, at time.Time, ev contract.AuditEvent) {
	e.t.Helper()
	ev.Envelope = contract.Envelope{Type: contract.TypeAuditEvent, ID: contract.NewID(""), Time: at}
	a := bus.NewAuditor(e.n.JS, contract.Subjects{Prefix: contract.DefaultPrefix}, service, slog.New(slog.DiscardHandler))
	if err := a.Emit(e.t.Context(), ev); err != nil {
		e.t.Fatal(err)
	}
}

// seed publishes day 1's events: a snapshot, an automatic rollback after
// a validation trigger, a failed manual rollback, an alert, two rejected
// snapshots whose errors differ only by an id, and one event of an action
// without a schema.
func (e emitter) seed() {
	e.emit("snapshotter", day1, contract.AuditEvent{Action: "snapshot.create", Outcome: "completed", SnapshotID: "snap_1", OpID: "op_1",
		Tenant: "acme", Database: "prod", Figures: map[string]any{"records": 300, "size": 1000, "raw_bytes": 3000, "collections": 2,
			"consistent": true, "seconds": 1.5, "attempt": 1}})
	wd := func(f map[string]any) map[string]any { f["instance"] = "wd"; return f }
	e.emit("watchdog", day1, contract.AuditEvent{Action: "trigger.validation", Outcome: "started", Actor: "watchdog", Reason: "ratio 0.9",
		OpID: "op_rb_nightly_3_validation", Tenant: "acme", Database: "prod", Figures: wd(map[string]any{"job": "nightly", "run": 3,
			"trigger": "validation", "automatic_rollback": true, "ratio": 0.9, "threshold": 0.95, "valid_chunks": 90, "total_chunks": 100})})
	e.emit("restorer", day1, contract.AuditEvent{Action: "rollback", Outcome: "completed", Actor: "watchdog", OpID: "op_rb_nightly_3_validation",
		SnapshotID: "snap_1", Tenant: "acme", Database: "prod", Figures: map[string]any{"attempt": 1, "status": "completed",
			"records_written": 300, "seconds": 2.0, "collections": 2, "verified": true, "job": "nightly"}})
	e.emit("restorer", day1, contract.AuditEvent{Action: "rollback", Outcome: "failed", Actor: "ops", OpID: "op_2",
		Error: "restored data does not match snapshot snap_1: collection corpus: 3 records differ", Figures: map[string]any{"attempt": 1,
			"status": "failed", "records_written": 20, "seconds": 1.0, "collections": 1, "verified": false}})
	e.emit("watchdog", day1, contract.AuditEvent{Action: "alert.connectivity", Outcome: "alert", Actor: "watchdog", Reason: "Chroma down",
		Figures: wd(map[string]any{"chroma_url": "http://chroma:8000", "threshold": 3, "interval_seconds": 10, "consecutive_failures": 3,
			"error": "connection refused"})})
	for _, id := range []string{"snap_20251130T143022Z_9f2c1a3b4d5e", "snap_20251130T150000Z_000000000001"} {
		e.emit("snapshotter", day1, contract.AuditEvent{Action: "snapshot.create", Outcome: "rejected", Actor: "ops",
			Error: "snapshot " + id + " is being deleted"})
	}
	e.emit("snapshotter", day1, contract.AuditEvent{Action: "snapshot.teleport", Outcome: "completed"})
}

func (e emitter) day2Rollback(op string) {
	e.emit("restorer", day2, contract.AuditEvent{Action: "rollback", Outcome: "completed", Actor: "ops", OpID: op, SnapshotID: "snap_1",
		Tenant: "acme", Database: "prod", Figures: map[string]any{"attempt": 1, "status": "completed", "records_written": 100,
			"seconds": 1.0, "collections": 1, "verified": true}})
}

// dash runs the program in-process and returns its exit code and output.
func dash(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(t.Context(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func figures(t *testing.T, args ...string) *Stats {
	t.Helper()
	code, out, errs := dash(t, append(args, "--json")...)
	if code != exitOK {
		t.Fatalf("dashboard %q: exit %d: %s", args, code, errs)
	}
	s := NewStats()
	if err := json.Unmarshal([]byte(out), s); err != nil {
		t.Fatalf("decode %s: %v", out, err)
	}
	return s
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestDashboard: the durable dashboard counts every event once across
// runs, a lost position (durable consumer removed) recounts nothing, and a
// replay from the start with an ordered consumer gives the same figures
// without leaving state behind.
func TestDashboard(t *testing.T) {
	n := testenv.StartNATS(t)
	e := emitter{t: t, n: n}
	e.seed()
	state := filepath.Join(t.TempDir(), "state.json")
	durable := []string{"--nats-url", n.URL, "--state", state, "--durable", "ops_board"}

	s := figures(t, durable...)
	if s.Events != 8 || s.LastSeq != 8 || s.Invalid != 1 {
		t.Errorf("events %d through %d, %d invalid; want 8 through 8, 1 invalid (the action without a schema)", s.Events, s.LastSeq, s.Invalid)
	}
	if got, want := jsonOf(t, s.Rollbacks), `{"2025-11-30":{"completed":1,"failed":1,"automatic":1,"records":320}}`; got != want {
		t.Errorf("rollbacks per day %s, want %s", got, want)
	}
	if got, want := jsonOf(t, s.Snapshots), `{"2025-11-30":{"completed":1,"failed":0,"records":300}}`; got != want {
		t.Errorf("snapshots per day %s, want %s", got, want)
	}
	if s.Triggers["validation"] != 1 || s.Alerts["connectivity"] != 1 || len(s.Triggers)+len(s.Alerts) != 2 {
		t.Errorf("triggers %v, alerts %v", s.Triggers, s.Alerts)
	}
	wantFailures := map[string]int{
		"snapshot.create rejected: snapshot <id> is being deleted":                                         2,
		"rollback failed: restored data does not match snapshot <id>: collection corpus: 3 records differ": 1,
		"alert.connectivity alert: Chroma down":                                                            1,
	}
	if got, want := jsonOf(t, s.Failures), jsonOf(t, wantFailures); got != want {
		t.Errorf("failures by reason %s, want %s", got, want)
	}
	if !s.First.Equal(day1) || !s.Last.Equal(day1) {
		t.Errorf("first %s, last %s; want %s", s.First, s.Last, day1)
	}

	// A second run resumes: only the new events are read and added.
	e.day2Rollback("op_3")
	s = figures(t, durable...)
	if s.Events != 9 || s.Rollbacks["2025-12-01"] == nil || s.Rollbacks["2025-12-01"].Completed != 1 || s.Rollbacks["2025-11-30"].Completed != 1 {
		t.Errorf("after resuming: %d events, rollbacks %s", s.Events, jsonOf(t, s.Rollbacks))
	}
	cons, err := n.JS.Consumer(t.Context(), contract.StreamAudit, "ops_board")
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.NumPending != 0 || info.NumAckPending != 0 || info.AckFloor.Stream != 9 {
		t.Errorf("durable consumer: %d pending, %d unacknowledged, ack floor %d; want 0, 0, 9", info.NumPending, info.NumAckPending, info.AckFloor.Stream)
	}

	// The server forgets the position (the consumer is removed, as after a
	// crash before the acks): everything is delivered again and nothing is
	// counted twice.
	if err := n.JS.DeleteConsumer(t.Context(), contract.StreamAudit, "ops_board"); err != nil {
		t.Fatal(err)
	}
	again := figures(t, durable...)
	if got, want := jsonOf(t, again), jsonOf(t, s); got != want {
		t.Errorf("after redelivery the figures changed:\n%s\nwant\n%s", got, want)
	}

	// Replay: the same figures from the stream alone, no state, no consumer.
	replayState := filepath.Join(t.TempDir(), "unused.json")
	r := figures(t, "--nats-url", n.URL, "--replay", "--state", replayState, "--durable", "unused")
	if got, want := jsonOf(t, r), jsonOf(t, s); got != want {
		t.Errorf("replay figures:\n%s\nwant\n%s", got, want)
	}
	if _, err := os.Stat(replayState); !os.IsNotExist(err) {
		t.Errorf("replay wrote a state file: %v", err)
	}
	if _, err := n.JS.Consumer(t.Context(), contract.StreamAudit, "unused"); err == nil {
		t.Error("replay created a durable consumer")
	}

	// The text report.
	code, out, errs := dash(t, "--nats-url", n.URL, "--replay")
	if code != exitOK {
		t.Fatalf("text report: exit %d: %s", code, errs)
	}
	for _, want := range []string{
		"9 audit events through stream sequence 9, 2025-11-30T14:30:22Z to 2025-12-01T09:00:00Z; 1 not matching their schema",
		"rollbacks per day (UTC)", "triggers fired: validation 1", "alerts raised: connectivity 1",
		"2  snapshot.create rejected: snapshot <id> is being deleted",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(out, "2025-12-01") || !strings.Contains(out, "320") {
		t.Errorf("report lacks the days or records:\n%s", out)
	}
}

// TestDashboardFollow: with --follow the dashboard keeps reading, prints
// the figures as new events arrive, and prints them once more when stopped.
func TestDashboardFollow(t *testing.T) {
	for _, mode := range []string{"--replay", "--durable=follower"} {
		t.Run(mode, func(t *testing.T) {
			n := testenv.StartNATS(t)
			e := emitter{t: t, n: n}
			e.day2Rollback("op_1")
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			var out, errb testenv.SyncBuffer
			done := make(chan int, 1)
			go func() {
				done <- run(ctx, []string{"--nats-url", n.URL, mode, "--state", filepath.Join(t.TempDir(), "s.json"),
					"--follow", "--interval", "100ms"}, &out, &errb)
			}()
			waitFor := func(want string) {
				t.Helper()
				deadline := time.Now().Add(10 * time.Second)
				for !strings.Contains(out.String(), want) {
					if time.Now().After(deadline) {
						t.Fatalf("no %q in the output:\n%s%s", want, out.String(), errb.String())
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
			waitFor("1 audit events through stream sequence 1")
			e.day2Rollback("op_2")
			waitFor("2 audit events through stream sequence 2")
			cancel()
			select {
			case code := <-done:
				if code != exitOK {
					t.Errorf("exit %d: %s", code, errb.String())
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the dashboard did not stop")
			}
		})
	}
}

func TestDashboardUsage(t *testing.T) {
	n := testenv.StartNATS(t)
	for _, args := range [][]string{
		{"--durable", "a.b"},
		{"--state", ""},
		{"--follow", "--interval", "0s"},
		{"extra"},
		{"--no-such-flag"},
	} {
		if code, _, errs := dash(t, append([]string{"--nats-url", n.URL}, args...)...); code != exitUsage || errs == "" {
			t.Errorf("%q: exit %d (%q), want %d with a message", args, code, errs, exitUsage)
		}
	}
	if code, _, errs := dash(t, "--nats-url", n.URL, "--stream", "NO_SUCH", "--replay"); code != exitError || !strings.Contains(errs, "no stream NO_SUCH") {
		t.Errorf("missing stream: exit %d, %q", code, errs)
	}
	if code, _, _ := dash(t, "-h"); code != exitOK {
		t.Errorf("-h: exit %d, want %d", code, exitOK)
	}
}
