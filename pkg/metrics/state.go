package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of StateOptions.
const (
	DefaultStateTimeout  = 2 * time.Second
	DefaultAuditConsumer = "auditor"
)

// StateOptions configures the gauges read from JetStream at scrape time.
type StateOptions struct {
	// Timeout bounds the reads of one scrape (default 2 s).
	Timeout time.Duration
	// AuditConsumer is the auditor's durable consumer of the audit stream,
	// whose unacknowledged messages are the audit lag (default "auditor").
	// Several auditors' consumers, comma-separated (the StatefulSet's
	// auditor-0,auditor-1), give the largest of their lags.
	AuditConsumer string
	// AuditOnly reads only the audit lag: for the auditor, whose NATS
	// user may read no bucket (deploy/nats/accounts.conf), so fence_raised
	// and the snapshot ages are left to the other services.
	AuditOnly bool
}

// WatchState adds the gauges read from JetStream at every scrape:
// fence_raised, newest_verified_snapshot_age_seconds,
// newest_full_snapshot_age_seconds, audit_lag_messages and state_scrape_ok. Only the first call on a registry counts: services
// in one process share them.
func (r *Registry) WatchState(js jetstream.JetStream, opts StateOptions) {
	if r == nil {
		return
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultStateTimeout
	}
	if opts.AuditConsumer == "" {
		opts.AuditConsumer = DefaultAuditConsumer
	}
	r.stateOnce.Do(func() { r.reg.MustRegister(newStateCollector(js, opts)) })
}

var (
	fenceDesc = prometheus.NewDesc(Namespace+"_fence_raised",
		"1 while a rollback's write fence is raised on the tenant/database, else 0 (databases with a snapshot or a fence).",
		[]string{"tenant", "database"}, nil)
	ageDesc = prometheus.NewDesc(Namespace+"_newest_verified_snapshot_age_seconds",
		"Seconds since the newest verified snapshot of the tenant/database was started (its data is at least this old); for an imported archive, since its original snapshot was.",
		[]string{"tenant", "database"}, nil)
	fullAgeDesc = prometheus.NewDesc(Namespace+"_newest_full_snapshot_age_seconds",
		"Seconds since the newest verified snapshot holding every collection of the tenant/database was started (for an imported archive, its original); partial ones (named collections, a rollback's safety snapshot) do not count.",
		[]string{"tenant", "database"}, nil)
	lagDesc = prometheus.NewDesc(Namespace+"_audit_lag_messages",
		"Audit events the auditor's durable consumer has not yet acknowledged (0 while the consumer does not exist).", nil, nil)
	stateOKDesc = prometheus.NewDesc(Namespace+"_state_scrape_ok",
		"1 when this scrape read the fences, manifests and audit consumer from JetStream in time; 0 when some series were left out.", nil, nil)
)

// stateCollector reads the JetStream state at scrape time.
type stateCollector struct {
	js   jetstream.JetStream
	opts StateOptions

	mu        sync.Mutex
	manifests jetstream.KeyValue
	state     jetstream.KeyValue
}

func newStateCollector(js jetstream.JetStream, opts StateOptions) *stateCollector {
	return &stateCollector{js: js, opts: opts}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- fenceDesc
	ch <- ageDesc
	ch <- fullAgeDesc
	ch <- lagDesc
	ch <- stateOKDesc
}

// database is a tenant/database pair.
type database struct{ tenant, database string }

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.Timeout)
	defer cancel()
	var (
		wg               sync.WaitGroup
		newest           map[database]newestStarts
		fences           map[database]bool
		lag              uint64
		errM, errF, errL error
	)
	if !c.opts.AuditOnly {
		wg.Go(func() { newest, errM = c.newestSnapshots(ctx) })
		wg.Go(func() { fences, errF = c.fences(ctx) })
	}
	wg.Go(func() { lag, errL = c.auditLag(ctx) })
	wg.Wait()

	now := time.Now()
	for db, n := range newest {
		ch <- prometheus.MustNewConstMetric(ageDesc, prometheus.GaugeValue, max(now.Sub(n.any).Seconds(), 0), db.tenant, db.database)
		if !n.full.IsZero() {
			ch <- prometheus.MustNewConstMetric(fullAgeDesc, prometheus.GaugeValue, max(now.Sub(n.full).Seconds(), 0), db.tenant, db.database)
		}
	}
	if errF == nil {
		for db := range newest {
			if !fences[db] {
				ch <- prometheus.MustNewConstMetric(fenceDesc, prometheus.GaugeValue, 0, db.tenant, db.database)
			}
		}
		for db := range fences {
			ch <- prometheus.MustNewConstMetric(fenceDesc, prometheus.GaugeValue, 1, db.tenant, db.database)
		}
	}
	if errL == nil {
		ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, float64(lag))
	}
	ok := 1.0
	if errM != nil || errF != nil || errL != nil {
		ok = 0
	}
	ch <- prometheus.MustNewConstMetric(stateOKDesc, prometheus.GaugeValue, ok)
}

// buckets opens the manifests and state buckets once.
func (c *stateCollector) buckets(ctx context.Context) (manifests, state jetstream.KeyValue, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.manifests == nil {
		if c.manifests, err = c.js.KeyValue(ctx, contract.BucketManifests); err != nil {
			return nil, nil, fmt.Errorf("bucket %s: %w", contract.BucketManifests, err)
		}
	}
	if c.state == nil {
		if c.state, err = c.js.KeyValue(ctx, contract.BucketState); err != nil {
			return nil, nil, fmt.Errorf("bucket %s: %w", contract.BucketState, err)
		}
	}
	return c.manifests, c.state, nil
}

// newestStarts are the start times of a database's newest verified
// snapshot and of its newest verified one holding every collection (zero
// when all are partial).
type newestStarts struct{ any, full time.Time }

// newestSnapshots returns the newest verified snapshots of every
// tenant/database.
func (c *stateCollector) newestSnapshots(ctx context.Context) (map[database]newestStarts, error) {
	kv, _, err := c.buckets(ctx)
	if err != nil {
		return nil, err
	}
	out := map[database]newestStarts{}
	err = bus.EachValue(ctx, kv, ">", func(_ string, data []byte) error {
		// Only the fields needed: a scrape reads every manifest.
		var m struct {
			Tenant       string                 `json:"tenant"`
			Database     string                 `json:"database"`
			StartedAt    time.Time              `json:"started_at"`
			VerifiedAt   time.Time              `json:"verified_at"`
			Partial      bool                   `json:"partial"`
			ImportedFrom *contract.ImportOrigin `json:"imported_from"`
		}
		if json.Unmarshal(data, &m) != nil || m.VerifiedAt.IsZero() {
			return nil
		}
		db := database{m.Tenant, m.Database}
		cur, ok := out[db]
		// An old archive imported today is not a recent snapshot.
		at := (&contract.SnapshotManifest{StartedAt: m.StartedAt, ImportedFrom: m.ImportedFrom}).TakenAt()
		if !ok || at.After(cur.any) {
			cur.any = at
		}
		if !m.Partial && at.After(cur.full) {
			cur.full = at
		}
		out[db] = cur
		return nil
	})
	return out, err
}

// fences returns the tenant/databases whose write fence is raised.
func (c *stateCollector) fences(ctx context.Context) (map[database]bool, error) {
	_, kv, err := c.buckets(ctx)
	if err != nil {
		return nil, err
	}
	out := map[database]bool{}
	err = bus.EachValue(ctx, kv, "fence.>", func(_ string, data []byte) error {
		var f contract.Fence
		if json.Unmarshal(data, &f) == nil && f.Tenant != "" {
			out[database{f.Tenant, f.Database}] = true
		}
		return nil
	})
	return out, err
}

// auditLag returns the audit events the auditor's consumer has not yet
// acknowledged: pending delivery plus delivered and unacknowledged. With
// several consumers it is the largest backlog; one that does not exist
// counts 0.
func (c *stateCollector) auditLag(ctx context.Context) (uint64, error) {
	var lag uint64
	for name := range strings.SplitSeq(c.opts.AuditConsumer, ",") {
		if name = strings.TrimSpace(name); name == "" {
			continue
		}
		cons, err := c.js.Consumer(ctx, contract.StreamAudit, name)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("consumer %s of %s: %w", name, contract.StreamAudit, err)
		}
		info := cons.CachedInfo()
		lag = max(lag, info.NumPending+uint64(max(info.NumAckPending, 0)))
	}
	return lag, nil
}
