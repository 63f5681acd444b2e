package bus_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/nats-io/nats.go/jetstream"
)

// TestOnMaxDeliveries: a command whose every delivery goes unanswered
// (MaxDeliver 2) is handed, as stored, to exactly one of two subscribed
// instances; a command that was acked is not.
func TestOnMaxDeliveries(t *testing.T) {
	n := testenv.StartNATS(t)
	ctx := t.Context()
	cons, err := n.Assets.Commands.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: "giveup", FilterSubject: n.Assets.Subjects.Command("test"), AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: 500 * time.Millisecond, MaxDeliver: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan bus.Undelivered, 4)
	var calls atomic.Int32
	for range 2 { // two instances, each on its own connection
		nc := n.Connect(t)
		if err := bus.OnMaxDeliveries(ctx, nc, n.JS, contract.StreamCommands, "giveup", testenv.Logger(t), func(_ context.Context, u bus.Undelivered) {
			calls.Add(1)
			got <- u
		}); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	subject := n.Assets.Subjects.Command("test")
	acked, err := n.JS.Publish(ctx, subject, []byte(`{"n":1}`))
	if err != nil {
		t.Fatal(err)
	}
	lost, err := n.JS.Publish(ctx, subject, []byte(`{"n":2}`))
	if err != nil {
		t.Fatal(err)
	}
	// Deliveries: the first is acked; the second never is, however often.
	deliveries := 0
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && len(got) == 0; {
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(300*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			if md, _ := m.Metadata(); md.Sequence.Stream == acked.Sequence {
				_ = m.Ack()
			} else {
				deliveries++
			}
		}
	}
	select {
	case u := <-got:
		if u.Seq != lost.Sequence || u.Deliveries != 2 || string(u.Data) != `{"n":2}` || u.Subject != subject || u.Queued.IsZero() {
			t.Errorf("given up on %+v; want seq %d, 2 deliveries, its data and subject", u, lost.Sequence)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no command given up on after %d deliveries", deliveries)
	}
	time.Sleep(time.Second) // a second instance, or the acked command, would show by now
	if c := calls.Load(); c != 1 || deliveries != 2 {
		t.Errorf("%d calls after %d deliveries; want 1 after 2", c, deliveries)
	}
}
