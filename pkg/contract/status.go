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
	// PauseFencePrefix + an op id: the run started while that rollback's
	// write fence was raised on its database, after the restorer had paused
	// the runs it found there; lifted once that fence is lowered.
	PauseFencePrefix = "fence@"
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
	// Snapshots is the newest verified snapshot of every tenant/database
	// and, when that one is partial, the newest verified one holding every
	// collection after it (by tenant/database, newest first).
	Snapshots []DatabaseSnapshot `json:"snapshots"`
	// Alerts are the conditions the answering watchdog sees failing now,
	// and (Name "rollback") every run in Migrations whose trigger fired
	// but whose rollback could not run, failed or was left to an operator
	// (RollbackStatus "alerted", failed, cancelled): its Detail says why
	// and what to do, its Figures name the job, run, trigger, op_id,
	// rollback_status, snapshot_id and, when one can work, the command.
	Alerts []StatusAlert `json:"alerts"`
	// Storage is what JetStream and the answering watchdog's watched paths
	// hold now; nil from a watchdog older than this field.
	Storage *StorageUse `json:"storage,omitempty"`
}

// Kinds of JetStream storage (StreamUse.Kind).
const (
	StorageStream      = "stream"
	StorageKV          = "kv"
	StorageObjectStore = "object_store"
)

// StorageUse is the storage the system uses: the JetStream account
// against its limits, every stream (key-value buckets and object stores
// are streams too) and the free space of the watched paths.
type StorageUse struct {
	// Account is nil when the account could not be read (see Errors).
	Account *JetStreamAccountUse `json:"account,omitempty"`
	// Streams are every stream of the account, by name.
	Streams []StreamUse `json:"streams"`
	// Disks are the watched paths, in the order configured.
	Disks []DiskUse `json:"disks"`
	// Errors name the figures that could not be read.
	Errors []string `json:"errors,omitempty"`
}

// JetStreamAccountUse is the account's JetStream use and limits. A limit
// of -1 (or 0 for the byte limits of some servers) means none.
type JetStreamAccountUse struct {
	MemoryBytes    uint64 `json:"memory_bytes"`
	StoreBytes     uint64 `json:"store_bytes"`
	MaxMemoryBytes int64  `json:"max_memory_bytes"`
	MaxStoreBytes  int64  `json:"max_store_bytes"`
	Streams        int    `json:"streams"`
	MaxStreams     int    `json:"max_streams"`
	Consumers      int    `json:"consumers"`
	MaxConsumers   int    `json:"max_consumers"`
}

// StreamUse is one stream's use: a plain stream, a key-value bucket or an
// object store.
type StreamUse struct {
	// Name is the stream, bucket or object store name (CHROMA_AUDIT,
	// CHROMA_STATE, CHROMA_SNAPSHOTS); Stream is the JetStream stream
	// that holds it (KV_CHROMA_STATE, OBJ_CHROMA_SNAPSHOTS).
	Name      string `json:"name"`
	Kind      string `json:"kind"`
	Stream    string `json:"stream"`
	Storage   string `json:"storage"` // file or memory
	Bytes     uint64 `json:"bytes"`
	Messages  uint64 `json:"messages"`
	Consumers int    `json:"consumers"`
	// MaxBytes is the stream's byte limit, -1 for none.
	MaxBytes int64 `json:"max_bytes"`
}

// DiskUse is the free space on a watched path's file system.
type DiskUse struct {
	Path      string `json:"path"`
	FreeBytes uint64 `json:"free_bytes"`
	Error     string `json:"error,omitempty"`
}

// OperationStatus is a running operation and its latest progress.
type OperationStatus struct {
	Operation Operation `json:"operation"`
	Progress  *Progress `json:"progress,omitempty"`
}

// DatabaseSnapshot is a newest verified snapshot of a tenant/database.
type DatabaseSnapshot struct {
	Tenant       string    `json:"tenant"`
	Database     string    `json:"database"`
	SnapshotID   string    `json:"snapshot_id"`
	Name         string    `json:"name"`
	TotalRecords int64     `json:"total_records"`
	Size         int64     `json:"size"`
	StartedAt    time.Time `json:"started_at"`
	VerifiedAt   time.Time `json:"verified_at"`
	// TakenAt is when its data was read from Chroma
	// (SnapshotManifest.TakenAt): StartedAt, or for an import the time of
	// its original. The newest snapshot is the one taken last.
	TakenAt time.Time `json:"taken_at"`
	// Partial is set when it holds only some collections: it names
	// collections (as a rollback's safety snapshot does) that were not
	// provably all of the database's, listed before its export and again
	// after it.
	Partial bool `json:"partial,omitempty"`
	// ArchiveMissing is set when its archive object is not in the object
	// store (deleted or lost outside chromadb-rollback): it cannot be
	// restored.
	ArchiveMissing bool `json:"archive_missing,omitempty"`
}

// StatusAlert is a condition a watchdog sees failing.
type StatusAlert struct {
	Name    string         `json:"name"`
	Detail  string         `json:"detail"`
	Since   time.Time      `json:"since"`
	Figures map[string]any `json:"figures,omitempty"`
}
