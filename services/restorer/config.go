package restorer

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/crypt"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/metrics"
)

// Config configures a restorer instance.
type Config struct {
	// ChromaURL is the Chroma server rollbacks restore into by default, the
	// one the snapshotter takes safety snapshots of.
	ChromaURL string
	// ChromaToken and ChromaAuthHeader authenticate the clients the restorer
	// builds for other Chroma servers (a request's chroma_url). The client
	// for ChromaURL is passed to New ready-made.
	ChromaToken      string
	ChromaAuthHeader chroma.AuthHeader
	// AllowedChromaURLs are the other Chroma servers a request may restore
	// into (its chroma_url); "*" allows any. Empty allows none: the token
	// is never sent to a server an API caller names unless allowed here.
	AllowedChromaURLs []string
	// Instance names this instance in logs, audit events and micro stats.
	Instance string
	// Replicas is how many copies JetStream keeps of the streams, buckets
	// and object store this instance creates: 1 on a single server, 3 on
	// a cluster (default 1; every instance should ask for the same).
	Replicas int
	// AckWait is how long a job may go without an in-progress ack before it
	// is given to another instance.
	AckWait time.Duration
	// MaxDeliver bounds how often a job is tried after workers died.
	MaxDeliver int
	// AddWorkers is the number of add requests in flight per collection.
	// With 1 (the default) records keep their insertion order, so a
	// snapshot of the restored collection has the archive's content digest;
	// Chroma's add rate is bound by the server, so more rarely help.
	AddWorkers int
	// DefaultAddRate is the records/s of 384-d records a plan's estimate
	// assumes before a restore into its Chroma measured one; records of
	// other dimensions are scaled as the measured rate is (addModel).
	DefaultAddRate float64
	// LeaseTTL is how long a lease outlives its holder's last renewal.
	LeaseTTL time.Duration
	// LeftoverRetry is how often what stopped rollbacks could not take back
	// (Chroma did not answer) is tried again (default 1m).
	LeftoverRetry time.Duration
	// SafetySnapshotTimeout bounds the wait for the safety snapshot.
	SafetySnapshotTimeout time.Duration
	// RequestTimeout bounds a request to another service (the snapshotter).
	RequestTimeout time.Duration
	// Metrics records how rollbacks end and which requests are refused;
	// nil records nothing.
	Metrics *metrics.Registry
	// Identities decrypt archives encrypted at rest with age; without them
	// a rollback to an encrypted snapshot is refused before anything changes.
	Identities *crypt.Identities
	// Quiesce, when set, is called once the write fence of the restorer's
	// own Chroma is raised and before the rollback reads or changes the
	// database; it returns once no write admitted before the fence can
	// still land. serve passes its in-process read-only gate's
	// (gate.Gate.Quiesce): the gate learns of the fence from a KV watch,
	// and a write it let through just before, still in flight, would
	// otherwise land after the safety snapshot read the collection and be
	// lost in the swap.
	Quiesce func(ctx context.Context, tenant, database string) error
}

func (c *Config) setDefaults() {
	if c.Instance == "" {
		c.Instance = "restorer"
	}
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if c.MaxDeliver <= 0 {
		c.MaxDeliver = 5
	}
	if c.AddWorkers <= 0 {
		c.AddWorkers = 1
	}
	if c.DefaultAddRate <= 0 {
		c.DefaultAddRate = 1000
	}
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = 2 * time.Minute
	}
	if c.LeftoverRetry <= 0 {
		c.LeftoverRetry = time.Minute
	}
	if c.SafetySnapshotTimeout <= 0 {
		c.SafetySnapshotTimeout = time.Hour
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 30 * time.Second
	}
}

// Validate reports the first invalid field.
func (c *Config) Validate() error {
	if c.ChromaURL == "" {
		return errors.New("chroma URL is required (--chroma-url or CHROMA_URL)")
	}
	if _, err := normalizeURL(c.ChromaURL); err != nil {
		return fmt.Errorf("chroma URL: %w", err)
	}
	for _, u := range c.AllowedChromaURLs {
		if u == "*" {
			continue
		}
		if _, err := normalizeURL(u); err != nil {
			return fmt.Errorf("allowed chroma URL: %w", err)
		}
	}
	if c.AckWait < time.Second {
		return fmt.Errorf("ack wait %s is too short: at least 1s", c.AckWait)
	}
	if c.LeaseTTL < 3*time.Second {
		return fmt.Errorf("lease TTL %s is too short: at least 3s", c.LeaseTTL)
	}
	return nil
}

// normalizeURL makes URLs comparable: lower-case scheme and host, no
// trailing slash.
func normalizeURL(raw string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		var ue *url.Error // its text repeats the URL, credentials included
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return "", fmt.Errorf("%q: %w", chroma.RedactURL(raw), err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("%q is not an http(s) URL with a host", chroma.RedactURL(raw))
	}
	u.Scheme = strings.ToLower(u.Scheme)
	u.Host = strings.ToLower(u.Host)
	u.User = nil
	return strings.TrimRight(u.String(), "/"), nil
}
