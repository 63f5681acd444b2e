package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/nats-io/nats.go/jetstream"
)

// Config sizes the JetStream assets.
type Config struct {
	Subjects contract.Subjects
	// Replicas is 1 on a single server, 3 on a cluster.
	Replicas int
	// AuditMaxAge keeps audit events this long (default 400 days).
	AuditMaxAge time.Duration
	// Storage defaults to file storage.
	Storage jetstream.StorageType
}

// Assets are the handles every service works with.
type Assets struct {
	JS        jetstream.JetStream
	Commands  jetstream.Stream
	Audit     jetstream.Stream
	Manifests jetstream.KeyValue
	State     jetstream.KeyValue
	Snapshots jetstream.ObjectStore
	Subjects  contract.Subjects
}

// Bootstrap creates or updates every stream, bucket and object store. It is
// idempotent and safe to run from several services at once.
func Bootstrap(ctx context.Context, js jetstream.JetStream, cfg Config) (*Assets, error) {
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.AuditMaxAge <= 0 {
		cfg.AuditMaxAge = 400 * 24 * time.Hour
	}
	s := cfg.Subjects
	a := &Assets{JS: js, Subjects: s}
	var err error
	a.Commands, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        contract.StreamCommands,
		Description: "durable long-running commands (snapshot, rollback); one worker per message",
		Subjects:    []string{s.Commands()},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     cfg.Storage,
		Replicas:    cfg.Replicas,
		Duplicates:  24 * time.Hour,
		MaxAge:      7 * 24 * time.Hour,
	})
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", contract.StreamCommands, err)
	}
	if _, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        contract.StreamMigrations,
		Description: "events from migration jobs",
		Subjects:    []string{s.Migrations()},
		Storage:     cfg.Storage,
		Replicas:    cfg.Replicas,
		Duplicates:  time.Hour,
		MaxAge:      30 * 24 * time.Hour,
	}); err != nil {
		return nil, fmt.Errorf("create stream %s: %w", contract.StreamMigrations, err)
	}
	a.Audit, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        contract.StreamAudit,
		Description: "audit trail of every operation, trigger, alert and rejected command",
		Subjects:    []string{s.AuditAll()},
		Storage:     jetstream.FileStorage, // the audit trail is never in memory only
		Replicas:    cfg.Replicas,
		DenyDelete:  true,
		DenyPurge:   true,
		Duplicates:  time.Hour,
		MaxAge:      cfg.AuditMaxAge,
	})
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", contract.StreamAudit, err)
	}
	a.Manifests, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      contract.BucketManifests,
		Description: "verified snapshot manifests: a snapshot exists when its manifest does",
		History:     5,
		Storage:     cfg.Storage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", contract.BucketManifests, err)
	}
	a.State, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      contract.BucketState,
		Description: "leases, write fence, migration records, operation status",
		History:     5,
		Storage:     cfg.Storage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", contract.BucketState, err)
	}
	a.Snapshots, err = js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      contract.ObjectSnapshots,
		Description: "snapshot archives, one unique object per snapshot",
		Storage:     cfg.Storage,
		Replicas:    cfg.Replicas,
		Compression: false, // archives are already compressed
	})
	if err != nil {
		return nil, fmt.Errorf("create object store %s: %w", contract.ObjectSnapshots, err)
	}
	return a, nil
}

// IsNotFound reports whether err says a key, object or stream is missing.
func IsNotFound(err error) bool {
	return errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrObjectNotFound) ||
		errors.Is(err, jetstream.ErrStreamNotFound)
}
