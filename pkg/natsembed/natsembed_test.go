package natsembed

import (
	"errors"
	"strings"
	"testing"

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
