package bus_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/nats-io/nats.go"
)

// TestBootstrapUpdatesOnlyWhatChanged: a service that starts against
// assets that already have its settings (every start but the first)
// changes nothing, so no stream is updated under consumers being created
// at that moment; an asset with other settings is still updated. Each
// update is seen by its JetStream advisory, which the server publishes in
// order: when the changed bootstrap's one advisory is the first to arrive,
// the unchanged bootstrap before it sent none.
func TestBootstrapUpdatesOnlyWhatChanged(t *testing.T) {
	n := testenv.StartNATS(t) // bootstraps once
	// Advisories of stream updates: this prefix, then the stream's name.
	const updated = "$JS.EVENT.ADVISORY.STREAM.UPDATED."
	sub, err := n.Conn.SubscribeSync(updated + ">")
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	subj := contract.Subjects{Prefix: contract.DefaultPrefix}
	if _, err := bus.Bootstrap(ctx, n.JS, bus.Config{Subjects: subj}); err != nil {
		t.Fatalf("bootstrap with the same settings: %v", err)
	}
	a, err := bus.Bootstrap(ctx, n.JS, bus.Config{Subjects: subj, AuditMaxAge: 30 * 24 * time.Hour})
	if err != nil {
		t.Fatalf("bootstrap with another audit retention: %v", err)
	}
	if got := a.Audit.CachedInfo().Config.MaxAge; got != 30*24*time.Hour {
		t.Errorf("audit stream kept for %s after the bootstrap; want 720h", got)
	}

	var streams []string
	for {
		msg, err := sub.NextMsg(5 * time.Second)
		if err == nats.ErrTimeout {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, strings.TrimPrefix(msg.Subject, updated))
		if len(streams) == 1 && streams[0] == contract.StreamAudit {
			// The one update expected; wait briefly for any that follow it.
			if msg, err := sub.NextMsg(300 * time.Millisecond); err == nil {
				streams = append(streams, strings.TrimPrefix(msg.Subject, updated))
			}
			break
		}
	}
	if len(streams) != 1 || streams[0] != contract.StreamAudit {
		t.Errorf("streams updated by the two bootstraps: %v; want only %s (its retention changed)", streams, contract.StreamAudit)
	}
}
