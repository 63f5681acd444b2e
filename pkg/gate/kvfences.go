package gate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// FencesWatchPattern is the key pattern KVFences watches.
const FencesWatchPattern = "fence.>"

// Watch restart backoff.
const (
	watchRetryMin = 100 * time.Millisecond
	watchRetryMax = 5 * time.Second
)

// KVFences follows the fence keys of the state bucket and answers from
// memory. It implements FenceSource and FenceLister.
type KVFences struct {
	kv  jetstream.KeyValue
	log *slog.Logger
	nc  *nats.Conn

	ready     chan struct{}
	readyOnce sync.Once
	done      chan struct{}

	mu       sync.RWMutex
	fences   map[dbKey]contract.Fence
	synced   bool
	watcher  jetstream.KeyWatcher
	restarts int
}

// FencesOption configures WatchFences.
type FencesOption func(*KVFences)

// FencesLogger logs watcher restarts and unreadable keys to l.
func FencesLogger(l *slog.Logger) FencesOption {
	return func(f *KVFences) {
		if l != nil {
			f.log = l
		}
	}
}

// FencesConn names the connection kv uses: when it reconnects, the watch is
// set up again at once and the state rebuilt from the bucket. Without it a
// watch outlives a NATS server restart too, but its consumer is recreated
// only once missed heartbeats show it lost (about 20 s), and fence changes
// made meanwhile are seen that much later.
func FencesConn(nc *nats.Conn) FencesOption {
	return func(f *KVFences) { f.nc = nc }
}

// WatchFences starts following "fence.>" in kv (the CHROMA_STATE bucket):
// its current values first, then every put, delete and purge. It returns
// once the watch is set up; Ready is closed when the current values are
// loaded. If the watch ends (a lost connection, a deleted consumer) it is
// set up again with backoff and the state is rebuilt from the bucket's
// current values, so deletes missed meanwhile are not remembered as fences;
// until then the last known state is served. It stops when ctx is done.
func WatchFences(ctx context.Context, kv jetstream.KeyValue, opts ...FencesOption) (*KVFences, error) {
	if kv == nil {
		return nil, errors.New("gate: nil key-value bucket")
	}
	f := &KVFences{
		kv:     kv,
		log:    slog.New(slog.DiscardHandler),
		ready:  make(chan struct{}),
		done:   make(chan struct{}),
		fences: map[dbKey]contract.Fence{},
	}
	for _, o := range opts {
		o(f)
	}
	w, err := kv.Watch(ctx, FencesWatchPattern)
	if err != nil {
		return nil, fmt.Errorf("gate: watch %s in bucket %s: %w", FencesWatchPattern, kv.Bucket(), err)
	}
	if f.nc != nil {
		go f.restartOnReconnect(ctx)
	}
	go f.run(ctx, w)
	return f, nil
}

// Fenced returns the fence of tenant/database, if it is raised.
func (f *KVFences) Fenced(tenant, database string) (contract.Fence, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fe, ok := f.fences[dbKey{tenant, database}]
	return fe, ok
}

// Fences returns every raised fence, ordered by tenant and database.
func (f *KVFences) Fences() []contract.Fence {
	f.mu.RLock()
	out := make([]contract.Fence, 0, len(f.fences))
	for _, fe := range f.fences {
		out = append(out, fe)
	}
	f.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Tenant != out[j].Tenant {
			return out[i].Tenant < out[j].Tenant
		}
		return out[i].Database < out[j].Database
	})
	return out
}

// Ready is closed once the bucket's current fences have been loaded.
func (f *KVFences) Ready() <-chan struct{} { return f.ready }

// Done is closed when the watch has stopped for good (ctx done).
func (f *KVFences) Done() <-chan struct{} { return f.done }

// Synced reports whether the watch is live and has loaded the current
// values; false while it is being set up again after it ended.
func (f *KVFences) Synced() bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.synced
}

// restartOnReconnect stops the current watcher whenever the connection is
// re-established; run then sets up a new one.
func (f *KVFences) restartOnReconnect(ctx context.Context) {
	ch := f.nc.StatusChanged(nats.CONNECTED, nats.DISCONNECTED)
	defer f.nc.RemoveStatusListener(ch)
	for {
		select {
		case <-ctx.Done():
			return
		case st, ok := <-ch:
			if !ok {
				return
			}
			f.mu.Lock()
			w := f.watcher
			if st == nats.DISCONNECTED {
				f.synced = false
			}
			f.mu.Unlock()
			if st == nats.CONNECTED && w != nil {
				f.log.InfoContext(ctx, "NATS reconnected; watching the fences again")
				_ = w.Stop()
			}
		}
	}
}

func (f *KVFences) run(ctx context.Context, w jetstream.KeyWatcher) {
	defer close(f.done)
	wait := watchRetryMin
	for {
		f.mu.Lock()
		f.watcher = w
		f.mu.Unlock()
		loaded := f.follow(ctx, w)
		_ = w.Stop()
		f.mu.Lock()
		f.synced = false
		f.watcher = nil
		f.mu.Unlock()
		if loaded {
			wait = watchRetryMin
		}
		for {
			if ctx.Err() != nil {
				return
			}
			f.log.WarnContext(ctx, "fence watch ended; watching again", slog.Duration("in", wait))
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, watchRetryMax)
			var err error
			w, err = f.kv.Watch(ctx, FencesWatchPattern)
			if err == nil {
				f.mu.Lock()
				f.restarts++
				f.mu.Unlock()
				break
			}
			f.log.WarnContext(ctx, "fence watch failed", slog.Any("err", err))
		}
	}
}

// follow applies one watcher's entries until its channel closes or ctx is
// done. The initial values go into a fresh map that replaces the served one
// at the end-of-initial-values marker. It reports whether that marker came.
func (f *KVFences) follow(ctx context.Context, w jetstream.KeyWatcher) bool {
	initial := map[dbKey]contract.Fence{}
	loaded := false
	for {
		var e jetstream.KeyValueEntry
		var ok bool
		select {
		case <-ctx.Done():
			return loaded
		case e, ok = <-w.Updates():
		}
		if !ok {
			return loaded
		}
		if e == nil {
			if !loaded {
				loaded = true
				f.mu.Lock()
				f.fences, f.synced = initial, true
				f.mu.Unlock()
				f.readyOnce.Do(func() { close(f.ready) })
			}
			continue
		}
		if loaded {
			f.mu.Lock()
			f.apply(f.fences, e)
			f.mu.Unlock()
		} else {
			f.apply(initial, e)
		}
	}
}

func (f *KVFences) apply(m map[dbKey]contract.Fence, e jetstream.KeyValueEntry) {
	kind, tenant, database, err := contract.ParseScopedKey(e.Key())
	if err != nil || kind != "fence" {
		f.log.Warn("ignoring unreadable fence key", slog.String("key", e.Key()))
		return
	}
	k := dbKey{tenant, database}
	switch e.Operation() {
	case jetstream.KeyValueDelete, jetstream.KeyValuePurge:
		delete(m, k)
		return
	}
	var fe contract.Fence
	if err := json.Unmarshal(e.Value(), &fe); err != nil {
		// A fence whose value cannot be read is still a fence.
		f.log.Warn("fence value unreadable; treating the database as fenced",
			slog.String("key", e.Key()), slog.Any("err", err))
		fe = contract.Fence{Reason: "fence value unreadable"}
	}
	fe.Tenant, fe.Database = tenant, database
	if fe.RaisedAt.IsZero() {
		fe.RaisedAt = e.Created()
	}
	m[k] = fe
}
