package bus

import (
	"context"
	"time"
)

// ObjectReadTimeout bounds a whole object-store read that has no deadline
// of its own.
const ObjectReadTimeout = 24 * time.Hour

// ObjectReadContext gives a streamed object-store read a deadline.
// jetstream's ObjectStore.Get wraps a context without a deadline in the
// JetStream default timeout (5 s) for the whole read, so a large archive
// would be cut off mid-stream; a read that has a deadline keeps it.
func ObjectReadContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, ObjectReadTimeout)
}
