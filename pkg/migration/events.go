package migration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Receipt is what the stream said about a published event.
type Receipt struct {
	// Event is the event as published, with its envelope.
	Event   contract.MigrationEvent
	Subject string
	// Sequence is the event's sequence in the CHROMA_MIGRATIONS stream
	// (for a duplicate, the sequence of the copy stored first). The
	// started event's sequence identifies the run: the watchdog keeps it
	// as MigrationRecord.Run.
	Sequence uint64
	// Duplicate says the stream already held an event with this id.
	Duplicate bool
}

// StartOptions describe the migration a job starts.
type StartOptions struct {
	// Tenant and Database name what the migration changes: the database a
	// rollback restores.
	Tenant, Database string
	// SnapshotID is the pre-migration snapshot (id or name) the job took
	// itself. Exactly one of SnapshotID and TakeSnapshot must be set.
	SnapshotID string
	// TakeSnapshot asks the watchdog to take the pre-migration snapshot;
	// the job must call WaitForSnapshot before it changes anything.
	TakeSnapshot bool
	// TimeLimit bounds the run: past it the watchdog sends abort and rolls
	// back. Zero takes the watchdog's default (1 h).
	TimeLimit time.Duration
	// Collections optionally names the collections the migration touches.
	Collections []string
}

// validate rejects bad combinations before anything is sent.
func (o StartOptions) validate() error {
	if err := contract.ValidateChromaName("tenant", o.Tenant); err != nil {
		return err
	}
	if err := contract.ValidateChromaName("database", o.Database); err != nil {
		return err
	}
	switch {
	case o.SnapshotID == "" && !o.TakeSnapshot:
		return errors.New("start needs the pre-migration snapshot: set SnapshotID, or TakeSnapshot to have the watchdog take one")
	case o.SnapshotID != "" && o.TakeSnapshot:
		return fmt.Errorf("start got both SnapshotID %q and TakeSnapshot: set one", o.SnapshotID)
	case o.TimeLimit < 0:
		return fmt.Errorf("time limit %s is negative", o.TimeLimit)
	}
	for _, c := range o.Collections {
		if err := contract.ValidateChromaName("collection", c); err != nil {
			return err
		}
	}
	return nil
}

// Start publishes the started event and returns once the stream stored it.
// With TakeSnapshot, call WaitForSnapshot next and change nothing before it
// returns. A Start that failed may be called again with the same options:
// the retry reuses the event id, so the stream stores the event once.
func (j *Job) Start(ctx context.Context, opts StartOptions) (Receipt, error) {
	if err := opts.validate(); err != nil {
		return Receipt{}, fmt.Errorf("start: %w", err)
	}
	j.mu.Lock()
	started := j.started
	j.mu.Unlock()
	if started != nil {
		return Receipt{}, fmt.Errorf("start: %w (run %d)", ErrAlreadyStarted, started.Sequence)
	}
	ev := contract.MigrationEvent{
		Tenant:       opts.Tenant,
		Database:     opts.Database,
		SnapshotID:   opts.SnapshotID,
		TakeSnapshot: opts.TakeSnapshot,
		Collections:  opts.Collections,
	}
	if opts.TimeLimit > 0 {
		ev.TimeLimitSeconds = opts.TimeLimit.Seconds()
	}
	r, err := j.Publish(ctx, contract.EventStarted, ev)
	if err != nil {
		return Receipt{}, err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.started != nil { // a concurrent Start won
		return Receipt{}, fmt.Errorf("start: %w (run %d)", ErrAlreadyStarted, j.started.Sequence)
	}
	j.started = &r
	return r, nil
}

// Started returns the started event's receipt, if Start succeeded.
func (j *Job) Started() (Receipt, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.started == nil {
		return Receipt{}, false
	}
	return *j.started, true
}

// Heartbeat says the job is alive: its phase and the records done so far.
func (j *Job) Heartbeat(ctx context.Context, phase string, done int64) error {
	_, err := j.Publish(ctx, contract.EventHeartbeat, contract.MigrationEvent{Phase: phase, DoneRecords: done})
	return err
}

// ReportValidation publishes the job's check of its result: valid of total
// chunks (records) are present and as intended. The watchdog rolls back
// when valid/total is under its threshold (0.95). perCollection, when
// given, lets a partial rollback restore only the failed collections.
func (j *Job) ReportValidation(ctx context.Context, valid, total int64, perCollection ...contract.CollectionValidation) error {
	_, err := j.Publish(ctx, contract.EventValidation, contract.MigrationEvent{
		ValidChunks: valid, TotalChunks: total, PerCollection: perCollection,
	})
	return err
}

// Complete says the job has finished its work.
func (j *Job) Complete(ctx context.Context) error {
	_, err := j.Publish(ctx, contract.EventCompleted, contract.MigrationEvent{})
	return err
}

// Fail says the job gave up because of cause.
func (j *Job) Fail(ctx context.Context, cause error) error {
	if cause == nil {
		return errors.New("fail: the cause is required")
	}
	_, err := j.Publish(ctx, contract.EventFailed, contract.MigrationEvent{Error: cause.Error()})
	return err
}

// Publish sends one event (started, heartbeat, validation, completed or
// failed) and waits for the stream to store it. It fills the envelope (type,
// id, time) and the job name, and validates the event as the watchdog will.
// An id already set is kept: publishing the same event twice stores it once
// (the second Receipt says Duplicate). Attempts that time out or find no
// stream are retried with the same id, up to the configured attempts.
func (j *Job) Publish(ctx context.Context, event string, ev contract.MigrationEvent) (Receipt, error) {
	typ, ok := contract.MigrationEventTypes[event]
	if !ok {
		return Receipt{}, fmt.Errorf("publish: unknown migration event %q", event)
	}
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return Receipt{}, fmt.Errorf("publish %s: %w", event, ErrClosed)
	}
	ev.Job = j.job
	if ev.ID == "" {
		if p, ok := j.pending[event]; ok && sameContent(p, ev) {
			ev.Envelope = p.Envelope
		} else {
			ev.Envelope = contract.NewEnvelope(typ)
		}
	}
	if ev.Type == "" {
		ev.Type = typ
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC().Truncate(time.Millisecond)
	}
	j.mu.Unlock()

	if err := contract.ValidateMigrationEvent(event, j.job, &ev); err != nil {
		return Receipt{}, fmt.Errorf("publish %s: %w", event, err)
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return Receipt{}, fmt.Errorf("publish %s: encode: %w", event, err)
	}
	subject := j.subj.MigrationEvent(j.job, event)
	ack, err := j.publish(ctx, event, subject, ev.ID, data)
	j.mu.Lock()
	if err != nil {
		j.pending[event] = ev
	} else if p, ok := j.pending[event]; ok && p.ID == ev.ID {
		delete(j.pending, event)
	}
	j.mu.Unlock()
	if err != nil {
		return Receipt{}, fmt.Errorf("publish %s to %s: %w", event, subject, err)
	}
	j.log.Debug("migration event published", attrEvent, event, "seq", ack.Sequence, "duplicate", ack.Duplicate)
	return Receipt{Event: ev, Subject: subject, Sequence: ack.Sequence, Duplicate: ack.Duplicate}, nil
}

// publish sends data with its dedup id, retrying attempts that may pass.
func (j *Job) publish(ctx context.Context, event, subject, id string, data []byte) (*jetstream.PubAck, error) {
	wait := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, j.publishTimeout)
		msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
		ack, err := j.js.PublishMsg(actx, msg,
			jetstream.WithMsgID(id),
			jetstream.WithExpectStream(contract.StreamMigrations))
		cancel()
		if err == nil {
			return ack, nil
		}
		if ctx.Err() != nil || attempt >= j.publishAttempts || !retryable(err) {
			return nil, err
		}
		j.log.Warn("migration event not stored; retrying", attrEvent, event, attrAttempt, attempt, attrErr, err)
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// retryable reports whether a failed publish may succeed when sent again:
// no answer in time, or no stream (yet) behind the subject.
func retryable(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders)
}

// sameContent reports whether two events say the same, envelope aside.
func sameContent(a, b contract.MigrationEvent) bool {
	a.Envelope, b.Envelope = contract.Envelope{}, contract.Envelope{}
	return reflect.DeepEqual(a, b)
}
