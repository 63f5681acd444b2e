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

// PauseAt pauses every instance at the given step ("exported": the archive
// is stored and verified, the manifest not yet written): reached is closed
// when one gets there, and it goes on when resume is called.
func PauseAt(step string) (reached <-chan struct{}, resume func()) {
	r, gone := make(chan struct{}), make(chan struct{})
	var first, once sync.Once
	h := func(ctx context.Context, at string) {
		if at == step {
			first.Do(func() { close(r) })
			select {
			case <-gone:
			case <-ctx.Done():
			}
		}
	}
	hold.Store(&h)
	return r, func() { once.Do(func() { hold.Store(nil); close(gone) }) }
}
