package bus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A JetStream call on a hot path waits out a leader election instead of
// hanging: each try gets AttemptTimeout, and a transient failure is tried
// again with backoff for up to RetryFor. An election after a stream
// leader goes away takes well under a second when the node steps down as
// it shuts down, up to about 10 s when it dies without doing so;
// meanwhile requests go unanswered or answer 503. A call that reads many
// entries (Keys, History, List) gets listAttemptTimeout per try.
const (
	AttemptTimeout     = 2 * time.Second
	RetryFor           = time.Minute
	listAttemptTimeout = 15 * time.Second
)

// FetchPause is how long a consumer loop waits after a fetch that failed
// at once (no responders while its consumer elects a leader), so that it
// does not spin.
const FetchPause = 250 * time.Millisecond

// ErrStalled says a streamed read got no data for too long: its stream
// was likely between leaders. Transient reports it as worth a retry.
var ErrStalled = errors.New("stalled")

// Transient reports whether err may pass when the call is tried again: no
// answer in time, no responders, a reconnecting client, a consumer that
// lost its leader or heartbeats, or a JetStream API error that says the
// system is temporarily unavailable (HTTP-like code 503 or 408, no leader,
// not enough peers up, expected sequence not ready).
func Transient(err error) bool {
	if err == nil || StoreFull(err) {
		return false
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout), errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, jetstream.ErrNoHeartbeat),
		errors.Is(err, jetstream.ErrConsumerLeadershipChanged), errors.Is(err, jetstream.ErrAsyncPublishTimeout),
		errors.Is(err, jetstream.ErrServerShutdown), errors.Is(err, ErrStalled):
		return true
	}
	var api *jetstream.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode {
		case 10008, // JetStream system temporarily unavailable
			10009, // cluster can not handle request (no leader)
			10004, // incomplete results
			10023, // insufficient resources: not enough peers up
			10163: // expected last sequence per subject temporarily unavailable
			return true
		}
		return api.Code == 503 || api.Code == 408
	}
	return false
}

// StoreFull reports whether err is JetStream refusing a message for want
// of room: the stream's byte or message limit, or the server's or
// account's storage. That lasts until someone deletes or raises a limit,
// so it is not Transient.
func StoreFull(err error) bool {
	var api *jetstream.APIError
	if !errors.As(err, &api) {
		return false
	}
	switch api.ErrorCode {
	case 10047: // insufficient storage resources available
		return true
	case 10002: // resource limits exceeded for account: its JetStream storage limit (accounts.conf)
		return true
	case 10077: // stream store failed: says why
		d := strings.ToLower(api.Description)
		return strings.Contains(d, "maximum bytes") || strings.Contains(d, "maximum messages") || strings.Contains(d, "storage")
	}
	return false
}

// Retry runs fn until it succeeds, fails with an error that is not
// Transient, ctx ends, or RetryFor has passed. Each try gets a context
// bounded by AttemptTimeout. fn must be safe to repeat: a try that timed
// out may still have taken effect.
func Retry(ctx context.Context, fn func(ctx context.Context) error) error {
	return retry(ctx, AttemptTimeout, fn)
}

func retry(ctx context.Context, attempt time.Duration, fn func(ctx context.Context) error) error {
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(100*time.Millisecond),
		backoff.WithMaxInterval(2*time.Second),
		backoff.WithMaxElapsedTime(RetryFor),
	)
	var last error
	err := backoff.Retry(func() error {
		actx, cancel := context.WithTimeout(ctx, attempt)
		err := fn(actx)
		cancel()
		last = err
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || !Transient(err) {
			return backoff.Permanent(err)
		}
		return err
	}, backoff.WithContext(b, ctx))
	if err != nil && last != nil && !errors.Is(err, last) {
		// backoff returns ctx's error when ctx ended between tries: say
		// what the last try found too.
		return fmt.Errorf("%w (last try: %w)", err, last)
	}
	return err
}

// Publish publishes msg and waits for the stream's ack, retrying transient
// failures (see Retry). msg must carry a Nats-Msg-Id header, so a try that
// was stored without its ack arriving is stored once.
func Publish(ctx context.Context, js jetstream.JetStream, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if msg.Header.Get(jetstream.MsgIDHeader) == "" {
		return nil, fmt.Errorf("publish to %s: a %s header is required to retry safely", msg.Subject, jetstream.MsgIDHeader)
	}
	var ack *jetstream.PubAck
	err := Retry(ctx, func(ctx context.Context) error {
		a, err := js.PublishMsg(ctx, msg, opts...)
		ack = a
		return err
	})
	return ack, err
}

// RetryKeyValue returns kv with its reads and writes retried on transient
// failures (see Retry): Get, GetRevision, Put, PutString, Create, Update,
// Delete, Purge, Keys, History and Status. Watches and listers are kv's own.
//
// A write whose answer was lost may have been stored: a retried Create that
// finds the key holding exactly its value, or a retried Update that finds
// its value at a newer revision, succeeded; a retried Delete that finds the
// key gone did too.
//
// Get reports a key missing only once the bucket's stream leader agrees
// (see leaderGet); js is the JetStream context kv was opened with (nil:
// kv's own answer is taken).
func RetryKeyValue(js jetstream.JetStream, kv jetstream.KeyValue) jetstream.KeyValue {
	if r, ok := kv.(*retryKV); ok {
		return r
	}
	return &retryKV{KeyValue: kv, js: js}
}

type retryKV struct {
	jetstream.KeyValue
	js jetstream.JetStream
}

var _ jetstream.KeyValue = (*retryKV)(nil)

func (kv *retryKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	var e jetstream.KeyValueEntry
	err := Retry(ctx, func(ctx context.Context) (err error) {
		e, err = kv.KeyValue.Get(ctx, key)
		return err
	})
	if errors.Is(err, jetstream.ErrKeyNotFound) && kv.js != nil {
		return kv.leaderGet(ctx, key, err)
	}
	return e, err
}

// leaderGet reads key from the bucket's stream leader after a Get found
// nothing. A Get is a direct get, which every replica of a clustered
// bucket answers once it is nearly caught up: one a few messages behind
// says that a key another process wrote a moment ago (the manifest of a
// snapshot whose operation just completed, say) does not exist. An
// absence is rare on the paths that matter and costs one more request.
// notFound is returned when the leader has no value either.
func (kv *retryKV) leaderGet(ctx context.Context, key string, notFound error) (jetstream.KeyValueEntry, error) {
	bucket := kv.Bucket()
	m, err := retryLeaderLastMsg(ctx, kv.js, "KV_"+bucket, "$KV."+bucket+"."+key)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, notFound
	}
	if err != nil {
		return nil, fmt.Errorf("get %s from bucket %s: %w", key, bucket, err)
	}
	switch m.Header.Get(kvOperationHeader) {
	case "DEL", "PURGE":
		return nil, notFound
	}
	return &leaderEntry{bucket: bucket, key: key, value: m.Data, revision: m.Sequence, created: m.Time}, nil
}

// retryLeaderLastMsg is leaderLastMsg retried on transient failures
// (see Retry).
func retryLeaderLastMsg(ctx context.Context, js jetstream.JetStream, stream, subject string) (*jetstream.RawStreamMsg, error) {
	var m *jetstream.RawStreamMsg
	err := Retry(ctx, func(ctx context.Context) (err error) {
		m, err = leaderLastMsg(ctx, js, stream, subject)
		return err
	})
	return m, err
}

// kvOperationHeader marks a key's deletion (DEL) or purge (PURGE).
const kvOperationHeader = "KV-Operation"

// leaderEntry is a key's value as the stream leader holds it.
type leaderEntry struct {
	bucket, key string
	value       []byte
	revision    uint64
	created     time.Time
}

func (e *leaderEntry) Bucket() string                  { return e.bucket }
func (e *leaderEntry) Key() string                     { return e.key }
func (e *leaderEntry) Value() []byte                   { return e.value }
func (e *leaderEntry) Revision() uint64                { return e.revision }
func (e *leaderEntry) Created() time.Time              { return e.created }
func (e *leaderEntry) Delta() uint64                   { return 0 } // not known from one message
func (e *leaderEntry) Operation() jetstream.KeyValueOp { return jetstream.KeyValuePut }

func (kv *retryKV) GetRevision(ctx context.Context, key string, revision uint64) (jetstream.KeyValueEntry, error) {
	var e jetstream.KeyValueEntry
	err := Retry(ctx, func(ctx context.Context) (err error) {
		e, err = kv.KeyValue.GetRevision(ctx, key, revision)
		return err
	})
	return e, err
}

func (kv *retryKV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	var rev uint64
	err := Retry(ctx, func(ctx context.Context) (err error) {
		rev, err = kv.KeyValue.Put(ctx, key, value)
		return err
	})
	return rev, err
}

func (kv *retryKV) PutString(ctx context.Context, key string, value string) (uint64, error) {
	return kv.Put(ctx, key, []byte(value))
}

func (kv *retryKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	var rev uint64
	tries := 0
	err := Retry(ctx, func(ctx context.Context) (err error) {
		tries++
		rev, err = kv.KeyValue.Create(ctx, key, value, opts...)
		if tries > 1 && errors.Is(err, jetstream.ErrKeyExists) {
			if e, gerr := kv.KeyValue.Get(ctx, key); gerr == nil && bytes.Equal(e.Value(), value) {
				rev, err = e.Revision(), nil // an earlier try was stored
			}
		}
		return err
	})
	return rev, err
}

func (kv *retryKV) Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	var rev uint64
	tries := 0
	err := Retry(ctx, func(ctx context.Context) (err error) {
		tries++
		rev, err = kv.KeyValue.Update(ctx, key, value, revision)
		if tries > 1 && errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			if e, gerr := kv.KeyValue.Get(ctx, key); gerr == nil && e.Revision() > revision && bytes.Equal(e.Value(), value) {
				rev, err = e.Revision(), nil // an earlier try was stored
			}
		}
		return err
	})
	return rev, err
}

func (kv *retryKV) Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	tries := 0
	return Retry(ctx, func(ctx context.Context) error {
		tries++
		err := kv.KeyValue.Delete(ctx, key, opts...)
		if tries > 1 && errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			if _, gerr := kv.KeyValue.Get(ctx, key); errors.Is(gerr, jetstream.ErrKeyNotFound) {
				return nil // an earlier try was stored
			}
		}
		return err
	})
}

func (kv *retryKV) Purge(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	tries := 0
	return Retry(ctx, func(ctx context.Context) error {
		tries++
		err := kv.KeyValue.Purge(ctx, key, opts...)
		if tries > 1 && errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			if _, gerr := kv.KeyValue.Get(ctx, key); errors.Is(gerr, jetstream.ErrKeyNotFound) {
				return nil
			}
		}
		return err
	})
}

func (kv *retryKV) Keys(ctx context.Context, opts ...jetstream.WatchOpt) ([]string, error) {
	var keys []string
	err := retry(ctx, listAttemptTimeout, func(ctx context.Context) (err error) {
		keys, err = kv.KeyValue.Keys(ctx, opts...)
		return err
	})
	return keys, err
}

func (kv *retryKV) History(ctx context.Context, key string, opts ...jetstream.WatchOpt) ([]jetstream.KeyValueEntry, error) {
	var es []jetstream.KeyValueEntry
	err := retry(ctx, listAttemptTimeout, func(ctx context.Context) (err error) {
		es, err = kv.KeyValue.History(ctx, key, opts...)
		return err
	})
	return es, err
}

func (kv *retryKV) Status(ctx context.Context) (jetstream.KeyValueStatus, error) {
	var st jetstream.KeyValueStatus
	err := Retry(ctx, func(ctx context.Context) (err error) {
		st, err = kv.KeyValue.Status(ctx)
		return err
	})
	return st, err
}

// RetryObjectStore returns obs, the object store of bucket, with its
// metadata calls retried on transient failures (see Retry): GetInfo,
// Delete, List and Status. Its Get reads with OpenObject: a pull consumer
// that waits for each chunk a bounded time, where obs's own Get can hang
// while the stream elects a leader. Writes of content are obs's own, as
// they may take longer than one try: a put that fails is deleted and
// redone by its caller (the manifest, written last, is the truth).
func RetryObjectStore(js jetstream.JetStream, bucket string, obs jetstream.ObjectStore) jetstream.ObjectStore {
	if r, ok := obs.(*retryObjects); ok {
		return r
	}
	return &retryObjects{ObjectStore: obs, js: js, bucket: bucket}
}

type retryObjects struct {
	jetstream.ObjectStore
	js     jetstream.JetStream
	bucket string
}

// Get opens the object for a streamed read through OpenObject, its info
// read with retries. The size and SHA-256 digest are checked at EOF.
func (o *retryObjects) Get(ctx context.Context, name string, opts ...jetstream.GetObjectOpt) (jetstream.ObjectResult, error) {
	if len(opts) > 0 {
		return o.ObjectStore.Get(ctx, name, opts...)
	}
	info, err := o.GetInfo(ctx, name)
	if err != nil {
		return nil, err
	}
	r, err := OpenObject(ctx, o.js, o.bucket, info)
	if err != nil {
		return nil, err
	}
	return &objectResult{ObjectReader: r}, nil
}

// objectResult is an ObjectReader as a jetstream.ObjectResult.
type objectResult struct {
	*ObjectReader
}

func (r *objectResult) Info() (*jetstream.ObjectInfo, error) { return r.info, nil }

func (r *objectResult) Error() error {
	if errors.Is(r.err, io.EOF) {
		return nil
	}
	return r.err
}

var _ jetstream.ObjectStore = (*retryObjects)(nil)

// GetInfo reports an object missing only once the stream leader agrees:
// like a KV Get (leaderGet), the object store's GetInfo is a direct get
// that a lagging replica may answer, right after another process stored
// the object.
func (o *retryObjects) GetInfo(ctx context.Context, name string, opts ...jetstream.GetObjectInfoOpt) (*jetstream.ObjectInfo, error) {
	var info *jetstream.ObjectInfo
	err := Retry(ctx, func(ctx context.Context) (err error) {
		info, err = o.ObjectStore.GetInfo(ctx, name, opts...)
		return err
	})
	if errors.Is(err, jetstream.ErrObjectNotFound) && len(opts) == 0 {
		return o.leaderInfo(ctx, name, err)
	}
	return info, err
}

// leaderInfo reads the info of object name from the stream leader; it
// returns notFound when the leader has none, or only a deleted one.
func (o *retryObjects) leaderInfo(ctx context.Context, name string, notFound error) (*jetstream.ObjectInfo, error) {
	m, err := retryLeaderLastMsg(ctx, o.js, "OBJ_"+o.bucket, metaSubject(o.bucket, name))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, notFound
	}
	if err != nil {
		return nil, fmt.Errorf("get info of object %s: %w", name, err)
	}
	info, err := decodeObjectInfo(m)
	if err != nil {
		return nil, fmt.Errorf("get info of object %s: %w", name, err)
	}
	if info == nil {
		return nil, notFound
	}
	return info, nil
}

// Delete marks the object deleted and purges its chunks; repeating it
// after a lost answer finds the marker and purges again.
func (o *retryObjects) Delete(ctx context.Context, name string) error {
	tries := 0
	return Retry(ctx, func(ctx context.Context) error {
		tries++
		err := o.ObjectStore.Delete(ctx, name)
		if tries > 1 && errors.Is(err, jetstream.ErrObjectNotFound) {
			return nil
		}
		return err
	})
}

func (o *retryObjects) List(ctx context.Context, opts ...jetstream.ListObjectsOpt) ([]*jetstream.ObjectInfo, error) {
	var infos []*jetstream.ObjectInfo
	err := retry(ctx, listAttemptTimeout, func(ctx context.Context) (err error) {
		infos, err = o.ObjectStore.List(ctx, opts...)
		return err
	})
	return infos, err
}

func (o *retryObjects) Status(ctx context.Context) (jetstream.ObjectStoreStatus, error) {
	var st jetstream.ObjectStoreStatus
	err := Retry(ctx, func(ctx context.Context) (err error) {
		st, err = o.ObjectStore.Status(ctx)
		return err
	})
	return st, err
}
