package bus

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// EachValue calls fn with the key and current value of every key of kv
// that matches filter, read by one watcher: one consumer delivers the
// values, where listing the keys and getting each would take a request per
// key. Deleted keys are skipped. The first error fn returns stops the
// reading and is returned as it is.
func EachValue(ctx context.Context, kv jetstream.KeyValue, filter string, fn func(key string, data []byte) error) error {
	w, err := kv.Watch(ctx, filter, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("read %s %s: %w", kv.Bucket(), filter, err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("read %s %s: %w", kv.Bucket(), filter, ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("read %s %s: the watcher stopped", kv.Bucket(), filter)
			}
			if e == nil {
				return nil // every current value was delivered
			}
			if err := fn(e.Key(), e.Value()); err != nil {
				return err
			}
		}
	}
}
