package testenv

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/auditschema"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// AuditMessage is one message of the audit stream.
type AuditMessage struct {
	Seq     uint64 // stream sequence
	Subject string
	Data    []byte
	Event   contract.AuditEvent
}

// ReadAudit returns every message in the audit stream, in stream order,
// read with an ordered consumer as a dashboard replaying it does, and saves
// them as test artifacts (SaveAudit). It does not use tb's context, so it
// also works in a cleanup function.
func ReadAudit(tb testing.TB, js jetstream.JetStream) []AuditMessage {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, contract.StreamAudit)
	if err != nil {
		tb.Fatalf("audit stream: %v", err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		tb.Fatalf("audit stream info: %v", err)
	}
	want := int(info.State.Msgs)
	if want == 0 {
		return nil
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		tb.Fatalf("audit consumer: %v", err)
	}
	out := make([]AuditMessage, 0, want)
	for empty := 0; len(out) < want; {
		batch, err := cons.Fetch(want-len(out), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			tb.Fatalf("read audit stream: %v", err)
		}
		got := len(out)
		for m := range batch.Messages() {
			am := AuditMessage{Subject: m.Subject(), Data: m.Data()}
			if md, err := m.Metadata(); err == nil {
				am.Seq = md.Sequence.Stream
			}
			if err := json.Unmarshal(m.Data(), &am.Event); err != nil {
				tb.Errorf("audit message %d on %s is not an audit event: %v: %s", am.Seq, am.Subject, err, am.Data)
			}
			out = append(out, am)
		}
		if len(out) == got {
			// On a cluster a new consumer's interest can take a moment to
			// reach the client's node: the fetch meets no responders.
			if empty++; errors.Is(batch.Error(), nats.ErrNoResponders) && empty < 5 {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			tb.Fatalf("read %d of %d audit messages: %v", got, want, batch.Error())
		}
	}
	SaveAudit(tb, out)
	return out
}

// CheckAudit reads every message in the audit stream and fails tb for each
// one that does not validate against its action's schema (pkg/auditschema)
// or is not on the subject of its service and action. It returns the
// messages. Call it at the end of a test, or register it with tb.Cleanup
// right after StartNATS, so it runs once the services have stopped.
func CheckAudit(tb testing.TB, js jetstream.JetStream) []AuditMessage {
	tb.Helper()
	msgs := ReadAudit(tb, js)
	for _, m := range msgs {
		if err := auditschema.Validate(m.Data); err != nil {
			tb.Errorf("audit message %d on %s: %v\n%s", m.Seq, m.Subject, err, m.Data)
			continue
		}
		want := ".audit." + m.Event.Service + "." + strings.ReplaceAll(m.Event.Action, ".", "_")
		if !strings.HasSuffix(m.Subject, want) {
			tb.Errorf("audit message %d (%s %s) on subject %s, want a subject ending in %s", m.Seq, m.Event.Service, m.Event.Action, m.Subject, want)
		}
	}
	return msgs
}
