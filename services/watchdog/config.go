package watchdog

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/metrics"
)

// Defaults from the seed tool (DESIGN.md, Triggers).
const (
	DefaultValidationThreshold = 0.95
	DefaultTimeLimit           = time.Hour
	DefaultHeartbeatInterval   = 10 * time.Second
	DefaultHeartbeatFailures   = 3
	DefaultDiskMinFree         = 100 << 20 // 100 MiB
	DefaultDiskInterval        = 30 * time.Second
	// DefaultArchiveCheckInterval is how often the snapshots' archives are
	// looked up.
	DefaultArchiveCheckInterval = 10 * time.Minute
	DefaultJetStreamNear        = contract.DefaultJetStreamNear
)

// Config configures a watchdog instance. The zero value of every field
// takes the default named in its comment.
type Config struct {
	// ChromaURL is the Chroma server whose heartbeat is watched (for logs
	// and alerts; the heartbeat goes through the client given to New).
	ChromaURL string
	// Instance names this instance in logs, audit events, pause reasons
	// and micro stats (default "watchdog").
	Instance string
	// Replicas is how many copies JetStream keeps of the streams, buckets
	// and object store this instance creates: 1 on a single server, 3 on
	// a cluster (default 1; every instance should ask for the same).
	Replicas int

	// ValidationThreshold: a validation with valid/total under it fires
	// the validation trigger (default 0.95; must be in (0, 1]).
	ValidationThreshold float64
	// PartialOnCollectionFailure makes the validation trigger roll back
	// only the reported collections under the threshold, when the job
	// reported per-collection figures; one of them under it fires the
	// trigger even when the total meets the threshold.
	PartialOnCollectionFailure bool
	// DefaultTimeLimit applies to runs whose started event sets none
	// (default 1 h).
	DefaultTimeLimit time.Duration
	// AbortGrace is how long the time trigger waits after sending abort
	// before it asks for the rollback, unless the job reports failed or
	// completed sooner (default 5 s).
	AbortGrace time.Duration
	// AutomaticRollbackDisabled turns every triggered rollback into an
	// alert that names the command an operator would run
	// (AUTOMATIC_ROLLBACK_ENABLED=false).
	AutomaticRollbackDisabled bool
	// RollbackOnFailure makes a failed event fire the failure trigger: a
	// rollback to the pre-migration snapshot. Off by default: a job that
	// failed may have written nothing, and its operator decides.
	RollbackOnFailure bool

	// HeartbeatInterval is how often Chroma's heartbeat is checked
	// (default 10 s); HeartbeatTimeout bounds one check (default the
	// interval, at most 5 s). HeartbeatFailures consecutive failures
	// pause the running jobs (default 3).
	HeartbeatInterval time.Duration
	HeartbeatTimeout  time.Duration
	HeartbeatFailures int

	// DiskPaths are watched for free space every DiskInterval (default
	// 30 s); under DiskMinFree bytes (default 100 MiB) on any of them the
	// running jobs are paused. Empty watches no path.
	DiskPaths    []string
	DiskMinFree  uint64
	DiskInterval time.Duration
	// JetStreamNear is the share of an account or stream storage limit at
	// which JetStream counts as nearly full (default 0.9; checked every
	// DiskInterval). Negative disables the check.
	JetStreamNear float64

	// ArchiveCheckInterval is how often the archive of every verified
	// snapshot is looked up in the object store (its metadata only): one
	// gone (deleted or lost outside chromadb-rollback) is an alert, since
	// no rollback to that snapshot can run (default 10 min). It pauses
	// nothing. Negative disables the check.
	ArchiveCheckInterval time.Duration

	// TickInterval is how often deadlines and pending work (snapshots,
	// rollbacks, pauses) are checked (default 1 s).
	TickInterval time.Duration
	// RetryInterval spaces retries of a snapshot or rollback request that
	// failed for a reason that may pass (default 5 s).
	RetryInterval time.Duration
	// RequestTimeout bounds a request to the snapshotter or the restorer;
	// a rollback start verifies the whole archive before it answers
	// (default 30 min).
	RequestTimeout time.Duration
	// AckWait is how long a migration event may stay unacknowledged before
	// it is given to another instance (default 30 s).
	AckWait time.Duration

	// Metrics counts triggers, alerts and failed snapshot or rollback
	// requests; nil records nothing.
	Metrics *metrics.Registry
}

func (c *Config) setDefaults() {
	if c.Instance == "" {
		c.Instance = "watchdog"
	}
	if c.ValidationThreshold == 0 {
		c.ValidationThreshold = DefaultValidationThreshold
	}
	if c.DefaultTimeLimit == 0 {
		c.DefaultTimeLimit = DefaultTimeLimit
	}
	if c.AbortGrace == 0 {
		c.AbortGrace = 5 * time.Second
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.HeartbeatTimeout == 0 {
		c.HeartbeatTimeout = min(c.HeartbeatInterval, 5*time.Second)
	}
	if c.HeartbeatFailures == 0 {
		c.HeartbeatFailures = DefaultHeartbeatFailures
	}
	if c.DiskMinFree == 0 {
		c.DiskMinFree = DefaultDiskMinFree
	}
	if c.DiskInterval == 0 {
		c.DiskInterval = DefaultDiskInterval
	}
	if c.JetStreamNear == 0 {
		c.JetStreamNear = DefaultJetStreamNear
	}
	if c.TickInterval == 0 {
		c.TickInterval = time.Second
	}
	if c.ArchiveCheckInterval == 0 {
		c.ArchiveCheckInterval = DefaultArchiveCheckInterval
	}
	if c.RetryInterval == 0 {
		c.RetryInterval = 5 * time.Second
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 30 * time.Minute
	}
	if c.AckWait == 0 {
		c.AckWait = 30 * time.Second
	}
}

// Validate reports the first invalid field.
func (c *Config) Validate() error {
	if c.ChromaURL == "" {
		return errors.New("chroma URL is required (--chroma-url or CHROMA_URL)")
	}
	return c.validateSettings()
}

// validateSettings reports the first invalid setting besides the Chroma URL.
func (c *Config) validateSettings() error {
	switch {
	case !(c.ValidationThreshold > 0 && c.ValidationThreshold <= 1): // NaN too: nothing is under it
		return fmt.Errorf("validation threshold %v: want a ratio in (0, 1], e.g. 0.95", c.ValidationThreshold)
	case c.DefaultTimeLimit < 0:
		return fmt.Errorf("default time limit %s is negative", c.DefaultTimeLimit)
	case c.AbortGrace < 0:
		return fmt.Errorf("abort grace %s is negative", c.AbortGrace)
	case c.HeartbeatInterval < 10*time.Millisecond:
		return fmt.Errorf("heartbeat interval %s is too short: at least 10ms", c.HeartbeatInterval)
	case c.HeartbeatTimeout <= 0:
		return fmt.Errorf("heartbeat timeout %s must be positive", c.HeartbeatTimeout)
	case c.HeartbeatFailures < 1:
		return fmt.Errorf("heartbeat failures %d: at least 1", c.HeartbeatFailures)
	case c.DiskInterval < 10*time.Millisecond:
		return fmt.Errorf("disk interval %s is too short: at least 10ms", c.DiskInterval)
	case c.JetStreamNear > 1 || math.IsNaN(c.JetStreamNear):
		return fmt.Errorf("JetStream near-full share %v: want a ratio in (0, 1], or negative to disable", c.JetStreamNear)
	case c.ArchiveCheckInterval > 0 && c.ArchiveCheckInterval < 10*time.Millisecond:
		return fmt.Errorf("archive check interval %s is too short: at least 10ms, or negative to disable", c.ArchiveCheckInterval)
	case c.TickInterval < 10*time.Millisecond:
		return fmt.Errorf("tick interval %s is too short: at least 10ms", c.TickInterval)
	case c.RetryInterval < 0:
		return fmt.Errorf("retry interval %s is negative", c.RetryInterval)
	case c.RequestTimeout < time.Second:
		return fmt.Errorf("request timeout %s is too short: at least 1s", c.RequestTimeout)
	case c.AckWait < time.Second:
		return fmt.Errorf("ack wait %s is too short: at least 1s", c.AckWait)
	}
	for _, p := range c.DiskPaths {
		if p == "" {
			return errors.New("disk paths: an empty path was given")
		}
	}
	return nil
}
