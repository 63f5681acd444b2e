package testenv

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/nats-io/nats.go/jetstream"
)

// DamageStoredChunks flips one byte of a stored archive object (at offset
// at(size)) in the object store's chunk messages, leaving the object's
// recorded size and digest as they were: damage in storage, which only
// reading the object finds, not a replaced object.
func (n *NATS) DamageStoredChunks(tb testing.TB, object string, at func(size int) int) {
	tb.Helper()
	ctx := tb.Context()
	info, err := n.Assets.Snapshots.GetInfo(ctx, object)
	if err != nil {
		tb.Fatal(err)
	}
	str, err := n.JS.Stream(ctx, "OBJ_"+contract.ObjectSnapshots)
	if err != nil {
		tb.Fatal(err)
	}
	subj := bus.ChunkSubject(contract.ObjectSnapshots, info.NUID)
	cons, err := str.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subj}})
	if err != nil {
		tb.Fatal(err)
	}
	var chunks [][]byte
	size := 0
	for len(chunks) < int(info.Chunks) {
		msg, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			tb.Fatalf("read chunk %d of %s: %v", len(chunks), object, err)
		}
		chunks = append(chunks, slices.Clone(msg.Data()))
		size += len(msg.Data())
	}
	off := at(size)
	for i := range chunks {
		if off < len(chunks[i]) {
			chunks[i][off] ^= 0x40
			break
		}
		off -= len(chunks[i])
	}
	if err := str.Purge(ctx, jetstream.WithPurgeSubject(subj)); err != nil {
		tb.Fatal(err)
	}
	for _, c := range chunks {
		if _, err := n.JS.Publish(ctx, subj, c); err != nil {
			tb.Fatal(err)
		}
	}
	after, err := n.Assets.Snapshots.GetInfo(ctx, object)
	if err != nil || after.Digest != info.Digest || after.Size != info.Size {
		tb.Fatalf("object info changed: %+v, %v", after, err)
	}
}

// ReplaceStoredArchive stores object again with one byte in its middle
// flipped: its size is the manifest's, its digest is not.
func (n *NATS) ReplaceStoredArchive(tb testing.TB, object string) {
	tb.Helper()
	ctx := tb.Context()
	data, err := n.Assets.Snapshots.GetBytes(ctx, object)
	if err != nil {
		tb.Fatal(err)
	}
	data[len(data)/2] ^= 0x40
	if _, err := n.Assets.Snapshots.Put(ctx, jetstream.ObjectMeta{Name: object}, bytes.NewReader(data)); err != nil {
		tb.Fatal(err)
	}
}
