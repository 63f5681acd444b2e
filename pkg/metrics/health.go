package metrics

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// HealthTimeout bounds one /healthz answer: checks still running then
// count as failed.
const HealthTimeout = 2 * time.Second

// Check is one readiness check: nil when ready, else why not. It must
// return soon after ctx ends.
type Check func(ctx context.Context) (detail string, err error)

type namedCheck struct {
	name string
	fn   Check
}

type health struct {
	mu     sync.Mutex
	checks []namedCheck
}

// AddCheck adds a readiness check that /healthz runs; a name added again
// replaces the earlier check (services run in one process share one).
func (r *Registry) AddCheck(name string, fn Check) {
	if r == nil {
		return
	}
	r.health.mu.Lock()
	defer r.health.mu.Unlock()
	for i := range r.health.checks {
		if r.health.checks[i].name == name {
			r.health.checks[i].fn = fn
			return
		}
	}
	r.health.checks = append(r.health.checks, namedCheck{name, fn})
}

// Health runs every check at once, each bounded by ctx and HealthTimeout,
// and reports them in the order they were added.
func (r *Registry) Health(ctx context.Context) contract.Health {
	h := contract.Health{Envelope: contract.NewEnvelope(contract.TypeHealth), OK: true, Checks: []contract.HealthCheck{}}
	if r == nil {
		return h
	}
	r.health.mu.Lock()
	checks := append([]namedCheck(nil), r.health.checks...)
	r.health.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, HealthTimeout)
	defer cancel()
	type result struct {
		i int
		c contract.HealthCheck
	}
	// Buffered: a check that outlives the timeout finishes into it unread.
	ch := make(chan result, len(checks))
	results := make([]contract.HealthCheck, len(checks))
	for i, c := range checks {
		results[i] = contract.HealthCheck{Name: c.name, Detail: "no answer within " + HealthTimeout.String()}
		go func() {
			detail, err := c.fn(ctx)
			if err != nil {
				detail = err.Error()
			}
			ch <- result{i, contract.HealthCheck{Name: c.name, OK: err == nil, Detail: detail}}
		}()
	}
wait:
	for range checks {
		select {
		case res := <-ch:
			results[res.i] = res.c
		case <-ctx.Done():
			break wait
		}
	}
	h.Checks = results
	for _, c := range results {
		h.OK = h.OK && c.OK
	}
	return h
}

// NATSCheck is ready while nc is connected.
func NATSCheck(nc *nats.Conn) Check {
	return func(context.Context) (string, error) {
		if st := nc.Status(); st != nats.CONNECTED {
			return "", fmt.Errorf("NATS connection is %s", st)
		}
		return "connected to " + nc.ConnectedUrlRedacted(), nil
	}
}

// JetStreamCheck is ready while JetStream answers an account info request.
func JetStreamCheck(js jetstream.JetStream) Check {
	return func(ctx context.Context) (string, error) {
		ai, err := js.AccountInfo(ctx)
		if err != nil {
			return "", fmt.Errorf("JetStream: %w", err)
		}
		return fmt.Sprintf("JetStream reachable: %d streams, %d bytes stored", ai.Streams, ai.Store), nil
	}
}

// Heartbeat calls a probe (Chroma's heartbeat) every interval and keeps the
// result, so that a health check answers from it at once instead of
// waiting on a slow server. Run it in its own goroutine.
type Heartbeat struct {
	name     string
	probe    func(ctx context.Context) error
	interval time.Duration
	timeout  time.Duration

	last atomic.Pointer[beat]
}

type beat struct {
	at  time.Time // when the probe ended
	ok  time.Time // the last success
	err error
}

// NewHeartbeat returns a Heartbeat of what (e.g. "Chroma at URL"). Each
// probe is bounded by min(interval, 5s).
func NewHeartbeat(what string, probe func(ctx context.Context) error, interval time.Duration) *Heartbeat {
	if interval <= 0 {
		interval = 10 * time.Second
	}
	return &Heartbeat{name: what, probe: probe, interval: interval, timeout: min(interval, 5*time.Second)}
}

// Run probes until ctx ends; it returns nil.
func (h *Heartbeat) Run(ctx context.Context) error {
	t := time.NewTicker(h.interval)
	defer t.Stop()
	for {
		h.Probe(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Probe calls the probe once and keeps its result.
func (h *Heartbeat) Probe(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, h.timeout)
	err := h.probe(pctx)
	cancel()
	if ctx.Err() != nil {
		return
	}
	b := &beat{at: time.Now(), err: err}
	if prev := h.last.Load(); prev != nil {
		b.ok = prev.ok
	}
	if err == nil {
		b.ok = b.at
	}
	h.last.Store(b)
}

// errNoBeat: Run has not finished a probe yet.
var errNoBeat = errors.New("no heartbeat yet")

// Check is ready when the latest probe, at most three intervals old,
// succeeded.
func (h *Heartbeat) Check(context.Context) (string, error) {
	b := h.last.Load()
	switch {
	case b == nil:
		return "", fmt.Errorf("%s: %w", h.name, errNoBeat)
	case time.Since(b.at) > 3*h.interval:
		return "", fmt.Errorf("%s: the last heartbeat is %s old", h.name, time.Since(b.at).Round(time.Second))
	case b.err != nil:
		last := "never"
		if !b.ok.IsZero() {
			last = b.ok.UTC().Format(time.RFC3339)
		}
		return "", fmt.Errorf("%s: heartbeat failed (last success %s): %w", h.name, last, b.err)
	}
	return fmt.Sprintf("%s answered its heartbeat %s ago", h.name, time.Since(b.at).Round(time.Millisecond)), nil
}
