package bus

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// ErrReadBack says that the chunks an object store holds for an object
// are not the bytes that were written: a chunk missing, stored twice or
// different. Writing the object again may pass.
var ErrReadBack = errors.New("object read back differs from what was written")

// putChunkSize is the object store's default chunk size, which every
// reader expects.
const putChunkSize = 128 << 10

// putReadAhead is how many chunks the read-back asks for ahead, and
// putInFlight how many may await their acks.
const (
	putReadAhead = 32
	putInFlight  = 64
)

// putStallTimeout is how long the read-back waits for a chunk that was
// published before it calls the stream stalled.
var putStallTimeout = 30 * time.Second

// afterChunk, when set (by tests), runs after each chunk is published,
// and beforeChunk after the chunk was hashed and before it is published
// (the bytes it leaves are what is sent).
var (
	afterChunk  func(subject string, n int, data []byte)
	beforeChunk func(n int, data []byte)
)

// PutObject stores what r yields as the object meta.Name of bucket, in the
// layout jetstream.ObjectStore.Put writes (chunks of 128 KiB on
// $O.<bucket>.C.<nuid>, then the meta message), so every object store
// reader reads it. Unlike Put it reads each chunk back from the stream
// while later ones are still written, and publishes the meta message only
// once the chunks stored are, in number, order, size and CRC-32C, the
// bytes read from r and nothing follows them: the object exists only
// verified. (The read-back looks for chunks lost, repeated or changed on
// their way; CRC-32C, which the CPU computes, does that at a tenth of the
// cost of a second SHA-256. The object's SHA-256 digest is computed as
// the bytes are written, and every reader checks it.) Otherwise its chunks are purged and the error says why
// (ErrReadBack when the stored chunks differ). An object of that name that
// existed before is replaced, as Put replaces it.
//
// Its chunks go to a new random subject unless WithChunkID names one.
func PutObject(ctx context.Context, js jetstream.JetStream, bucket string, meta jetstream.ObjectMeta, r io.Reader, opts ...PutOption) (*jetstream.ObjectInfo, error) {
	if meta.Name == "" {
		return nil, jetstream.ErrBadObjectMeta
	}
	var po putOptions
	for _, o := range opts {
		o(&po)
	}
	if po.chunkID != "" && !chunkIDRE.MatchString(po.chunkID) {
		return nil, fmt.Errorf("put object %s: chunk id %q is not a subject token of letters, digits, '_' and '-'", meta.Name, po.chunkID)
	}
	if meta.Opts != nil && (meta.Opts.Link != nil || (meta.Opts.ChunkSize != 0 && meta.Opts.ChunkSize != putChunkSize)) {
		return nil, fmt.Errorf("put object %s: only plain objects in %d-byte chunks", meta.Name, putChunkSize)
	}
	meta.Opts = &jetstream.ObjectMetaOptions{ChunkSize: putChunkSize}
	streamName := "OBJ_" + bucket
	stream, err := js.Stream(ctx, streamName)
	if err != nil {
		return nil, fmt.Errorf("put object %s: %w", meta.Name, err)
	}
	id := po.chunkID
	if id == "" {
		id = nuid.Next()
	}
	chunkSubj := ChunkSubject(bucket, id)
	metaSubj := metaSubject(bucket, meta.Name)
	var old *jetstream.ObjectInfo
	if raw, err := leaderLastMsg(ctx, js, streamName, metaSubj); err == nil {
		old, _ = decodeObjectInfo(raw) // undecodable: no chunks of an old object to purge
	} else if !errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("put object %s: %w", meta.Name, err)
	}
	if po.chunkID != "" {
		if old != nil && old.NUID == id {
			return nil, fmt.Errorf("put object %s: the object stored under that name holds chunk id %s; delete it first", meta.Name, id)
		}
		// What a put under this id that was cut short (its process
		// killed) stored: no object names it.
		if err := stream.Purge(ctx, jetstream.WithPurgeSubject(chunkSubj)); err != nil {
			return nil, fmt.Errorf("put object %s: purge the chunks of an earlier put: %w", meta.Name, err)
		}
	}

	pub, err := publisher(js.Conn())
	if err != nil {
		return nil, fmt.Errorf("put object %s: %w", meta.Name, err)
	}
	// The read-back's consumer exists before the first chunk.
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rb, err := startReadBack(rctx, js, streamName, chunkSubj)
	if err != nil {
		return nil, fmt.Errorf("put object %s: %w", meta.Name, err)
	}
	// Chunks go out asynchronously; acks are collected in order.
	var acks []jetstream.PubAckFuture
	// collect takes the acks that came, in order, waiting for the first
	// with wait; collectAll waits for them all.
	collect := func(wait bool) error {
		for first := true; len(acks) > 0; first = false {
			f := acks[0]
			if wait && first {
				select {
				case <-f.Ok():
				case err := <-f.Err():
					return err
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(putStallTimeout):
					return fmt.Errorf("%w: no ack for a chunk in %s", ErrStalled, putStallTimeout)
				}
			} else {
				select {
				case <-f.Ok():
				case err := <-f.Err():
					return err
				default:
					return nil
				}
			}
			acks = acks[1:]
		}
		return nil
	}
	collectAll := func() error {
		for len(acks) > 0 {
			if err := collect(true); err != nil {
				return err
			}
		}
		return nil
	}
	fail := func(err error) (*jetstream.ObjectInfo, error) {
		cancel()
		rb.stop()
		// Published chunks land (or their acks time out) before they are
		// purged, even when the put was cancelled.
		wait := time.After(putAckTimeout + time.Second)
	acked:
		for _, f := range acks {
			select {
			case <-f.Ok():
			case <-f.Err():
			case <-wait:
				break acked
			}
		}
		pctx, pcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer pcancel()
		_ = stream.Purge(pctx, jetstream.WithPurgeSubject(chunkSubj))
		return nil, fmt.Errorf("put object %s: %w", meta.Name, err)
	}

	h := sha256.New()
	crc := crc32.New(castagnoli)
	var size uint64
	var chunks uint32
	for {
		if err := ctx.Err(); err != nil {
			return fail(err)
		}
		select {
		case <-rb.done: // a read-back that ended before the last chunk failed
			if rb.err != nil {
				return fail(rb.err)
			}
		default:
		}
		// A chunk's buffer is its own until its ack: the JetStream
		// context may publish it again (after no responders in an
		// election, say).
		chunk := make([]byte, putChunkSize)
		n, rerr := io.ReadFull(r, chunk)
		if rerr != nil && !errors.Is(rerr, io.EOF) && !errors.Is(rerr, io.ErrUnexpectedEOF) {
			return fail(rerr)
		}
		if n > 0 {
			h.Write(chunk[:n])
			crc.Write(chunk[:n])
			if beforeChunk != nil {
				beforeChunk(int(chunks)+1, chunk[:n])
			}
			m := nats.NewMsg(chunkSubj)
			m.Data = chunk[:n]
			// No retries: a chunk published again after "no responders"
			// lands after the ones published meanwhile, out of order.
			f, err := pub.PublishMsgAsync(m, jetstream.WithRetryAttempts(0))
			if err != nil {
				return fail(err)
			}
			acks = append(acks, f)
			// At most putInFlight chunks await their acks (and hold
			// memory); earlier acks are taken as they come.
			if err := collect(len(acks) >= putInFlight); err != nil {
				return fail(err)
			}
			chunks++
			size += uint64(n)
			rb.published.Add(1)
			if afterChunk != nil {
				afterChunk(chunkSubj, int(chunks), chunk[:n])
			}
		}
		if rerr != nil {
			break
		}
	}
	sum := h.Sum(nil)
	if err := collectAll(); err != nil {
		return fail(err)
	}
	got, err := rb.finish(chunks)
	if err != nil {
		return fail(err)
	}
	if got.size != size || got.chunks != chunks || got.crc != crc.Sum32() {
		return fail(fmt.Errorf("%w: %d chunks of %d bytes read back, %d of %d written, CRC-32C %08x and %08x", ErrReadBack,
			got.chunks, got.size, chunks, size, got.crc, crc.Sum32()))
	}
	// Nothing after the last chunk read: a chunk stored twice at the end
	// would not change what a reader of the right number of chunks gets,
	// but the object would not be the bytes written.
	if chunks > 0 {
		last, err := leaderLastMsg(ctx, js, streamName, chunkSubj)
		if err != nil {
			return fail(err)
		}
		if last.Sequence != got.lastSeq {
			return fail(fmt.Errorf("%w: a chunk follows the last one read back (stream sequence %d, last read %d)", ErrReadBack, last.Sequence, got.lastSeq))
		}
	}

	info := &jetstream.ObjectInfo{
		ObjectMeta: meta, Bucket: bucket, NUID: id, Size: size, Chunks: chunks,
		Digest: "SHA-256=" + base64.URLEncoding.EncodeToString(sum),
	}
	mm := nats.NewMsg(metaSubj)
	mm.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	if mm.Data, err = json.Marshal(info); err != nil {
		return fail(err)
	}
	if _, err := js.PublishMsg(ctx, mm); err != nil {
		return fail(err)
	}
	info.ModTime = time.Now().UTC()
	if old != nil {
		_ = stream.Purge(ctx, jetstream.WithPurgeSubject(ChunkSubject(bucket, old.NUID)))
	}
	return info, nil
}

// PutOption configures PutObject.
type PutOption func(*putOptions)

type putOptions struct {
	chunkID string
}

// WithChunkID makes PutObject store the chunks under id (the object info's
// NUID) instead of a random one, after purging what an earlier put under
// id left: a caller that derives id from the object it writes can find
// and purge (PurgeChunks) the chunks of a put cut short before its object
// info was stored, which no reader or List sees. The id must not be that
// of the object being replaced.
func WithChunkID(id string) PutOption { return func(o *putOptions) { o.chunkID = id } }

var chunkIDRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,200}$`)

// ChunkIDFor derives a chunk id (WithChunkID) from an object name: each
// character a chunk id cannot hold becomes '_', so "snap_x.tar.zst" is
// stored under "snap_x_tar_zst" and "import/x" under "import_x".
func ChunkIDFor(name string) string {
	return strings.Map(func(r rune) rune {
		if r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, name)
}

// metaSubject is the subject of bucket's object store that holds the info
// of the object name.
func metaSubject(bucket, name string) string {
	return fmt.Sprintf("$O.%s.M.%s", bucket, base64.URLEncoding.EncodeToString([]byte(name)))
}

// decodeObjectInfo decodes an object info message of an object store's
// stream; nil when it marks the object deleted.
func decodeObjectInfo(m *jetstream.RawStreamMsg) (*jetstream.ObjectInfo, error) {
	var info jetstream.ObjectInfo
	if err := json.Unmarshal(m.Data, &info); err != nil {
		return nil, err
	}
	if info.Deleted {
		return nil, nil
	}
	info.ModTime = m.Time
	return &info, nil
}

// ChunkSubject is the subject of bucket's object store that holds the
// chunks stored under id (an object info's NUID).
func ChunkSubject(bucket, id string) string { return fmt.Sprintf("$O.%s.C.%s", bucket, id) }

// OrphanChunks returns the chunk ids of bucket's object store that no
// object's info names, with how many chunks each holds: what a put left
// when its process was killed before it stored the object's info. List
// and every reader miss them.
func OrphanChunks(ctx context.Context, js jetstream.JetStream, bucket string) (map[string]uint64, error) {
	stream, err := js.Stream(ctx, "OBJ_"+bucket)
	if err != nil {
		return nil, err
	}
	prefix := ChunkSubject(bucket, "")
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(prefix+">"))
	if err != nil {
		return nil, err
	}
	obs, err := js.ObjectStore(ctx, bucket)
	if err != nil {
		return nil, err
	}
	objs, err := RetryObjectStore(js, bucket, obs).List(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil, err
	}
	live := make(map[string]bool, len(objs))
	for _, o := range objs {
		live[o.NUID] = true
	}
	orphans := map[string]uint64{}
	for subj, n := range info.State.Subjects {
		if id := strings.TrimPrefix(subj, prefix); !live[id] {
			orphans[id] = n
		}
	}
	return orphans, nil
}

// PurgeChunks removes the chunks stored under id in bucket's object store,
// whatever object (if any) they belong to.
func PurgeChunks(ctx context.Context, js jetstream.JetStream, bucket, id string) error {
	if !chunkIDRE.MatchString(id) {
		return fmt.Errorf("purge chunks: %q is not a chunk id", id)
	}
	stream, err := js.Stream(ctx, "OBJ_"+bucket)
	if err != nil {
		return err
	}
	return stream.Purge(ctx, jetstream.WithPurgeSubject(ChunkSubject(bucket, id)))
}

// putAckTimeout bounds the wait for a chunk's ack: an ack lost while the
// stream changes leader fails the put (to be made again) instead of
// hanging it. jetstream.ObjectStore.Put uses the same 5 s.
const putAckTimeout = 5 * time.Second

// publishers holds one JetStream context per connection for the chunks'
// asynchronous publishes, with putAckTimeout: each context subscribes for
// its acks, so one per put would leave a subscription behind.
var publishers sync.Map // *nats.Conn -> jetstream.JetStream

func publisher(nc *nats.Conn) (jetstream.JetStream, error) {
	if js, ok := publishers.Load(nc); ok {
		return js.(jetstream.JetStream), nil
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(putAckTimeout))
	if err != nil {
		return nil, err
	}
	actual, _ := publishers.LoadOrStore(nc, js)
	return actual.(jetstream.JetStream), nil
}

// readBack reads an object's chunks from the stream as they are stored.
type readBack struct {
	js              jetstream.JetStream
	stream, subject string
	it              atomic.Pointer[jetstream.MessagesContext]
	cons            jetstream.Consumer // set by open, read after done
	reopens         int
	published       atomic.Uint32 // chunks published so far
	total           chan uint32
	done            chan struct{}
	res             readBackResult
	err             error
}

type readBackResult struct {
	chunks  uint32
	size    uint64
	crc     uint32 // CRC-32C (Castagnoli) of the chunks' bytes in order
	lastSeq uint64
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func startReadBack(ctx context.Context, js jetstream.JetStream, stream, subject string) (*readBack, error) {
	rb := &readBack{js: js, stream: stream, subject: subject, total: make(chan uint32, 1), done: make(chan struct{})}
	if err := rb.open(ctx); err != nil {
		return nil, err
	}
	go rb.run(ctx)
	return rb, nil
}

// open starts reading the chunks after the last one read.
func (rb *readBack) open(ctx context.Context) error {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{rb.subject}, DeliverPolicy: jetstream.DeliverAllPolicy}
	if rb.res.lastSeq > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, rb.res.lastSeq+1
	}
	var cons jetstream.Consumer
	err := Retry(ctx, func(ctx context.Context) (err error) {
		cons, err = rb.js.OrderedConsumer(ctx, rb.stream, cfg)
		return err
	})
	if err != nil {
		return err
	}
	// Heartbeats every second: an ordered consumer whose stream changed
	// leader notices the missing ones and starts again where it was.
	it, err := cons.Messages(jetstream.PullMaxMessages(putReadAhead), jetstream.PullHeartbeat(time.Second))
	if err != nil {
		dropConsumer(rb.js, rb.stream, cons)
		return err
	}
	if rb.cons != nil { // the one a reopen replaces
		dropConsumer(rb.js, rb.stream, rb.cons)
	}
	rb.it.Store(&it)
	rb.cons = cons
	return nil
}

// iter is the current message iterator.
func (rb *readBack) iter() jetstream.MessagesContext { return *rb.it.Load() }

// readBackReopens bounds how often a read-back whose connection or
// consumer failed starts again from its last chunk.
const readBackReopens = 5

func (rb *readBack) run(ctx context.Context) {
	defer close(rb.done)
	type next struct {
		m   jetstream.Msg
		err error
	}
	h := crc32.New(castagnoli)
	pending := make(chan next, 1)
	waiting := false
	want, known := uint32(0), false
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lastProgress := time.Now()
	for !known || rb.res.chunks < want {
		if !waiting {
			waiting = true
			go func() {
				m, err := rb.iter().Next()
				pending <- next{m, err}
			}()
		}
		select {
		case x := <-pending:
			waiting = false
			if x.err != nil {
				// A connection or consumer lost in an election: read on
				// from the last chunk read with a new consumer.
				if (Transient(x.err) || errors.Is(x.err, jetstream.ErrMsgIteratorClosed)) && ctx.Err() == nil && rb.reopens < readBackReopens {
					rb.reopens++
					rb.iter().Stop()
					if err := rb.open(ctx); err == nil {
						continue
					}
				}
				rb.err = x.err
				return
			}
			md, err := x.m.Metadata()
			if err != nil {
				rb.err = err
				return
			}
			rb.res.chunks++
			rb.res.size += uint64(len(x.m.Data()))
			rb.res.lastSeq = md.Sequence.Stream
			h.Write(x.m.Data())
			lastProgress = time.Now()
			if known && rb.res.chunks > want {
				rb.err = fmt.Errorf("%w: more than the %d chunks written", ErrReadBack, want)
				return
			}
		case want = <-rb.total:
			known = true
		case <-tick.C:
			// Waiting for the writer is not a stall; waiting for a chunk
			// it published is.
			if rb.published.Load() > rb.res.chunks && time.Since(lastProgress) > putStallTimeout {
				rb.err = fmt.Errorf("%w: read-back got no chunk for %s", ErrStalled, putStallTimeout)
				rb.iter().Stop()
				<-pending
				return
			}
		case <-ctx.Done():
			rb.err = ctx.Err()
			rb.iter().Stop()
			<-pending
			return
		}
	}
	if waiting {
		rb.iter().Stop()
		<-pending
	}
	rb.res.crc = h.Sum32()
}

// finish tells the read-back how many chunks were written and waits for
// what it read.
func (rb *readBack) finish(chunks uint32) (readBackResult, error) {
	rb.total <- chunks
	<-rb.done
	rb.iter().Stop()
	dropConsumer(rb.js, rb.stream, rb.cons)
	return rb.res, rb.err
}

// stop ends the read-back early (its context is cancelled first).
func (rb *readBack) stop() {
	<-rb.done
	rb.iter().Stop()
	dropConsumer(rb.js, rb.stream, rb.cons)
}

// leaderLastMsg is the last message on subject in stream as the stream's
// leader holds it (STREAM.MSG.GET, which only the leader answers). The
// object store's streams allow direct gets, which every replica answers
// once it is nearly caught up: a follower a few messages behind says that
// chunks just stored do not exist, or that an earlier chunk is the last.
// Checking a write needs the leader. Not found is jetstream.ErrMsgNotFound.
func leaderLastMsg(ctx context.Context, js jetstream.JetStream, stream, subject string) (*jetstream.RawStreamMsg, error) {
	req, err := json.Marshal(struct {
		LastFor string `json:"last_by_subj"`
	}{subject})
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, apiTimeout(js))
		defer cancel()
	}
	msg, err := js.Conn().RequestWithContext(ctx, apiPrefix(js)+"STREAM.MSG.GET."+stream, req)
	if err != nil {
		return nil, err
	}
	var resp struct {
		Error   *jetstream.APIError `json:"error"`
		Message *struct {
			Subject  string    `json:"subject"`
			Sequence uint64    `json:"seq"`
			Header   []byte    `json:"hdrs"`
			Data     []byte    `json:"data"`
			Time     time.Time `json:"time"`
		} `json:"message"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return nil, fmt.Errorf("decode the answer to a message get on %s: %w", stream, err)
	}
	if resp.Error != nil {
		if resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound {
			return nil, jetstream.ErrMsgNotFound
		}
		return nil, resp.Error
	}
	if resp.Message == nil {
		return nil, jetstream.ErrInvalidJetStreamResponse
	}
	m := resp.Message
	var hdr nats.Header
	if len(m.Header) > 0 {
		if hdr, err = nats.DecodeHeadersMsg(m.Header); err != nil {
			return nil, fmt.Errorf("decode the headers of message %d of %s: %w", m.Sequence, stream, err)
		}
	}
	return &jetstream.RawStreamMsg{Subject: m.Subject, Sequence: m.Sequence, Header: hdr, Data: m.Data, Time: m.Time}, nil
}

// apiPrefix is the subject prefix of js's API requests.
func apiPrefix(js jetstream.JetStream) string {
	o := js.Options()
	switch {
	case o.Domain != "":
		return "$JS." + o.Domain + ".API."
	case o.APIPrefix != "":
		return strings.TrimSuffix(o.APIPrefix, ".") + "."
	}
	return "$JS.API."
}

// apiTimeout is js's timeout for API requests whose context has no
// deadline.
func apiTimeout(js jetstream.JetStream) time.Duration {
	if d := js.Options().DefaultTimeout; d > 0 {
		return d
	}
	return 5 * time.Second
}
