package auditor

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/nats-io/nats.go"
)

// splitLines splits a trail into its lines, newlines kept.
func splitLines(b []byte) [][]byte {
	var out [][]byte
	for _, l := range bytes.SplitAfter(b, []byte("\n")) {
		if len(l) > 0 {
			out = append(out, bytes.Clone(l))
		}
	}
	return out
}

func join(lines [][]byte) []byte { return bytes.Join(lines, nil) }

// rechain re-hashes lines from index i on, as a careful forger would.
func rechain(t *testing.T, lines [][]byte, from int) {
	t.Helper()
	prev := contract.AuditGenesisHash
	for i := range lines {
		var e contract.AuditTrailEntry
		if err := json.Unmarshal(lines[i], &e); err != nil {
			t.Fatal(err)
		}
		if i >= from {
			l, err := Chain(&e, prev)
			if err != nil {
				t.Fatal(err)
			}
			lines[i] = l
		}
		prev = e.Hash
	}
}

// TestAuditVerifyDetectsTampering is acceptance 3: editing, deleting,
// swapping, inserting or truncating trail lines makes verify fail and
// name the entry (line and stream sequence) and what is wrong. A careful
// forger who recomputes the chain is caught by the stream comparison.
func TestAuditVerifyDetectsTampering(t *testing.T) {
	n := testenv.StartNATS(t)
	svc, _ := startAuditor(t, n, Config{})
	base := time.Date(2025, 11, 30, 14, 0, 0, 0, time.UTC)
	seqs := []uint64{0} // seqs[i] is line i's sequence (1-based lines)
	for i := 1; i <= 12; i++ {
		ev := event(fmt.Sprintf("ev-%02d", i), "snapshotter", "snapshot.create", contract.OutcomeCompleted, base.Add(time.Duration(i)*time.Minute))
		ev.SnapshotID = fmt.Sprintf("snap_%02d", i)
		seqs = append(seqs, publish(t, n.JS, ev, ""))
	}
	// The same event again under another Nats-Msg-Id: the stream stores it,
	// the trail does not.
	dup := event("ev-03", "snapshotter", "snapshot.create", contract.OutcomeCompleted, base)
	dupSeq := publish(t, n.JS, dup, "resent-ev-03")
	if dupSeq == 0 {
		t.Fatal("the re-sent event was not stored")
	}
	waitFor(t, 10*time.Second, "the duplicate to be passed", func() bool { return svc.Stats().Duplicates == 1 })
	waitWritten(t, svc, seqs[12])

	nc := n.Connect(t)
	rep := verifyNow(t, nc)
	if !rep.OK || rep.Lines != 12 || rep.LastSeq != seqs[12] || rep.Stream == nil {
		t.Fatalf("pristine trail: %+v", rep)
	}
	if s := rep.Stream; s.Checked != 13 || s.Matched != 12 || s.Duplicates != 1 || s.Missing+s.Mismatched+s.Pending != 0 {
		t.Errorf("pristine stream check: %+v, want 13 checked, 12 matched, 1 duplicate", *s)
	}
	// The consumer the check read the stream with goes from it soon after,
	// not five minutes later (a list of consumers showed one per check).
	stream, err := n.JS.Stream(t.Context(), contract.StreamAudit)
	if err != nil {
		t.Fatal(err)
	}
	for ci := range stream.ListConsumers(t.Context()).Info() {
		if ci.Config.Durable == "" && (ci.Config.InactiveThreshold <= 0 || ci.Config.InactiveThreshold > 30*time.Second) {
			t.Errorf("consumer %s, which verify made, stays %s after it is idle; want at most 30s", ci.Name, ci.Config.InactiveThreshold)
		}
	}

	path := svc.TrailPath()
	pristine, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		tamper func(lines [][]byte) [][]byte
		line   int
		seq    uint64
		kind   string
	}{
		{"edit a line", func(l [][]byte) [][]byte {
			l[4] = bytes.Replace(l[4], []byte(`"outcome":"completed"`), []byte(`"outcome":"failed"`), 1)
			return l
		}, 5, seqs[5], contract.AuditHashMismatch},
		{"edit a line and recompute the chain", func(l [][]byte) [][]byte {
			l[4] = bytes.Replace(l[4], []byte(`"snap_05"`), []byte(`"snap_99"`), 1)
			rechain(t, l, 4)
			return l
		}, 5, seqs[5], contract.AuditStreamMismatch},
		{"reformat a line", func(l [][]byte) [][]byte {
			l[6] = bytes.Replace(l[6], []byte(`"seq":`), []byte(`"seq": `), 1)
			return l
		}, 7, seqs[7], contract.AuditNotCanonical},
		{"delete a line", func(l [][]byte) [][]byte {
			return append(l[:4:4], l[5:]...)
		}, 5, seqs[6], contract.AuditChainBroken},
		{"delete the first line", func(l [][]byte) [][]byte {
			return l[1:]
		}, 1, seqs[2], contract.AuditChainBroken},
		{"swap two lines", func(l [][]byte) [][]byte {
			l[4], l[5] = l[5], l[4]
			return l
		}, 5, seqs[6], contract.AuditChainBroken},
		{"insert a copy of a line", func(l [][]byte) [][]byte {
			return append(l[:4:4], append([][]byte{l[3]}, l[4:]...)...)
		}, 5, seqs[4], contract.AuditChainBroken},
		{"truncate whole lines", func(l [][]byte) [][]byte {
			return l[:9]
		}, 10, seqs[10], contract.AuditTruncated},
		{"truncate inside a line", func(l [][]byte) [][]byte {
			l[11] = l[11][:len(l[11])-20]
			return l
		}, 12, 0, contract.AuditIncomplete},
		{"truncate to nothing", func(l [][]byte) [][]byte {
			return nil
		}, 1, seqs[1], contract.AuditTruncated},
		{"append a forged line", func(l [][]byte) [][]byte {
			return append(l, []byte(`{"type":"chromadb-rollback.v1.audit_trail_entry","seq":99}`+"\n"))
		}, 13, 99, contract.AuditMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tampered := join(tc.tamper(splitLines(pristine)))
			if err := os.WriteFile(path, tampered, 0o640); err != nil {
				t.Fatal(err)
			}
			rep := verifyNow(t, nc)
			if rep.OK || len(rep.Problems) == 0 {
				t.Fatalf("verify passed a tampered trail: %+v", rep)
			}
			got := rep.Problems[0]
			if got.Line != tc.line || got.Seq != tc.seq || got.Kind != tc.kind {
				t.Errorf("first problem %+v; want line %d, seq %d, kind %s\nall: %+v", got, tc.line, tc.seq, tc.kind, rep.Problems)
			}
			if want := fmt.Sprintf("line %d", tc.line); !strings.HasPrefix(rep.Problem, want) || !strings.Contains(rep.Problem, tc.kind) {
				t.Errorf("problem %q does not start with %q and name %s", rep.Problem, want, tc.kind)
			}
			if got.Detail == "" {
				t.Error("the problem does not say what is wrong")
			}
			// Back as it was, the trail verifies again.
			if err := os.WriteFile(path, pristine, 0o640); err != nil {
				t.Fatal(err)
			}
			if rep := verifyNow(t, nc); !rep.OK {
				t.Fatalf("restored trail: %s", rep.Problem)
			}
		})
	}

	// A line made longer in place: verify names it and says the file
	// grew without naming a line after the last; a query reads the whole
	// file (every entry, the last one included) and warns.
	t.Run("lengthen a line", func(t *testing.T) {
		l := splitLines(pristine)
		l[4] = bytes.Replace(l[4], []byte(`"snap_05"`), []byte(`"snap_05x"`), 1)
		if err := os.WriteFile(path, join(l), 0o640); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := os.WriteFile(path, pristine, 0o640); err != nil {
				t.Fatal(err)
			}
		}()
		rep := verifyNow(t, nc)
		if rep.OK || rep.Problems[0].Line != 5 || rep.Problems[0].Kind != contract.AuditHashMismatch {
			t.Fatalf("verify: %+v", rep.Problems)
		}
		var extra *contract.AuditProblem
		for i, p := range rep.Problems {
			if p.Line > 12 {
				t.Errorf("problem names line %d of a 12-line trail: %+v", p.Line, p)
			}
			if p.Kind == contract.AuditExtraBytes {
				extra = &rep.Problems[i]
			}
		}
		if extra == nil || !strings.Contains(extra.Detail, "1 byte longer") || !strings.Contains(extra.Detail, "lengthened") {
			t.Errorf("the grown file is not reported as a lengthened line: %+v", rep.Problems)
		}
		var q contract.AuditQueryReply
		if err := request(t, nc, "query", contract.AuditQueryRequest{Envelope: contract.NewEnvelope(contract.TypeAuditQueryRequest)}, &q); err != nil {
			t.Fatal(err)
		}
		if q.Matched != 12 || len(q.Entries) != 12 || q.Entries[0].Seq != seqs[12] || q.Unreadable != 0 {
			t.Errorf("query of the edited trail: %d matched, %d entries, %d unreadable, newest %+v; want all 12, the newest seq %d",
				q.Matched, len(q.Entries), q.Unreadable, q.Entries[0].AuditTrailEntry.Seq, seqs[12])
		}
		if !strings.Contains(q.Warning, ErrChanged.Error()) || !strings.Contains(q.Warning, "audit verify") {
			t.Errorf("query warning %q", q.Warning)
		}
	})
	var q contract.AuditQueryReply
	if err := request(t, nc, "query", contract.AuditQueryRequest{Envelope: contract.NewEnvelope(contract.TypeAuditQueryRequest)}, &q); err != nil || q.Warning != "" || q.Matched != 12 {
		t.Errorf("query of the pristine trail: %v, warning %q, %d matched", err, q.Warning, q.Matched)
	}

	// The offline check (a copy of the file) sees what the chain shows.
	for _, tc := range cases[:7] {
		copyPath := t.TempDir() + "/copy.jsonl"
		if err := os.WriteFile(copyPath, join(tc.tamper(splitLines(pristine))), 0o600); err != nil {
			t.Fatal(err)
		}
		rep := VerifyFile(copyPath)
		wantOK := tc.kind == contract.AuditStreamMismatch // a re-chained forgery needs the stream to be seen
		if rep.OK != wantOK {
			t.Errorf("VerifyFile after %q: ok %v, want %v (%s)", tc.name, rep.OK, wantOK, rep.Problem)
		}
		if !wantOK && (rep.Problems[0].Line != tc.line || rep.Problems[0].Kind != tc.kind) {
			t.Errorf("VerifyFile after %q: first problem %+v, want line %d %s", tc.name, rep.Problems[0], tc.line, tc.kind)
		}
	}

	// The writer goes on after all this.
	last := publish(t, n.JS, event("ev-13", "restorer", "rollback", contract.OutcomeStarted, base.Add(time.Hour)), "")
	waitWritten(t, svc, last)
	if rep := verifyNow(t, nc); !rep.OK || rep.Lines != 13 {
		t.Errorf("after a new event: %+v", rep)
	}
}

// TestAuditWriterStopsOnForeignChanges: an auditor appends only to the
// file it wrote. Changed under it, the trail is left as found (for verify)
// and health fails; restored, writing goes on with nothing lost.
func TestAuditWriterStopsOnForeignChanges(t *testing.T) {
	n := testenv.StartNATS(t)
	svc, _ := startAuditor(t, n, Config{RetryWait: 50 * time.Millisecond})
	base := time.Now().UTC()
	s1 := publish(t, n.JS, event("a", "snapshotter", "snapshot.create", contract.OutcomeStarted, base), "")
	waitWritten(t, svc, s1)
	path := svc.TrailPath()
	pristine, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tampered := append(bytes.Clone(pristine), []byte("forged\n")...)
	if err := os.WriteFile(path, tampered, 0o640); err != nil {
		t.Fatal(err)
	}
	s2 := publish(t, n.JS, event("b", "snapshotter", "snapshot.create", contract.OutcomeCompleted, base), "")
	nc := n.Connect(t)
	waitTrailChanged(t, nc)
	if got, _ := os.ReadFile(path); !bytes.Equal(got, tampered) {
		t.Fatalf("the auditor changed a trail it did not write:\n%s", got)
	}
	if rep := verifyNow(t, nc); rep.OK || rep.Problems[0].Line != 2 || rep.Problems[0].Kind != contract.AuditMalformed {
		t.Errorf("verify of the tampered trail: %+v", rep.Problems)
	}
	// A query still answers, with the entry, the line it cannot read and
	// a warning.
	var q contract.AuditQueryReply
	if err := request(t, nc, "query", contract.AuditQueryRequest{Envelope: contract.NewEnvelope(contract.TypeAuditQueryRequest)}, &q); err != nil {
		t.Fatal(err)
	}
	if q.Matched != 1 || q.Unreadable != 1 || !strings.Contains(q.Warning, ErrChanged.Error()) {
		t.Errorf("query of the tampered trail: %d matched, %d unreadable, warning %q", q.Matched, q.Unreadable, q.Warning)
	}
	if err := os.WriteFile(path, pristine, 0o640); err != nil {
		t.Fatal(err)
	}
	waitWritten(t, svc, s2)
	var h contract.Health
	if err := request(t, nc, "health", nil, &h); err != nil || !h.OK {
		t.Errorf("health after the trail was restored: %+v, %v", h, err)
	}
	if rep := verifyNow(t, nc); !rep.OK || rep.Lines != 2 {
		t.Errorf("verify after the trail was restored: %+v", rep)
	}
}

// TestAuditWriterStopsOnEditInPlace: an edit that keeps the file's size
// (a changed outcome, written over the line in place) is a change under
// the auditor too: it stops writing, health and queries say so, and it
// goes on once the bytes are back as it wrote them.
func TestAuditWriterStopsOnEditInPlace(t *testing.T) {
	n := testenv.StartNATS(t)
	svc, _ := startAuditor(t, n, Config{RetryWait: 50 * time.Millisecond})
	base := time.Now().UTC()
	s1 := publish(t, n.JS, event("a", "restorer", "rollback", contract.OutcomeFailed, base), "")
	waitWritten(t, svc, s1)
	path := svc.TrailPath()
	pristine, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	edited := bytes.Replace(pristine, []byte(`"outcome":"failed"`), []byte(`"outcome":"passed"`), 1)
	if bytes.Equal(edited, pristine) || len(edited) != len(pristine) {
		t.Fatal("the test's edit does not apply")
	}
	time.Sleep(20 * time.Millisecond) // a modification time of its own, on coarse clocks too
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(edited, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	s2 := publish(t, n.JS, event("b", "restorer", "rollback", contract.OutcomeCompleted, base), "")
	nc := n.Connect(t)
	waitTrailChanged(t, nc)
	if got, _ := os.ReadFile(path); !bytes.Equal(got, edited) {
		t.Fatalf("the auditor wrote on a trail edited under it:\n%s", got)
	}
	var q contract.AuditQueryReply
	if err := request(t, nc, "query", contract.AuditQueryRequest{Envelope: contract.NewEnvelope(contract.TypeAuditQueryRequest)}, &q); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(q.Warning, ErrChanged.Error()) {
		t.Errorf("query of the edited trail has no warning: %+v", q)
	}
	f, err = os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(pristine, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	waitWritten(t, svc, s2)
	if rep := verifyNow(t, nc); !rep.OK || rep.Lines != 2 {
		t.Errorf("verify after the trail was put back: %+v", rep)
	}
}

// waitTrailChanged waits until the auditor's health says it stopped
// writing a trail changed under it.
func waitTrailChanged(t *testing.T, nc *nats.Conn) {
	t.Helper()
	waitFor(t, 10*time.Second, "health to report the write failure", func() bool {
		var h contract.Health
		if err := request(t, nc, "health", []byte("{}"), &h); err != nil {
			t.Fatal(err)
		}
		return !h.OK && strings.Contains(h.Checks[0].Detail, ErrChanged.Error())
	})
}
