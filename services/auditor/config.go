package auditor

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of Config.
const (
	DefaultConsumer  = "auditor"
	DefaultBatch     = 512
	DefaultAckWait   = 30 * time.Second
	DefaultRetryWait = 2 * time.Second
)

// Config configures the auditor.
type Config struct {
	// DataDir holds the trail, contract.AuditTrailFile.
	DataDir string
	// Instance names this process in logs and micro metadata.
	Instance string
	// Replicas is how many copies JetStream keeps of the streams, buckets
	// and object store this instance creates: 1 on a single server, 3 on
	// a cluster (default 1; every instance should ask for the same).
	Replicas int
	// Consumer is the durable consumer on CHROMA_AUDIT that this auditor
	// owns. Every auditor needs its own consumer and its own DataDir: each
	// writes a whole trail.
	Consumer string
	// Batch is the most entries written with one fsync.
	Batch int
	// AckWait is how long the server waits for an ack before redelivering.
	AckWait time.Duration
	// RetryWait is the pause before trying again after a failed write.
	RetryWait time.Duration
}

func (c *Config) setDefaults() {
	if c.Instance == "" {
		c.Instance = "auditor"
	}
	if c.Consumer == "" {
		c.Consumer = DefaultConsumer
	}
	if c.Batch <= 0 {
		c.Batch = DefaultBatch
	}
	if c.AckWait <= 0 {
		c.AckWait = DefaultAckWait
	}
	if c.RetryWait <= 0 {
		c.RetryWait = DefaultRetryWait
	}
}

// Validate reports the first invalid field.
func (c *Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("data dir is required (--data-dir or DATA_DIR): the trail is written there")
	}
	if err := contract.ValidToken(c.Consumer); err != nil || filepath.Base(c.Consumer) != c.Consumer {
		return fmt.Errorf("consumer name %q: use letters, digits, '-' and '_'", c.Consumer)
	}
	if c.Batch > 10000 {
		return fmt.Errorf("batch %d: at most 10000 entries per fsync", c.Batch)
	}
	if c.AckWait < time.Second {
		return fmt.Errorf("ack wait %s is too short: at least 1s", c.AckWait)
	}
	return nil
}

// TrailPath is where the trail of this configuration lives.
func (c *Config) TrailPath() string { return filepath.Join(c.DataDir, contract.AuditTrailFile) }

func (c *Config) consumerConfig(subj contract.Subjects, start uint64) jetstream.ConsumerConfig {
	cc := jetstream.ConsumerConfig{
		Durable:       c.Consumer,
		Description:   "the auditor's trail writer: one ack per synced batch",
		FilterSubject: subj.AuditAll(),
		DeliverPolicy: jetstream.DeliverAllPolicy,
		// An ack covers every message before it: the trail is written in
		// stream order, so acking a batch's last message acks the batch.
		AckPolicy:     jetstream.AckAllPolicy,
		AckWait:       c.AckWait,
		MaxAckPending: 4 * c.Batch,
		MaxDeliver:    -1,
	}
	if start > 1 {
		cc.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cc.OptStartSeq = start
	}
	return cc
}
