package bus

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// emitTimeout bounds Emit, retries included: long enough to wait out a
// leader election, short enough not to hold up a shutdown for long.
const emitTimeout = 30 * time.Second

// Auditor publishes audit events of one service into the audit stream.
type Auditor struct {
	js      jetstream.JetStream
	subj    contract.Subjects
	service string
	log     *slog.Logger
}

// NewAuditor returns an Auditor for service.
func NewAuditor(js jetstream.JetStream, subj contract.Subjects, service string, log *slog.Logger) *Auditor {
	return &Auditor{js: js, subj: subj, service: service, log: log}
}

// Emit stamps ev and publishes it with its id as the dedup id, so a retried
// publish is stored once; transient failures (a leader election) are
// retried for up to emitTimeout. A failure is logged and returned; callers
// that cannot act on it may ignore it.
func (a *Auditor) Emit(ctx context.Context, ev contract.AuditEvent) error {
	if ev.Type == "" {
		ev.Envelope = contract.NewEnvelope(contract.TypeAuditEvent)
	}
	ev.Service = a.service
	data, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode audit event: %w", err)
	}
	msg := nats.NewMsg(a.subj.Audit(a.service, ev.Action))
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, ev.ID)
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), emitTimeout)
	defer cancel()
	if _, err := Publish(pctx, a.js, msg); err != nil {
		a.log.Error("audit publish failed", "action", ev.Action, "outcome", ev.Outcome, "err", err)
		return fmt.Errorf("publish audit event: %w", err)
	}
	return nil
}
