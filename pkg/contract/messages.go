package contract

import (
	"crypto/rand"
	"encoding/hex"
	"time"
)

// Versioned message type names.
const (
	TypeSnapshotCreateRequest = "chromadb-rollback.v1.snapshot_create_request"
	TypeSnapshotCreateReply   = "chromadb-rollback.v1.snapshot_create_reply"
	TypeSnapshotCommand       = "chromadb-rollback.v1.snapshot_command"
	TypeSnapshotRef           = "chromadb-rollback.v1.snapshot_ref"
	TypeSnapshotManifest      = "chromadb-rollback.v1.snapshot_manifest"
	TypeSnapshotList          = "chromadb-rollback.v1.snapshot_list"
	TypeVerifyReport          = "chromadb-rollback.v1.verify_report"
	TypeOperation             = "chromadb-rollback.v1.operation"
	TypeProgress              = "chromadb-rollback.v1.progress"
	TypeAuditEvent            = "chromadb-rollback.v1.audit_event"
	TypeHealth                = "chromadb-rollback.v1.health"
	TypeHealthRequest         = "chromadb-rollback.v1.health_request"
	TypeError                 = "chromadb-rollback.v1.error"
)

// Envelope is the header every message starts with.
type Envelope struct {
	Type string    `json:"type"`
	ID   string    `json:"id"`
	Time time.Time `json:"time"`
}

// NewEnvelope stamps a message of type typ with a fresh id and the current UTC time.
func NewEnvelope(typ string) Envelope {
	return Envelope{Type: typ, ID: NewID(""), Time: time.Now().UTC().Truncate(time.Millisecond)}
}

// NewID returns prefix followed by a UTC timestamp and 48 random bits, e.g.
// "snap_20251130T143022Z_9f2c1a3b4d5e". The result sorts by creation time and
// is a valid subject token and KV key.
func NewID(prefix string) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return prefix + time.Now().UTC().Format("20060102T150405Z") + "_" + hex.EncodeToString(b[:])
}

// SnapshotCreateRequest asks for a snapshot of a tenant/database, or of some
// of its collections. Sent to chroma.api.snapshot.create.
type SnapshotCreateRequest struct {
	Envelope
	Name        string   `json:"name"`
	Tenant      string   `json:"tenant,omitempty"`
	Database    string   `json:"database,omitempty"`
	Collections []string `json:"collections,omitempty"`
	Actor       string   `json:"actor,omitempty"`
	Reason      string   `json:"reason,omitempty"`
	// Keep pins the snapshot: retention never deletes it (see
	// chroma.api.snapshot.keep to unpin).
	Keep bool `json:"keep,omitempty"`
	// ForOp is the rollback that asks for this snapshot (its safety
	// snapshot) while it holds the database's lease and fence. Any other
	// snapshot of a database a rollback is restoring is refused: it would
	// hold a half-restored state, staging collections included.
	ForOp string `json:"for_op,omitempty"`
}

// SnapshotCreateReply says which snapshot was enqueued.
type SnapshotCreateReply struct {
	Envelope
	SnapshotID string `json:"snapshot_id"`
	OpID       string `json:"op_id"`
	Status     string `json:"status"`
	Progress   string `json:"progress_subject"`
	// Warnings say what the caller should know before relying on the
	// snapshot, such as its name being used in another database too.
	Warnings []string `json:"warnings,omitempty"`
}

// SnapshotCommand is the durable job on the command stream. Its message id
// (Nats-Msg-Id) is the snapshot id, so a resent request is enqueued once.
type SnapshotCommand struct {
	Envelope
	SnapshotID  string   `json:"snapshot_id"`
	OpID        string   `json:"op_id"`
	Name        string   `json:"name"`
	Tenant      string   `json:"tenant"`
	Database    string   `json:"database"`
	Collections []string `json:"collections,omitempty"`
	Actor       string   `json:"actor,omitempty"`
	Reason      string   `json:"reason,omitempty"`
	// Keep is copied into the manifest.
	Keep bool `json:"keep,omitempty"`
	// ForOp is SnapshotCreateRequest.ForOp.
	ForOp string `json:"for_op,omitempty"`
	// PriorAttempts counts the attempts of earlier copies of this command:
	// a snapshotter stopped gracefully on the last delivery the work queue
	// allows enqueues a new copy, whose attempts go on from
	// PriorAttempts+1 (and write their own objects), so that stops
	// (rolling restarts) do not use up the deliveries that guard against a
	// crash each attempt repeats.
	PriorAttempts int `json:"prior_attempts,omitempty"`
}

// SnapshotRef names a snapshot by id or by its human name.
type SnapshotRef struct {
	Envelope
	Snapshot string `json:"snapshot"`
	Actor    string `json:"actor,omitempty"`
	// Force deletes a snapshot that is pinned (keep) or that a running
	// migration or rollback uses; without it such a delete is refused.
	Force bool `json:"force,omitempty"`
}

// CollectionSummary is one collection of a snapshot manifest.
type CollectionSummary struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	Count       int64    `json:"count"`
	CountBefore int64    `json:"count_before"`
	CountAfter  int64    `json:"count_after"`
	Dimension   *int     `json:"dimension,omitempty"`
	Batches     []string `json:"batches"`
	// BatchRecords says, for each of Batches in the same order, how many
	// records it holds and its first and last record's id (in Chroma's
	// get order, which is insertion order): which batch a batch-level
	// rollback must name to restore a record. Absent in manifests written
	// before 2026-11-29 and for collections without batches.
	BatchRecords  []BatchRecords `json:"batch_records,omitempty"`
	ContentDigest string         `json:"content_digest"`
}

// BatchRecords is one batch of a CollectionSummary.
type BatchRecords struct {
	Count int64  `json:"count"`
	First string `json:"first"`
	Last  string `json:"last"`
	// Cut says First or Last is longer than MaxBatchRecordID bytes in
	// the archive and is kept here as its start followed by "…": ids have
	// no length limit, and every batch's two of them go in one KV value.
	Cut bool `json:"cut,omitempty"`
}

// MaxBatchRecordID is the most bytes of an id a BatchRecords keeps.
const MaxBatchRecordID = 256

// SnapshotManifest is the KV record that makes a snapshot exist. It is
// written only after the archive was stored and read back verified.
type SnapshotManifest struct {
	Envelope
	SnapshotID    string              `json:"snapshot_id"`
	Name          string              `json:"name"`
	Tenant        string              `json:"tenant"`
	Database      string              `json:"database"`
	ChromaURL     string              `json:"chroma_url,omitempty"`
	ChromaVersion string              `json:"chroma_version"`
	Format        string              `json:"format"`
	Object        string              `json:"object"`
	Size          int64               `json:"size"`
	SHA256        string              `json:"sha256"`
	RawBytes      int64               `json:"raw_bytes"`
	TotalRecords  int64               `json:"total_records"`
	Collections   []CollectionSummary `json:"collections"`
	Consistent    bool                `json:"consistent"`
	Inconsistency string              `json:"inconsistency,omitempty"`
	Partial       bool                `json:"partial"`
	StartedAt     time.Time           `json:"started_at"`
	CompletedAt   time.Time           `json:"completed_at"`
	VerifiedAt    time.Time           `json:"verified_at"`
	Keep          bool                `json:"keep,omitempty"`
	Actor         string              `json:"actor,omitempty"`
	// Reason is why it was taken, as the request said (a rollback's safety
	// snapshot names the rollback).
	Reason string `json:"reason,omitempty"`
	// ImportedFrom is set on snapshots made by chroma.api.snapshot.import.
	ImportedFrom *ImportOrigin `json:"imported_from,omitempty"`
	// Encryption is how the archive object is encrypted at rest: empty
	// for none, EncryptionAge for an age file (Size and SHA256 are then
	// the ciphertext's). Recipients are the age public keys (age1...) it
	// was encrypted to: the secret key of one of them decrypts it.
	Encryption string   `json:"encryption,omitempty"`
	Recipients []string `json:"recipients,omitempty"`
}

// TakenAt is when the snapshot's data was read from Chroma: for an import
// whose file said when its original snapshot was made, that time;
// otherwise StartedAt. The newest snapshot of a database is the one taken
// last, so an old archive imported today is not taken for a recent restore
// point (status, retention's newest_verified, the snapshot age metrics).
// An original can only have been taken before its import: a file dated
// later (a clock set wrong, a zone misread) counts from its import.
func (m *SnapshotManifest) TakenAt() time.Time {
	if o := m.ImportedFrom; o != nil && o.SourceCreatedAt != nil && !o.SourceCreatedAt.IsZero() && o.SourceCreatedAt.Before(m.StartedAt) {
		return *o.SourceCreatedAt
	}
	return m.StartedAt
}

// EncryptionAge is SnapshotManifest.Encryption of an archive encrypted with
// age (filippo.io/age) to X25519 recipients.
const EncryptionAge = "age"

// Metadata of the micro services (answered on $SRV.INFO.<name>) that say
// what each instance does with age encryption, so that health-check can
// tell a restorer that cannot decrypt the archives the snapshotter writes.
// Both hold public keys (age1...), comma-separated, and are absent when
// there are none.
const (
	// MetaAgeRecipients is the snapshotter's: the keys new archives are
	// encrypted to.
	MetaAgeRecipients = "age_recipients"
	// MetaAgeIdentities is the restorer's: the public keys of the
	// identities it decrypts archives with.
	MetaAgeIdentities = "age_identities"
)

// SnapshotListRequest asks chroma.api.snapshot.list for the snapshots,
// newest first. An empty body asks for the first page.
type SnapshotListRequest struct {
	Envelope
	// After, a reply's NextAfter, asks for the snapshots listed after the
	// previous page's last one.
	After string `json:"after,omitempty"`
}

// SnapshotList answers chroma.api.snapshot.list, newest first. A reply
// holds as many whole manifests as fit in one NATS message (a manifest of
// a database of many collections is tens of KB); More says there are
// more, to ask for with After = NextAfter.
type SnapshotList struct {
	Envelope
	Snapshots []SnapshotManifest `json:"snapshots"`
	// ArchivesMissing are the ids of listed snapshots whose archive object
	// the object store does not hold (deleted or lost outside
	// chromadb-rollback): they cannot be restored. Absent when the store
	// could not be listed.
	ArchivesMissing []string `json:"archives_missing,omitempty"`
	// More says later snapshots were left out for the reply's size.
	More bool `json:"more,omitempty"`
	// NextAfter is the cursor of the next page (the last listed
	// snapshot's started_at and id), set when More is.
	NextAfter string `json:"next_after,omitempty"`
}

// VerifyReport answers chroma.api.snapshot.verify.
type VerifyReport struct {
	Envelope
	SnapshotID   string              `json:"snapshot_id"`
	OK           bool                `json:"ok"`
	Problem      string              `json:"problem,omitempty"`
	Size         int64               `json:"size"`
	SHA256       string              `json:"sha256"`
	TotalRecords int64               `json:"total_records"`
	Collections  []CollectionSummary `json:"collections"`
	// Encryption is the manifest's (empty for an unencrypted archive).
	Encryption string `json:"encryption,omitempty"`
	// ContentUnchecked, when set, says why only the stored object (its
	// presence, size and SHA-256) was checked and not the archive inside
	// it: it is encrypted and the snapshotter has no identity. OK then
	// means the ciphertext is the one stored when the snapshot was
	// verified, not that it was read again.
	ContentUnchecked string `json:"content_unchecked,omitempty"`
}

// Operation is the status of a long job, kept in the state bucket under
// "op.<op_id>".
type Operation struct {
	Envelope
	OpID       string `json:"op_id"`
	Kind       string `json:"kind"`
	SnapshotID string `json:"snapshot_id,omitempty"`
	Status     string `json:"status"`
	Error      string `json:"error,omitempty"`
	// FailureReason classifies a failed or cancelled operation, as the
	// services' failure metrics do: "verification" (an archive or the
	// data restored did not verify), "chroma", "timeout", "cancelled",
	// "lease_lost", "given_up" or "error".
	FailureReason string `json:"failure_reason,omitempty"`
	// ErrorCode says, for programs, what a failed or cancelled rollback's
	// Error is about: ErrorArchiveUnusable or ErrorOther. The restorer
	// sets it on every rollback it ends without completing, retention
	// (ErrorOther) on one that no worker ended; records written before
	// it existed have none.
	ErrorCode string `json:"error_code,omitempty"`
	Attempt   int    `json:"attempt"`
	// Instance is the service instance (--instance) that took the command
	// for Attempt: which one to look at while the operation runs, or
	// whose logs say why it ended. Empty while it is queued.
	Instance  string    `json:"instance,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
	Warnings  []string  `json:"warnings,omitempty"`
	// Tenant and Database are what the operation reads (a snapshot) or
	// writes (a rollback); Actor who asked; Name a snapshot's name.
	Tenant   string `json:"tenant,omitempty"`
	Database string `json:"database,omitempty"`
	Actor    string `json:"actor,omitempty"`
	Name     string `json:"name,omitempty"`
	// Fields below are set by rollbacks.
	Phase   string         `json:"phase,omitempty"`
	Plan    *RollbackPlan  `json:"plan,omitempty"`
	Restore *RestoreReport `json:"restore,omitempty"`
	// LeftoversCleared is set on a failed or cancelled rollback once the
	// restorer took back, after Chroma answered again, what the rollback's
	// own cleanup could not (its Warnings name it); LeftoverNotes say what
	// it did and what it left to an operator.
	LeftoversCleared *time.Time `json:"leftovers_cleared_at,omitempty"`
	LeftoverNotes    []string   `json:"leftover_notes,omitempty"`
}

// RestoredInto says which tenant/database of the services' own Chroma op
// restored: ok only for a rollback that completed there (not one into
// another Chroma, nor an operation without a plan).
func (op *Operation) RestoredInto() (tenant, database string, ok bool) {
	p := op.Plan
	if op.Kind != "rollback" || op.Status != StatusCompleted || p == nil || p.ChromaURL != "" {
		return "", "", false
	}
	return p.Tenant, p.Database, true
}

// Operation statuses.
const (
	StatusQueued    = "queued"
	StatusRunning   = "running"
	StatusCompleted = "completed"
	StatusFailed    = "failed"
)

// Ended says an operation with status is over: completed, failed or
// cancelled (StatusCancelled); nothing changes it any more but the
// clearing of a rollback's leftovers (Operation.LeftoversCleared).
func Ended(status string) bool {
	switch status {
	case StatusCompleted, StatusFailed, StatusCancelled:
		return true
	}
	return false
}

// Progress is published on chroma.progress.<op_id> while a job runs.
type Progress struct {
	Envelope
	OpID         string  `json:"op_id"`
	Phase        string  `json:"phase"`
	Collection   string  `json:"collection,omitempty"`
	DoneRecords  int64   `json:"done_records"`
	TotalRecords int64   `json:"total_records"`
	Bytes        int64   `json:"bytes"`
	RatePerSec   float64 `json:"records_per_second"`
	ETASeconds   float64 `json:"eta_seconds"`
	Done         bool    `json:"done"`
	Error        string  `json:"error,omitempty"`
}

// AuditEvent records who did what, why, and how it ended. Published on
// chroma.audit.<service>.<action> into the audit stream.
type AuditEvent struct {
	Envelope
	Service    string         `json:"service"`
	Action     string         `json:"action"`
	Outcome    string         `json:"outcome"`
	Actor      string         `json:"actor,omitempty"`
	Reason     string         `json:"reason,omitempty"`
	Error      string         `json:"error,omitempty"`
	SnapshotID string         `json:"snapshot_id,omitempty"`
	OpID       string         `json:"op_id,omitempty"`
	Tenant     string         `json:"tenant,omitempty"`
	Database   string         `json:"database,omitempty"`
	Figures    map[string]any `json:"figures,omitempty"`
}

// Audit outcomes.
const (
	OutcomeStarted   = "started"
	OutcomeCompleted = "completed"
	OutcomeFailed    = "failed"
	OutcomeRejected  = "rejected"
)

// Health answers chroma.api.health, and each instance's answer to
// chroma.api.health.chroma (with Service and Instance set).
type Health struct {
	Envelope
	OK     bool          `json:"ok"`
	Checks []HealthCheck `json:"checks"`
	// Service and Instance name the instance that answered
	// chroma.api.health.chroma.
	Service  string `json:"service,omitempty"`
	Instance string `json:"instance,omitempty"`
}

// HealthCheck is one line of a health report.
type HealthCheck struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// ErrorBody is the JSON body of an error reply; its Code is also in the
// Nats-Service-Error-Code header.
type ErrorBody struct {
	Type  string `json:"type"`
	Code  int    `json:"code"`
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
	// ErrorCode, when set, says for programs what the error is about
	// where Code does not (a 404 or 422 of the restorer has more than one
	// cause): ErrorArchiveUnusable.
	ErrorCode string `json:"error_code,omitempty"`
}

// Error codes (Operation.ErrorCode, ErrorBody.ErrorCode): what programs
// act on, where the error's text is for people and may be reworded.
const (
	// ErrorArchiveUnusable: the snapshot cannot be restored as it is: it
	// is gone, or its archive is missing, damaged, replaced or in a format
	// or an encryption the restorer does not read. Asking again for the
	// same snapshot cannot help. (A restorer that only lacks the key of an
	// encrypted archive is not this: one given the key restores it.)
	ErrorArchiveUnusable = "archive_unusable"
	// ErrorOther: any other failure.
	ErrorOther = "other"
)
