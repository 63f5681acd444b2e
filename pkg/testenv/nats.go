package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/natsembed"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATS is an embedded JetStream server with a connection and the project's
// streams and buckets bootstrapped.
type NATS struct {
	Server *server.Server
	URL    string
	Conn   *nats.Conn
	JS     jetstream.JetStream
	Assets *bus.Assets
}

// StartNATS runs an embedded JetStream server on a random port with its
// store in a temp dir; everything is shut down at cleanup. With
// TEST_ARTIFACTS set, the audit stream is saved (SaveAudit) when the test
// ends.
func StartNATS(tb testing.TB) *NATS {
	tb.Helper()
	s, err := natsembed.Start(natsembed.Options{Listen: "127.0.0.1:0", StoreDir: tb.TempDir()})
	if err != nil {
		tb.Fatalf("start embedded NATS: %v", err)
	}
	tb.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	n := &NATS{Server: s, URL: s.ClientURL()}
	n.Conn = n.Connect(tb)
	n.JS, err = jetstream.New(n.Conn)
	if err != nil {
		tb.Fatalf("jetstream: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n.Assets, err = bus.Bootstrap(ctx, n.JS, bus.Config{Subjects: contract.Subjects{Prefix: contract.DefaultPrefix}})
	if err != nil {
		tb.Fatalf("bootstrap JetStream: %v", err)
	}
	saveAuditAtEnd(tb, n.JS)
	return n
}

// Connect opens another client connection, closed at cleanup.
func (n *NATS) Connect(tb testing.TB) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(n.URL, nats.Name(tb.Name()))
	if err != nil {
		tb.Fatalf("connect to embedded NATS: %v", err)
	}
	tb.Cleanup(nc.Close)
	return nc
}
