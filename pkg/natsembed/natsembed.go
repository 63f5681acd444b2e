// Package natsembed runs a NATS server with JetStream inside the process, for
// `chromadb-rollback serve` and for tests.
package natsembed

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/filelock"
	"github.com/nats-io/nats-server/v2/server"
)

// LockFile is the file in the store directory that a running server holds
// locked: two servers on one store corrupt it, and nats-server does not
// stop the second.
const LockFile = "LOCK"

// ErrStoreInUse says another process runs a server on the store directory.
var ErrStoreInUse = errors.New("the JetStream store is in use by another process")

// Options configure the embedded server.
type Options struct {
	// Listen is host:port; port 0 (or -1) picks a free port.
	Listen string
	// StoreDir holds the JetStream file store.
	StoreDir string
	// ServerName names the server (and its JetStream node).
	ServerName string
	// MaxStore caps JetStream file storage in bytes; 0 lets the server choose.
	MaxStore int64
	// Logging routes the server's own log to stderr.
	Logging bool
	// Log gets a warning when the store cannot be locked because its file
	// system takes no locks; nil discards it.
	Log *slog.Logger
}

// Start runs a server and waits until it accepts clients.
func Start(o Options) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(o.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: %w (want host:port)", o.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: bad port", o.Listen)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	if o.StoreDir == "" {
		return nil, fmt.Errorf("embedded NATS: a store directory is required")
	}
	name := o.ServerName
	if name == "" {
		name = "chromadb-rollback"
	}
	opts := &server.Options{
		ServerName:         name,
		Host:               host,
		Port:               port,
		JetStream:          true,
		StoreDir:           o.StoreDir,
		JetStreamMaxStore:  o.MaxStore,
		NoSigs:             true,
		MaxPayload:         8 << 20,
		JetStreamMaxMemory: 256 << 20,
	}
	if err := os.MkdirAll(o.StoreDir, 0o750); err != nil {
		return nil, fmt.Errorf("embedded NATS: store directory: %w", err)
	}
	// Held until the server has shut down; a server of this process that
	// is shutting down on the same store is waited for a little.
	lock, err := filelock.Acquire(filepath.Join(o.StoreDir, LockFile), 3*time.Second)
	if errors.Is(err, filelock.ErrHeld) {
		return nil, fmt.Errorf("%w (%s): is another chromadb-rollback serve running with this data directory? Stop it, or give this one its own --data-dir", ErrStoreInUse, o.StoreDir)
	}
	if errors.Is(err, filelock.ErrUnsupported) && o.Log != nil {
		o.Log.Warn("the JetStream store's file system takes no locks: nothing stops a second server on it", "store", o.StoreDir, "err", err)
	}
	if err != nil && !errors.Is(err, filelock.ErrUnsupported) {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	// nats-server reports an address it cannot listen on only to its
	// logger and then never becomes ready: find it here and say so at once,
	// instead of after the readiness wait with no cause.
	if port > 0 {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, portStr))
		if err != nil {
			lock.Release()
			return nil, fmt.Errorf("embedded NATS cannot listen on %s: %w (another NATS server, or another chromadb-rollback serve, uses that address: stop it, or give this one another --listen / NATS_LISTEN)", o.Listen, err)
		}
		ln.Close()
	}
	s, err := server.NewServer(opts)
	if err != nil {
		lock.Release()
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	if o.Logging {
		s.ConfigureLogger()
	}
	go s.Start()
	go func() {
		s.WaitForShutdown()
		lock.Release()
	}()
	if !s.ReadyForConnections(15 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded NATS on %s did not become ready within 15s", o.Listen)
	}
	return s, nil
}
