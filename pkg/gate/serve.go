package gate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Server timeouts of Serve. There is no write timeout: a large query or get
// may stream for long, and Chroma bounds its own work.
const (
	ReadHeaderTimeout = 10 * time.Second
	// ReadTimeout bounds reading a whole request, body included (Chroma
	// takes bodies up to 40 MiB).
	ReadTimeout     = 5 * time.Minute
	IdleTimeout     = 2 * time.Minute
	ShutdownTimeout = 15 * time.Second
	MaxHeaderBytes  = 1 << 20
)

// Serve listens on listen (host:port) and serves the gate until ctx is
// done, then shuts down gracefully (in-flight requests get ShutdownTimeout
// to finish, then are cut). It returns nil after a shutdown caused by ctx.
func (g *Gate) Serve(ctx context.Context, listen string) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", listen)
	if err != nil {
		return fmt.Errorf("gate: listen on %s: %w", listen, err)
	}
	return g.ServeListener(ctx, ln)
}

// ServeListener is Serve on a listener the caller opened (e.g. on port 0,
// to learn the address); it closes ln.
func (g *Gate) ServeListener(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           g,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelWarn),
	}
	g.log.InfoContext(ctx, "read-only gate listening",
		slog.String("addr", ln.Addr().String()), slog.String("upstream", g.upstream.Redacted()))
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("gate: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		g.log.WarnContext(ctx, "read-only gate: requests still running at shutdown were cut",
			slog.Any("err", err))
		_ = srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("gate: serve: %w", err)
	}
	g.log.InfoContext(ctx, "read-only gate stopped", slog.String("addr", ln.Addr().String()))
	return nil
}
