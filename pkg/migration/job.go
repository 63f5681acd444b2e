package migration

import (
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Log attribute keys.
const (
	attrJob     = "job"
	attrEvent   = "event"
	attrCommand = "command"
	attrReason  = "reason"
	attrAttempt = "attempt"
	attrErr     = "err"
)

// Defaults of the publish retry.
const (
	DefaultPublishTimeout  = 5 * time.Second
	DefaultPublishAttempts = 5
)

// Job is one migration job's connection to chromadb-rollback: it publishes
// the job's events and follows the control commands sent to it.
type Job struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	subj contract.Subjects
	job  string
	log  *slog.Logger

	publishTimeout  time.Duration
	publishAttempts int

	sub *nats.Subscription

	mu sync.Mutex
	// pending holds, per event name, the last event whose publish failed,
	// so a repeated call with the same content reuses its id.
	pending map[string]contract.MigrationEvent
	started *Receipt
	closed  bool

	// Control state, guarded by mu.
	paused      bool
	pauseReason string
	abortReason string
	aborted     chan struct{} // closed on abort
	changed     chan struct{} // closed and replaced on every state change
	handlers    []func(contract.Control)
	last        *contract.Control
}

// Option configures New.
type Option func(*options)

type options struct {
	prefix          string
	log             *slog.Logger
	publishTimeout  time.Duration
	publishAttempts int
}

// WithSubjectPrefix sets the first subject token(s) (default "chroma").
func WithSubjectPrefix(prefix string) Option {
	return func(o *options) { o.prefix = prefix }
}

// WithLogger sets the logger (default: discard).
func WithLogger(log *slog.Logger) Option {
	return func(o *options) { o.log = log }
}

// WithPublishRetry bounds each publish attempt by timeout and makes at most
// attempts of them when the stream does not answer (defaults 5 s, 5). Every
// attempt sends the same event id, so the stream stores the event once.
func WithPublishRetry(timeout time.Duration, attempts int) Option {
	return func(o *options) { o.publishTimeout, o.publishAttempts = timeout, attempts }
}

// New returns a Job named job (one subject token: no dots, wildcards or
// whitespace) on nc, already subscribed to its control subject.
func New(nc *nats.Conn, job string, opts ...Option) (*Job, error) {
	if nc == nil {
		return nil, fmt.Errorf("migration: a NATS connection is required")
	}
	if err := contract.ValidToken(job); err != nil {
		return nil, fmt.Errorf("migration: job name: %w", err)
	}
	o := options{publishTimeout: DefaultPublishTimeout, publishAttempts: DefaultPublishAttempts}
	for _, opt := range opts {
		opt(&o)
	}
	if o.publishTimeout <= 0 || o.publishAttempts < 1 {
		return nil, fmt.Errorf("migration: publish retry wants a positive timeout and at least 1 attempt, got %s and %d", o.publishTimeout, o.publishAttempts)
	}
	subj, err := contract.NewSubjects(o.prefix)
	if err != nil {
		return nil, fmt.Errorf("migration: %w", err)
	}
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("migration: jetstream: %w", err)
	}
	j := &Job{
		nc: nc, js: js, subj: subj, job: job,
		log:             o.log.With(attrJob, job),
		publishTimeout:  o.publishTimeout,
		publishAttempts: o.publishAttempts,
		pending:         map[string]contract.MigrationEvent{},
		aborted:         make(chan struct{}),
		changed:         make(chan struct{}),
	}
	j.sub, err = nc.Subscribe(subj.Control(job), j.onControl)
	if err != nil {
		return nil, fmt.Errorf("migration: subscribe to %s: %w", subj.Control(job), err)
	}
	// The server knows the subscription once the flush returns: a command
	// sent after New returns reaches the job.
	if err := nc.FlushTimeout(o.publishTimeout); err != nil {
		_ = j.sub.Unsubscribe()
		return nil, fmt.Errorf("migration: subscribe to %s: %w", subj.Control(job), err)
	}
	return j, nil
}

// Name is the job's name.
func (j *Job) Name() string { return j.job }

// Subjects is the subject builder the job uses.
func (j *Job) Subjects() contract.Subjects { return j.subj }

// Close stops following control commands. It does not close the NATS
// connection. Events can no longer be published. It is idempotent.
func (j *Job) Close() error {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return nil
	}
	j.closed = true
	j.mu.Unlock()
	if err := j.sub.Unsubscribe(); err != nil && err != nats.ErrConnectionClosed && err != nats.ErrBadSubscription {
		return fmt.Errorf("unsubscribe from control: %w", err)
	}
	return nil
}
