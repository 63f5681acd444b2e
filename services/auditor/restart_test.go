package auditor

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
)

// TestAuditRestart: a clean restart keeps the consumer and goes on; a
// restart over a trail that lost entries the consumer had acknowledged
// writes them again from the stream, byte for byte; a trail ahead of the
// stream (the stream was recreated) stops the auditor with what to do.
func TestAuditRestart(t *testing.T) {
	n := testenv.StartNATS(t)
	dir := t.TempDir()
	svc, stop := startAuditor(t, n, Config{DataDir: dir})
	var last uint64
	for i := range 20 {
		last = publish(t, n.JS, event(fmt.Sprintf("r%02d", i), "snapshotter", "snapshot.verify", contract.OutcomeCompleted, time.Now()), "")
	}
	waitWritten(t, svc, last)
	stop()
	path := filepath.Join(dir, contract.AuditTrailFile)
	full, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ci, err := n.JS.Consumer(t.Context(), contract.StreamAudit, DefaultConsumer)
	if err != nil {
		t.Fatal(err)
	}
	created := ci.CachedInfo().Created

	t.Run("clean restart keeps the consumer", func(t *testing.T) {
		svc, stop := startAuditor(t, n, Config{DataDir: dir})
		s := publish(t, n.JS, event("r20", "snapshotter", "snapshot.verify", contract.OutcomeCompleted, time.Now()), "")
		waitWritten(t, svc, s)
		stop()
		ci, err := n.JS.Consumer(t.Context(), contract.StreamAudit, DefaultConsumer)
		if err != nil {
			t.Fatal(err)
		}
		if !ci.CachedInfo().Created.Equal(created) {
			t.Errorf("the consumer was made anew after a clean stop")
		}
		if got := readTrail(t, path); len(got) != 21 || got[20].Seq != s {
			t.Errorf("trail after the restart: %d entries", len(got))
		}
		full, _ = os.ReadFile(path)
	})

	t.Run("lost entries are written again", func(t *testing.T) {
		lines := splitLines(full)
		if err := os.WriteFile(path, join(lines[:12]), 0o640); err != nil {
			t.Fatal(err)
		}
		svc, stop := startAuditor(t, n, Config{DataDir: dir})
		waitFor(t, 10*time.Second, "the lost entries", func() bool { return svc.trail.Head().Lines == 21 })
		got, _ := os.ReadFile(path)
		if !bytes.Equal(got, full) {
			t.Errorf("the trail written again differs from the lost one")
		}
		if rep := verifyNow(t, n.Connect(t)); !rep.OK {
			t.Errorf("verify: %s", rep.Problem)
		}
		stop()
	})

	t.Run("a trail ahead of the stream", func(t *testing.T) {
		n2 := testenv.StartNATS(t) // a new, empty stream
		s, err := New(Config{DataDir: dir}, n2.Connect(t), subj, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		err = s.Run(ctx)
		if err == nil || !strings.Contains(err.Error(), "the stream was recreated") || !strings.Contains(err.Error(), "move the trail aside") {
			t.Errorf("Run over a trail ahead of the stream: %v", err)
		}
	})
}

// TestAuditTrailFile: the file-level guarantees without NATS.
func TestAuditTrailFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, contract.AuditTrailFile)
	tr, err := OpenTrail(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	stored := time.Date(2025, 11, 30, 14, 30, 22, 123456789, time.FixedZone("CET", 3600))
	batch := []contract.AuditTrailEntry{
		NewEntry(1, stored, "chroma.audit.a.b", []byte(`{"id":"x", "note":"<&>"}`)),
		NewEntry(2, stored, "chroma.audit.a.b", []byte("\x00binary")),
		NewEntry(3, stored, "chroma.audit.a.b", nil),
	}
	if err := tr.Append(batch); err != nil {
		t.Fatal(err)
	}
	if err := tr.Append([]contract.AuditTrailEntry{NewEntry(3, stored, "s", []byte("{}"))}); err == nil {
		t.Error("appending a sequence already written succeeded")
	}
	h := tr.Head()
	if h.Lines != 3 || h.FirstSeq != 1 || h.LastSeq != 3 || h.LastHash != batch[2].Hash {
		t.Errorf("head %+v", h)
	}
	if seq, ok := tr.Seen("x"); !ok || seq != 1 {
		t.Errorf("Seen(x) = %d, %v", seq, ok)
	}
	// A second writer (another auditor given the same --data-dir) is
	// refused while this one has the trail open, and nothing is written.
	if tr2, err := OpenTrail(path, nil); err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "another auditor") {
		t.Errorf("second OpenTrail while open: %v; want a refusal naming %s and another auditor", err, path)
		if tr2 != nil {
			tr2.Close()
		}
	}
	if h2 := tr.Head(); h2 != h {
		t.Errorf("head after the refused open %+v, want %+v", h2, h)
	}
	tr.Close()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := splitLines(data)
	for _, want := range []string{`"event":{"id":"x","note":"<&>"}`, `"stored":"2025-11-30T13:30:22.123456789Z"`, `"prev":"` + contract.AuditGenesisHash + `"`} {
		if !bytes.Contains(lines[0], []byte(want)) {
			t.Errorf("line 1 lacks %s:\n%s", want, lines[0])
		}
	}
	if !bytes.Contains(lines[1], []byte(`"raw":"AGJpbmFyeQ=="`)) || bytes.Contains(lines[2], []byte(`"raw"`)) || bytes.Contains(lines[2], []byte(`"event"`)) {
		t.Errorf("raw and empty payloads:\n%s%s", lines[1], lines[2])
	}
	if rep := VerifyFile(path); !rep.OK || rep.Lines != 3 || rep.LastHash != h.LastHash {
		t.Errorf("VerifyFile: %+v", rep)
	}

	// A torn last line is cut when the trail is opened again; the head is
	// as before and appends go on.
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"type":"chromadb-rollback.v1.audit_trail_entry","seq":4,"sto`)
	f.Close()
	if rep := VerifyFile(path); rep.OK || rep.Problems[0].Kind != contract.AuditIncomplete || rep.Problems[0].Line != 4 {
		t.Errorf("VerifyFile of a torn trail: %+v", rep.Problems)
	}
	tr, err = OpenTrail(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if got := tr.Head(); got != h {
		t.Errorf("head after the torn line was cut: %+v, want %+v", got, h)
	}
	if err := tr.Append([]contract.AuditTrailEntry{NewEntry(4, stored, "s", []byte(`{"id":"y"}`))}); err != nil {
		t.Fatal(err)
	}
	if rep := VerifyFile(path); !rep.OK || rep.Lines != 4 {
		t.Errorf("VerifyFile after the cut and an append: %+v", rep)
	}

	// The trail is never appended to behind the auditor's back.
	f, _ = os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString("x\n")
	f.Close()
	err = tr.Append([]contract.AuditTrailEntry{NewEntry(5, stored, "s", nil)})
	if err == nil || !strings.Contains(err.Error(), ErrChanged.Error()) {
		t.Errorf("append to a changed trail: %v", err)
	}
}

// FuzzParseLine: any line is either a valid entry that re-encodes to
// itself or a reported problem; nothing panics.
func FuzzParseLine(f *testing.F) {
	e := NewEntry(7, time.Unix(1700000000, 5), "chroma.audit.a.b", []byte(`{"id":"x","figures":{"n":1}}`))
	line, _ := Chain(&e, contract.AuditGenesisHash)
	f.Add(bytes.TrimSuffix(line, []byte("\n")))
	f.Add([]byte(`{"type":"chromadb-rollback.v1.audit_trail_entry","seq":1}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, decoded, kind, _ := parseLine(b)
		if kind != "" {
			return
		}
		if !decoded {
			t.Fatal("no problem but not decoded")
		}
		again, err := encode(&got)
		if err != nil || !bytes.Equal(bytes.TrimSuffix(again, []byte("\n")), b) {
			t.Fatalf("a line without problems does not re-encode to itself:\n%q\n%q", b, again)
		}
		if h, _ := hashOf(got); h != got.Hash {
			t.Fatalf("a line without problems has a wrong hash")
		}
	})
}

// TestAuditRestartAfterTrailingDuplicate: the newest stream message
// repeats an event id already in the trail, so it was acked and not
// written. A restart then finds the ack floor past the trail's last
// sequence; nothing was lost, and the auditor must not say it was.
func TestAuditRestartAfterTrailingDuplicate(t *testing.T) {
	n := testenv.StartNATS(t)
	dir := t.TempDir()
	svc, stop := startAuditor(t, n, Config{DataDir: dir})
	ev := event("d01", "snapshotter", "snapshot.verify", contract.OutcomeCompleted, time.Now())
	first := publish(t, n.JS, ev, "")
	dup := publish(t, n.JS, ev, "d01-again") // the same event under another Nats-Msg-Id
	waitWritten(t, svc, first)
	waitFor(t, 10*time.Second, "the duplicate to be acked", func() bool {
		ci, err := n.JS.Consumer(t.Context(), contract.StreamAudit, DefaultConsumer)
		return err == nil && ci.CachedInfo().AckFloor.Stream == dup
	})
	stop()

	var logs testenv.SyncBuffer
	s, err := New(Config{DataDir: dir}, n.Connect(t), subj, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	waitFor(t, 10*time.Second, "the consumer", func() bool { return s.consumer() != nil })
	next := publish(t, n.JS, event("d02", "snapshotter", "snapshot.verify", contract.OutcomeCompleted, time.Now()), "")
	waitWritten(t, s, next)
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			t.Errorf("restart after a skipped duplicate logged: %s", l)
		}
	}
	if got := readTrail(t, filepath.Join(dir, contract.AuditTrailFile)); len(got) != 2 || got[1].Seq != next {
		t.Errorf("trail: %d entries, want d01 and d02", len(got))
	}
}

// TestAuditConsumerDeleted: the auditor's durable consumer removed while it
// runs (by hand, or lost with its stream's leader) stops the consume; the
// writer must make it anew and go on, not wait for a restart.
func TestAuditConsumerDeleted(t *testing.T) {
	n := testenv.StartNATS(t)
	svc, _ := startAuditor(t, n, Config{RetryWait: 50 * time.Millisecond})
	s1 := publish(t, n.JS, event("c01", "snapshotter", "snapshot.verify", contract.OutcomeCompleted, time.Now()), "")
	waitWritten(t, svc, s1)
	if err := n.Assets.Audit.DeleteConsumer(t.Context(), DefaultConsumer); err != nil {
		t.Fatal(err)
	}
	s2 := publish(t, n.JS, event("c02", "snapshotter", "snapshot.verify", contract.OutcomeCompleted, time.Now()), "")
	waitWritten(t, svc, s2)
	if rep := verifyNow(t, n.Connect(t)); !rep.OK || rep.Lines != 2 {
		t.Errorf("verify: %+v", rep)
	}
}
