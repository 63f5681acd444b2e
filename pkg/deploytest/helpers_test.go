package deploytest

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/natsconn"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// denied is how long a request that permissions drop is given before the
// test takes its silence as the refusal (the violation itself is awaited
// separately).
const denied = 300 * time.Millisecond

var subj = contract.Subjects{Prefix: contract.DefaultPrefix}

// client is one user's connection. It records the server's asynchronous
// errors, where permission violations arrive.
type client struct {
	user string
	nc   *nats.Conn
	js   jetstream.JetStream

	mu   sync.Mutex
	errs []string
}

// startSingle runs deploy/nats/single.conf with fresh passwords.
func startSingle(t *testing.T) (string, testenv.DeployPasswords) {
	t.Helper()
	pw := testenv.SetDeployPasswords(t)
	s := testenv.StartDeployServer(t, "single.conf")
	return s.ClientURL(), pw
}

// connect connects user with its own password (and inbox prefix).
func connect(t *testing.T, url string, pw testenv.DeployPasswords, user string) *client {
	t.Helper()
	return connectWith(t, url, user, pw.Config(user))
}

func connectWith(t *testing.T, url, user string, cfg natsconn.Config, opts ...nats.Option) *client {
	t.Helper()
	c := &client{user: user}
	opts = append([]nats.Option{nats.Name(t.Name() + "/" + user), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		c.mu.Lock()
		c.errs = append(c.errs, err.Error())
		c.mu.Unlock()
	})}, opts...)
	nc, err := cfg.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	c.nc = nc
	if c.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	return c
}

// wantViolation waits for the server's permissions violation of op
// ("Publish" or "Subscription") on subject.
func (c *client) wantViolation(t *testing.T, op, subject string) {
	t.Helper()
	// A subject ending in '.' is a prefix (of a JetStream API subject
	// holding generated names).
	want := fmt.Sprintf("Permissions Violation for %s to \"%s", op, subject)
	if !strings.HasSuffix(subject, ".") {
		want += `"`
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.mu.Lock()
		errs := append([]string(nil), c.errs...)
		c.mu.Unlock()
		for _, e := range errs {
			if strings.Contains(e, want) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: no %q; the server said %q", c.user, want, errs)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// noViolations fails t if the server refused c anything.
func (c *client) noViolations(t *testing.T) {
	t.Helper()
	_ = c.nc.Flush()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.errs {
		if strings.Contains(e, "Permissions Violation") {
			t.Errorf("%s was refused: %s", c.user, e)
		}
	}
}

// short is a context for a request that must fail because it is dropped.
func short(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), denied)
	t.Cleanup(cancel)
	return ctx
}

// bootstrap creates the project's assets as the snapshotter does.
func bootstrap(t *testing.T, c *client) *bus.Assets {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	a, err := bus.Bootstrap(ctx, c.js, bus.Config{Subjects: subj})
	if err != nil {
		t.Fatalf("bootstrap as %s: %v", c.user, err)
	}
	return a
}

// respond answers every request on subject with reply, as c (a service
// user), and counts the requests.
func respond(t *testing.T, c *client, subject, reply string) *counter {
	t.Helper()
	n := &counter{}
	sub, err := c.nc.Subscribe(subject, func(m *nats.Msg) {
		n.add()
		_ = m.Respond([]byte(reply))
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := c.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return n
}

type counter struct {
	mu sync.Mutex
	n  int
}

func (c *counter) add() { c.mu.Lock(); c.n++; c.mu.Unlock() }
func (c *counter) get() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// auditEvents publishes n audit events as the snapshotter's auditor does
// and returns their ids.
func auditEvents(t *testing.T, c *client, n int) []string {
	t.Helper()
	a := bus.NewAuditor(c.js, subj, "snapshotter", slog.New(slog.DiscardHandler))
	var ids []string
	for i := range n {
		ev := contract.AuditEvent{Envelope: contract.NewEnvelope(contract.TypeAuditEvent), Action: "snapshot.create",
			Outcome: contract.OutcomeCompleted, Actor: "ops@example", SnapshotID: fmt.Sprintf("snap_%d", i)}
		if err := a.Emit(t.Context(), ev); err != nil {
			t.Fatalf("audit as %s: %v", c.user, err)
		}
		ids = append(ids, ev.ID)
	}
	return ids
}

// streamMsgs is the message count of stream, read as c.
func streamMsgs(t *testing.T, c *client, stream string) uint64 {
	t.Helper()
	s, err := c.js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatalf("stream %s as %s: %v", stream, c.user, err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatalf("stream %s info as %s: %v", stream, c.user, err)
	}
	return info.State.Msgs
}

func contextWithTimeout(t *testing.T, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(t.Context(), d)
}

// waitFor polls cond for up to 5s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
