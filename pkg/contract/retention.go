package contract

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Message types of snapshot retention (chroma.api.snapshot.cleanup) and of
// pinning a snapshot (chroma.api.snapshot.keep).
const (
	TypeCleanupRequest = "chromadb-rollback.v1.snapshot_cleanup_request"
	TypeCleanupReport  = "chromadb-rollback.v1.snapshot_cleanup_report"
	TypeKeepRequest    = "chromadb-rollback.v1.snapshot_keep_request"
)

// DefaultRetention is how old a snapshot gets before retention deletes it,
// unless something keeps it.
const DefaultRetention = 7 * 24 * time.Hour

// Why retention keeps a snapshot (CleanupItem.Reason), strongest first.
const (
	// KeepPinned: the manifest has keep: true (snapshot create --keep,
	// snapshot keep ID).
	KeepPinned = "keep"
	// KeepMigration: a migration not yet over names it (migration.<job>
	// in CHROMA_STATE).
	KeepMigration = "in_use_migration"
	// KeepRollback: a rollback not yet ended restores it (op.<op_id>).
	KeepRollback = "in_use_rollback"
	// KeepNewest: the newest verified snapshot of its tenant/database.
	KeepNewest = "newest_verified"
	// KeepNewestFull: the newest verified snapshot of all the collections of
	// its tenant/database, when a newer one holds only some of them (a
	// safety snapshot, a partial snapshot).
	KeepNewestFull = "newest_full"
	// KeepNewestConsistent: the newest verified snapshot of all the
	// collections of its tenant/database whose counts did not move while it
	// was taken, when newer ones were taken while writers were active
	// (consistent: false).
	KeepNewestConsistent = "newest_consistent"
	// KeepRestored: what the newest completed rollback into a database
	// restored from, while no snapshot of all that database's collections
	// was taken after it (the rollback's safety snapshot, of the state it
	// undid, was taken before).
	KeepRestored = "restored"
	// KeepRecent: younger than the retention period.
	KeepRecent = "within_retention"
	// KeepChanged: the manifest changed (e.g. was pinned) or went away while
	// the run was deciding; the next run decides again.
	KeepChanged = "changed"
)

// EndedRunAlertFor is how long after its triggered rollback failed (or
// was left to an operator) a run that had ended by then is listed in the
// status's alerts, with the command to roll back by hand (nobody is left
// to end the run and so clear the alert; alert.rollback in the audit trail
// keeps it after that); retention keeps the snapshot that command names as
// long.
const EndedRunAlertFor = 24 * time.Hour

// ReasonExpired is the reason of a deleted snapshot: older than the period
// and kept by nothing.
const ReasonExpired = "expired"

// Cleanup triggers (CleanupReport.Trigger).
const (
	CleanupTriggerSchedule = "schedule" // the daily run at 00:00 UTC
	CleanupTriggerRequest  = "request"  // chroma.api.snapshot.cleanup
)

// CleanupRequest asks for a retention run now (chroma.api.snapshot.cleanup).
// An empty object runs it with the snapshotter's retention period.
type CleanupRequest struct {
	Envelope
	// DryRun reports what would be deleted and deletes nothing.
	DryRun bool `json:"dry_run,omitempty"`
	// OlderThan overrides the retention period: a Go duration ("72h") or
	// whole days ("7d", "1d12h").
	OlderThan string `json:"older_than,omitempty"`
	// Tenant, and optionally Database, limit the run to one tenant or one
	// tenant/database.
	Tenant   string `json:"tenant,omitempty"`
	Database string `json:"database,omitempty"`
	Actor    string `json:"actor,omitempty"`
	Reason   string `json:"reason,omitempty"`
}

// CleanupItem is one snapshot a retention run looked at.
type CleanupItem struct {
	SnapshotID string    `json:"snapshot_id"`
	Name       string    `json:"name"`
	Tenant     string    `json:"tenant"`
	Database   string    `json:"database"`
	StartedAt  time.Time `json:"started_at"`
	// AgeSeconds is the snapshot's age when the run started; Age says it
	// for humans ("9d4h").
	AgeSeconds float64 `json:"age_seconds"`
	Age        string  `json:"age"`
	Size       int64   `json:"size"`
	Records    int64   `json:"records"`
	Partial    bool    `json:"partial,omitempty"`
	Keep       bool    `json:"keep,omitempty"`
	// Reason is ReasonExpired for a deleted snapshot, else the strongest
	// Keep* reason; Detail explains every reason that applies.
	Reason string `json:"reason"`
	Detail string `json:"detail"`
	// Error says why a deletion failed (CleanupReport.Failed).
	Error string `json:"error,omitempty"`
}

// CleanupReport answers chroma.api.snapshot.cleanup and records a daily run.
type CleanupReport struct {
	Envelope
	// RunID names the run; its audit events carry it as op_id.
	RunID   string `json:"run_id"`
	DryRun  bool   `json:"dry_run"`
	Trigger string `json:"trigger"`
	// Instance is the snapshotter that ran it.
	Instance string `json:"instance"`
	Tenant   string `json:"tenant,omitempty"`
	Database string `json:"database,omitempty"`
	// OlderThan is the period applied ("7d"); Cutoff is the run's start
	// minus it: snapshots started before it are expired.
	OlderThan        string    `json:"older_than"`
	OlderThanSeconds float64   `json:"older_than_seconds"`
	Now              time.Time `json:"now"`
	Cutoff           time.Time `json:"cutoff"`
	// Deleted are the snapshots deleted, oldest first; with DryRun, those
	// that would be.
	Deleted []CleanupItem `json:"deleted"`
	// Kept are the snapshots kept, newest first, each with its reason.
	Kept []CleanupItem `json:"kept"`
	// Failed are expired snapshots whose deletion failed; they are still there.
	Failed []CleanupItem `json:"failed"`
	// BytesFreed is the archive bytes of Deleted.
	BytesFreed int64 `json:"bytes_freed"`
	// StatePruned counts the records of work that ended before Cutoff
	// that the run purged from the state bucket (with DryRun, would
	// purge), by kind: "operations" (completed, failed or cancelled),
	// "migrations" (ended, their rollback too) and "retention_claims"
	// (of days over). Only a run over every tenant prunes.
	StatePruned map[string]int `json:"state_pruned,omitempty"`
	// Abandoned are the operations the run failed (with DryRun, would
	// fail) because they were still queued or running when their command
	// had left CHROMA_CMDS, so that no worker could end them. Only a run
	// over every tenant looks for them.
	Abandoned []string `json:"abandoned_operations,omitempty"`
}

// SnapshotKeepRequest pins a snapshot so that retention never deletes it,
// or unpins it (chroma.api.snapshot.keep). Keep is required.
type SnapshotKeepRequest struct {
	Envelope
	// Snapshot is a snapshot id or name (SnapshotByName).
	Snapshot string `json:"snapshot"`
	Keep     *bool  `json:"keep"`
	Actor    string `json:"actor,omitempty"`
	Reason   string `json:"reason,omitempty"`
}

// ParseAge reads a positive period: a Go duration ("72h", "90m") or whole
// days followed optionally by a Go duration ("7d", "1d12h").
func ParseAge(s string) (time.Duration, error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return 0, fmt.Errorf("empty period: give a duration such as 7d or 72h")
	}
	var d time.Duration
	rest := in
	if i := strings.IndexByte(rest, 'd'); i >= 0 {
		days, err := strconv.ParseUint(rest[:i], 10, 16)
		if errors.Is(err, strconv.ErrRange) {
			return 0, fmt.Errorf("period %q: at most %d days", s, math.MaxUint16)
		}
		if err != nil {
			return 0, fmt.Errorf("period %q: days must be a whole number, as in 7d or 1d12h", s)
		}
		d = time.Duration(days) * 24 * time.Hour
		rest = rest[i+1:]
	}
	if rest != "" {
		more, err := time.ParseDuration(rest)
		if err != nil {
			return 0, fmt.Errorf("period %q: want a duration such as 7d, 36h or 1d12h", s)
		}
		d += more
	}
	if d <= 0 {
		return 0, fmt.Errorf("period %q must be longer than zero", s)
	}
	return d, nil
}

// FormatAge writes d the way ParseAge reads it, to the minute: "7d",
// "1d12h", "36m"; under a minute in seconds.
func FormatAge(d time.Duration) string {
	if d < 0 {
		return "-" + FormatAge(-d)
	}
	if d < time.Minute {
		return d.Round(time.Second).String()
	}
	d = d.Round(time.Minute)
	days := d / (24 * time.Hour)
	d -= days * 24 * time.Hour
	h, m := d/time.Hour, (d%time.Hour)/time.Minute
	var b strings.Builder
	if days > 0 {
		fmt.Fprintf(&b, "%dd", days)
	}
	if h > 0 {
		fmt.Fprintf(&b, "%dh", h)
	}
	if m > 0 {
		fmt.Fprintf(&b, "%dm", m)
	}
	return b.String()
}

// DefaultJetStreamNear is the share of a JetStream storage limit (the
// account's, a stream's) at which storage counts as nearly full: the
// watchdog alerts and pauses migrations (--jetstream-near), and the
// snapshotter's health fails its jetstream check.
const DefaultJetStreamNear = 0.9
