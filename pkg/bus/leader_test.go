package bus_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
)

// laggingKV answers every Get as a replica that has not yet stored the key
// would: not found. Everything else is the real bucket's.
type laggingKV struct{ jetstream.KeyValue }

func (laggingKV) Get(context.Context, string) (jetstream.KeyValueEntry, error) {
	return nil, jetstream.ErrKeyNotFound
}

// laggingObjects is the object store as a replica that has not yet
// stored any object's info answers GetInfo.
type laggingObjects struct{ jetstream.ObjectStore }

func (laggingObjects) GetInfo(context.Context, string, ...jetstream.GetObjectInfoOpt) (*jetstream.ObjectInfo, error) {
	return nil, jetstream.ErrObjectNotFound
}

// TestNotFoundAsksTheLeader: direct gets, which every replica of a
// clustered bucket answers, may come from a replica that lags behind a
// write another process just made. A key or object that such a replica
// does not have is read from the stream leader; only what the leader
// does not hold either, or holds deleted, is reported missing.
func TestNotFoundAsksTheLeader(t *testing.T) {
	n := testenv.StartNATS(t)
	ctx := t.Context()

	raw, err := n.JS.KeyValue(ctx, contract.BucketManifests)
	if err != nil {
		t.Fatal(err)
	}
	kv := bus.RetryKeyValue(n.JS, laggingKV{raw})
	rev, err := raw.Put(ctx, "written", []byte(`{"a":1}`))
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, "written")
	if err != nil {
		t.Fatalf("a key the leader holds: %v", err)
	}
	if string(e.Value()) != `{"a":1}` || e.Revision() != rev || e.Key() != "written" || e.Bucket() != contract.BucketManifests || e.Operation() != jetstream.KeyValuePut {
		t.Errorf("entry %s/%s rev %d op %v = %q; want rev %d = {\"a\":1}", e.Bucket(), e.Key(), e.Revision(), e.Operation(), e.Value(), rev)
	}
	for _, k := range []string{"deleted", "purged"} {
		if _, err := raw.Put(ctx, k, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := raw.Delete(ctx, "deleted"); err != nil {
		t.Fatal(err)
	}
	if err := raw.Purge(ctx, "purged"); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"deleted", "purged", "never-written"} {
		if e, err := kv.Get(ctx, k); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Errorf("Get(%q) = %v, %v; want not found", k, e, err)
		}
	}

	rawObs, err := n.JS.ObjectStore(ctx, contract.ObjectSnapshots)
	if err != nil {
		t.Fatal(err)
	}
	obs := bus.RetryObjectStore(n.JS, contract.ObjectSnapshots, laggingObjects{rawObs})
	data := randomBytes(300000, 9)
	want, err := rawObs.PutBytes(ctx, "stored", data)
	if err != nil {
		t.Fatal(err)
	}
	info, err := obs.GetInfo(ctx, "stored")
	if err != nil {
		t.Fatalf("an object the leader holds: %v", err)
	}
	if info.NUID != want.NUID || info.Size != want.Size || info.Digest != want.Digest || info.Chunks != want.Chunks || info.ModTime.IsZero() {
		t.Errorf("info %+v; stored %+v", info, want)
	}
	res, err := obs.Get(ctx, "stored")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(res)
	_ = res.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get: %d bytes, %v; want %d", len(got), err, len(data))
	}
	if _, err := rawObs.PutBytes(ctx, "deleted", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := rawObs.Delete(ctx, "deleted"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"deleted", "never-stored"} {
		if info, err := obs.GetInfo(ctx, name); !errors.Is(err, jetstream.ErrObjectNotFound) {
			t.Errorf("GetInfo(%q) = %+v, %v; want not found", name, info, err)
		}
	}
}
