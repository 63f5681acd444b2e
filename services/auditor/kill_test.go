package auditor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// buildAuditor builds cmd/auditor (with the race detector when the tests
// have it) into a temp dir.
func buildAuditor(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build cmd/auditor: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "auditor")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	out, err := exec.Command(goBin, append(args, "./cmd/auditor")...).CombinedOutput()
	if err != nil {
		t.Fatalf("build cmd/auditor: %v\n%s", err, out)
	}
	return bin
}

// child is the auditor binary running as a separate process.
type child struct {
	cmd *exec.Cmd
	log string
}

func startChild(t *testing.T, bin, natsURL, dataDir string, n int) *child {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), fmt.Sprintf("auditor-%d.log", n))
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(bin, "--data-dir", dataDir, "--instance", fmt.Sprintf("child-%d", n))
	cmd.Env = append(os.Environ(), "NATS_URL="+natsURL, "LOG_LEVEL=debug")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, log: logPath}
	t.Cleanup(func() {
		if c.cmd.ProcessState == nil {
			_ = c.cmd.Process.Signal(syscall.SIGTERM)
			_ = c.cmd.Wait()
		}
		if t.Failed() {
			out, _ := os.ReadFile(logPath)
			t.Logf("auditor %d log:\n%s", n, out)
		}
	})
	return c
}

// kill9 kills the child with SIGKILL: no deferred close, no flush, no ack.
func (c *child) kill9(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	err := c.cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("auditor did not die of SIGKILL: %v", err)
	}
}

func waitHealthy(t *testing.T, nc *nats.Conn) {
	t.Helper()
	waitFor(t, 30*time.Second, "the auditor to answer health", func() bool {
		msg, err := nc.Request(subj.API("audit", "health"), nil, time.Second)
		if err != nil {
			return false
		}
		var h contract.Health
		return json.Unmarshal(msg.Data, &h) == nil && h.OK
	})
}

// countLines counts the complete lines of the file at path.
func countLines(path string) int {
	b, _ := os.ReadFile(path)
	return bytes.Count(b, []byte("\n"))
}

// TestAuditorKilledDuringBurst is acceptance 2: the auditor binary is
// killed with SIGKILL twice while 10,000 events stream in (once with a
// torn line left behind, as a crash inside a write leaves it) and
// restarted each time. Events are also re-sent with the same Nats-Msg-Id
// (the stream drops them) and with the same event id under a new
// Nats-Msg-Id (the stream keeps them; the trail must not). In the end the
// trail holds each event exactly once, in stream order, and verify passes.
func TestAuditorKilledDuringBurst(t *testing.T) {
	const total = 10000
	n := testenv.StartNATS(t)
	bin := buildAuditor(t)
	dir := t.TempDir()
	trail := filepath.Join(dir, contract.AuditTrailFile)
	nc := n.Connect(t)

	children := []*child{startChild(t, bin, n.URL, dir, 1)}
	waitHealthy(t, nc)

	js, err := jetstream.New(n.Connect(t), jetstream.WithPublishAsyncMaxPending(256))
	if err != nil {
		t.Fatal(err)
	}
	var published atomic.Int64
	var sameMsgID, sameEventID int
	pubDone := make(chan error, 1)
	start := time.Now()
	base := time.Now().UTC().Truncate(time.Millisecond)
	burst := func(i int) contract.AuditEvent {
		ev := event(fmt.Sprintf("burst-%05d", i), "restorer", "rollback", contract.OutcomeCompleted, base.Add(time.Duration(i)*time.Millisecond))
		ev.OpID = fmt.Sprintf("op_%05d", i)
		ev.Figures = map[string]any{"records": i, "note": "<&> escaped as json.Marshal does"}
		return ev
	}
	go func() {
		pubDone <- func() error {
			send := func(ev contract.AuditEvent, msgID string) error {
				data, _ := json.Marshal(ev)
				m := nats.NewMsg(subj.Audit(ev.Service, ev.Action))
				m.Data = data
				m.Header.Set(jetstream.MsgIDHeader, msgID)
				_, err := js.PublishMsgAsync(m)
				return err
			}
			for i := range total {
				ev := burst(i)
				if err := send(ev, ev.ID); err != nil {
					return err
				}
				if i%997 == 0 { // a retried publish: the stream keeps it once
					sameMsgID++
					if err := send(ev, ev.ID); err != nil {
						return err
					}
				}
				if i%1009 == 500 { // an event re-sent under a new message id
					sameEventID++
					old := burst(i - 250)
					if err := send(old, "resent-"+old.ID); err != nil {
						return err
					}
				}
				published.Store(int64(i + 1))
				if i%100 == 99 {
					select {
					case <-js.PublishAsyncComplete():
					case <-time.After(30 * time.Second):
						return errors.New("publish acks timed out")
					}
					time.Sleep(5 * time.Millisecond) // a burst, not one blob: the kills land inside it
				}
			}
			select {
			case <-js.PublishAsyncComplete():
				return nil
			case <-time.After(30 * time.Second):
				return errors.New("publish acks timed out")
			}
		}()
	}()

	linesAtStart := 0
	for k, at := range []int{2000, 6000} {
		// Kill while the burst goes on and this auditor is writing it.
		waitFor(t, time.Minute, fmt.Sprintf("%d events published and the auditor writing", at), func() bool {
			return published.Load() >= int64(at) && countLines(trail) >= linesAtStart+300
		})
		c := children[len(children)-1]
		c.kill9(t)
		lines, sent := countLines(trail), published.Load()
		t.Logf("kill -9 #%d at %d trail lines, %d of %d events published (%.2fs)", k+1, lines, sent, total, time.Since(start).Seconds())
		if sent >= total {
			t.Fatalf("the burst was over before kill #%d: the kill must land inside it", k+1)
		}
		if k == 0 {
			// A crash inside a write leaves part of a line: never acked.
			torn := `{"type":"chromadb-rollback.v1.audit_trail_entry","seq":` + fmt.Sprint(lines+1) + `,"stored":"2025-`
			f, err := os.OpenFile(trail, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteString(torn); err != nil {
				t.Fatal(err)
			}
			f.Close()
			time.Sleep(200 * time.Millisecond) // events pile up while no auditor runs
		}
		linesAtStart = countLines(trail)
		children = append(children, startChild(t, bin, n.URL, dir, len(children)+1))
	}
	if err := <-pubDone; err != nil {
		t.Fatal(err)
	}
	publishTook := time.Since(start)

	info, err := n.Assets.Audit.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if want := uint64(total + sameEventID); info.State.Msgs != want {
		t.Fatalf("stream holds %d messages; want %d (Nats-Msg-Id dedup of %d retries)", info.State.Msgs, want, sameMsgID)
	}
	last := info.State.LastSeq
	waitFor(t, time.Minute, "the trail to catch up", func() bool { return countLines(trail) >= total })
	caughtUp := time.Since(start)

	// The stream's order, each event id at its first message.
	var wantSeqs []uint64
	firstSeen := map[string]bool{}
	cons, err := n.JS.OrderedConsumer(t.Context(), contract.StreamAudit, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	it, err := cons.Messages()
	if err != nil {
		t.Fatal(err)
	}
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			t.Fatal(err)
		}
		meta, _ := m.Metadata()
		var ev contract.AuditEvent
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			t.Fatal(err)
		}
		if !firstSeen[ev.ID] {
			firstSeen[ev.ID] = true
			wantSeqs = append(wantSeqs, meta.Sequence.Stream)
		}
		if meta.Sequence.Stream == last {
			break
		}
	}
	it.Stop()

	entries := readTrail(t, trail)
	if len(entries) != total {
		t.Fatalf("trail has %d entries; want %d", len(entries), total)
	}
	ids := map[string]int{}
	for i, e := range entries {
		id := eventID(e.Event)
		if prev, dup := ids[id]; dup {
			t.Fatalf("event %s at lines %d and %d", id, prev, i+1)
		}
		ids[id] = i + 1
		if e.Seq != wantSeqs[i] {
			t.Fatalf("line %d: seq %d; the stream's order says %d", i+1, e.Seq, wantSeqs[i])
		}
		var idx int
		if _, err := fmt.Sscanf(id, "burst-%05d", &idx); err != nil {
			t.Fatalf("line %d: event id %q", i+1, id)
		}
		if want, _ := json.Marshal(burst(idx)); !bytes.Equal(e.Event, want) {
			t.Fatalf("line %d: event\n%s\nnot as published:\n%s", i+1, e.Event, want)
		}
	}
	for i := range total {
		if _, ok := ids[fmt.Sprintf("burst-%05d", i)]; !ok {
			t.Fatalf("event burst-%05d is not in the trail", i)
		}
	}

	t.Logf("checked order and content at %.2fs", time.Since(start).Seconds())
	rep := verifyNow(t, nc)
	t.Logf("verified at %.2fs", time.Since(start).Seconds())
	if !rep.OK || rep.Lines != total || rep.LastSeq != last {
		t.Fatalf("verify: ok %v, %d lines through seq %d (want %d through %d): %s", rep.OK, rep.Lines, rep.LastSeq, total, last, rep.Problem)
	}
	if s := rep.Stream; s.Checked != total+sameEventID || s.Matched != total || s.Duplicates != sameEventID || s.Missing+s.Mismatched+s.Pending != 0 {
		t.Errorf("verify's stream check: %+v; want %d matched and %d duplicates", *s, total, sameEventID)
	}
	log1, _ := os.ReadFile(children[1].log)
	if !bytes.Contains(log1, []byte("cut a torn last line")) {
		t.Errorf("the restarted auditor did not log cutting the torn line:\n%s", log1)
	}
	t.Logf("figures: %d events (+%d re-sent events, %d retried publishes) published in %.2fs; trail complete %.2fs after the start (%.0f events/s through two kill -9 restarts)",
		total, sameEventID, sameMsgID, publishTook.Seconds(), caughtUp.Seconds(), float64(total)/caughtUp.Seconds())
}
