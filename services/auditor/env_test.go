package auditor

import (
	"bufio"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

var subj = contract.Subjects{Prefix: contract.DefaultPrefix}

func testLogger(t *testing.T) *slog.Logger { return testenv.Logger(t) }

// startAuditor runs an auditor in-process until the test ends (or stop is
// called) and waits until it serves.
func startAuditor(t *testing.T, n *testenv.NATS, cfg Config) (svc *Service, stop func()) {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	nc := n.Connect(t)
	svc, err := New(cfg, nc, subj, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	stop = testenv.RunService(t, "auditor", nc, svc, true)
	select {
	case <-svc.Ready():
	case <-time.After(30 * time.Second):
		stop() // reports Run's error, if it stopped
		t.Fatal("auditor not ready after 30s")
	}
	return svc, stop
}

// event is an audit event as services publish it.
func event(id, service, action, outcome string, at time.Time) contract.AuditEvent {
	return contract.AuditEvent{Envelope: contract.Envelope{Type: contract.TypeAuditEvent, ID: id, Time: at.UTC()},
		Service: service, Action: action, Outcome: outcome}
}

// publish stores ev in the audit stream with msgID as Nats-Msg-Id (ev.ID
// when empty) and returns its sequence (0 when the stream dropped it as a
// duplicate).
func publish(t *testing.T, js jetstream.JetStream, ev contract.AuditEvent, msgID string) uint64 {
	t.Helper()
	data, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	if msgID == "" {
		msgID = ev.ID
	}
	m := nats.NewMsg(subj.Audit(ev.Service, ev.Action))
	m.Data = data
	m.Header.Set(jetstream.MsgIDHeader, msgID)
	ack, err := js.PublishMsg(t.Context(), m)
	if err != nil {
		t.Fatalf("publish %s: %v", ev.ID, err)
	}
	if ack.Duplicate {
		return 0
	}
	return ack.Sequence
}

// waitFor polls cond until it holds, failing the test after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitWritten waits until the trail is written through seq.
func waitWritten(t *testing.T, svc *Service, seq uint64) {
	t.Helper()
	waitFor(t, 30*time.Second, "the trail to reach seq "+strconv.FormatUint(seq, 10), func() bool { return svc.trail.Head().LastSeq >= seq })
}

// apiError is an error reply.
type apiError struct {
	code  int
	msg   string
	field string
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s (field %q)", e.code, e.msg, e.field) }

// request sends req to the auditor's endpoint and decodes the reply into
// out, returning an *apiError for an error reply.
func request(t *testing.T, nc *nats.Conn, endpoint string, req, out any) error {
	t.Helper()
	var data []byte
	switch r := req.(type) {
	case []byte:
		data = r
	default:
		var err error
		if data, err = json.Marshal(req); err != nil {
			t.Fatal(err)
		}
	}
	msg, err := nc.Request(subj.API("audit", endpoint), data, time.Minute)
	if err != nil {
		t.Fatalf("request %s: %v", endpoint, err)
	}
	if code := msg.Header.Get("Nats-Service-Error-Code"); code != "" {
		var body contract.ErrorBody
		if err := json.Unmarshal(msg.Data, &body); err != nil {
			t.Fatalf("error body %q: %v", msg.Data, err)
		}
		n, _ := strconv.Atoi(code)
		if n != body.Code || body.Type != contract.TypeError {
			t.Errorf("error reply: header code %s, body %+v", code, body)
		}
		return &apiError{code: n, msg: body.Error, field: body.Field}
	}
	if err := json.Unmarshal(msg.Data, out); err != nil {
		t.Fatalf("decode %s reply %q: %v", endpoint, msg.Data, err)
	}
	return nil
}

func verifyNow(t *testing.T, nc *nats.Conn) contract.AuditVerifyReport {
	t.Helper()
	var rep contract.AuditVerifyReport
	if err := request(t, nc, "verify", contract.AuditVerifyRequest{Envelope: contract.NewEnvelope(contract.TypeAuditVerifyRequest), Actor: "test"}, &rep); err != nil {
		t.Fatalf("verify: %v", err)
	}
	if rep.Type != contract.TypeAuditVerifyReport {
		t.Errorf("verify reply type %q", rep.Type)
	}
	return rep
}

// readTrail parses every line of the trail at path.
func readTrail(t *testing.T, path string) []contract.AuditTrailEntry {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []contract.AuditTrailEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e contract.AuditTrailEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("trail line %d: %v", len(out)+1, err)
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
