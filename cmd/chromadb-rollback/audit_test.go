package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/chromadb-rollback/chromadb-rollback/services/auditor"
)

// auditStack is embedded JetStream with a running auditor and one
// publisher per service, as in `serve`.
type auditStack struct {
	t   *testing.T
	n   *testenv.NATS
	svc *auditor.Service
	cli cli
	pub map[string]*bus.Auditor
}

func startAuditStack(t *testing.T) *auditStack {
	t.Helper()
	n := testenv.StartNATS(t)
	svc, err := auditor.New(auditor.Config{DataDir: t.TempDir()}, n.Connect(t), contract.Subjects{Prefix: "chroma"}, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	runUntilCleanup(t, svc.Run)
	select {
	case <-svc.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("auditor not ready")
	}
	s := &auditStack{t: t, n: n, svc: svc, cli: cli{t: t, url: n.URL}, pub: map[string]*bus.Auditor{}}
	for _, name := range []string{"snapshotter", "restorer", "watchdog"} {
		s.pub[name] = bus.NewAuditor(n.JS, contract.Subjects{Prefix: "chroma"}, name, nil)
	}
	return s
}

// emit publishes ev as service does and waits until the trail holds it.
func (s *auditStack) emit(service string, ev contract.AuditEvent) {
	s.t.Helper()
	ev.Envelope = contract.NewEnvelope(contract.TypeAuditEvent)
	if err := s.pub[service].Emit(s.t.Context(), ev); err != nil {
		s.t.Fatal(err)
	}
	s.waitTrail()
}

// waitTrail waits until the trail is written through the stream's end.
func (s *auditStack) waitTrail() {
	s.t.Helper()
	info, err := s.n.Assets.Audit.Info(s.t.Context())
	if err != nil {
		s.t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for s.svc.Stats().LastSeq < info.State.LastSeq {
		if time.Now().After(deadline) {
			s.t.Fatalf("trail not written through seq %d", info.State.LastSeq)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (s *auditStack) seed() {
	s.emit("snapshotter", contract.AuditEvent{Action: "snapshot.create", Outcome: contract.OutcomeCompleted, Actor: "ops@example", SnapshotID: "snap_1"})
	s.emit("restorer", contract.AuditEvent{Action: "rollback", Outcome: contract.OutcomeStarted, Actor: "ops@example", SnapshotID: "snap_1", OpID: "op_1", Reason: "bad migration"})
	s.emit("watchdog", contract.AuditEvent{Action: "trigger.validation", Outcome: contract.OutcomeStarted, SnapshotID: "snap_1", OpID: "op_rb_job1",
		Figures: map[string]any{"job": "job1", "ratio": 0.9}})
	s.emit("restorer", contract.AuditEvent{Action: "rollback", Outcome: contract.OutcomeCompleted, Actor: "ops@example", SnapshotID: "snap_1", OpID: "op_1"})
}

// TestCLIAuditLog: audit-log prints the trail newest first with every
// filter, as text or JSON lines, pages through long results, refuses bad
// flags with exit 2, and --follow tails new events live.
func TestCLIAuditLog(t *testing.T) {
	s := startAuditStack(t)
	s.seed()
	c := s.cli

	code, stdout, stderr := c.run("audit-log")
	if code != exitOK {
		t.Fatalf("audit-log: exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[0], "TIME") {
		t.Fatalf("audit-log printed %d lines:\n%s", len(lines), stdout)
	}
	for i, want := range []string{"rollback  ", "trigger.validation", "rollback  ", "snapshot.create"} {
		if !strings.Contains(lines[i+1], want) {
			t.Errorf("row %d (newest first) lacks %q: %s", i+1, want, lines[i+1])
		}
	}
	for _, want := range []string{"restorer", "completed", "ops@example", "snapshot=snap_1 op=op_1"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("newest row lacks %q: %s", want, lines[1])
		}
	}
	if !strings.Contains(lines[2], "job=job1") || !strings.Contains(lines[3], "reason=bad migration") {
		t.Errorf("rows lack the job or the reason:\n%s", stdout)
	}

	code, stdout, _ = c.run("audit-log", "--action", "rollback*", "--json")
	var got []contract.AuditQueryEntry
	for _, l := range strings.Split(strings.TrimSpace(stdout), "\n") {
		var e contract.AuditQueryEntry
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("--json line %q: %v", l, err)
		}
		got = append(got, e)
	}
	if code != exitOK || len(got) != 2 || got[0].Seq != 4 || got[1].Seq != 2 || got[0].Line != 4 || got[0].Hash == "" {
		t.Errorf("audit-log --action 'rollback*' --json: exit %d, %+v", code, got)
	}

	filters := []struct {
		args []string
		rows int
		has  string
	}{
		{[]string{"--job", "job1"}, 1, "trigger.validation"},
		{[]string{"--snapshot", "snap_1", "--outcome", "started"}, 2, "rollback"},
		{[]string{"--service", "snapshotter"}, 1, "snapshot.create"},
		{[]string{"--op", "op_1", "--action", "rollback"}, 2, "op=op_1"},
		{[]string{"--since", "1h", "--until", time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}, 4, "snapshot.create"},
		{[]string{"--until", "2020-01-01"}, 0, "no matching audit entries"},
	}
	for _, f := range filters {
		code, stdout, stderr := c.run(append([]string{"audit-log"}, f.args...)...)
		rows := strings.Count(stdout, "\n") - 1
		if f.rows == 0 {
			rows = 0
		}
		if code != exitOK || rows != f.rows || !strings.Contains(stdout, f.has) {
			t.Errorf("audit-log %v: exit %d, %d rows (want %d with %q):\n%s%s", f.args, code, rows, f.rows, f.has, stdout, stderr)
		}
	}
	code, stdout, stderr = c.run("audit-log", "--outcome", "completed", "--limit", "1")
	if code != exitOK || strings.Count(stdout, "\n") != 2 || !strings.Contains(stderr, "showing the newest 1 of 2 matching entries") {
		t.Errorf("audit-log --limit 1: exit %d\n%s%s", code, stdout, stderr)
	}

	// The CLI pages: a limit above one query's largest is no usage error.
	code, stdout, stderr = c.run("audit-log", "--outcome", "completed", "--limit", "20000")
	if code != exitOK || strings.Count(stdout, "\n") != 3 {
		t.Errorf("audit-log --limit 20000: exit %d\n%s%s", code, stdout, stderr)
	}

	bad := []struct {
		args []string
		msg  string
	}{
		{[]string{"--since", "yesterday"}, "--since"},
		{[]string{"--until", "-5m"}, "negative"},
		{[]string{"--action", "roll*back"}, "--action"},
		{[]string{"--since", "2025-11-30", "--until", "2025-11-01"}, "--until"},
		{[]string{"--limit", "0"}, "--limit"},
		{[]string{"--follow", "--until", "1h"}, "exclude each other"},
	}
	for _, b := range bad {
		code, _, stderr := c.run(append([]string{"audit-log"}, b.args...)...)
		if code != exitUsage || !strings.Contains(stderr, b.msg) {
			t.Errorf("audit-log %v: exit %d, stderr %q; want %d naming %q", b.args, code, stderr, exitUsage, b.msg)
		}
	}

	t.Run("follow", func(t *testing.T) {
		var out, errb testenv.SyncBuffer
		ctx, cancel := context.WithCancel(t.Context())
		exit := make(chan int, 1)
		go func() {
			exit <- run(ctx, []string{"--nats-url", s.n.URL, "audit-log", "--follow", "--action", "rollback*"}, strings.NewReader(""), &out, &errb)
		}()
		waitText := func(what string) {
			t.Helper()
			deadline := time.Now().Add(20 * time.Second)
			for !strings.Contains(out.String(), what) {
				if time.Now().After(deadline) {
					cancel()
					t.Fatalf("follow output lacks %q:\n%s%s", what, out.String(), errb.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		waitText("op=op_1")
		// Events that arrive now: one filtered out, one printed.
		s.emit("snapshotter", contract.AuditEvent{Action: "snapshot.delete", Outcome: contract.OutcomeCompleted, SnapshotID: "snap_gone"})
		s.emit("restorer", contract.AuditEvent{Action: "rollback.cancel", Outcome: contract.OutcomeCompleted, OpID: "op_2"})
		waitText("op=op_2")
		// Its consumer goes from the stream soon after it ends, not five
		// minutes later.
		stream, err := s.n.JS.Stream(t.Context(), contract.StreamAudit)
		if err != nil {
			t.Fatal(err)
		}
		for ci := range stream.ListConsumers(t.Context()).Info() {
			if ci.Config.Durable == "" && (ci.Config.InactiveThreshold <= 0 || ci.Config.InactiveThreshold > 30*time.Second) {
				t.Errorf("consumer %s (%s) stays %s after it is idle; want at most 30s", ci.Name, ci.Config.Description, ci.Config.InactiveThreshold)
			}
		}
		cancel()
		if code := <-exit; code != exitOK {
			t.Errorf("follow ended with exit %d: %s", code, errb.String())
		}
		text := out.String()
		rows := strings.Split(strings.TrimSpace(text), "\n")
		if len(rows) != 4 || !strings.Contains(rows[1], "started") || !strings.Contains(rows[2], "completed") || !strings.Contains(rows[3], "rollback.cancel") {
			t.Errorf("follow prints oldest first, then new events:\n%s", text)
		}
		if strings.Contains(text, "snap_gone") || strings.Count(text, "op=op_2") != 1 {
			t.Errorf("follow printed a filtered or repeated event:\n%s", text)
		}
	})

	t.Run("pages", func(t *testing.T) {
		for i := range 1100 {
			if _, err := s.n.JS.PublishAsync(fmt.Sprintf("chroma.audit.bulk.bulk_%d", i%3),
				[]byte(fmt.Sprintf(`{"type":"chromadb-rollback.v1.audit_event","id":"bulk-%04d","service":"bulk","action":"bulk.load","outcome":"completed"}`, i))); err != nil {
				t.Fatal(err)
			}
		}
		<-s.n.JS.PublishAsyncComplete()
		s.waitTrail()
		code, stdout, stderr := c.run("audit-log", "--action", "bulk*", "--limit", "1050", "--json")
		lines := strings.Split(strings.TrimSpace(stdout), "\n")
		if code != exitOK || len(lines) != 1050 || !strings.Contains(stderr, "of 1100 matching") {
			t.Fatalf("audit-log --limit 1050: exit %d, %d lines, stderr %q", code, len(lines), stderr)
		}
		prev := uint64(1 << 62)
		for i, l := range lines {
			var e contract.AuditQueryEntry
			if err := json.Unmarshal([]byte(l), &e); err != nil || e.Seq >= prev {
				t.Fatalf("line %d: seq %d after %d (%v)", i, e.Seq, prev, err)
			}
			prev = e.Seq
		}
	})
}

// TestCLIAuditVerify: audit verify exits 0 on a sound trail, 3 naming the
// entry on a tampered one (also offline with --file), 1 without an auditor.
func TestCLIAuditVerify(t *testing.T) {
	s := startAuditStack(t)
	s.seed()
	c := s.cli

	code, stdout, stderr := c.run("audit", "verify")
	if code != exitOK || !strings.HasPrefix(stdout, "OK: trail ") || !strings.Contains(stdout, "4 entries, seq 1 to 4") || !strings.Contains(stdout, "4 checked: 4 match") {
		t.Fatalf("audit verify: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, _ = c.run("audit", "verify", "--json")
	var rep contract.AuditVerifyReport
	if code != exitOK || json.Unmarshal([]byte(stdout), &rep) != nil || !rep.OK || rep.Lines != 4 || rep.Stream == nil || rep.Stream.Matched != 4 {
		t.Errorf("audit verify --json: exit %d, %s", code, stdout)
	}

	path := s.svc.TrailPath()
	pristine, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	copyPath := t.TempDir() + "/trail-copy.jsonl"
	if err := os.WriteFile(copyPath, pristine, 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, _ = c.run("audit", "verify", "--file", copyPath)
	if code != exitOK || !strings.Contains(stdout, "offline") {
		t.Errorf("audit verify --file of a sound copy: exit %d\n%s", code, stdout)
	}

	tampered := bytes.Replace(pristine, []byte(`"reason":"bad migration"`), []byte(`"reason":"routine work"`), 1)
	if bytes.Equal(tampered, pristine) {
		t.Fatal("nothing to tamper with")
	}
	for _, p := range []string{path, copyPath} {
		if err := os.WriteFile(p, tampered, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	code, stdout, stderr = c.run("audit", "verify")
	if code != exitVerification || !strings.Contains(stderr, "audit trail verification failed: line 2, seq 2: hash_mismatch") ||
		!strings.HasPrefix(stdout, "FAILED") || !strings.Contains(stdout, "stream_mismatch") {
		t.Errorf("audit verify of an edited trail: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, _ = c.run("audit", "verify", "--json")
	if code != exitVerification || json.Unmarshal([]byte(stdout), &rep) != nil || rep.OK || rep.Problems[0].Line != 2 {
		t.Errorf("audit verify --json of an edited trail: exit %d\n%s", code, stdout)
	}
	code, _, stderr = c.run("audit", "verify", "--file", copyPath)
	if code != exitVerification || !strings.Contains(stderr, "line 2, seq 2: hash_mismatch") {
		t.Errorf("audit verify --file of an edited copy: exit %d, %s", code, stderr)
	}

	// audit-log still shows the edited trail, and warns that it cannot be trusted.
	code, stdout, stderr = c.run("audit-log")
	if code != exitOK || strings.Count(stdout, "\n") != 5 || !strings.Contains(stdout, "reason=routine work") ||
		!strings.Contains(stderr, "warning: trail changed under the auditor") || !strings.Contains(stderr, "run audit verify") {
		t.Errorf("audit-log of an edited trail: exit %d\n%s%s", code, stdout, stderr)
	}

	other := testenv.StartNATS(t) // no auditor there
	code, _, stderr = cli{t: t, url: other.URL}.run("audit", "verify")
	if code != exitFailed || !strings.Contains(stderr, "no service answers on chroma.api.audit.verify") {
		t.Errorf("audit verify without an auditor: exit %d, %s", code, stderr)
	}
	if code, _, stderr = c.run("audit", "verify", "extra"); code != exitUsage {
		t.Errorf("audit verify with an argument: exit %d, %s", code, stderr)
	}
}

// TestAuditRow checks the text row of one entry: a rollback step names its
// collection, and a long reason is cut between characters.
func TestAuditRow(t *testing.T) {
	long := strings.Repeat("é", 130)
	ev, err := json.Marshal(contract.AuditEvent{
		Service: "restorer", Action: "rollback.step", Outcome: "completed", Actor: "watchdog",
		SnapshotID: "snap_1", OpID: "op_1", Reason: "collection restored " + long,
		Figures: map[string]any{"collection": "corpus.v1", "records": 500, "job": "nightly"},
	})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	writeAuditRow(&buf, &contract.AuditTrailEntry{Seq: 7, Stored: time.Now(), Event: ev})
	row := buf.String()
	for _, want := range []string{"snapshot=snap_1 op=op_1 job=nightly collection=corpus.v1 reason=collection restored é", "...\n"} {
		if !strings.Contains(row, want) {
			t.Errorf("row lacks %q: %s", want, row)
		}
	}
	if !utf8.ValidString(row) {
		t.Errorf("row is not valid UTF-8 (a character was cut): %q", row)
	}
	if n := utf8.RuneCountInString(row[strings.Index(row, "reason=")+len("reason="):]); n != 121 {
		t.Errorf("reason printed as %d characters with the newline, want 117 and \"...\" and the newline", n)
	}
}

// TestAuditRowControlCharacters: an event's text (the request's actor and
// reason, anything published on the audit subjects) cannot break the row
// into a forged one, nor send escape sequences to the terminal.
func TestAuditRowControlCharacters(t *testing.T) {
	ev, err := json.Marshal(contract.AuditEvent{
		Service: "restorer", Action: "rollback", Outcome: "completed",
		Actor:  "mallory\n2025-11-30T14:40:02Z  1  restorer  rollback  completed  admin",
		Reason: "fixed\x1b[2K\x1b[1A\r\u2028done\u009b",
	})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	writeAuditRow(&buf, &contract.AuditTrailEntry{Seq: 7, Stored: time.Now(), Event: ev})
	row := buf.String()
	if strings.Count(row, "\n") != 1 || !strings.HasSuffix(row, "\n") {
		t.Errorf("row is not one line: %q", row)
	}
	if strings.ContainsFunc(strings.TrimSuffix(row, "\n"), func(r rune) bool { return unicode.IsControl(r) || r == '\u2028' }) {
		t.Errorf("row holds control characters: %q", row)
	}
	for _, want := range []string{"mallory 2025-11-30T14:40:02Z", `reason=fixed\x1b[2K\x1b[1A  done\u009b`} {
		if !strings.Contains(row, want) {
			t.Errorf("row lacks %q: %q", want, row)
		}
	}
}

// TestCLIAuditVerifyFileUnreadable: audit verify --file of a path that is
// no file (a typo, a directory) fails with exit 1 saying so and that
// nothing was verified, not exit 3 ("verification failed"), which reads as
// a trail tampered with.
func TestCLIAuditVerifyFileUnreadable(t *testing.T) {
	c := cli{t: t, url: "nats://127.0.0.1:1"} // --file needs no NATS
	dir := t.TempDir()
	for _, tc := range []struct{ path, want string }{
		{filepath.Join(dir, "no-such-trail.jsonl"), "no such file or directory"},
		{dir, "is a directory"},
	} {
		code, stdout, stderr := c.run("audit", "verify", "--file", tc.path)
		if code != exitFailed || !strings.Contains(stderr, tc.want) || !strings.Contains(stderr, "nothing was verified") ||
			strings.Contains(stdout+stderr, "verification failed") || strings.Contains(stdout, "FAILED") {
			t.Errorf("audit verify --file %s: exit %d\n%s%s", tc.path, code, stdout, stderr)
		}
		code, stdout, _ = c.run("audit", "verify", "--file", tc.path, "--json")
		var e cliErrorBody
		if code != exitFailed || json.Unmarshal([]byte(stdout), &e) != nil || e.ExitCode != exitFailed || !strings.Contains(e.Error, tc.want) {
			t.Errorf("audit verify --file %s --json: exit %d, %s", tc.path, code, stdout)
		}
	}
}

// TestCLIAuditLogSnapshotName: every other command takes a snapshot's id
// or name, but events carry the id, so audit-log --snapshot NAME found only
// the refused requests that gave the name, silently, as if that were the
// snapshot's history. It now warns, saying what to use; an id is quiet.
func TestCLIAuditLogSnapshotName(t *testing.T) {
	s := startAuditStack(t)
	s.seed()
	c := s.cli
	code, _, stderr := c.run("audit-log", "--snapshot", "pre_migration")
	if code != exitOK || !strings.Contains(stderr, `warning: --snapshot "pre_migration" is not a snapshot id`) || !strings.Contains(stderr, "snapshot info") {
		t.Errorf("audit-log --snapshot NAME: exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = c.run("audit-log", "--snapshot", "snap_1")
	if code != exitOK || strings.Contains(stderr, "warning") {
		t.Errorf("audit-log --snapshot ID: exit %d, stderr %q", code, stderr)
	}
}
