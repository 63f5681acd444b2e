package fence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/nats-io/nats.go/jetstream"
)

// Raise raises the write fence of f.Tenant/f.Database for operation f.OpID.
// It is idempotent: a fence this operation already raised is kept as it is.
// A fence left by another operation is replaced, because the caller holds
// the lease and that operation no longer runs.
func Raise(ctx context.Context, kv jetstream.KeyValue, f contract.Fence) error {
	if f.Tenant == "" || f.Database == "" || f.OpID == "" {
		return errors.New("fence: raise: tenant, database and op id are required")
	}
	key := contract.FenceKey(f.Tenant, f.Database)
	f.Envelope = contract.NewEnvelope(contract.TypeFence)
	if f.RaisedAt.IsZero() {
		f.RaisedAt = f.Time
	}
	for range casAttempts {
		_, err := kv.Create(ctx, key, mustJSON(f))
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("fence: raise %s: %w", key, err)
		}
		cur, rev, err := readFence(ctx, kv, key)
		if err != nil {
			return err
		}
		if cur == nil {
			continue
		}
		if cur.OpID == f.OpID {
			return nil
		}
		_, err = kv.Update(ctx, key, mustJSON(f), rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return fmt.Errorf("fence: raise %s: %w", key, err)
		}
		return nil
	}
	return fmt.Errorf("fence: raise %s: the key kept changing; try again", key)
}

// Lower removes the write fence of tenant/database if operation opID raised
// it. It is idempotent: no fence is not an error. A fence raised by another
// operation is left in place and reported.
func Lower(ctx context.Context, kv jetstream.KeyValue, tenant, database, opID string) error {
	key := contract.FenceKey(tenant, database)
	for range casAttempts {
		cur, rev, err := readFence(ctx, kv, key)
		if err != nil {
			return err
		}
		if cur == nil {
			return nil
		}
		if cur.OpID != opID {
			return fmt.Errorf("fence: %s was raised by %s, not %s: left in place", key, cur.OpID, opID)
		}
		err = kv.Delete(ctx, key, jetstream.LastRevision(rev))
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return fmt.Errorf("fence: lower %s: %w", key, err)
		}
		return nil
	}
	return fmt.Errorf("fence: lower %s: the key kept changing; try again", key)
}

// Get returns the fence of tenant/database, or nil if none is raised.
func Get(ctx context.Context, kv jetstream.KeyValue, tenant, database string) (*contract.Fence, error) {
	f, _, err := readFence(ctx, kv, contract.FenceKey(tenant, database))
	return f, err
}

// LeftRaised says what an operator has to do about the fence of
// tenant/database that the operation opID, ended without lowering it (no
// worker could end it), still holds: "" when it holds none. The data may
// be half restored, so the fence is not lowered for the operator.
func LeftRaised(ctx context.Context, kv jetstream.KeyValue, tenant, database, opID string) (string, error) {
	f, err := Get(ctx, kv, tenant, database)
	if err != nil || f == nil || f.OpID != opID {
		return "", err
	}
	return fmt.Sprintf("the write fence of %s/%s stays raised: check the data, then roll back again (once the operation's lease has lapsed) or lower the fence by hand (`nats kv del %s %s`)",
		tenant, database, contract.BucketState, contract.FenceKey(tenant, database)), nil
}

func readFence(ctx context.Context, kv jetstream.KeyValue, key string) (*contract.Fence, uint64, error) {
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("fence: read %s: %w", key, err)
	}
	var f contract.Fence
	if err := json.Unmarshal(e.Value(), &f); err != nil {
		return nil, 0, fmt.Errorf("fence: %s is unreadable (%v); delete it with `nats kv del %s %s` if no operation runs", key, err, contract.BucketState, key)
	}
	return &f, e.Revision(), nil
}
