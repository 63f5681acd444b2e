package bus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
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

// MaxReplicas is the most replicas JetStream keeps of a stream.
const MaxReplicas = 5

// Bootstrap creates or updates every stream, bucket and object store. It is
// idempotent and safe to run from several instances at once: a create that
// loses a race with another instance's is retried as an update, and
// transient failures (no meta leader yet, a node still starting) are
// retried (see Retry).
//
// An asset that exists with cfg's settings is left as it is; one that
// exists with other settings is updated to cfg's (its replica
// count included: the last instance to start decides, so give every
// instance the same count). Settings the server cannot change in place
// (storage type, retention policy, subjects another stream holds) fail
// Bootstrap with an error naming the asset and what to do.
//
// The key-value and object store handles in the returned Assets retry
// transient failures (RetryKeyValue, RetryObjectStore).
func Bootstrap(ctx context.Context, js jetstream.JetStream, cfg Config) (*Assets, error) {
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.Replicas > MaxReplicas {
		return nil, fmt.Errorf("bootstrap: %d replicas: JetStream keeps at most %d", cfg.Replicas, MaxReplicas)
	}
	if cfg.AuditMaxAge <= 0 {
		cfg.AuditMaxAge = 400 * 24 * time.Hour
	}
	s := cfg.Subjects
	a := &Assets{JS: js, Subjects: s}
	var err error
	a.Commands, err = ensureStream(ctx, js, cfg, jetstream.StreamConfig{
		Name:        contract.StreamCommands,
		Description: "durable long-running commands (snapshot, rollback); one worker per message",
		Subjects:    []string{s.Commands()},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     cfg.Storage,
		Replicas:    cfg.Replicas,
		Duplicates:  24 * time.Hour,
		MaxAge:      CommandMaxAge,
	})
	if err != nil {
		return nil, err
	}
	if _, err = ensureStream(ctx, js, cfg, jetstream.StreamConfig{
		Name:        contract.StreamMigrations,
		Description: "events from migration jobs",
		Subjects:    []string{s.Migrations()},
		Storage:     cfg.Storage,
		Replicas:    cfg.Replicas,
		Duplicates:  time.Hour,
		MaxAge:      30 * 24 * time.Hour,
	}); err != nil {
		return nil, err
	}
	a.Audit, err = ensureStream(ctx, js, cfg, jetstream.StreamConfig{
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
		return nil, err
	}
	a.Manifests, err = ensureKeyValue(ctx, js, cfg, jetstream.KeyValueConfig{
		Bucket:      contract.BucketManifests,
		Description: "verified snapshot manifests: a snapshot exists when its manifest does",
		History:     5,
		Storage:     cfg.Storage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return nil, err
	}
	a.State, err = ensureKeyValue(ctx, js, cfg, jetstream.KeyValueConfig{
		Bucket:      contract.BucketState,
		Description: "leases, write fence, migration records, operation status",
		History:     5,
		Storage:     cfg.Storage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return nil, err
	}
	a.Snapshots, err = ensureObjectStore(ctx, js, cfg, jetstream.ObjectStoreConfig{
		Bucket:      contract.ObjectSnapshots,
		Description: "snapshot archives, one unique object per snapshot",
		Storage:     cfg.Storage,
		Replicas:    cfg.Replicas,
		Compression: false, // archives are already compressed
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

// createOrUpdate creates an asset, and updates it only when it exists with
// other settings. A create with the settings an asset already has is a
// no-op on the server, while an update rewrites the stream's configuration
// even when nothing changed; every service start would do that, on streams
// whose consumers other services are creating at that moment (which
// nats-server 2.15.2 does not guard: a data race between
// fileStore.UpdateConfig and ConsumerStore).
func createOrUpdate[T any](ctx context.Context, create, update func(context.Context) (T, error)) (T, error) {
	v, err := create(ctx)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) { // also behind ErrBucketExists
		return update(ctx)
	}
	return v, err
}

// ensureStream creates or updates a stream (see Bootstrap).
func ensureStream(ctx context.Context, js jetstream.JetStream, cfg Config, sc jetstream.StreamConfig) (jetstream.Stream, error) {
	var st jetstream.Stream
	err := retryBootstrap(ctx, func(ctx context.Context) (err error) {
		st, err = createOrUpdate(ctx,
			func(ctx context.Context) (jetstream.Stream, error) { return js.CreateStream(ctx, sc) },
			func(ctx context.Context) (jetstream.Stream, error) { return js.CreateOrUpdateStream(ctx, sc) })
		return err
	})
	if err != nil {
		return nil, explain("stream", sc.Name, sc.Name, cfg, err)
	}
	return st, nil
}

// ensureKeyValue creates or updates a key-value bucket (see Bootstrap).
func ensureKeyValue(ctx context.Context, js jetstream.JetStream, cfg Config, kc jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	var kv jetstream.KeyValue
	err := retryBootstrap(ctx, func(ctx context.Context) (err error) {
		kv, err = createOrUpdate(ctx,
			func(ctx context.Context) (jetstream.KeyValue, error) { return js.CreateKeyValue(ctx, kc) },
			func(ctx context.Context) (jetstream.KeyValue, error) { return js.CreateOrUpdateKeyValue(ctx, kc) })
		return err
	})
	if err != nil {
		return nil, explain("bucket", kc.Bucket, "KV_"+kc.Bucket, cfg, err)
	}
	return RetryKeyValue(js, kv), nil
}

// ensureObjectStore creates or updates an object store (see Bootstrap).
func ensureObjectStore(ctx context.Context, js jetstream.JetStream, cfg Config, oc jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error) {
	var obs jetstream.ObjectStore
	err := retryBootstrap(ctx, func(ctx context.Context) (err error) {
		obs, err = createOrUpdate(ctx,
			func(ctx context.Context) (jetstream.ObjectStore, error) { return js.CreateObjectStore(ctx, oc) },
			func(ctx context.Context) (jetstream.ObjectStore, error) { return js.CreateOrUpdateObjectStore(ctx, oc) })
		return err
	})
	if err != nil {
		return nil, explain("object store", oc.Bucket, "OBJ_"+oc.Bucket, cfg, err)
	}
	return RetryObjectStore(js, oc.Bucket, obs), nil
}

// bootstrapAttempt bounds one create or update. A create that races
// another instance's create of the same asset on a cluster can go
// unanswered; the next try finds the asset and updates it.
const bootstrapAttempt = 2 * time.Second

// retryBootstrap retries fn until ctx ends while it fails transiently,
// finds too few servers up, or loses a create race ("already in use", or
// no answer: the next try updates what the other instance created).
func retryBootstrap(ctx context.Context, fn func(ctx context.Context) error) error {
	wait := 100 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, bootstrapAttempt)
		err := fn(actx)
		cancel()
		if err == nil || ctx.Err() != nil || !(Transient(err) || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) ||
			errors.Is(err, jetstream.ErrBucketExists) || noPeersYet(err)) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last try: %w)", ctx.Err(), err)
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// noPeersYet says a create found too few servers to place the replicas
// on: a cluster still starting, or a node down that may come back, so it
// is tried again until the bootstrap's deadline.
func noPeersYet(err error) bool {
	var api *jetstream.APIError
	return errors.As(err, &api) && api.ErrorCode == 10005 // no suitable peers for placement
}

// explain names the asset and what to do about a failed create or update.
func explain(kind, name, stream string, cfg Config, err error) error {
	var api *jetstream.APIError
	errors.As(err, &api)
	switch {
	case api != nil && api.ErrorCode == 10074: // replicas > 1 not supported in non-clustered mode
		return fmt.Errorf("create %s %s with %d replicas: this JetStream server is not clustered; use 1 replica (--replicas 1, JETSTREAM_REPLICAS=1): %w",
			kind, name, cfg.Replicas, err)
	case api != nil && (api.ErrorCode == 10023 || api.ErrorCode == 10005): // insufficient resources, no suitable peers
		return fmt.Errorf("create %s %s with %d replicas: not enough JetStream servers are up (or the cluster has fewer than %d): %w",
			kind, name, cfg.Replicas, cfg.Replicas, err)
	case api != nil && api.Code == 400, api != nil && api.Code == 500 && api.ErrorCode != 10008:
		return fmt.Errorf("%s %s exists with settings the server cannot change to this version's (%w); compare `nats stream info %s` with pkg/bus/bootstrap.go, then edit the stream or, if it holds nothing you need, delete it and let the services create it",
			kind, name, err, stream)
	}
	return fmt.Errorf("create %s %s: %w", kind, name, err)
}

// IsNotFound reports whether err says a key, object or stream is missing.
func IsNotFound(err error) bool {
	return errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrObjectNotFound) ||
		errors.Is(err, jetstream.ErrStreamNotFound)
}

// EnvReplicas is the environment variable every program reads its
// --replicas default from.
const EnvReplicas = "JETSTREAM_REPLICAS"

// ParseReplicas reads a --replicas value: 1 to MaxReplicas.
func ParseReplicas(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 1 || n > MaxReplicas {
		return 0, fmt.Errorf("--replicas (or %s) %q: want 1 on a single server, 3 on a 3-node cluster (1 to %d)", EnvReplicas, s, MaxReplicas)
	}
	return n, nil
}

// CommandMaxAge is how long CHROMA_CMDS keeps a command, taken or not: an
// operation whose command is older no worker can end any more.
const CommandMaxAge = 7 * 24 * time.Hour
