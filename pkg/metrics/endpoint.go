package metrics

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// EndpointOptions wire a process's /metrics and /healthz.
type EndpointOptions struct {
	// Listen is host:port; port 0 picks one.
	Listen string
	// NATS is the process's connection: /healthz checks it and JetStream,
	// and the scrape-time gauges are read through it.
	NATS *nats.Conn
	// Chroma, when set, is Chroma's heartbeat: it is called every
	// ChromaInterval (default 10 s) in the background, and /healthz
	// answers from the latest result. ChromaURL names it in the report.
	Chroma         func(ctx context.Context) error
	ChromaURL      string
	ChromaInterval time.Duration
	// State configures the scrape-time gauges.
	State StateOptions
	Log   *slog.Logger
}

// Endpoint is a process's metrics endpoint: the Registry its services
// record into, served over HTTP with the readiness checks.
type Endpoint struct {
	// Registry goes into each service's configuration.
	Registry *Registry
	srv      *Server
	hb       *Heartbeat
	log      *slog.Logger
}

// OpenEndpoint builds the registry and its checks and binds Listen, so a
// port in use is reported before any service starts. An empty Listen
// turns metrics off: the Endpoint is nil, its Serve only runs the service
// and its Metrics is nil.
func OpenEndpoint(o EndpointOptions) (*Endpoint, error) {
	if o.Listen == "" {
		return nil, nil
	}
	if o.NATS == nil {
		return nil, fmt.Errorf("metrics endpoint: a NATS connection is required")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	js, err := jetstream.New(o.NATS)
	if err != nil {
		return nil, fmt.Errorf("metrics endpoint: jetstream: %w", err)
	}
	r := New()
	r.WatchState(js, o.State)
	r.AddCheck("nats", NATSCheck(o.NATS))
	r.AddCheck("jetstream", JetStreamCheck(js))
	e := &Endpoint{Registry: r, log: o.Log}
	if o.Chroma != nil {
		e.hb = NewHeartbeat("Chroma at "+chroma.RedactURL(o.ChromaURL), o.Chroma, o.ChromaInterval)
		r.AddCheck("chroma", e.hb.Check)
	}
	if e.srv, err = r.Listen(o.Listen, o.Log); err != nil {
		return nil, err
	}
	return e, nil
}

// Addr is the bound address.
func (e *Endpoint) Addr() net.Addr { return e.srv.Addr() }

// Run serves /metrics and /healthz, and probes Chroma, until ctx ends.
func (e *Endpoint) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	if e.hb != nil {
		wg.Go(func() { _ = e.hb.Run(ctx) })
	}
	e.log.Info("metrics endpoint ready", "addr", e.Addr().String(), "paths", "/metrics /healthz")
	return e.srv.Serve(ctx)
}

// Serve runs service with the endpoint answering beside it until service
// returns, then stops the endpoint. The endpoint failing is logged and
// does not stop the service. A nil Endpoint (metrics off) only runs
// service.
func (e *Endpoint) Serve(ctx context.Context, service func(context.Context) error) error {
	if e == nil {
		return service(ctx)
	}
	ectx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := e.Run(ectx); err != nil {
			e.log.Error("metrics endpoint stopped", "err", err)
		}
	}()
	err := service(ctx)
	stop()
	<-done
	return err
}

// Metrics returns the registry, nil for a nil Endpoint.
func (e *Endpoint) Metrics() *Registry {
	if e == nil {
		return nil
	}
	return e.Registry
}
