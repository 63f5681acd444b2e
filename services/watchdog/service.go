package watchdog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
)

// Version is the watchdog's SemVer, as `nats micro ls` shows it.
const Version = "0.1.0"

// ServiceName is the micro service name.
const ServiceName = "chromadb-watchdog"

// ConsumerName is the durable consumer of the migration stream, shared by
// every instance.
const ConsumerName = "watchdog"

// auditService names the watchdog in audit subjects and events.
const auditService = "watchdog"

// maxEventBytes bounds one migration event (per-collection figures of a
// large database included).
const maxEventBytes = 1 << 20

// Service is one watchdog instance. Several may run at once: they share the
// durable consumer, keep every decision in the migration records by
// compare-and-set, and so act once between them.
type Service struct {
	cfg    Config
	nc     *nats.Conn
	subj   contract.Subjects
	chroma *chroma.Client
	log    *slog.Logger

	js     jetstream.JetStream
	assets *bus.Assets
	audit  *bus.Auditor
	events jetstream.Stream   // CHROMA_MIGRATIONS
	cons   jetstream.Consumer // the watchdogs' durable consumer of it

	diskMinFree atomic.Uint64
	poke        chan struct{} // asks the ticker to look now

	// absent are the other instances whose disk pauses the last disk check
	// found held by no running instance (diskLoop's only).
	absent map[string]bool

	acts sync.WaitGroup // act goroutines

	mu       sync.Mutex
	records  map[string]cachedRecord      // job -> newest record the watcher saw
	conds    map[string]*condition        // pause reason -> what this instance sees
	progress map[string]contract.Progress // op id -> latest progress seen
	gone     map[string]goneArchive       // snapshot id -> its archive, missing since
	inflight map[string]bool              // jobs with an act goroutine running
	retryAt  map[string]time.Time         // job -> no request before this time
	pinAt    map[string]time.Time         // job -> the tick looks for its snapshot again after this time
	retries  map[string]int               // job -> requests failed in a row
	audited  map[string]bool              // trigger audits already sent by this process

	running   map[string]bool // the watchdog instances the discovery found at runningAt
	runningAt time.Time
}

// cachedRecord is a migration record with its KV revision.
type cachedRecord struct {
	rec contract.MigrationRecord
	rev uint64
}

// New returns a Service; Run starts it. cc is the client whose heartbeat
// the connectivity trigger checks.
func New(cfg Config, nc *nats.Conn, subj contract.Subjects, cc *chroma.Client, log *slog.Logger) (*Service, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if nc == nil || cc == nil {
		return nil, errors.New("watchdog: a NATS connection and a Chroma client are required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// The URL is only shown (logs, alerts, audit figures); cc connects.
	cfg.ChromaURL = chroma.RedactURL(cfg.ChromaURL)
	s := &Service{
		cfg: cfg, nc: nc, subj: subj, chroma: cc,
		log:      log.With("service", auditService, "instance", cfg.Instance),
		poke:     make(chan struct{}, 1),
		records:  map[string]cachedRecord{},
		conds:    map[string]*condition{},
		progress: map[string]contract.Progress{},
		gone:     map[string]goneArchive{},
		inflight: map[string]bool{},
		retryAt:  map[string]time.Time{},
		pinAt:    map[string]time.Time{},
		retries:  map[string]int{},
		audited:  map[string]bool{},
	}
	s.diskMinFree.Store(cfg.DiskMinFree)
	return s, nil
}

// SetDiskMinFree changes the free-space threshold of the watched paths
// while the service runs (a configuration reload; tests use it to cross the
// threshold on demand). It takes effect at the next disk check.
func (s *Service) SetDiskMinFree(bytes uint64) {
	s.diskMinFree.Store(bytes)
}

// Run bootstraps JetStream, serves chroma.api.status, follows the migration
// stream and runs the triggers until ctx is done.
func (s *Service) Run(ctx context.Context) error {
	js, err := jetstream.New(s.nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	s.js = js
	bctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	s.assets, err = bus.Bootstrap(bctx, js, bus.Config{Subjects: s.subj, Replicas: s.cfg.Replicas})
	cancel()
	if err != nil {
		return err
	}
	s.audit = bus.NewAuditor(js, s.subj, auditService, s.log)

	ctx, stop := context.WithCancel(ctx)
	defer stop()
	if err := s.watchRecords(ctx); err != nil {
		return err
	}
	sub, err := s.nc.Subscribe(s.subj.Progress("*"), s.onProgress)
	if err != nil {
		return fmt.Errorf("subscribe to progress: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	svc, err := micro.AddService(s.nc, micro.Config{
		Name:        ServiceName,
		Version:     Version,
		Description: "migration watchdog: validation, time, connectivity and disk triggers; status",
		Metadata:    map[string]string{"instance": s.cfg.Instance},
	})
	if err != nil {
		return fmt.Errorf("add micro service: %w", err)
	}
	defer func() { _ = svc.Stop() }()
	if err := svc.AddEndpoint("status", bus.Handler(ctx, s.log, s.handleStatus), micro.WithEndpointSubject(s.subj.API("status"))); err != nil {
		return fmt.Errorf("add endpoint status: %w", err)
	}
	if err := bus.AddChromaHealth(ctx, svc, s.subj, "watchdog", s.cfg.Instance, s.cfg.ChromaURL, s.chroma.Version, s.log); err != nil {
		return err
	}

	stream, err := js.Stream(ctx, contract.StreamMigrations)
	if err != nil {
		return fmt.Errorf("stream %s: %w", contract.StreamMigrations, err)
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       ConsumerName,
		Description:   "migration events for the watchdog",
		FilterSubject: s.subj.Migrations(),
		// A watchdog installed on a stream that already holds events must
		// not replay old runs into fresh records and fire their deadlines;
		// once the consumer exists, it resumes where it was.
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.cfg.AckWait,
		// One event at a time across all instances: a job's events are
		// handled in the order it published them.
		MaxAckPending: 1,
	})
	if err != nil {
		return fmt.Errorf("create consumer: %w", err)
	}
	s.events, s.cons = stream, cons

	var wg sync.WaitGroup
	wg.Go(func() { s.consume(ctx, cons) })
	wg.Go(func() { s.tickLoop(ctx) })
	wg.Go(func() { s.heartbeatLoop(ctx) })
	wg.Go(func() { s.diskLoop(ctx) })
	wg.Go(func() { s.archiveLoop(ctx) })
	s.log.Info("watchdog started", "chroma_url", s.cfg.ChromaURL, "validation_threshold", s.cfg.ValidationThreshold,
		"automatic_rollback", !s.cfg.AutomaticRollbackDisabled, "disk_paths", s.cfg.DiskPaths)
	<-ctx.Done()
	wg.Wait()
	s.acts.Wait()
	s.log.Info("watchdog stopped")
	return nil
}

// consume handles migration events one at a time until ctx ends.
func (s *Service) consume(ctx context.Context, cons jetstream.Consumer) {
	for ctx.Err() == nil {
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		batch, err := cons.Fetch(1, jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("fetch migration event failed", "err", err)
			sleep(ctx, time.Second)
			continue
		}
		for msg := range batch.Messages() {
			s.handleEvent(ctx, msg)
		}
		cancel()
		if err := batch.Error(); err != nil && ctx.Err() == nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			s.log.Debug("fetch ended", "err", err)
			sleep(ctx, bus.FetchPause) // no consumer leader (an election): do not spin
		}
	}
}

// tickLoop checks deadlines and pending work every TickInterval, and at
// once when poked.
func (s *Service) tickLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.poke:
		}
		s.tick(ctx)
	}
}

// wake makes the ticker look now.
func (s *Service) wake() {
	select {
	case s.poke <- struct{}{}:
	default:
	}
}

// emit publishes an audit event. id, when not empty, makes the event's id
// deterministic, so the same decision audited twice (a redelivered event,
// two instances) is stored once within the stream's dedup window.
func (s *Service) emit(ctx context.Context, id string, ev contract.AuditEvent) {
	_ = s.emitChecked(ctx, id, ev)
}

// emitChecked is emit, saying whether the event was stored
// (updateAudited).
func (s *Service) emitChecked(ctx context.Context, id string, ev contract.AuditEvent) error {
	ev.Envelope = contract.NewEnvelope(contract.TypeAuditEvent)
	if id != "" {
		ev.ID = "wd_" + id
	}
	if ev.Figures == nil {
		ev.Figures = map[string]any{}
	}
	ev.Figures["instance"] = s.cfg.Instance
	if ev.Actor == "" {
		ev.Actor = "watchdog"
	}
	return s.audit.Emit(ctx, ev)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
