package snapshotter

import (
	"context"
	"sync"
)

// HoldAfter holds every instance right after the given step of a
// snapshot's end ("manifest": the manifest was written; "audited": the
// completion was audited), until the instance is stopped: as if it had
// died there. The returned func removes the hold.
func HoldAfter(step string) (release func()) {
	h := func(ctx context.Context, at string) {
		if at == step {
			<-ctx.Done()
		}
	}
	hold.Store(&h)
	var once sync.Once
	return func() { once.Do(func() { hold.Store(nil) }) }
}
