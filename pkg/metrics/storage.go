package metrics

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/disk"
	"github.com/nats-io/nats.go/jetstream"
)

// Storage reads the JetStream account's use and limits, every stream's
// bytes and messages, and the free space on paths. A figure that cannot be
// read is named in Errors; the others are still reported.
func Storage(ctx context.Context, js jetstream.JetStream, paths []string) *contract.StorageUse {
	u := &contract.StorageUse{Streams: []contract.StreamUse{}, Disks: []contract.DiskUse{}}
	if ai, err := js.AccountInfo(ctx); err != nil {
		u.Errors = append(u.Errors, fmt.Sprintf("JetStream account: %v", err))
	} else {
		u.Account = &contract.JetStreamAccountUse{
			MemoryBytes: ai.Memory, StoreBytes: ai.Store, MaxMemoryBytes: ai.Limits.MaxMemory, MaxStoreBytes: ai.Limits.MaxStore,
			Streams: ai.Streams, MaxStreams: ai.Limits.MaxStreams, Consumers: ai.Consumers, MaxConsumers: ai.Limits.MaxConsumers,
		}
	}
	lister := js.ListStreams(ctx)
	for info := range lister.Info() {
		u.Streams = append(u.Streams, streamUse(info))
	}
	if err := lister.Err(); err != nil {
		u.Errors = append(u.Errors, fmt.Sprintf("JetStream streams: %v", err))
	}
	slices.SortFunc(u.Streams, func(a, b contract.StreamUse) int { return strings.Compare(a.Stream, b.Stream) })
	for _, p := range paths {
		d := contract.DiskUse{Path: p}
		free, err := disk.Free(p)
		if err != nil {
			d.Error = err.Error()
		} else {
			d.FreeBytes = free
		}
		u.Disks = append(u.Disks, d)
	}
	return u
}

// streamUse names a stream by what it holds: KV_X is bucket X, OBJ_X is
// object store X.
func streamUse(info *jetstream.StreamInfo) contract.StreamUse {
	name, kind := info.Config.Name, contract.StorageStream
	switch {
	case strings.HasPrefix(name, "KV_"):
		name, kind = strings.TrimPrefix(name, "KV_"), contract.StorageKV
	case strings.HasPrefix(name, "OBJ_"):
		name, kind = strings.TrimPrefix(name, "OBJ_"), contract.StorageObjectStore
	}
	maxBytes := info.Config.MaxBytes
	if maxBytes <= 0 {
		maxBytes = -1
	}
	return contract.StreamUse{
		Name: name, Kind: kind, Stream: info.Config.Name, Storage: strings.ToLower(info.Config.Storage.String()),
		Bytes: info.State.Bytes, Messages: info.State.Msgs, Consumers: info.State.Consumers, MaxBytes: maxBytes,
	}
}
