package natsembed

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestStoreLocked: a second server on a store in use is refused before it
// touches it, the first one goes on, and a server restarted on the store
// once the first has shut down gets it, with what the first stored.
func TestStoreLocked(t *testing.T) {
	dir := t.TempDir()
	a, err := Start(Options{Listen: "127.0.0.1:0", StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(a.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	js, _ := nc.JetStream()
	if _, err := js.AddStream(&nats.StreamConfig{Name: "KEPT", Subjects: []string{"kept"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish("kept", []byte("one")); err != nil {
		t.Fatal(err)
	}

	b, err := Start(Options{Listen: "127.0.0.1:0", StoreDir: dir})
	if err == nil {
		b.Shutdown()
		t.Fatal("a second server started on a store in use")
	}
	if !errors.Is(err, ErrStoreInUse) || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "--data-dir") {
		t.Errorf("second server: %v; want ErrStoreInUse naming %s and --data-dir", err, dir)
	}
	if _, err := js.Publish("kept", []byte("two")); err != nil {
		t.Errorf("first server after the refusal: %v", err)
	}
	nc.Close()
	a.Shutdown()
	a.WaitForShutdown()

	c, err := Start(Options{Listen: "127.0.0.1:0", StoreDir: dir})
	if err != nil {
		t.Fatalf("restart on the store: %v", err)
	}
	defer func() { c.Shutdown(); c.WaitForShutdown() }()
	nc, err = nats.Connect(c.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ = nc.JetStream()
	si, err := js.StreamInfo("KEPT")
	if err != nil || si.State.Msgs != 2 {
		t.Fatalf("after the restart: %+v, %v; want the 2 messages stored", si, err)
	}
}

// TestListenAddressInUse: a server asked to listen where something already
// listens (NATS on 4222, another serve) is refused at once, naming the
// address and what to change, and leaves its store unlocked; nats-server
// alone only logs it and never becomes ready, which cost 15 s and an error
// without a cause.
func TestListenAddressInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	dir := t.TempDir()
	start := time.Now()
	s, err := Start(Options{Listen: addr, StoreDir: dir})
	if err == nil {
		s.Shutdown()
		t.Fatalf("a server started on %s, which is in use", addr)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("refused after %v; want at once", took)
	}
	for _, want := range []string{addr, "address already in use", "--listen"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	// The store is free again for a server that can listen.
	s, err = Start(Options{Listen: "127.0.0.1:0", StoreDir: dir})
	if err != nil {
		t.Fatalf("start on the store after the refusal: %v", err)
	}
	s.Shutdown()
	s.WaitForShutdown()
}
