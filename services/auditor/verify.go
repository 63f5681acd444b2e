package auditor

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/nats-io/nats.go/jetstream"
)

// VerifyFile checks a trail on its own: every line against its hash, the
// chain, the order and the event ids. It cannot see whole entries cut off
// the end; the running auditor's verify can, and compares with the stream.
func VerifyFile(path string) contract.AuditVerifyReport {
	rep := contract.AuditVerifyReport{Envelope: contract.NewEnvelope(contract.TypeAuditVerifyReport), Trail: path}
	f, err := os.Open(path)
	if err != nil {
		rep.Problems = []contract.AuditProblem{{Kind: contract.AuditUnreadable, Detail: err.Error()}}
		return finish(rep)
	}
	defer f.Close()
	c := newChecker(false)
	scanTrail(&rep, c, f, -1)
	return finish(rep)
}

// scanTrail runs the checker over r, fills the report's trail figures
// and returns the bytes read.
func scanTrail(rep *contract.AuditVerifyReport, c *checker, r io.Reader, limit int64) int64 {
	size, torn, err := scanLines(r, limit, c.add)
	if err != nil {
		c.problem(contract.AuditProblem{Line: c.lines + 1, Kind: contract.AuditUnreadable, Detail: err.Error()})
	}
	if torn > 0 {
		c.problem(contract.AuditProblem{Line: c.lines + 1, Kind: contract.AuditIncomplete,
			Detail: fmt.Sprintf("the last %d bytes have no newline: the file was cut inside an entry", torn)})
	}
	rep.Lines, rep.FirstSeq, rep.LastSeq, rep.LastHash = c.lines, c.firstSeq, c.lastSeq, c.lastHash
	rep.Problems = append(rep.Problems, c.problems...)
	return size + int64(torn)
}

// finish orders the problems by line (those of one line as found, then
// those without a line by sequence), caps them and sets OK and Problem.
func finish(rep contract.AuditVerifyReport) contract.AuditVerifyReport {
	slices.SortStableFunc(rep.Problems, func(a, b contract.AuditProblem) int {
		if (a.Line == 0) != (b.Line == 0) {
			if a.Line == 0 {
				return 1
			}
			return -1
		}
		if a.Line == 0 {
			return cmp.Compare(a.Seq, b.Seq)
		}
		return cmp.Compare(a.Line, b.Line)
	})
	if len(rep.Problems) > maxProblems {
		rep.Problems = rep.Problems[:maxProblems]
	}
	rep.OK = len(rep.Problems) == 0
	if !rep.OK {
		rep.Problem = rep.Problems[0].String()
	}
	return rep
}

// verify checks the trail's chain, that it ends where this auditor wrote
// it, and that it agrees with the audit stream: every stream message the
// auditor has passed is at its sequence with the same content, or repeats
// an earlier entry's event id.
func (s *Service) verify(ctx context.Context) contract.AuditVerifyReport {
	rep := contract.AuditVerifyReport{Envelope: contract.NewEnvelope(contract.TypeAuditVerifyReport), Trail: s.trail.Path()}
	// The ack floor first, then the head: everything acknowledged is then
	// within the head.
	var ackFloor uint64
	if cons := s.consumer(); cons != nil {
		if ci, err := cons.Info(ctx); err == nil {
			ackFloor = ci.AckFloor.Stream
		}
	}
	c := newChecker(false)
	var head Head
	err := s.trail.readStill(func(f *os.File, h Head, replaced bool) {
		head = h
		if n := scanTrail(&rep, c, f, -1); n > h.Size {
			rep.Problems = append(rep.Problems, extraBytes(n-h.Size, rep.Lines, h.Lines))
		}
		if replaced {
			rep.Problems = append(rep.Problems, contract.AuditProblem{Kind: contract.AuditReplaced,
				Detail: "the file at the trail's path is not the one the auditor writes: it was replaced"})
		}
	})
	if err != nil {
		rep.Problems = []contract.AuditProblem{{Kind: contract.AuditUnreadable, Detail: err.Error()}}
		return finish(rep)
	}

	sc, streamProblems, err := s.compareStream(ctx, c, head, ackFloor)
	if err != nil {
		rep.Problems = append(rep.Problems, contract.AuditProblem{Kind: contract.AuditUnreadable, Detail: "read the audit stream: " + err.Error()})
		return finish(rep)
	}
	rep.Stream = sc
	rep.Problems = append(rep.Problems, streamProblems...)

	// The file against what this auditor wrote.
	switch {
	case c.lines < head.Lines:
		p := contract.AuditProblem{Line: c.lines + 1, Kind: contract.AuditTruncated,
			Detail: fmt.Sprintf("the trail ends after line %d but the auditor wrote %d lines through seq %d", c.lines, head.Lines, head.LastSeq)}
		for _, sp := range streamProblems {
			if sp.Kind == contract.AuditMissing && sp.Seq > c.lastSeq {
				p.Seq = sp.Seq
				p.Detail += fmt.Sprintf(": the entry of seq %d and those after it are gone", sp.Seq)
				break
			}
		}
		rep.Problems = append(rep.Problems, p)
	case c.lines == head.Lines && c.lastHash != head.LastHash:
		rep.Problems = append(rep.Problems, contract.AuditProblem{Line: c.lines, Seq: c.lastSeq, Kind: contract.AuditRewritten,
			Detail: fmt.Sprintf("the last entry's hash is %s but the auditor wrote %s: the trail was rewritten", short(c.lastHash), short(head.LastHash))})
	}
	return finish(rep)
}

// compareStream reads the audit stream from its first message through its
// last and compares each message with the trail's entry at its sequence.
func (s *Service) compareStream(ctx context.Context, c *checker, head Head, ackFloor uint64) (*contract.AuditStreamCheck, []contract.AuditProblem, error) {
	info, err := s.stream.Info(ctx)
	if err != nil {
		return nil, nil, err
	}
	st := info.State
	sc := &contract.AuditStreamCheck{FirstSeq: st.FirstSeq, LastSeq: st.LastSeq, AckFloor: ackFloor}
	var problems []contract.AuditProblem
	add := func(p contract.AuditProblem) {
		if len(problems) < maxProblems {
			problems = append(problems, p)
		}
	}
	// Sequences the auditor has passed: written, or skipped as duplicates.
	passed := max(head.LastSeq, ackFloor)
	seen := make(map[uint64]bool, len(c.bySeq))
	diffs := map[int]*contract.AuditTrailEntry{} // line -> the stream's message
	if st.Msgs > 0 {
		// Gone from the stream soon after the check, not the client's
		// default five minutes later.
		cons, err := s.js.OrderedConsumer(ctx, contract.StreamAudit, jetstream.OrderedConsumerConfig{
			DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: st.FirstSeq, InactiveThreshold: 30 * time.Second})
		if err != nil {
			return nil, nil, err
		}
		it, err := cons.Messages(jetstream.PullMaxMessages(1000))
		if err != nil {
			return nil, nil, err
		}
		defer it.Stop()
		afterLine := 0 // the line of the last entry matched, where a missing one belongs
		for done := false; !done; {
			m, err := it.Next(jetstream.NextContext(ctx))
			if err != nil {
				return nil, nil, err
			}
			meta, err := m.Metadata()
			if err != nil {
				return nil, nil, err
			}
			seq := meta.Sequence.Stream
			if seq > st.LastSeq {
				break
			}
			done = seq == st.LastSeq
			sc.Checked++
			want := NewEntry(seq, meta.Timestamp, m.Subject(), m.Data())
			if ref, ok := c.bySeq[seq]; ok {
				seen[seq] = true
				afterLine = ref.line
				if ref.digest == contentDigest(&want) {
					sc.Matched++
					continue
				}
				sc.Mismatched++
				if len(diffs) < maxProblems {
					diffs[ref.line] = &want
				}
				add(contract.AuditProblem{Line: ref.line, Seq: seq, Kind: contract.AuditStreamMismatch,
					Detail: "the entry differs from the stream's message"})
			} else if first, dup := c.ids[eventID(want.Event)]; dup && first.seq < seq {
				sc.Duplicates++
			} else if seq <= passed {
				sc.Missing++
				add(contract.AuditProblem{Seq: seq, Kind: contract.AuditMissing,
					Detail: fmt.Sprintf("stream message %s (seq %d) is in no entry; it belongs after line %d", m.Subject(), seq, afterLine)})
			} else {
				sc.Pending++
			}
		}
	}
	for seq, ref := range c.bySeq {
		switch {
		case st.Msgs > 0 && seq < st.FirstSeq || st.Msgs == 0 && seq <= st.LastSeq:
			sc.Expired++
		case !seen[seq]:
			add(contract.AuditProblem{Line: ref.line, Seq: seq, Kind: contract.AuditNotInStream,
				Detail: fmt.Sprintf("the stream (seq %d to %d) has no message at seq %d", st.FirstSeq, st.LastSeq, seq)})
		}
	}
	s.describeDiffs(problems, diffs)
	return sc, problems, nil
}

// describeDiffs rereads the lines of mismatched entries, in one pass, to
// say how each differs from its stream message.
func (s *Service) describeDiffs(problems []contract.AuditProblem, want map[int]*contract.AuditTrailEntry) {
	if len(want) == 0 {
		return
	}
	f, err := os.Open(s.trail.Path())
	if err != nil {
		return
	}
	defer f.Close()
	diffs := map[int]string{}
	n := 0
	_, _, _ = scanLines(f, -1, func(b []byte) {
		n++
		if w, ok := want[n]; ok {
			if e, decoded, _, _ := parseLine(b); decoded {
				diffs[n] = contentDiff(&e, w)
			}
		}
	})
	for i := range problems {
		if d, ok := diffs[problems[i].Line]; ok && problems[i].Kind == contract.AuditStreamMismatch {
			problems[i].Detail += ": " + d
		}
	}
}

// extraBytes describes a trail longer than the auditor wrote it: lines
// added after its last one, or (as many lines as it wrote) an edit that
// lengthened a line, which has no line of its own to name.
func extraBytes(extra int64, lines, wrote int) contract.AuditProblem {
	size := fmt.Sprintf("%d bytes", extra)
	if extra == 1 {
		size = "1 byte"
	}
	if lines > wrote {
		return contract.AuditProblem{Line: wrote + 1, Kind: contract.AuditExtraBytes,
			Detail: fmt.Sprintf("the file is %s longer than the auditor wrote it, from this line on", size)}
	}
	return contract.AuditProblem{Kind: contract.AuditExtraBytes,
		Detail: fmt.Sprintf("the file is %s longer than the auditor wrote it, with no line after the %d it wrote: a line above was lengthened", size, wrote)}
}
