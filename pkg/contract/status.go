package contract

import "time"

// Message types of the watchdog's status endpoint (chroma.api.status).
const (
	TypeStatusRequest = "chromadb-rollback.v1.status_request"
	TypeStatusReport  = "chromadb-rollback.v1.status_report"
)

// OutcomeAlert is the audit outcome of an alert: a condition that needs an
// operator (a failing check, a rollback that was not run automatically).
const OutcomeAlert = "alert"

// Triggers the watchdog fires (MigrationRecord.Trigger).
const (
	TriggerValidation = "validation" // valid/total chunks under the threshold
	TriggerTime       = "time"       // the run exceeded its time limit
	TriggerFailure    = "failure"    // the job reported failed (only when enabled)
)

// States of a triggered rollback (MigrationRecord.RollbackStatus). Once the
// restorer has the operation, the state follows its status (StatusQueued,
// StatusRunning, StatusCompleted, StatusFailed, StatusCancelled).
const (
	// RollbackRequested: the trigger is recorded and the rollback is being
	// asked for (after abort and its grace, for the time trigger).
	RollbackRequested = "requested"
	// RollbackAlerted: automatic rollback is disabled; an alert names the
	// command an operator would run (MigrationRecord.RollbackCommand).
	RollbackAlerted = "alerted"
)

// Pause reasons (PauseReason.Reason). Disk space is per watchdog instance
// (each watches its own paths), so its reason names the instance.
const (
	PauseConnectivity = "connectivity"
	PauseJetStream    = "jetstream_storage"
	PauseDiskPrefix   = "disk@"
)

// MigrationValidation is a run's latest validation figures and verdict.
type MigrationValidation struct {
	ValidChunks   int64                  `json:"valid_chunks"`
	TotalChunks   int64                  `json:"total_chunks"`
	Ratio         float64                `json:"ratio"`
	Threshold     float64                `json:"threshold"`
	PerCollection []CollectionValidation `json:"per_collection,omitempty"`
	// FailedCollections are the reported collections under the threshold.
	FailedCollections []string  `json:"failed_collections,omitempty"`
	At                time.Time `json:"at"`
}

// PauseReason is one condition for which the watchdog paused a job.
type PauseReason struct {
	Reason   string    `json:"reason"`
	Instance string    `json:"instance"`
	Detail   string    `json:"detail,omitempty"`
	Since    time.Time `json:"since"`
}

// StatusRequest asks chroma.api.status for a report. An empty body works too.
type StatusRequest struct {
	Envelope
	Actor string `json:"actor,omitempty"`
}

// StatusReport answers chroma.api.status: what is going on right now.
type StatusReport struct {
	Envelope
	// Watchdog is the instance that answered.
	Watchdog string `json:"watchdog"`
	// Migrations are the runs not yet over: running or paused, or with a
	// triggered rollback that has not ended. Oldest first.
	Migrations []MigrationRecord `json:"migrations"`
	// Fences are the raised write fences (fence.> in CHROMA_STATE).
	Fences []Fence `json:"fences"`
	// Operations are the operations not ended (op.> not completed, failed
	// or cancelled), with their latest progress when seen.
	Operations []OperationStatus `json:"operations"`
	// Snapshots is the newest verified snapshot of every tenant/database.
	Snapshots []DatabaseSnapshot `json:"snapshots"`
	// Alerts are the conditions the answering watchdog sees failing now.
	Alerts []StatusAlert `json:"alerts"`
}

// OperationStatus is a running operation and its latest progress.
type OperationStatus struct {
	Operation Operation `json:"operation"`
	Progress  *Progress `json:"progress,omitempty"`
}

// DatabaseSnapshot is the newest verified snapshot of a tenant/database.
type DatabaseSnapshot struct {
	Tenant       string    `json:"tenant"`
	Database     string    `json:"database"`
	SnapshotID   string    `json:"snapshot_id"`
	Name         string    `json:"name"`
	TotalRecords int64     `json:"total_records"`
	Size         int64     `json:"size"`
	StartedAt    time.Time `json:"started_at"`
	VerifiedAt   time.Time `json:"verified_at"`
}

// StatusAlert is a condition a watchdog sees failing.
type StatusAlert struct {
	Name    string         `json:"name"`
	Detail  string         `json:"detail"`
	Since   time.Time      `json:"since"`
	Figures map[string]any `json:"figures,omitempty"`
}
