package contract

import (
	"encoding/json"
	"fmt"
	"math"
	"time"
)

// Versioned migration event types, one per event subject
// chroma.migration.<job>.<event>.
const (
	TypeMigrationStarted    = "chromadb-rollback.v1.migration_started"
	TypeMigrationHeartbeat  = "chromadb-rollback.v1.migration_heartbeat"
	TypeMigrationValidation = "chromadb-rollback.v1.migration_validation"
	TypeMigrationCompleted  = "chromadb-rollback.v1.migration_completed"
	TypeMigrationFailed     = "chromadb-rollback.v1.migration_failed"
)

// Migration event names: the last token of the event subject.
const (
	EventStarted    = "started"
	EventHeartbeat  = "heartbeat"
	EventValidation = "validation"
	EventCompleted  = "completed"
	EventFailed     = "failed"
)

// MigrationEventTypes maps an event name to its message type.
var MigrationEventTypes = map[string]string{
	EventStarted:    TypeMigrationStarted,
	EventHeartbeat:  TypeMigrationHeartbeat,
	EventValidation: TypeMigrationValidation,
	EventCompleted:  TypeMigrationCompleted,
	EventFailed:     TypeMigrationFailed,
}

// MigrationEvent is what a migration job publishes on
// chroma.migration.<job>.<event> (stream CHROMA_MIGRATIONS). One struct
// serves every event; the fields an event does not use stay empty. Jobs
// should set Envelope.ID to a unique id per event and send it as the
// Nats-Msg-Id too, so a resent event is stored once.
type MigrationEvent struct {
	Envelope
	Job string `json:"job"`

	// started
	Tenant   string `json:"tenant,omitempty"`
	Database string `json:"database,omitempty"`
	// SnapshotID is the pre-migration snapshot (id or name). When empty
	// and TakeSnapshot is set, the watchdog takes one and the job waits
	// for it (see MigrationRecord.SnapshotID).
	SnapshotID   string `json:"snapshot_id,omitempty"`
	TakeSnapshot bool   `json:"take_snapshot,omitempty"`
	// TimeLimitSeconds bounds the migration's run time, at least one
	// second; 0 takes the watchdog's default (1 h).
	TimeLimitSeconds float64  `json:"time_limit_seconds,omitempty"`
	Collections      []string `json:"collections,omitempty"`

	// heartbeat
	Phase       string `json:"phase,omitempty"`
	DoneRecords int64  `json:"done_records,omitempty"`

	// validation: ValidChunks / TotalChunks is the ratio the validation
	// trigger compares with its threshold (0.95). PerCollection lets a
	// partial rollback name only the failed collections.
	ValidChunks   int64                  `json:"valid_chunks,omitempty"`
	TotalChunks   int64                  `json:"total_chunks,omitempty"`
	PerCollection []CollectionValidation `json:"per_collection,omitempty"`

	// failed
	Error string `json:"error,omitempty"`
}

// MarshalJSON writes valid_chunks in a validation event even when it is 0
// (no record valid): the watchdog refuses a validation without it, so that
// a misspelt field is not read as a total loss.
func (m MigrationEvent) MarshalJSON() ([]byte, error) {
	type plain MigrationEvent
	if m.Type != TypeMigrationValidation {
		return json.Marshal(plain(m))
	}
	return json.Marshal(struct {
		plain
		ValidChunks int64 `json:"valid_chunks"`
	}{plain(m), m.ValidChunks})
}

// CollectionValidation is one collection's validation figures.
type CollectionValidation struct {
	Collection  string `json:"collection"`
	ValidChunks int64  `json:"valid_chunks"`
	TotalChunks int64  `json:"total_chunks"`
}

// MigrationEvent is the subject a job publishes an event on.
func (s Subjects) MigrationEvent(job, event string) string {
	return s.p() + ".migration." + job + "." + event
}

// ValidateMigrationEvent checks an event received on the subject of event
// for job: its type, job and the fields the event needs.
func ValidateMigrationEvent(event, job string, m *MigrationEvent) error {
	want, ok := MigrationEventTypes[event]
	if !ok {
		return fmt.Errorf("unknown migration event %q (want started, heartbeat, validation, completed or failed)", event)
	}
	if m.Type != want {
		return fmt.Errorf("type %q on a %s event, want %q", m.Type, event, want)
	}
	if err := ValidToken(job); err != nil {
		return fmt.Errorf("job: %w", err)
	}
	if m.Job != job {
		return fmt.Errorf("job %q in the body of an event for job %q", m.Job, job)
	}
	switch event {
	case EventStarted:
		if m.Tenant == "" || m.Database == "" {
			return fmt.Errorf("started needs tenant and database")
		}
		if m.SnapshotID == "" && !m.TakeSnapshot {
			return fmt.Errorf("started needs snapshot_id, or take_snapshot: true")
		}
		if m.TimeLimitSeconds < 0 {
			return fmt.Errorf("time_limit_seconds %v is negative", m.TimeLimitSeconds)
		}
		if m.TimeLimitSeconds > 0 && m.TimeLimitSeconds < MinTimeLimitSeconds {
			// It would abort the job and roll the database back at once:
			// most likely not seconds, or a typo.
			return fmt.Errorf("time_limit_seconds %v is under %v: give seconds, as 3600 for an hour, or 0 for the watchdog's default", m.TimeLimitSeconds, MinTimeLimitSeconds)
		}
		if m.TimeLimitSeconds > MaxTimeLimitSeconds {
			return fmt.Errorf("time_limit_seconds %v is more than %.0f (about 292 years)", m.TimeLimitSeconds, MaxTimeLimitSeconds)
		}
	case EventHeartbeat:
		if m.DoneRecords < 0 {
			return fmt.Errorf("done_records %d is negative", m.DoneRecords)
		}
	case EventValidation:
		if m.TotalChunks <= 0 || m.ValidChunks < 0 || m.ValidChunks > m.TotalChunks {
			return fmt.Errorf("validation needs 0 <= valid_chunks (%d) <= total_chunks (%d) and total_chunks > 0", m.ValidChunks, m.TotalChunks)
		}
		for _, c := range m.PerCollection {
			if c.Collection == "" || c.TotalChunks < 0 || c.ValidChunks < 0 || c.ValidChunks > c.TotalChunks {
				return fmt.Errorf("per_collection %q: want a name and 0 <= valid_chunks <= total_chunks", c.Collection)
			}
		}
	}
	return nil
}

// MinTimeLimitSeconds is the shortest time limit a started event may set.
const MinTimeLimitSeconds = 1.0

// MaxTimeLimitSeconds is the longest time limit a started event may set:
// the longest time.Duration in whole seconds. A longer one would wrap to a
// negative duration, a deadline in the past, and fire the time trigger at once.
const MaxTimeLimitSeconds = float64(math.MaxInt64 / int64(time.Second))

// TimeLimit is the started event's limit, or def when it sets none.
func (m *MigrationEvent) TimeLimit(def time.Duration) time.Duration {
	if m.TimeLimitSeconds > 0 {
		return time.Duration(m.TimeLimitSeconds * float64(time.Second))
	}
	return def
}
