package contract

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// Versioned message types of the restorer, the fence and job control.
const (
	TypeRollbackRequest = "chromadb-rollback.v1.rollback_request"
	TypeRollbackPlan    = "chromadb-rollback.v1.rollback_plan"
	TypeRollbackReply   = "chromadb-rollback.v1.rollback_reply"
	TypeRollbackCommand = "chromadb-rollback.v1.rollback_command"
	TypeOperationRef    = "chromadb-rollback.v1.operation_ref"
	TypeLease           = "chromadb-rollback.v1.lease"
	TypeFence           = "chromadb-rollback.v1.fence"
	TypeControl         = "chromadb-rollback.v1.control"
	TypeMigrationRecord = "chromadb-rollback.v1.migration_record"
	TypeImportRequest   = "chromadb-rollback.v1.snapshot_import_request"
	TypeAddRate         = "chromadb-rollback.v1.add_rate"
	TypeLeftovers       = "chromadb-rollback.v1.rollback_leftovers"
)

// RollbackRequest asks for a rollback (chroma.api.rollback.start) or for its
// plan only (chroma.api.rollback.plan). Without Collections and Batches it is
// a full rollback of the snapshot's database.
type RollbackRequest struct {
	Envelope
	// SnapshotID is a snapshot id or name (SnapshotByName: the one of that
	// name taken last; a name used in two databases is refused).
	SnapshotID string `json:"snapshot_id"`
	// Collections, when set, makes a partial rollback: only these
	// collections (names as in the snapshot) are touched.
	Collections []string `json:"collections,omitempty"`
	// Batches, when set, makes a batch-level rollback: the records of these
	// batches (collection name in the snapshot -> batch names such as
	// "batch_000001") are upserted; nothing else is touched.
	Batches map[string][]string `json:"batches,omitempty"`
	// DropExtra deletes collections that exist in the target but not in the
	// snapshot (full rollback only). By default they are kept and listed.
	DropExtra bool `json:"drop_extra,omitempty"`
	// InPlace restores into the live collection instead of staging one and
	// swapping it in by renames.
	InPlace bool `json:"in_place,omitempty"`
	// NoSafetySnapshot skips the snapshot of what will be overwritten.
	NoSafetySnapshot bool `json:"no_safety_snapshot,omitempty"`
	// TargetTenant and TargetDatabase restore elsewhere (default: the
	// snapshot's own tenant and database).
	TargetTenant   string `json:"target_tenant,omitempty"`
	TargetDatabase string `json:"target_database,omitempty"`
	// Rename maps a snapshot collection name to the name it gets in the target.
	Rename map[string]string `json:"rename,omitempty"`
	// ChromaURL restores into another Chroma server (default: the restorer's).
	ChromaURL string `json:"chroma_url,omitempty"`
	// Confirm must be true for start; without it the reply carries the plan
	// and the reason it was refused.
	Confirm bool   `json:"confirm"`
	Actor   string `json:"actor,omitempty"`
	Reason  string `json:"reason,omitempty"`
	// Job is the migration job that caused the rollback, if any (the
	// watchdog sets it); its id also makes the command's dedup id.
	Job string `json:"job,omitempty"`
	// OpID, when set by the caller, is the operation id to use; a request
	// with an OpID already enqueued is not enqueued twice.
	OpID string `json:"op_id,omitempty"`
}

// Plan actions, per collection.
const (
	PlanCreate    = "create"    // absent in the target: created from the snapshot
	PlanReplace   = "replace"   // present: replaced by the snapshot's content
	PlanUpsert    = "upsert"    // batch-level: the named batches are upserted
	PlanUntouched = "untouched" // in the snapshot, not selected (partial or batch-level)
	PlanExtra     = "extra"     // in the target, not in the snapshot: kept
	PlanDrop      = "drop"      // in the target, not in the snapshot: deleted (drop_extra)
)

// PlanItem is what a rollback will do to one collection.
type PlanItem struct {
	// Collection is the name in the snapshot ("" for extra collections).
	Collection string `json:"collection,omitempty"`
	// Target is the collection's name in the target database.
	Target          string   `json:"target"`
	Action          string   `json:"action"`
	SnapshotRecords int64    `json:"snapshot_records"`
	CurrentRecords  int64    `json:"current_records"` // -1 when absent
	WriteRecords    int64    `json:"write_records"`
	Batches         []string `json:"batches,omitempty"`
	// BatchCounts are the records of each of Batches, in the same order,
	// as the verified archive holds them.
	BatchCounts []int64 `json:"batch_counts,omitempty"`
	Space       string  `json:"space,omitempty"`
	// Dimension is the snapshot's dimension of the collection's embeddings
	// (0 when it has none).
	Dimension int `json:"dimension,omitempty"`
}

// When a rollback verifies its archive (RollbackPlan.Verification).
const (
	// VerifyBeforeWrite: the whole archive is verified before anything is
	// written (in place and batch-level writes, and every dry-run).
	VerifyBeforeWrite = "before_write"
	// VerifyWhileStaging: the object's size and SHA-256 digest and the
	// archive's metadata are checked first; every byte is verified while
	// the collections are staged, and nothing is swapped in before the
	// whole archive verified.
	VerifyWhileStaging = "while_staging"
)

// RollbackPlan is the verified plan of a rollback; nothing is changed to make it.
type RollbackPlan struct {
	Envelope
	SnapshotID     string     `json:"snapshot_id"`
	SnapshotName   string     `json:"snapshot_name"`
	SourceTenant   string     `json:"source_tenant"`
	SourceDatabase string     `json:"source_database"`
	Tenant         string     `json:"tenant"`
	Database       string     `json:"database"`
	ChromaURL      string     `json:"chroma_url,omitempty"`
	Mode           string     `json:"mode"` // full, partial or batches
	Items          []PlanItem `json:"items"`
	WriteRecords   int64      `json:"write_records"`
	// AddRate is the records/s the estimate assumes for the dimensions of
	// the records written (Items' Dimension), and
	// SecondsPerCollection what it adds for each of the WriteCollections
	// collections written: measured by the restores into the target Chroma
	// (AddRateMeasured), else the restorer's --default-add-rate and an
	// assumed cost of a collection. SecondsPerCollectionAssumed says the
	// latter was not measured (nothing restored yet, or only restores of
	// one shape, which cannot tell it from the records' cost).
	AddRate                     float64 `json:"add_rate"`
	SecondsPerCollection        float64 `json:"seconds_per_collection,omitempty"`
	SecondsPerCollectionAssumed bool    `json:"seconds_per_collection_assumed,omitempty"`
	WriteCollections            int     `json:"write_collections"`
	AddRateMeasured             bool    `json:"add_rate_measured"`
	EstimatedSeconds            float64 `json:"estimated_seconds"`
	// ArchiveVerified says the whole archive was read and verified for
	// this plan; Verification says when a restore verifies it.
	ArchiveVerified bool     `json:"archive_verified"`
	Verification    string   `json:"verification,omitempty"`
	SafetySnapshot  bool     `json:"safety_snapshot"`
	InPlace         bool     `json:"in_place"`
	DropExtra       bool     `json:"drop_extra"`
	Warnings        []string `json:"warnings,omitempty"`
}

// RollbackReply answers plan and start. For start, OpID names the enqueued
// operation; Refused says why nothing was started (e.g. no confirmation).
type RollbackReply struct {
	Envelope
	OpID     string        `json:"op_id,omitempty"`
	Status   string        `json:"status,omitempty"`
	Progress string        `json:"progress_subject,omitempty"`
	Refused  string        `json:"refused,omitempty"`
	Plan     *RollbackPlan `json:"plan,omitempty"`
}

// RollbackCommand is the durable job on chroma.cmd.rollback; its message id
// is the op id.
type RollbackCommand struct {
	Envelope
	OpID    string          `json:"op_id"`
	Request RollbackRequest `json:"request"`
	// PriorAttempts counts the attempts of earlier copies of this command:
	// a restorer stopped gracefully on the last delivery the work queue
	// allows enqueues a new copy, whose attempts go on from
	// PriorAttempts+1, so that stops (rolling restarts) do not use up the
	// deliveries that guard against a crash each attempt repeats.
	PriorAttempts int `json:"prior_attempts,omitempty"`
}

// OperationRef names an operation (chroma.api.rollback.status, cancel).
type OperationRef struct {
	Envelope
	OpID  string `json:"op_id"`
	Actor string `json:"actor,omitempty"`
}

// RestoreReport is the post-restore verification of a rollback, kept in
// the operation record.
type RestoreReport struct {
	SafetySnapshotID string                    `json:"safety_snapshot_id,omitempty"`
	Collections      []RestoreCollectionReport `json:"collections"`
	Verified         bool                      `json:"verified"`
	RecordsWritten   int64                     `json:"records_written"`
	Seconds          float64                   `json:"seconds"`
	// AddRate is the records/s written to Chroma during this restore.
	AddRate float64 `json:"add_rate,omitempty"`
	// Cancelled says the restore stopped early on a cancel request.
	Cancelled bool `json:"cancelled,omitempty"`
}

// RestoreCollectionReport is one collection's verification after restore.
type RestoreCollectionReport struct {
	Collection string `json:"collection"`
	Target     string `json:"target"`
	Action     string `json:"action"`
	Records    int64  `json:"records"`
	Verified   bool   `json:"verified"`
	// EmbeddingCheck is "bit-exact" or, in cosine spaces, "tolerance" with
	// MaxAbsDiff the largest difference seen; "none" when no record was
	// restored (nothing to compare); empty when the collection was not
	// checked (its restore stopped before).
	EmbeddingCheck string  `json:"embedding_check,omitempty"`
	MaxAbsDiff     float64 `json:"max_abs_diff,omitempty"`
	// MetadataFloatsOff counts the metadata float values Chroma stored a
	// few ULPs off the snapshot's: Chroma's JSON float parsing is not
	// correctly rounded and cannot store some float64 values at all (up to
	// 3 ULPs off measured; 4 accepted). Values Chroma itself returned, as
	// in its own snapshots, come back exact; archives of the seed tool or
	// of another Chroma can hold such values.
	MetadataFloatsOff int64    `json:"metadata_floats_off,omitempty"`
	Differences       []string `json:"differences,omitempty"`
}

// Lease is the value of a lease key in the state bucket: one mutating
// operation per tenant/database at a time.
type Lease struct {
	Envelope
	Tenant     string    `json:"tenant"`
	Database   string    `json:"database"`
	Holder     string    `json:"holder"` // the op id holding it
	Kind       string    `json:"kind"`   // e.g. "rollback"
	Actor      string    `json:"actor,omitempty"`
	AcquiredAt time.Time `json:"acquired_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	// Server is the Chroma a rollback into another server than the
	// services' own restores into (its normalized URL); empty for the
	// services' own Chroma. See LeaseKeyOn.
	Server string `json:"server,omitempty"`
}

// Fence is the value of a fence key in the state bucket: while it exists,
// writes to the tenant/database are refused by the gate and jobs are paused.
type Fence struct {
	Envelope
	Tenant   string    `json:"tenant"`
	Database string    `json:"database"`
	OpID     string    `json:"op_id"`
	Reason   string    `json:"reason"`
	Actor    string    `json:"actor,omitempty"`
	RaisedAt time.Time `json:"raised_at"`
}

// Control commands sent to migration jobs on chroma.control.<job>.
const (
	ControlPause  = "pause"
	ControlResume = "resume"
	ControlAbort  = "abort"
)

// Control is a command to a migration job.
type Control struct {
	Envelope
	Job     string `json:"job"`
	Command string `json:"command"`
	Reason  string `json:"reason"`
	OpID    string `json:"op_id,omitempty"`
}

// Migration statuses.
const (
	MigrationRunning    = "running"
	MigrationPaused     = "paused"
	MigrationCompleted  = "completed"
	MigrationFailed     = "failed"
	MigrationRolledBack = "rolled_back"
)

// MigrationRecord is a migration job's state under "migration.<job>" in the
// state bucket.
type MigrationRecord struct {
	Envelope
	Job        string    `json:"job"`
	Tenant     string    `json:"tenant"`
	Database   string    `json:"database"`
	Status     string    `json:"status"`
	SnapshotID string    `json:"snapshot_id,omitempty"`
	StartedAt  time.Time `json:"started_at"`
	Deadline   time.Time `json:"deadline,omitempty"`

	// Fields below are kept by the watchdog (services/watchdog), which
	// writes the record only by compare-and-set on its revision.

	// Run is the CHROMA_MIGRATIONS stream sequence of the started event: it
	// tells runs of the same job name apart (events stored before it belong
	// to an earlier run) and makes the rollback's op id.
	Run uint64 `json:"run,omitempty"`
	// TimeLimitSeconds is the limit Deadline was computed from.
	TimeLimitSeconds float64  `json:"time_limit_seconds,omitempty"`
	Collections      []string `json:"collections,omitempty"`
	// TakeSnapshot says the watchdog takes the pre-migration snapshot
	// (named "pre_migration_<job>"); SnapshotOpID is its operation.
	// SnapshotID is set only once that snapshot is verified, so a job
	// waiting for it watches this key for SnapshotID or SnapshotError.
	TakeSnapshot        bool      `json:"take_snapshot,omitempty"`
	SnapshotOpID        string    `json:"snapshot_op_id,omitempty"`
	SnapshotPendingID   string    `json:"snapshot_pending_id,omitempty"`
	SnapshotRequestedAt time.Time `json:"snapshot_requested_at,omitzero"`
	SnapshotRequestedBy string    `json:"snapshot_requested_by,omitempty"`
	SnapshotError       string    `json:"snapshot_error,omitempty"`
	// PinnedSnapshotID is the snapshot the run's rollback restores: what
	// SnapshotID stood for when the watchdog first found it (at the
	// started event, a later event, or the trigger): SnapshotID itself
	// when it is an id, else the snapshot of that name of the run's
	// tenant/database taken last (SnapshotByName). A snapshot made or
	// imported later under the same name does not change it.
	PinnedSnapshotID string `json:"pinned_snapshot_id,omitempty"`
	// LastHeartbeat, Phase and DoneRecords are from the latest heartbeat.
	LastHeartbeat time.Time `json:"last_heartbeat,omitzero"`
	Phase         string    `json:"phase,omitempty"`
	DoneRecords   int64     `json:"done_records,omitempty"`
	// Validation holds the latest validation figures and the verdict.
	Validation *MigrationValidation `json:"validation,omitempty"`
	// Trigger names the trigger that fired (TriggerValidation, TriggerTime,
	// TriggerFailure); at most one fires per run. TriggerReason says why,
	// with the figures.
	Trigger       string    `json:"trigger,omitempty"`
	TriggerReason string    `json:"trigger_reason,omitempty"`
	TriggeredAt   time.Time `json:"triggered_at,omitzero"`
	// AbortSentAt is when the time trigger sent abort to the job.
	AbortSentAt time.Time `json:"abort_sent_at,omitzero"`
	// RollbackOpID is the deterministic op id of the triggered rollback;
	// RollbackStatus is one of the Rollback* states; RollbackCollections
	// is set for a partial rollback; RollbackCommand is the CLI command an
	// operator runs when automatic rollback is disabled, or when the
	// rollback failed or could not run for a reason asking again can fix.
	// It is empty when the pre-migration snapshot itself cannot be
	// restored (none was found, its archive is missing or damaged):
	// RollbackError says why, and the operator picks another restore point.
	RollbackOpID        string   `json:"rollback_op_id,omitempty"`
	RollbackStatus      string   `json:"rollback_status,omitempty"`
	RollbackCollections []string `json:"rollback_collections,omitempty"`
	RollbackError       string   `json:"rollback_error,omitempty"`
	RollbackCommand     string   `json:"rollback_command,omitempty"`
	// RollbackRequestedAt and RollbackRequestedBy claim the request to the
	// restorer, so that one watchdog instance asks at a time.
	RollbackRequestedAt time.Time `json:"rollback_requested_at,omitzero"`
	RollbackRequestedBy string    `json:"rollback_requested_by,omitempty"`
	// RollbackEndedAt is when the watchdog recorded that the triggered
	// rollback ended (completed, failed, cancelled) or could not run.
	RollbackEndedAt time.Time `json:"rollback_ended_at,omitzero"`
	// PausedBy are the conditions for which the watchdog paused the job;
	// it resumes the job when the last one clears.
	PausedBy []PauseReason `json:"paused_by,omitempty"`
	// EndedAt is when the job reported completed or failed; Error is a
	// failed event's error.
	EndedAt   time.Time `json:"ended_at,omitzero"`
	Error     string    `json:"error,omitempty"`
	UpdatedAt time.Time `json:"updated_at,omitzero"`
}

// SnapshotImportRequest asks the snapshotter to import an archive that the
// caller has put into the object store under Object (chroma.api.snapshot.import).
// Format is "native" or "seed" ("" detects it). Manifest is the seed tool's
// manifest JSON, if any; its checksum is checked against the object.
type SnapshotImportRequest struct {
	Envelope
	Object   string `json:"object"`
	Name     string `json:"name,omitempty"`
	Format   string `json:"format,omitempty"`
	Manifest []byte `json:"manifest,omitempty"`
	Tenant   string `json:"tenant,omitempty"`
	Database string `json:"database,omitempty"`
	Actor    string `json:"actor,omitempty"`
	// FileName is the base name of the file imported; it names the snapshot
	// when neither Name nor the seed manifest does, and is kept in
	// SnapshotManifest.ImportedFrom.
	FileName string `json:"file_name,omitempty"`
	Reason   string `json:"reason,omitempty"`
	// OpID, when set, is the import's operation id (op_...), so the caller
	// can follow its progress on chroma.progress.<op_id> from the start; a
	// new one is made when it is empty. The CLI makes a new one per import.
	OpID string `json:"op_id,omitempty"`
}

// Keys in the state bucket. Tenant and database names cannot hold '/', so
// "<tenant>/<database>" is unambiguous even when they hold dots.
func LeaseKey(tenant, database string) string {
	return "lease." + keyName(tenant) + "/" + keyName(database)
}

// LeaseKeyOn is the key of the lease of tenant/database on the Chroma at
// server: LeaseKey for the services' own Chroma (server ""), else LeaseKey
// and "/" with 16 hex digits of the SHA-256 of the URL. A database of the
// same name on another server is another database: a rollback restoring a
// copy there must not lock the own one, which would refuse its snapshots
// and rollbacks meanwhile.
func LeaseKeyOn(server, tenant, database string) string {
	if server == "" {
		return LeaseKey(tenant, database)
	}
	return LeaseKey(tenant, database) + "/" + urlTag(server)
}

// urlTag names a Chroma URL in a key: the first 16 hex digits of its
// SHA-256 (a URL holds characters a key may not).
func urlTag(url string) string {
	sum := sha256.Sum256([]byte(url))
	return hex.EncodeToString(sum[:8])
}

// FenceKey is the key of the write fence of a tenant/database.
func FenceKey(tenant, database string) string {
	return "fence." + keyName(tenant) + "/" + keyName(database)
}

// keyName is a tenant or database name as it stands in a key. A NATS key
// holds only [-/_=.a-zA-Z0-9] (and no empty token between dots), but Chroma
// takes names such as "prød" or "sales eu": without this their lease and
// fence could not be written, and every rollback or snapshot of them failed
// with "nats: invalid key". Such a name is written as '=' and its unpadded
// base64url; a plain name, which never holds '=', is kept as it is, so the
// keys of existing names do not change.
func keyName(name string) string {
	if plainKeyName(name) {
		return name
	}
	return "=" + base64.RawURLEncoding.EncodeToString([]byte(name))
}

func plainKeyName(name string) bool {
	if name == "" || name[0] == '.' || name[len(name)-1] == '.' || strings.Contains(name, "..") {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// nameOfKey undoes keyName.
func nameOfKey(s string) (string, error) {
	enc, ok := strings.CutPrefix(s, "=")
	if !ok {
		return s, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return "", fmt.Errorf("%q is not '=' and base64url: %w", s, err)
	}
	return string(b), nil
}

// OperationKey is the key of an operation's status.
func OperationKey(opID string) string { return "op." + opID }

// MigrationKey is the key of a migration job's record.
func MigrationKey(job string) string { return "migration." + job }

// ParseScopedKey splits a lease or fence key into tenant and database.
func ParseScopedKey(key string) (kind, tenant, database string, err error) {
	kind, rest, ok := strings.Cut(key, ".")
	if ok {
		tenant, database, ok = strings.Cut(rest, "/")
	}
	if !ok || tenant == "" || database == "" {
		return "", "", "", fmt.Errorf("state key %q is not <kind>.<tenant>/<database>", key)
	}
	if tenant, err = nameOfKey(tenant); err == nil {
		database, err = nameOfKey(database)
	}
	if err != nil {
		return "", "", "", fmt.Errorf("state key %q: %w", key, err)
	}
	return kind, tenant, database, nil
}

// StatusCancelled is the final status of an operation stopped by a cancel
// request (chroma.api.rollback.cancel).
const StatusCancelled = "cancelled"

// AddRateKey is the key of the add rate measured restoring into the Chroma
// at chromaURL (normalized: scheme and host lower case, no credentials, no
// trailing slash), named by the first 16 hex digits of the URL's SHA-256
// (a URL holds characters a key may not).
func AddRateKey(chromaURL string) string { return "rate.add." + urlTag(chromaURL) }

// AddRate is how fast the restores into one Chroma wrote, kept in
// CHROMA_STATE so that every restorer's plans estimate from it, also after
// a restart. A restore takes about SecondsPerCollection for each
// collection it writes (Chroma's first add to a new collection alone takes
// tens of milliseconds) plus its records at RecordsPerSecond: both are
// fitted to the last restores (Samples); while those are all of one shape,
// SecondsPerCollection is assumed (SecondsPerCollectionAssumed) and the
// records carry the rest. RecordsPerSecond is for records of Dimension, the
// samples' mean; a plan of other dimensions scales it (the restorer's
// model: a record costs about 380 dimensions' worth besides its own). It is
// 0 in a record kept before samples had Values: its rate is then used for
// every dimension. Records and Seconds are the last restore's.
type AddRate struct {
	Envelope
	ChromaURL                   string          `json:"chroma_url"`
	RecordsPerSecond            float64         `json:"records_per_second"`
	Dimension                   float64         `json:"dimension,omitempty"`
	SecondsPerCollection        float64         `json:"seconds_per_collection,omitempty"`
	SecondsPerCollectionAssumed bool            `json:"seconds_per_collection_assumed,omitempty"`
	Records                     int64           `json:"records"`
	Seconds                     float64         `json:"seconds"`
	Samples                     []AddRateSample `json:"samples,omitempty"`
	MeasuredAt                  time.Time       `json:"measured_at"`
}

// AddRateSample is what one restore wrote, and in how long.
type AddRateSample struct {
	Collections int   `json:"collections"`
	Records     int64 `json:"records"`
	// Values is the records' embedding values: each record's dimension,
	// summed (0 in samples kept before it was).
	Values  int64   `json:"values,omitempty"`
	Seconds float64 `json:"seconds"`
}

// Leftovers is what a failed or cancelled stage-and-swap rollback could
// not take back because its target Chroma did not answer: staging
// collections to delete, displaced live collections to rename back, or
// replaced ones to delete. It is kept under LeftoversKey until the restorer,
// retrying while holding the database's lease, has taken all of it back.
type Leftovers struct {
	Envelope
	OpID     string `json:"op_id"`
	Tenant   string `json:"tenant"`
	Database string `json:"database"`
	// ChromaURL is the rollback's chroma_url: empty for the restorer's own.
	ChromaURL   string               `json:"chroma_url,omitempty"`
	Collections []LeftoverCollection `json:"collections"`
	Since       time.Time            `json:"since"`
	// Attempts and LastError say how the retries went.
	Attempts  int    `json:"attempts,omitempty"`
	LastError string `json:"last_error,omitempty"`
}

// LeftoverCollection is one collection a rollback left: Staging is the
// staging collection (its id WorkID), Old the name the live collection
// Target is renamed to while the staged one is swapped in. Swapped says the
// restored collection was swapped in: only Old is left, to delete.
type LeftoverCollection struct {
	Target  string `json:"target"`
	Staging string `json:"staging"`
	Old     string `json:"old"`
	WorkID  string `json:"work_id,omitempty"`
	Swapped bool   `json:"swapped,omitempty"`
}

// Describe names what l left, collection by collection: the first most of
// them, and a count of the rest.
func (l *Leftovers) Describe(most int) string {
	var what []string
	for i, c := range l.Collections {
		if i == most {
			what = append(what, fmt.Sprintf("and %d more", len(l.Collections)-most))
			break
		}
		if c.Swapped {
			what = append(what, fmt.Sprintf("%q is restored and the collection it replaced is left as %q", c.Target, c.Old))
		} else {
			what = append(what, fmt.Sprintf("%q may be renamed aside as %q, and staging collection %q is left", c.Target, c.Old, c.Staging))
		}
	}
	return strings.Join(what, "; ")
}

// LeftoversKey is the key of what a stopped rollback left (Leftovers).
func LeftoversKey(opID string) string { return "leftovers." + opID }

// LeftoversPrefix is the prefix of every LeftoversKey.
const LeftoversPrefix = "leftovers."

// CancelKey is the key under which a cancel request for an operation is
// kept (an OperationRef naming who asked); the job checks it between batches.
func CancelKey(opID string) string { return "cancel." + opID }

// CheckpointKey is the key of a rollback's checkpoint: which collections are
// done and how far the current one got, so a redelivered command resumes.
func CheckpointKey(opID string) string { return "checkpoint." + opID }
