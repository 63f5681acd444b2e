package bus_test

import (
	"bytes"
	"context"
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
	t.Run("a read stops once its context ends", func(t *testing.T) {
		// An export interrupted with Ctrl-C cancels its context: the read
		// must stop there, not stream on to the end.
		info, err := obs.GetInfo(ctx, "big")
		if err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithCancel(ctx)
		defer cancel()
		or, err := bus.OpenObject(rctx, n.JS, contract.ObjectSnapshots, info)
		if err != nil {
			t.Fatal(err)
		}
		defer or.Close()
		if _, err := io.ReadFull(or, make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
		cancel()
		got, err := io.ReadAll(or)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("read after the context ended: %d more bytes, err %v; want context.Canceled", len(got), err)
		}
		if len(got) >= len(data)-1000 {
			t.Fatalf("read after the context ended: the whole rest (%d bytes)", len(got))
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

// TestRetryObjectStoreGet: the object store Bootstrap returns reads through
// OpenObject: whole objects, their info, a missing one as not found, and a
// chunk changed behind the object's back as a digest mismatch at EOF.
func TestRetryObjectStoreGet(t *testing.T) {
	n := testenv.StartNATS(t)
	ctx := t.Context()
	obs := n.Assets.Snapshots
	data := randomBytes(2<<20+7, 5)
	if _, err := obs.PutBytes(ctx, "whole", data); err != nil {
		t.Fatal(err)
	}
	res, err := obs.Get(ctx, "whole")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(res)
	if err != nil || !bytes.Equal(got, data) || res.Error() != nil {
		t.Fatalf("Get: %d bytes, %v, Error() %v", len(got), err, res.Error())
	}
	if info, err := res.Info(); err != nil || info.Name != "whole" || info.Size != uint64(len(data)) {
		t.Errorf("Info: %+v, %v", info, err)
	}
	res.Close()
	if _, err := obs.Get(ctx, "missing"); !bus.IsNotFound(err) {
		t.Errorf("Get of a missing object: %v, want not found", err)
	}

	// Store the chunks again with one byte changed, so the bytes differ
	// from the recorded digest.
	info, err := obs.GetInfo(ctx, "whole")
	if err != nil {
		t.Fatal(err)
	}
	subj := bus.ChunkSubject(contract.ObjectSnapshots, info.NUID)
	stream, err := n.JS.Stream(ctx, "OBJ_"+contract.ObjectSnapshots)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Purge(ctx, jetstream.WithPurgeSubject(subj)); err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(data)
	flipped[1000] ^= 0xff
	for off := 0; off < len(flipped); off += int(info.Opts.ChunkSize) {
		if _, err := n.JS.Publish(ctx, subj, flipped[off:min(off+int(info.Opts.ChunkSize), len(flipped))]); err != nil {
			t.Fatal(err)
		}
	}
	res, err = obs.Get(ctx, "whole")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	if _, err := io.ReadAll(res); !errors.Is(err, jetstream.ErrDigestMismatch) {
		t.Errorf("reading a changed chunk: %v, want a digest mismatch", err)
	}
	if !errors.Is(res.Error(), jetstream.ErrDigestMismatch) {
		t.Errorf("Error() after a changed chunk: %v", res.Error())
	}
}

// TestObjectReadsLeaveNoConsumers: a put's read-back and an archive read,
// whole or given up early, delete their consumers when done, rather than
// leaving them on the stream until they expire minutes later.
func TestObjectReadsLeaveNoConsumers(t *testing.T) {
	n := testenv.StartNATS(t)
	ctx := t.Context()
	data := make([]byte, 1<<20+7)
	info, err := bus.PutObject(ctx, n.JS, contract.ObjectSnapshots, jetstream.ObjectMeta{Name: "obj"}, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	for _, limit := range []int64{int64(len(data)), 1000} {
		or, err := bus.OpenObject(ctx, n.JS, contract.ObjectSnapshots, info)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := io.ReadAll(io.LimitReader(or, limit)); err != nil || int64(len(got)) != limit {
			t.Fatalf("read %d bytes, %v; want %d", len(got), err, limit)
		}
		or.Close()
	}
	st, err := n.JS.Stream(ctx, "OBJ_"+contract.ObjectSnapshots)
	if err != nil {
		t.Fatal(err)
	}
	si, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if si.State.Consumers != 0 {
		t.Errorf("%d consumers left on the object store's stream after a put and two reads", si.State.Consumers)
	}
}
