package bus_test

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/nats-io/nats.go/jetstream"
)

func TestObjectReader(t *testing.T) {
	n := testenv.StartNATS(t)
	ctx := t.Context()
	obs := n.Assets.Snapshots
	data := make([]byte, 3<<20+12345) // 25 chunks, the last one short
	r := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	if _, err := obs.PutBytes(ctx, "big", data); err != nil {
		t.Fatal(err)
	}
	if _, err := obs.PutBytes(ctx, "empty", nil); err != nil {
		t.Fatal(err)
	}
	open := func(name string, edit func(*jetstream.ObjectInfo)) *bus.ObjectReader {
		t.Helper()
		info, err := obs.GetInfo(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if edit != nil {
			edit(info)
		}
		or, err := bus.OpenObject(ctx, n.JS, contract.ObjectSnapshots, info)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { or.Close() })
		return or
	}

	t.Run("reads every byte, in small reads too", func(t *testing.T) {
		got, err := io.ReadAll(iotest.OneByteReader(io.LimitReader(open("big", nil), 300000)))
		if err != nil || !bytes.Equal(got, data[:300000]) {
			t.Fatalf("first 300000 bytes: %v", err)
		}
		got, err = io.ReadAll(open("big", nil))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("whole object: %d bytes, err %v", len(got), err)
		}
		got, err = io.ReadAll(open("empty", nil))
		if err != nil || len(got) != 0 {
			t.Fatalf("empty object: %d bytes, err %v", len(got), err)
		}
	})
	t.Run("a digest or size that disagrees fails at EOF", func(t *testing.T) {
		_, err := io.ReadAll(open("big", func(i *jetstream.ObjectInfo) {
			i.Digest = "SHA-256=" + strings.Repeat("A", 43) + "="
		}))
		if !errors.Is(err, jetstream.ErrDigestMismatch) {
			t.Errorf("wrong digest: %v", err)
		}
		_, err = io.ReadAll(open("big", func(i *jetstream.ObjectInfo) { i.Size++ }))
		if err == nil || !strings.Contains(err.Error(), "its info says") {
			t.Errorf("wrong size: %v", err)
		}
	})
}
