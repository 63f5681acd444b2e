package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/nats-io/nats.go/jetstream"
)

// GetOperation reads the operation record op.<opID> from state (the
// CHROMA_STATE bucket); nil, nil when there is none.
func GetOperation(ctx context.Context, state jetstream.KeyValue, opID string) (*contract.Operation, error) {
	op, _, err := GetJSON[contract.Operation](ctx, state, contract.OperationKey(opID), "operation "+opID)
	return op, err
}

// GetJSON reads the JSON value of key in kv into a T, with its revision;
// nil when the key has none (never written, deleted or purged). what names
// the value in errors: "read <what>: ...", "<what> is unreadable: ...".
func GetJSON[T any](ctx context.Context, kv jetstream.KeyValue, key, what string) (*T, uint64, error) {
	e, err := kv.Get(ctx, key)
	if IsNotFound(err) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read %s: %w", what, err)
	}
	var v T
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return nil, 0, fmt.Errorf("%s is unreadable: %w", what, err)
	}
	return &v, e.Revision(), nil
}
