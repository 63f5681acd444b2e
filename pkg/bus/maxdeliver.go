package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// MaxDeliveriesSubject is the subject on which the server announces that a
// message of stream reached the consumer's MaxDeliver: its last delivery's
// ack wait ran out, and it is never delivered again.
func MaxDeliveriesSubject(stream, consumer string) string {
	return "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + stream + "." + consumer
}

// maxDeliveriesAdvisory is the server's io.nats.jetstream.advisory.v1.max_deliver.
type maxDeliveriesAdvisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// ErrGivenUp opens the error of an operation whose command the work queue
// gave up on (OnMaxDeliveries).
var ErrGivenUp = errors.New("given up")

// Undelivered is a command whose every delivery ended without an ack or a
// term: each worker that took it died, hung past its ack wait or was
// stopped. The work queue keeps it but never delivers it again.
type Undelivered struct {
	Seq        uint64
	Deliveries int
	Subject    string
	Data       []byte
	// Queued is when the command was stored.
	Queued time.Time
}

// OnMaxDeliveries calls handle for every command of stream that consumer
// gives up on (MaxDeliveriesSubject), read back from the stream. The
// subscription is in queue group consumer, so of several instances one
// handles each; handle must be idempotent all the same (an instance that
// dies in it loses the advisory: the server sends it once). It stops with
// ctx.
func OnMaxDeliveries(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, stream, consumer string, log *slog.Logger,
	handle func(ctx context.Context, u Undelivered)) error {
	sub, err := nc.QueueSubscribe(MaxDeliveriesSubject(stream, consumer), consumer, func(m *nats.Msg) {
		var adv maxDeliveriesAdvisory
		if err := json.Unmarshal(m.Data, &adv); err != nil || adv.StreamSeq == 0 {
			log.Warn("unreadable max deliveries advisory ignored", "subject", m.Subject, "err", err)
			return
		}
		var raw *jetstream.RawStreamMsg
		err := Retry(ctx, func(ctx context.Context) (err error) {
			raw, err = leaderMsg(ctx, js, stream, adv.StreamSeq)
			return err
		})
		if err != nil {
			log.Error("a command was given up on after its last delivery, and cannot be read", "stream", stream, "seq", adv.StreamSeq,
				"deliveries", adv.Deliveries, "err", err)
			return
		}
		handle(ctx, Undelivered{Seq: adv.StreamSeq, Deliveries: int(adv.Deliveries), Subject: raw.Subject, Data: raw.Data, Queued: raw.Time})
	})
	if err != nil {
		return fmt.Errorf("subscribe to %s: %w", MaxDeliveriesSubject(stream, consumer), err)
	}
	go func() {
		<-ctx.Done()
		_ = sub.Unsubscribe()
	}()
	return nil
}

// leaderMsg is message seq of stream as its leader holds it.
func leaderMsg(ctx context.Context, js jetstream.JetStream, stream string, seq uint64) (*jetstream.RawStreamMsg, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	return s.GetMsg(ctx, seq)
}

// HandOver enqueues next, a new copy of the command whose last delivery the
// work queue allows (MaxDeliver) is msg, on subject as msgID, then acks msg:
// a nak would make the server give up on the command, failing its
// operation, though the attempt that took it did not crash but was stopped
// (a rolling restart). what names the work ("rollback", "snapshot") in the
// log. It returns false when the copy could not be enqueued: msg is left to
// the caller's nak then.
func HandOver(js jetstream.JetStream, msg jetstream.Msg, subject, msgID string, next []byte, what string, attempt int, log *slog.Logger) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m := nats.NewMsg(subject)
	m.Data = next
	m.Header.Set(jetstream.MsgIDHeader, msgID)
	if _, err := Publish(ctx, js, m); err != nil {
		log.Warn("could not enqueue the "+what+" again on its last delivery; it is handed back, and the work queue may give up on it", "err", err)
		return false
	}
	if err := msg.DoubleAck(ctx); err != nil {
		log.Warn("enqueued the "+what+" again, but the ack of its last delivery failed; the work queue will give up on that copy, not on the "+what, "err", err)
	}
	log.Warn(what+" interrupted by shutdown on the last delivery of its command; enqueued again to be resumed by another instance", "next_attempt", attempt+1)
	return true
}
