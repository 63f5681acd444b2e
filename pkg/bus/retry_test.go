package bus_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestTransient(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"request timeout", nats.ErrTimeout, true},
		{"attempt deadline", fmt.Errorf("put: %w", context.DeadlineExceeded), true},
		{"no responders", nats.ErrNoResponders, true},
		{"async ack lost", jetstream.ErrAsyncPublishTimeout, true},
		{"stalled read", fmt.Errorf("read object: %w: no chunk for 30s", bus.ErrStalled), true},
		{"no meta leader", &jetstream.APIError{Code: 503, ErrorCode: 10008}, true},
		{"not enough peers", &jetstream.APIError{Code: 503, ErrorCode: 10023}, true},
		{"expected sequence not ready", fmt.Errorf("update: %w", &jetstream.APIError{Code: 503, ErrorCode: 10163}), true},
		{"cluster cannot handle request", &jetstream.APIError{Code: 500, ErrorCode: 10009}, true},
		{"key not found", jetstream.ErrKeyNotFound, false},
		{"key exists", jetstream.ErrKeyExists, false},
		{"revision mismatch", jetstream.ErrKeyRevisionMismatch, false},
		{"replicas on one server", &jetstream.APIError{Code: 500, ErrorCode: 10074}, false},
		{"bad config", &jetstream.APIError{Code: 400, ErrorCode: 10052}, false},
		{"connection closed", nats.ErrConnectionClosed, false},
		{"anything else", errors.New("disk on fire"), false},
		{"stream full", &jetstream.APIError{Code: 503, ErrorCode: 10077, Description: "maximum bytes exceeded"}, false},
		{"storage exhausted", &jetstream.APIError{Code: 500, ErrorCode: 10047, Description: "insufficient storage resources available"}, false},
		{"store failed otherwise", &jetstream.APIError{Code: 503, ErrorCode: 10077, Description: "write error"}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := bus.Transient(tc.err); got != tc.want {
				t.Errorf("Transient(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

// TestStoreFull: JetStream refusing a message for want of room is told
// apart from other store failures, also wrapped.
func TestStoreFull(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("put object x: %w", &jetstream.APIError{Code: 503, ErrorCode: 10077, Description: "maximum bytes exceeded"}), true},
		{&jetstream.APIError{Code: 503, ErrorCode: 10077, Description: "maximum messages exceeded"}, true},
		{&jetstream.APIError{Code: 500, ErrorCode: 10047}, true},
		// The account's JetStream limit (jetstream { max_file } in accounts.conf), as a
		// snapshot met it on a nats-server with deploy/nats and a small limit.
		{fmt.Errorf("put object x: %w", &jetstream.APIError{Code: 400, ErrorCode: 10002, Description: "resource limits exceeded for account"}), true},
		{&jetstream.APIError{Code: 503, ErrorCode: 10077, Description: "write error"}, false},
		{&jetstream.APIError{Code: 503, ErrorCode: 10023}, false},
		{errors.New("maximum bytes exceeded"), false},
		{nil, false},
	} {
		if got := bus.StoreFull(tc.err); got != tc.want {
			t.Errorf("StoreFull(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// lossyKV is a key-value store whose next `lose` writes are stored but
// answered with a timeout, as when a stream leader goes away between
// storing a message and acking it. The real thing cannot lose an answer on
// demand.
type lossyKV struct {
	jetstream.KeyValue // not called: every method used is below

	mu    sync.Mutex
	vals  map[string][]byte
	revs  map[string]uint64
	rev   uint64
	lose  int
	calls int
}

func newLossyKV() *lossyKV { return &lossyKV{vals: map[string][]byte{}, revs: map[string]uint64{}} }

type entry struct {
	key string
	val []byte
	rev uint64
}

func (e entry) Bucket() string                  { return "TEST" }
func (e entry) Key() string                     { return e.key }
func (e entry) Value() []byte                   { return e.val }
func (e entry) Revision() uint64                { return e.rev }
func (e entry) Created() time.Time              { return time.Time{} }
func (e entry) Delta() uint64                   { return 0 }
func (e entry) Operation() jetstream.KeyValueOp { return jetstream.KeyValuePut }

// write stores value under key if check passes, then answers, or times
// out while lose lasts.
func (kv *lossyKV) write(key string, value []byte, check func() error) (uint64, error) {
	kv.mu.Lock()
	defer kv.mu.Unlock()
	kv.calls++
	if err := check(); err != nil {
		return 0, err
	}
	kv.rev++
	if value == nil {
		delete(kv.vals, key)
		delete(kv.revs, key)
	} else {
		kv.vals[key], kv.revs[key] = value, kv.rev
	}
	if kv.lose > 0 {
		kv.lose--
		return 0, nats.ErrTimeout
	}
	return kv.rev, nil
}

func (kv *lossyKV) Get(_ context.Context, key string) (jetstream.KeyValueEntry, error) {
	kv.mu.Lock()
	defer kv.mu.Unlock()
	v, ok := kv.vals[key]
	if !ok {
		return nil, jetstream.ErrKeyNotFound
	}
	return entry{key, v, kv.revs[key]}, nil
}

func (kv *lossyKV) Put(_ context.Context, key string, value []byte) (uint64, error) {
	return kv.write(key, value, func() error { return nil })
}

func (kv *lossyKV) Create(_ context.Context, key string, value []byte, _ ...jetstream.KVCreateOpt) (uint64, error) {
	return kv.write(key, value, func() error {
		if _, ok := kv.vals[key]; ok {
			return jetstream.ErrKeyExists
		}
		return nil
	})
}

func (kv *lossyKV) Update(_ context.Context, key string, value []byte, rev uint64) (uint64, error) {
	return kv.write(key, value, func() error {
		if kv.revs[key] != rev {
			return jetstream.ErrKeyRevisionMismatch
		}
		return nil
	})
}

func (kv *lossyKV) Delete(_ context.Context, key string, _ ...jetstream.KVDeleteOpt) error {
	_, err := kv.write(key, nil, func() error {
		if _, ok := kv.vals[key]; !ok {
			return jetstream.ErrKeyRevisionMismatch // as a delete with LastRevision of a gone key
		}
		return nil
	})
	return err
}

// A write whose answer was lost is tried again, and the retry tells its own
// earlier success from a conflict: a Create or an Update that finds its own
// value, or a Delete that finds the key gone, succeeded. A conflict with
// another writer's value stays a conflict, found at once.
func TestRetryKeyValueLostAnswers(t *testing.T) {
	ctx := t.Context()
	raw := newLossyKV()
	kv := bus.RetryKeyValue(nil, raw)

	raw.lose = 1
	rev, err := kv.Create(ctx, "lease", []byte("mine"))
	if err != nil || rev != 1 || raw.calls != 2 {
		t.Fatalf("create whose answer was lost: rev %d, %v after %d calls; want rev 1, success after 2", rev, err, raw.calls)
	}
	raw.lose = 1
	rev, err = kv.Update(ctx, "lease", []byte("mine, renewed"), 1)
	if err != nil || rev != 2 {
		t.Fatalf("update whose answer was lost: rev %d, %v; want rev 2", rev, err)
	}
	raw.lose = 1
	if err := kv.Delete(ctx, "lease"); err != nil {
		t.Fatalf("delete whose answer was lost: %v", err)
	}

	if _, err := raw.Put(ctx, "fence", []byte("theirs")); err != nil {
		t.Fatal(err)
	}
	raw.calls = 0
	if _, err := kv.Create(ctx, "fence", []byte("mine")); !errors.Is(err, jetstream.ErrKeyExists) || raw.calls != 1 {
		t.Errorf("create over another writer's key: %v after %d calls; want ErrKeyExists at once", err, raw.calls)
	}
	raw.calls = 0
	if _, err := kv.Update(ctx, "fence", []byte("mine"), 1); !errors.Is(err, jetstream.ErrKeyRevisionMismatch) || raw.calls != 1 {
		t.Errorf("update at a stale revision: %v after %d calls; want ErrKeyRevisionMismatch at once", err, raw.calls)
	}
	if _, err := kv.Get(ctx, "nothing"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("get of a missing key: %v", err)
	}
	if e, err := kv.Get(ctx, "fence"); err != nil || string(e.Value()) != "theirs" {
		t.Errorf("get: %v %v", e, err)
	}
}

// Retry gives up when its context ends, saying what the last try found.
func TestRetryEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	tries := 0
	start := time.Now()
	err := bus.Retry(ctx, func(context.Context) error {
		tries++
		return nats.ErrNoResponders
	})
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, nats.ErrNoResponders) || tries < 2 {
		t.Errorf("Retry = %v after %d tries; want the deadline and the last error, after several tries", err, tries)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Retry took %s after its context ended", took)
	}
	tries = 0
	if err := bus.Retry(t.Context(), func(context.Context) error { tries++; return jetstream.ErrKeyNotFound }); !errors.Is(err, jetstream.ErrKeyNotFound) || tries != 1 {
		t.Errorf("a permanent error: %v after %d tries; want it at once", err, tries)
	}
}

// Publish refuses a message it could not retry safely.
func TestPublishNeedsMsgID(t *testing.T) {
	_, err := bus.Publish(t.Context(), nil, nats.NewMsg("chroma.cmd.snapshot"))
	if err == nil || !strings.Contains(err.Error(), jetstream.MsgIDHeader) {
		t.Fatalf("publish without a message id: %v; want a refusal naming %s", err, jetstream.MsgIDHeader)
	}
}
