package auditor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
)

// Version is the auditor's SemVer, as `nats micro ls` shows it.
const Version = "0.1.0"

// ServiceName is the micro service name.
const ServiceName = "chromadb-auditor"

// Stats are the auditor's counters since it started.
type Stats struct {
	// Written entries, in Batches (one fsync each).
	Written uint64
	Batches uint64
	// Duplicates are messages not written because an entry already holds
	// their event id; Redelivered, because the trail already holds their
	// sequence.
	Duplicates  uint64
	Redelivered uint64
	// LastSeq is the stream sequence the trail is written through.
	LastSeq   uint64
	LastWrite time.Time
	// WriteError is the last append's failure, "" once one succeeds.
	WriteError string
}

// Service is the auditor. Exactly one runs per consumer and data dir.
type Service struct {
	cfg  Config
	nc   *nats.Conn
	subj contract.Subjects
	log  *slog.Logger

	js     jetstream.JetStream
	stream jetstream.Stream
	trail  *Trail
	ready  chan struct{} // closed once the trail is open and the API serves

	mu    sync.Mutex
	cons  jetstream.Consumer
	stats Stats

	// Writer state, owned by the consuming goroutine.
	processed   uint64 // highest sequence written or skipped
	refillBelow uint64 // sequences up to this were acked before but are not in the trail
}

// errFatal marks an error that retrying cannot fix.
type errFatal struct{ error }

// New returns a Service; Run starts it.
func New(cfg Config, nc *nats.Conn, subj contract.Subjects, log *slog.Logger) (*Service, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if nc == nil {
		return nil, errors.New("auditor: a NATS connection is required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{cfg: cfg, nc: nc, subj: subj, ready: make(chan struct{}),
		log: log.With("service", "auditor", "instance", cfg.Instance)}, nil
}

// Ready is closed once the trail is read and the API answers.
func (s *Service) Ready() <-chan struct{} { return s.ready }

// Stats returns the counters.
func (s *Service) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	if s.trail != nil {
		st.LastSeq = s.trail.Head().LastSeq
	}
	return st
}

// TrailPath is the trail file's path.
func (s *Service) TrailPath() string { return s.cfg.TrailPath() }

// Run opens the trail, serves chroma.api.audit.* and writes every message
// of the audit stream into the trail until ctx is done.
func (s *Service) Run(ctx context.Context) error {
	js, err := jetstream.New(s.nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	s.js = js
	bctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	assets, err := bus.Bootstrap(bctx, js, bus.Config{Subjects: s.subj, Replicas: s.cfg.Replicas})
	cancel()
	if err != nil {
		return err
	}
	s.stream = assets.Audit
	if err := os.MkdirAll(s.cfg.DataDir, 0o755); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	trail, err := OpenTrail(s.cfg.TrailPath(), s.log)
	if err != nil {
		return err
	}
	defer trail.Close()
	s.mu.Lock()
	s.trail = trail
	s.mu.Unlock()
	head := trail.Head()
	s.log.Info("trail opened", "path", trail.Path(), "lines", head.Lines, "last_seq", head.LastSeq)

	svc, err := micro.AddService(s.nc, micro.Config{
		Name:        ServiceName,
		Version:     Version,
		Description: "audit trail: the audit stream as a hash-chained JSONL file; query and verify",
		Metadata:    map[string]string{"instance": s.cfg.Instance, "trail": trail.Path()},
	})
	if err != nil {
		return fmt.Errorf("add micro service: %w", err)
	}
	defer func() { _ = svc.Stop() }()
	g := svc.AddGroup(s.subj.APIGroup("audit"))
	for name, h := range map[string]func(context.Context, micro.Request){
		"query":  s.handleQuery,
		"verify": s.handleVerify,
		"health": s.handleHealth,
	} {
		if err := g.AddEndpoint(name, bus.Handler(ctx, s.log, h)); err != nil {
			return fmt.Errorf("add endpoint %s: %w", name, err)
		}
	}
	close(s.ready)

	wait := s.cfg.RetryWait
	for ctx.Err() == nil {
		began := time.Now()
		err := s.follow(ctx)
		if ctx.Err() != nil {
			break
		}
		if time.Since(began) > time.Minute { // it ran well for a while: a new failure
			wait = s.cfg.RetryWait
		}
		var fatal errFatal
		if errors.As(err, &fatal) {
			return fatal.error
		}
		s.log.Error("trail writer stopped; retrying", "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Minute)
	}
	s.log.Info("auditor stopped", "last_seq", trail.Head().LastSeq)
	return nil
}

// align puts the durable consumer right after the trail's last entry. The
// trail is the truth: a consumer that acknowledged exactly the trail and
// has nothing in flight is kept; otherwise (a killed auditor left
// messages unacknowledged, or the trail lost entries) it is made anew to
// start after the last entry written, so every message comes once, in
// stream order.
func (s *Service) align(ctx context.Context) (jetstream.Consumer, error) {
	head := s.trail.Head()
	info, err := s.stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", contract.StreamAudit, err)
	}
	st := info.State
	if head.LastSeq > st.LastSeq {
		return nil, errFatal{fmt.Errorf("the trail %s is written through seq %d but stream %s ends at seq %d: the stream was recreated; "+
			"move the trail aside to start a new one (the old trail stays verifiable offline)", s.trail.Path(), head.LastSeq, contract.StreamAudit, st.LastSeq)}
	}
	start := head.LastSeq + 1
	if st.Msgs > 0 && start < st.FirstSeq {
		if head.LastSeq > 0 {
			s.log.Warn("audit events expired from the stream before the auditor wrote them",
				"trail_last_seq", head.LastSeq, "stream_first_seq", st.FirstSeq)
		}
		start = st.FirstSeq
	}
	want := s.cfg.consumerConfig(s.subj, start)
	s.refillBelow = 0
	cons, err := s.stream.Consumer(ctx, s.cfg.Consumer)
	switch {
	case err == nil:
		ci := cons.CachedInfo()
		if ci.NumAckPending == 0 && ci.AckFloor.Stream == head.LastSeq && ci.Delivered.Stream == ci.AckFloor.Stream &&
			ci.Config.AckPolicy == want.AckPolicy && ci.Config.FilterSubject == want.FilterSubject && ci.Config.MaxAckPending == want.MaxAckPending {
			s.processed = head.LastSeq
			s.setConsumer(cons)
			return cons, nil
		}
		if ci.AckFloor.Stream > head.LastSeq {
			// Messages skipped as duplicates were acked and not written:
			// this alone is no loss. write logs an error for each entry it
			// has to write again, which the trail did lose.
			s.refillBelow = ci.AckFloor.Stream
			s.log.Info("the consumer acknowledged past the trail's end: reading those messages again",
				"ack_floor", ci.AckFloor.Stream, "trail_last_seq", head.LastSeq)
		}
		if err := s.stream.DeleteConsumer(ctx, s.cfg.Consumer); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, fmt.Errorf("reset consumer %s: %w", s.cfg.Consumer, err)
		}
	case !errors.Is(err, jetstream.ErrConsumerNotFound):
		return nil, fmt.Errorf("consumer %s: %w", s.cfg.Consumer, err)
	}
	cons, err = s.stream.CreateConsumer(ctx, want)
	if err != nil {
		return nil, fmt.Errorf("create consumer %s: %w", s.cfg.Consumer, err)
	}
	s.processed = start - 1
	s.setConsumer(cons)
	s.log.Info("consumer aligned with the trail", "consumer", s.cfg.Consumer, "start_seq", start)
	return cons, nil
}

func (s *Service) setConsumer(c jetstream.Consumer) {
	s.mu.Lock()
	s.cons = c
	s.mu.Unlock()
}

func (s *Service) consumer() jetstream.Consumer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cons
}

// consumeHeartbeat is how often the server tells the trail writer's pull
// that it is alive while nothing arrives.
const consumeHeartbeat = 2 * time.Second

// follow aligns the consumer and writes batches until ctx ends or a write
// fails; Run then aligns again.
func (s *Service) follow(ctx context.Context) error {
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	cons, err := s.align(actx)
	cancel()
	if err != nil {
		return err
	}
	fctx, stop := context.WithCancel(ctx)
	msgs := make(chan jetstream.Msg, s.cfg.Batch)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case msgs <- m:
		case <-fctx.Done():
		}
	}, jetstream.PullMaxMessages(s.cfg.Batch),
		// A pull that meets no consumer leader (an election, or a consumer
		// just created on a cluster) is sent again after two missed
		// heartbeats: a few seconds rather than the default 30.
		jetstream.PullHeartbeat(consumeHeartbeat),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			s.log.Debug("consume", "err", err)
		}))
	if err != nil {
		stop()
		return fmt.Errorf("consume: %w", err)
	}
	defer cc.Stop()
	defer stop()
	batch := make([]jetstream.Msg, 0, s.cfg.Batch)
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			return nil
		case <-cc.Closed():
			// The consume ended under the writer (the consumer was
			// deleted, say): nothing more comes; align again.
			return fmt.Errorf("consuming %s with %s stopped", contract.StreamAudit, s.cfg.Consumer)
		case m := <-msgs:
			batch = append(batch, m)
		}
	drain:
		for len(batch) < s.cfg.Batch {
			select {
			case m := <-msgs:
				batch = append(batch, m)
			default:
				break drain
			}
		}
		if err := s.write(ctx, batch); err != nil {
			return err
		}
	}
}

// errGap says a message was skipped in delivery; the consumer is aligned again.
var errGap = errors.New("a gap in delivery")

// write appends the new messages of batch to the trail, syncs it, and then
// acknowledges the batch. Messages already in the trail (by sequence or by
// event id) are acknowledged without being written.
func (s *Service) write(ctx context.Context, batch []jetstream.Msg) error {
	var (
		entries   []contract.AuditTrailEntry
		ack       jetstream.Msg
		ackSeq    uint64
		processed = s.processed
		batchIDs  = map[string]bool{}
		dups      uint64
		redeliv   uint64
		refilled  int
		gapErr    error
	)
	for _, m := range batch {
		meta, err := m.Metadata()
		if err != nil {
			s.log.Error("message without JetStream metadata", "subject", m.Subject(), "err", err)
			continue
		}
		seq := meta.Sequence.Stream
		if seq <= processed {
			redeliv++
		} else {
			if seq != processed+1 && !s.gapExpected(ctx, processed+1, seq) {
				gapErr = fmt.Errorf("%w: got seq %d, expected %d", errGap, seq, processed+1)
				break
			}
			processed = seq
			e := NewEntry(seq, meta.Timestamp, m.Subject(), m.Data())
			id := eventID(e.Event)
			if _, seen := s.trail.Seen(id); id != "" && (seen || batchIDs[id]) {
				dups++
			} else {
				if id != "" {
					batchIDs[id] = true
				}
				if seq <= s.refillBelow {
					refilled++
				}
				entries = append(entries, e)
			}
		}
		if seq > ackSeq {
			ack, ackSeq = m, seq
		}
	}
	if err := s.trail.Append(entries); err != nil {
		s.mu.Lock()
		s.stats.WriteError = err.Error()
		s.mu.Unlock()
		return err
	}
	s.processed = processed
	s.mu.Lock()
	if len(entries) > 0 {
		s.stats.Written += uint64(len(entries))
		s.stats.Batches++
		s.stats.LastWrite = time.Now().UTC()
	}
	s.stats.Duplicates += dups
	s.stats.Redelivered += redeliv
	s.stats.WriteError = ""
	s.mu.Unlock()
	if refilled > 0 {
		s.log.Error("wrote entries that the consumer had acknowledged but the trail no longer held: the trail had lost them",
			"entries", refilled, "through_seq", s.refillBelow)
	}
	if ack != nil {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		// Written and synced: a lost ack only means a redelivery, skipped by sequence.
		if err := ack.DoubleAck(actx); err != nil && ctx.Err() == nil {
			s.log.Warn("ack failed; the batch will be delivered again and skipped", "seq", ackSeq, "err", err)
		}
		cancel()
	}
	return gapErr
}

// gapExpected reports whether the messages from want up to got are gone
// from the stream (expired or deleted), so delivery skipping them is right.
func (s *Service) gapExpected(ctx context.Context, want, got uint64) bool {
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if info, err := s.stream.Info(gctx); err == nil && info.State.FirstSeq >= got {
		return true
	}
	if got-want > 1000 {
		return false
	}
	for seq := want; seq < got; seq++ {
		if _, err := s.stream.GetMsg(gctx, seq); !errors.Is(err, jetstream.ErrMsgNotFound) {
			return false
		}
	}
	s.log.Warn("stream messages gone before the auditor wrote them", "from_seq", want, "to_seq", got-1)
	return true
}
