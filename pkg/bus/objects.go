package bus

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"hash"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
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

// objectPullBatch bounds the chunks an ObjectReader holds: 8 chunks of the
// object store's default 128 KiB.
const objectPullBatch = 8

// ObjectReader streams an object's chunks with a pull consumer, so a
// reader slower than the network (a restore reads as fast as Chroma adds)
// holds a few chunks in memory instead of letting a push subscription
// buffer tens of MB and drop messages as a slow consumer. It checks the
// object's size and SHA-256 digest at EOF, as ObjectStore.Get does.
type ObjectReader struct {
	info    *jetstream.ObjectInfo
	js      jetstream.JetStream
	stream  string
	cons    jetstream.Consumer
	drop    sync.Once // of cons, by Close
	it      jetstream.MessagesContext
	cancel  context.CancelFunc
	buf     []byte
	chunks  uint32
	size    uint64
	hash    hash.Hash
	err     error
	timeout time.Duration
	ctx     context.Context // of the whole read: once done, Read fails
}

// OpenObject opens the object described by info (from ObjectStore.GetInfo)
// in bucket for a bounded streamed read. Close releases the consumer.
func OpenObject(ctx context.Context, js jetstream.JetStream, bucket string, info *jetstream.ObjectInfo) (*ObjectReader, error) {
	if info.Deleted {
		return nil, fmt.Errorf("object %s in %s is deleted", info.Name, bucket)
	}
	if info.Opts != nil && info.Opts.Link != nil {
		return nil, fmt.Errorf("object %s in %s is a link; open its target", info.Name, bucket)
	}
	r := &ObjectReader{info: info, hash: sha256.New(), timeout: 30 * time.Second}
	if info.Chunks == 0 {
		return r, nil
	}
	ctx, cancel := ObjectReadContext(ctx)
	var cons jetstream.Consumer
	err := Retry(ctx, func(ctx context.Context) (err error) {
		cons, err = js.OrderedConsumer(ctx, "OBJ_"+bucket, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{ChunkSubject(bucket, info.NUID)},
			DeliverPolicy:  jetstream.DeliverAllPolicy,
		})
		return err
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("open object %s: %w", info.Name, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(objectPullBatch))
	if err != nil {
		cancel()
		return nil, fmt.Errorf("open object %s: %w", info.Name, err)
	}
	r.it, r.cancel, r.js, r.stream, r.cons, r.ctx = it, cancel, js, "OBJ_"+bucket, cons, ctx
	return r, nil
}

// Read implements io.Reader.
func (r *ObjectReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.chunks == r.info.Chunks {
			r.err = r.finish()
			continue
		}
		msg, err := r.next()
		if err != nil {
			r.err = fmt.Errorf("read object %s chunk %d of %d: %w", r.info.Name, r.chunks+1, r.info.Chunks, err)
			continue
		}
		r.chunks++
		r.buf = msg.Data()
		r.size += uint64(len(r.buf))
		r.hash.Write(r.buf)
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// next waits for the next chunk; a stalled stream (a leader election, say)
// is given up on after r.timeout rather than hanging, and a read whose
// context ended (Ctrl-C of an export, a stopping service, its deadline)
// stops at once instead of streaming on to the end.
func (r *ObjectReader) next() (jetstream.Msg, error) {
	if err := r.ctx.Err(); err != nil {
		return nil, err
	}
	type res struct {
		m   jetstream.Msg
		err error
	}
	ch := make(chan res, 1)
	go func() {
		m, err := r.it.Next()
		ch <- res{m, err}
	}()
	select {
	case x := <-ch:
		return x.m, x.err
	case <-r.ctx.Done():
		r.it.Stop() // unblocks Next
		<-ch
		return nil, r.ctx.Err()
	case <-time.After(r.timeout):
		r.it.Stop() // unblocks Next
		<-ch
		return nil, fmt.Errorf("%w: no chunk for %s", ErrStalled, r.timeout)
	}
}

func (r *ObjectReader) finish() error {
	if r.size != r.info.Size {
		return fmt.Errorf("object %s: read %d bytes, its info says %d", r.info.Name, r.size, r.info.Size)
	}
	want, ok := strings.CutPrefix(r.info.Digest, "SHA-256=")
	if !ok {
		return fmt.Errorf("object %s: digest %q is not SHA-256", r.info.Name, r.info.Digest)
	}
	if got := base64.URLEncoding.EncodeToString(r.hash.Sum(nil)); got != want {
		return fmt.Errorf("object %s: %w (digest %s, its info says %s)", r.info.Name, jetstream.ErrDigestMismatch, got, want)
	}
	return io.EOF
}

// Close stops the consumer.
func (r *ObjectReader) Close() error {
	if r.it != nil {
		r.it.Stop()
		r.drop.Do(func() { dropConsumer(r.js, r.stream, r.cons) })
	}
	if r.cancel != nil {
		r.cancel()
	}
	return nil
}

// dropConsumer deletes an ordered consumer's current consumer on the
// server now, rather than leaving it to expire after nats.go's inactive
// threshold (5 minutes): every read of an archive makes one, and dozens
// idle in `nats consumer ls` after a busy hour. Best effort: one left
// behind still expires.
func dropConsumer(js jetstream.JetStream, stream string, cons jetstream.Consumer) {
	ci := cons.CachedInfo()
	if ci == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = js.DeleteConsumer(ctx, stream, ci.Name)
}
