package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// RunService runs svc, which holds its own connection nc, until the
// returned stop is called or the test ends. With graceful, stop cancels
// Run's context and waits for Run to return before closing nc, as the
// process does on SIGTERM (what Run does on its way out reaches the
// server); without, it closes nc at once, as a dying worker's connection
// is, without acking what it holds. A Run that fails or does not return
// within 30 s fails the test.
func RunService(tb testing.TB, name string, nc *nats.Conn, svc interface{ Run(context.Context) error }, graceful bool) (stop func()) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if !graceful {
			nc.Close()
		}
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("%s run: %v", name, err)
			}
		case <-time.After(30 * time.Second):
			tb.Errorf("%s did not stop within 30s", name)
		}
		nc.Close()
	}
	tb.Cleanup(stop)
	return stop
}
