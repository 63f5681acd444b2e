// Package natsembed runs a NATS server with JetStream inside the process, for
// `chromadb-rollback serve` and for tests.
package natsembed

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

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
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	if o.Logging {
		s.ConfigureLogger()
	}
	go s.Start()
	if !s.ReadyForConnections(15 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded NATS on %s did not become ready within 15s", o.Listen)
	}
	return s, nil
}
