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
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
)

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	return data
}

// chunksOf counts the messages the stream holds on the object's chunk
// subject.
func chunksOf(t *testing.T, n *testenv.NATS, nuid string) uint64 {
	t.Helper()
	st, err := n.JS.Stream(t.Context(), "OBJ_"+contract.ObjectSnapshots)
	if err != nil {
		t.Fatal(err)
	}
	subj := bus.ChunkSubject(contract.ObjectSnapshots, nuid)
	info, err := st.Info(t.Context(), jetstream.WithSubjectFilter(subj))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subj]
}

// TestPutObject: what PutObject stores is an ordinary object: the object
// store's own Get and GetInfo, and OpenObject, read it back whole, with
// the size, chunk count and digest Put would have recorded.
func TestPutObject(t *testing.T) {
	n := testenv.StartNATS(t)
	ctx := t.Context()
	obs := n.Assets.Snapshots
	for _, tc := range []struct {
		name string
		size int
	}{{"empty", 0}, {"one byte", 1}, {"exactly two chunks", 2 * bus.PutChunkSize}, {"25 chunks, the last short", 3<<20 + 12345}} {
		t.Run(tc.name, func(t *testing.T) {
			data := randomBytes(tc.size, uint64(tc.size))
			want, err := obs.PutBytes(ctx, "reference-"+tc.name, data)
			if err != nil {
				t.Fatal(err)
			}
			// Short reads from the source still fill whole chunks.
			info, err := bus.PutObject(ctx, n.JS, contract.ObjectSnapshots, jetstream.ObjectMeta{Name: tc.name, Description: "d"}, iotest.HalfReader(bytes.NewReader(data)))
			if err != nil {
				t.Fatal(err)
			}
			if info.Size != want.Size || info.Chunks != want.Chunks || info.Digest != want.Digest {
				t.Errorf("info %d bytes in %d chunks, %s; Put records %d in %d, %s", info.Size, info.Chunks, info.Digest, want.Size, want.Chunks, want.Digest)
			}
			stored, err := obs.GetInfo(ctx, tc.name)
			if err != nil {
				t.Fatal(err)
			}
			if stored.NUID != info.NUID || stored.Digest != info.Digest || stored.Size != info.Size || stored.Description != "d" {
				t.Errorf("GetInfo %+v, PutObject returned %+v", stored, info)
			}
			got, err := obs.GetBytes(ctx, tc.name)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("Get: %d bytes, %v; want %d", len(got), err, len(data))
			}
			or, err := bus.OpenObject(ctx, n.JS, contract.ObjectSnapshots, stored)
			if err != nil {
				t.Fatal(err)
			}
			defer or.Close()
			if got, err := io.ReadAll(or); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("OpenObject: %d bytes, %v", len(got), err)
			}
		})
	}
	t.Run("replaces an object of the same name", func(t *testing.T) {
		first, err := bus.PutObject(ctx, n.JS, contract.ObjectSnapshots, jetstream.ObjectMeta{Name: "again"}, bytes.NewReader(randomBytes(300000, 1)))
		if err != nil {
			t.Fatal(err)
		}
		// Its checks of what is stored ask the stream's leader: a direct
		// get may be answered by a follower that lags (any replica answers
		// them), and would miss the chunks just stored or the object's
		// earlier info.
		direct, err := n.Conn.SubscribeSync("$JS.API.DIRECT.GET.OBJ_" + contract.ObjectSnapshots + ".>")
		if err != nil {
			t.Fatal(err)
		}
		directAll, err := n.Conn.SubscribeSync("$JS.API.DIRECT.GET.OBJ_" + contract.ObjectSnapshots)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Conn.Flush(); err != nil {
			t.Fatal(err)
		}
		data := randomBytes(200000, 2)
		if _, err := bus.PutObject(ctx, n.JS, contract.ObjectSnapshots, jetstream.ObjectMeta{Name: "again"}, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		if err := n.Conn.Flush(); err != nil {
			t.Fatal(err)
		}
		for _, sub := range []*nats.Subscription{direct, directAll} {
			if m, err := sub.NextMsg(100 * time.Millisecond); err == nil {
				t.Errorf("PutObject made a direct get, which a lagging follower may answer: %s %s", m.Subject, m.Data)
			}
			_ = sub.Unsubscribe()
		}
		if got, err := obs.GetBytes(ctx, "again"); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("Get: %d bytes, %v", len(got), err)
		}
		if c := chunksOf(t, n, first.NUID); c != 0 {
			t.Errorf("the replaced object's %d chunks are still stored", c)
		}
	})
}

// TestPutObjectWithChunkID: a put under a chosen chunk id first removes
// what a put under that id cut short left (chunks no object names), stores
// an object that reads back whole, refuses to overwrite the chunks of the
// object it would replace, and PurgeChunks removes such leftovers alone.
func TestPutObjectWithChunkID(t *testing.T) {
	n := testenv.StartNATS(t)
	ctx := t.Context()
	obs := n.Assets.Snapshots
	// A put killed after two chunks: they are stored, no object names them.
	for i := range 2 {
		if _, err := n.JS.Publish(ctx, bus.ChunkSubject(contract.ObjectSnapshots, "snap_x_tar_zst"), randomBytes(1000, uint64(i))); err != nil {
			t.Fatal(err)
		}
	}
	data := randomBytes(3*bus.PutChunkSize+5, 9)
	info, err := bus.PutObject(ctx, n.JS, contract.ObjectSnapshots, jetstream.ObjectMeta{Name: "snap_x.tar.zst"}, bytes.NewReader(data), bus.WithChunkID("snap_x_tar_zst"))
	if err != nil {
		t.Fatal(err)
	}
	if info.NUID != "snap_x_tar_zst" || info.Chunks != 4 {
		t.Errorf("object info: NUID %s, %d chunks; want snap_x_tar_zst and 4", info.NUID, info.Chunks)
	}
	if c := chunksOf(t, n, "snap_x_tar_zst"); c != 4 {
		t.Errorf("%d chunks stored under the id, want the object's 4 (the earlier put's 2 purged)", c)
	}
	if got, err := obs.GetBytes(ctx, "snap_x.tar.zst"); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get: %d bytes, %v", len(got), err)
	}

	// Replacing it under the same id would purge its chunks before the
	// new ones are verified.
	if _, err := bus.PutObject(ctx, n.JS, contract.ObjectSnapshots, jetstream.ObjectMeta{Name: "snap_x.tar.zst"}, bytes.NewReader([]byte("new")), bus.WithChunkID("snap_x_tar_zst")); err == nil {
		t.Error("a put under the chunk id of the object it replaces was accepted")
	}
	if got, err := obs.GetBytes(ctx, "snap_x.tar.zst"); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after the refused put, Get: %d bytes, %v", len(got), err)
	}
	if _, err := bus.PutObject(ctx, n.JS, contract.ObjectSnapshots, jetstream.ObjectMeta{Name: "y"}, bytes.NewReader(data), bus.WithChunkID("not.a.token")); err == nil {
		t.Error("a chunk id with dots was accepted")
	}

	if _, err := n.JS.Publish(ctx, bus.ChunkSubject(contract.ObjectSnapshots, "left_over"), []byte("chunk")); err != nil {
		t.Fatal(err)
	}
	if err := bus.PurgeChunks(ctx, n.JS, contract.ObjectSnapshots, "left_over"); err != nil {
		t.Fatal(err)
	}
	if c := chunksOf(t, n, "left_over"); c != 0 {
		t.Errorf("%d chunks left after PurgeChunks", c)
	}
	if orphans, err := bus.OrphanChunks(ctx, n.JS, contract.ObjectSnapshots); err != nil || len(orphans) != 0 {
		t.Errorf("chunks no object names: %v (%v)", orphans, err)
	}
}

func TestChunkIDFor(t *testing.T) {
	for name, want := range map[string]string{
		"snap_20261126T101500Z_0123456789ab.tar.zst":          "snap_20261126T101500Z_0123456789ab_tar_zst",
		"snap_20261126T101500Z_0123456789ab.attempt2.tar.zst": "snap_20261126T101500Z_0123456789ab_attempt2_tar_zst",
		"import/20261126T101500Z_abcdef012345":                "import_20261126T101500Z_abcdef012345",
		"a b*c>d.é":                                           "a_b_c_d__",
	} {
		if got := bus.ChunkIDFor(name); got != want {
			t.Errorf("ChunkIDFor(%q) = %q, want %q", name, got, want)
		}
	}
}

// TestPutObjectRefusesWhatDoesNotReadBack: a chunk stored twice (as a
// publish retried over a lost ack would store it) or changed on its way,
// or a source that fails, leaves no object and no chunk behind.
func TestPutObjectRefusesWhatDoesNotReadBack(t *testing.T) {
	n := testenv.StartNATS(t)
	ctx := t.Context()
	data := randomBytes(5*bus.PutChunkSize+99, 3)
	var subject string // the put's chunk subject
	// storeTwice stores chunk k a second time, as a retried publish would.
	storeTwice := func(k int) func(string, int, []byte) {
		return func(subj string, at int, chunk []byte) {
			subject = subj
			if at == k {
				if _, err := n.JS.Publish(ctx, subj, bytes.Clone(chunk)); err != nil {
					t.Error(err)
				}
			}
		}
	}
	chunksLeft := func() uint64 {
		return chunksOf(t, n, strings.TrimPrefix(subject, bus.ChunkSubject(contract.ObjectSnapshots, "")))
	}
	for _, tc := range []struct {
		name   string
		after  func(subject string, k int, chunk []byte)
		before func(k int, chunk []byte)
		src    io.Reader
		want   error
	}{
		{"a chunk changed after it was hashed", func(subj string, _ int, _ []byte) { subject = subj },
			func(k int, chunk []byte) {
				if k == 3 {
					chunk[1000] ^= 0x10
				}
			}, bytes.NewReader(data), bus.ErrReadBack},
		{"a chunk stored twice mid-object", storeTwice(2), nil, bytes.NewReader(data), bus.ErrReadBack},
		{"the last chunk stored twice", storeTwice(6), nil, bytes.NewReader(data), bus.ErrReadBack},
		{"a source that fails", func(subj string, _ int, _ []byte) { subject = subj }, nil,
			io.MultiReader(bytes.NewReader(data[:3*bus.PutChunkSize]), iotest.ErrReader(errors.New("export failed"))), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bus.SetAfterChunk(tc.after)
			bus.SetBeforeChunk(tc.before)
			defer bus.SetAfterChunk(nil)
			defer bus.SetBeforeChunk(nil)
			_, err := bus.PutObject(ctx, n.JS, contract.ObjectSnapshots, jetstream.ObjectMeta{Name: tc.name}, tc.src)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if _, err := n.Assets.Snapshots.GetInfo(ctx, tc.name); !errors.Is(err, jetstream.ErrObjectNotFound) {
				t.Errorf("GetInfo after the failed put: %v, want not found", err)
			}
			if c := chunksLeft(); c != 0 {
				t.Errorf("%d chunks left behind", c)
			}
		})
	}
	t.Run("a cancelled put", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		bus.SetAfterChunk(func(subj string, k int, _ []byte) {
			subject = subj
			if k == 2 {
				cancel()
			}
		})
		defer bus.SetAfterChunk(nil)
		if _, err := bus.PutObject(cctx, n.JS, contract.ObjectSnapshots, jetstream.ObjectMeta{Name: "cancelled"}, bytes.NewReader(data)); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if c := chunksLeft(); c != 0 {
			t.Errorf("%d chunks left behind", c)
		}
	})
}
