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
	e, err := state.Get(ctx, contract.OperationKey(opID))
	if IsNotFound(err) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read operation %s: %w", opID, err)
	}
	var op contract.Operation
	if err := json.Unmarshal(e.Value(), &op); err != nil {
		return nil, fmt.Errorf("operation %s is unreadable: %w", opID, err)
	}
	return &op, nil
}
