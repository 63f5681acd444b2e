package snapshotter

import (
	"errors"
	"fmt"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/crypt"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/metrics"
)

// Config configures a snapshotter instance.
type Config struct {
	// ChromaURL is the Chroma server snapshots are taken from.
	ChromaURL string
	// Instance names this instance in logs, audit events and micro stats.
	Instance string
	// Replicas is how many copies JetStream keeps of the streams, buckets
	// and object store this instance creates: 1 on a single server, 3 on
	// a cluster (default 1; every instance should ask for the same).
	Replicas int
	// DataDir is where free disk space is reported for (the JetStream store).
	DataDir string
	// AckWait is how long a job may go without an in-progress ack before it
	// is given to another instance.
	AckWait time.Duration
	// MaxDeliver bounds how often a job is tried after workers died.
	MaxDeliver int
	// FetchWorkers fetch pages of a collection in parallel.
	FetchWorkers int
	// PageBytes is the target size of one page of records as Chroma sends it.
	PageBytes int
	// MaxPageRecords caps records per page (and so per archive batch).
	MaxPageRecords int
	// Metrics records how snapshots end and which requests are refused;
	// nil records nothing.
	Metrics *metrics.Registry
	// Retention is the age after which the daily run (00:00 UTC) and a
	// cleanup request without older_than delete a snapshot that nothing
	// keeps; 0 means contract.DefaultRetention, RetentionOff turns the
	// daily run off.
	Retention time.Duration
	// Clock tells retention the time; nil is the system clock.
	Clock Clock
	// Recipients, when set, encrypt every new archive with age to these
	// public keys; writing needs no identity.
	Recipients *crypt.Recipients
	// ChromaCheckTimeout bounds the lookups a snapshot request makes in
	// Chroma before it is answered (tenant, database, named collections);
	// default 10 s, inside the CLI's 30 s.
	ChromaCheckTimeout time.Duration
	// Identities decrypt encrypted archives for a full verify and for
	// importing an encrypted file; without them verify checks only the
	// ciphertext and an encrypted file is not imported.
	Identities *crypt.Identities
}

func (c *Config) setDefaults() {
	if c.Instance == "" {
		c.Instance = "snapshotter"
	}
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if c.MaxDeliver <= 0 {
		c.MaxDeliver = 5
	}
	if c.FetchWorkers <= 0 {
		c.FetchWorkers = 2
	}
	if c.PageBytes <= 0 {
		c.PageBytes = 16 << 20
	}
	if c.MaxPageRecords <= 0 {
		c.MaxPageRecords = 2500
	}
	if c.Retention == 0 {
		c.Retention = contract.DefaultRetention
	}
	if c.Clock == nil {
		c.Clock = systemClock{}
	}
	if c.ChromaCheckTimeout <= 0 {
		c.ChromaCheckTimeout = 10 * time.Second
	}
}

// Validate reports the first invalid field.
func (c *Config) Validate() error {
	if c.ChromaURL == "" {
		return errors.New("chroma URL is required (--chroma-url or CHROMA_URL)")
	}
	if c.AckWait < time.Second {
		return fmt.Errorf("ack wait %s is too short: at least 1s", c.AckWait)
	}
	if c.Retention < 0 && c.Retention != RetentionOff {
		return fmt.Errorf("retention %s is negative: give a period such as 7d, or off", c.Retention)
	}
	return nil
}
