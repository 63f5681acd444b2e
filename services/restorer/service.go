package restorer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
)

// Version is the restorer's SemVer, as `nats micro ls` shows it.
const Version = "0.1.0"

// ServiceName is the micro service name.
const ServiceName = "chromadb-restorer"

// consumerName is the durable consumer of rollback commands.
const consumerName = "restorer"

// auditService names the restorer in audit subjects and events.
const auditService = "restorer"

// Service is one restorer instance.
type Service struct {
	cfg    Config
	nc     *nats.Conn
	subj   contract.Subjects
	chroma *chroma.Client
	log    *slog.Logger
	ownURL string

	assets *bus.Assets
	audit  *bus.Auditor

	mu sync.Mutex
	// addRates is what the restores here measured, by normalized Chroma
	// URL: what plans assume when CHROMA_STATE cannot be read.
	addRates map[string]contract.AddRate
	clients  map[string]*chroma.Client // other Chroma servers, by normalized URL

	// hook, set only by tests, is called at named points of a job.
	hook func(ctx context.Context, p hookPoint) error
	// splitMin is the size from which the last batch written is split
	// (see tailParts); tests lower it.
	splitMin int
	// lookupTimeout bounds a plan's lookup of the target tenant and
	// database (defaultLookupTimeout); tests lower it.
	lookupTimeout time.Duration
	// finishTimeout bounds the end of a job (a minute): the cleanup after
	// a failure or cancel, and as much again what follows it; tests lower it.
	finishTimeout time.Duration
}

// hookPoint says where a job is, for tests that stop it there.
type hookPoint struct {
	Name       string // "batch", "part" (of a split batch), "collection" (finished), "swap_renamed_old"
	OpID       string
	Attempt    int
	Collection string // snapshot name
	Batch      int    // batches of the collection written and verified
	Client     *chroma.Client
	Tenant     string
	Database   string
	WorkID     string // the staging (or in-place) collection's id
}

// New returns a Service; Run starts it. cc is the client for cfg.ChromaURL.
func New(cfg Config, nc *nats.Conn, subj contract.Subjects, cc *chroma.Client, log *slog.Logger) (*Service, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if nc == nil || cc == nil {
		return nil, errors.New("restorer: a NATS connection and a Chroma client are required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	own, _ := normalizeURL(cfg.ChromaURL)
	// The URL is only shown (logs); cc connects.
	cfg.ChromaURL = chroma.RedactURL(cfg.ChromaURL)
	return &Service{
		cfg: cfg, nc: nc, subj: subj, chroma: cc, ownURL: own,
		log:      log.With("service", auditService, "instance", cfg.Instance),
		clients:  map[string]*chroma.Client{},
		addRates: map[string]contract.AddRate{},
		splitMin: splitMin, lookupTimeout: defaultLookupTimeout, finishTimeout: time.Minute,
	}, nil
}

// Run bootstraps JetStream, serves the rollback API and takes rollback jobs
// until ctx is done.
func (s *Service) Run(ctx context.Context) error {
	js, err := jetstream.New(s.nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	bctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	s.assets, err = bus.Bootstrap(bctx, js, bus.Config{Subjects: s.subj, Replicas: s.cfg.Replicas})
	cancel()
	if err != nil {
		return err
	}
	s.audit = bus.NewAuditor(js, s.subj, auditService, s.log)

	// The identities' public keys, so that health-check can tell whether
	// this restorer decrypts what the snapshotter encrypts.
	meta := map[string]string{"instance": s.cfg.Instance}
	if pubs := s.cfg.Identities.Recipients(); len(pubs) > 0 {
		meta[contract.MetaAgeIdentities] = strings.Join(pubs, ",")
	}
	svc, err := micro.AddService(s.nc, micro.Config{
		Name:        ServiceName,
		Version:     Version,
		Description: "verified rollbacks of Chroma from snapshots: plan, start, status, cancel",
		Metadata:    meta,
	})
	if err != nil {
		return fmt.Errorf("add micro service: %w", err)
	}
	defer svc.Stop()
	g := svc.AddGroup(s.subj.APIGroup("rollback"))
	for name, h := range map[string]func(context.Context, micro.Request){
		"plan":   s.handlePlan,
		"start":  s.handleStart,
		"status": s.handleStatus,
		"cancel": s.handleCancel,
	} {
		if err := g.AddEndpoint(name, bus.Handler(ctx, s.log, h)); err != nil {
			return fmt.Errorf("add endpoint %s: %w", name, err)
		}
	}
	if err := bus.AddChromaHealth(ctx, svc, s.subj, "restorer", s.cfg.Instance, s.cfg.ChromaURL, s.chroma.Version, s.log); err != nil {
		return err
	}

	cons, err := s.assets.Commands.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       consumerName,
		Description:   "rollback jobs for the restorer",
		FilterSubject: s.subj.Command("rollback"),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.cfg.AckWait,
		MaxDeliver:    s.cfg.MaxDeliver,
		MaxAckPending: 64,
	})
	if err != nil {
		return fmt.Errorf("create consumer: %w", err)
	}
	if err := bus.OnMaxDeliveries(ctx, s.nc, s.assets.JS, contract.StreamCommands, consumerName, s.log, s.givenUp); err != nil {
		return err
	}
	lctx, stopLeftovers := context.WithCancel(ctx)
	var leftovers sync.WaitGroup
	leftovers.Go(func() { s.leftoversLoop(lctx) })
	defer leftovers.Wait()
	defer stopLeftovers()
	s.log.Info("restorer started", "chroma_url", s.cfg.ChromaURL)
	return s.consume(ctx, cons)
}

// consume takes one job at a time: a restore keeps Chroma busy on its own.
func (s *Service) consume(ctx context.Context, cons jetstream.Consumer) error {
	for ctx.Err() == nil {
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		batch, err := cons.Fetch(1, jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			if ctx.Err() != nil {
				break
			}
			s.log.Warn("fetch job failed", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		for msg := range batch.Messages() {
			s.handleJob(ctx, msg)
		}
		cancel()
		if err := batch.Error(); err != nil && ctx.Err() == nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			s.log.Debug("fetch ended", "err", err)
			select { // no consumer leader (an election): do not spin
			case <-ctx.Done():
			case <-time.After(bus.FetchPause):
			}
		}
	}
	s.log.Info("restorer stopped")
	return nil
}

// targetClient returns the client for a request's chroma_url: the
// restorer's own for "" or a URL of its own server, else a client for an
// allowed URL. The URL it returns names the server in leases, plans and
// add rates: the own URL for any alias of the own server (another host
// name for its address, a default port written out), else the first URL
// of AllowedChromaURLs that reaches the same server, so that aliases of
// one server share its lease (see sameServer).
func (s *Service) targetClient(raw string) (*chroma.Client, string, *apiError) {
	if raw == "" {
		return s.chroma, s.ownURL, nil
	}
	u, err := normalizeURL(raw)
	if err != nil {
		return nil, "", badRequest("chroma_url", "chroma_url: %v", err)
	}
	// u's addresses are looked up once for all the comparisons.
	ctx := context.Background()
	us, ok := parseServer(u)
	if !ok {
		return nil, "", badRequest("chroma_url", "chroma_url %s is not a URL", u)
	}
	if own, ok := parseServer(s.ownURL); u == s.ownURL || ok && us.same(ctx, own) {
		return s.chroma, s.ownURL, nil
	}
	canon := ""
	for _, a := range s.cfg.AllowedChromaURLs {
		n, err := normalizeURL(a)
		if a == "*" || err != nil {
			continue
		}
		if as, ok := parseServer(n); n == u || ok && us.same(ctx, as) {
			canon = n
			break
		}
	}
	switch {
	case canon != "":
		u = canon
	case !slices.Contains(s.cfg.AllowedChromaURLs, "*"):
		return nil, "", badRequest("chroma_url", "chroma_url %s is not allowed: this restorer writes to %s and to the servers it was started with in --allow-chroma-url", u, s.ownURL)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.clients[u]; ok {
		return c, u, nil
	}
	opts := []chroma.Option{chroma.WithLogger(s.log), chroma.WithAuthHeader(s.cfg.ChromaAuthHeader)}
	if s.cfg.ChromaToken != "" {
		opts = append(opts, chroma.WithToken(s.cfg.ChromaToken))
	}
	c, err := chroma.New(u, opts...)
	if err != nil {
		return nil, "", badRequest("chroma_url", "%v", err)
	}
	s.clients[u] = c
	return c, u, nil
}

// addModel is how long a plan into chromaURL assumes writing takes, and
// whether it was measured: by the last restores into that Chroma (on any
// instance, kept in CHROMA_STATE, AddRateKey), else by this instance, else
// the configured default rate.
func (s *Service) addModel(ctx context.Context, chromaURL string) (addModel, bool) {
	if rec := s.knownAddRate(ctx, chromaURL); rec != nil {
		// Fitted again from its samples: a model kept by an older
		// restorer is fitted as this one fits it.
		if m, ok := fitAddModel(rec.Samples); ok {
			return m, true
		}
		return addModel{perCollection: rec.SecondsPerCollection, perRecord: 1 / rec.RecordsPerSecond, dim: rec.Dimension, collectionAssumed: rec.SecondsPerCollectionAssumed}, true
	}
	return defaultAddModel(s.cfg.DefaultAddRate), false
}

// knownAddRate is what the restores into chromaURL measured: as kept in
// CHROMA_STATE, else as this instance measured it; nil when neither knows.
func (s *Service) knownAddRate(ctx context.Context, chromaURL string) *contract.AddRate {
	rec, err := s.storedAddRate(ctx, chromaURL)
	if err != nil {
		s.log.Warn("could not read the measured add rate; using this instance's", "err", err)
	}
	if rec == nil {
		s.mu.Lock()
		if r, ok := s.addRates[chromaURL]; ok {
			rec = &r
		}
		s.mu.Unlock()
	}
	return rec
}

// storedAddRate reads the add rate kept for chromaURL; nil when there is
// none or it cannot be used.
func (s *Service) storedAddRate(ctx context.Context, chromaURL string) (*contract.AddRate, error) {
	key := contract.AddRateKey(chromaURL)
	rec, _, err := bus.GetJSON[contract.AddRate](ctx, s.assets.State, key, key)
	if err != nil || rec == nil {
		return nil, err
	}
	if rec.ChromaURL != chromaURL || !(rec.RecordsPerSecond > 0) {
		return nil, nil // another URL's (a hash collision), or nonsense
	}
	return rec, nil
}

// recordAddRate adds what a restore into chromaURL measured to the last
// restores' and fits the model again, here and in CHROMA_STATE: records
// with values embedding values in all into collections. Restores of fewer
// than 500 records are noise.
func (s *Service) recordAddRate(ctx context.Context, chromaURL string, collections int, records, values int64, seconds float64) {
	if records < 500 || seconds <= 0 {
		return
	}
	var samples []contract.AddRateSample
	if prev := s.knownAddRate(ctx, chromaURL); prev != nil {
		samples = prev.Samples
		if len(samples) == 0 && prev.Records > 0 && prev.Seconds > 0 {
			// Kept before samples were: its last restore.
			samples = []contract.AddRateSample{{Records: prev.Records, Seconds: prev.Seconds}}
		}
	}
	samples = append(samples, contract.AddRateSample{Collections: collections, Records: records, Values: values, Seconds: seconds})
	samples = samples[max(0, len(samples)-addModelSamples):]
	m, _ := fitAddModel(samples)
	rec := contract.AddRate{Envelope: contract.NewEnvelope(contract.TypeAddRate), ChromaURL: chromaURL,
		RecordsPerSecond: 1 / m.perRecord, Dimension: m.dim, SecondsPerCollection: m.perCollection, SecondsPerCollectionAssumed: m.collectionAssumed,
		Records: records, Seconds: seconds, Samples: samples, MeasuredAt: time.Now().UTC()}
	s.mu.Lock()
	s.addRates[chromaURL] = rec
	s.mu.Unlock()
	data, err := json.Marshal(rec)
	if err == nil {
		_, err = s.assets.State.Put(ctx, contract.AddRateKey(chromaURL), data)
	}
	if err != nil {
		s.log.Warn("could not keep the measured add rate; plans on other instances will not see it", "err", err)
	}
}

func (s *Service) callHook(ctx context.Context, p hookPoint) error {
	if s.hook == nil {
		return nil
	}
	return s.hook(ctx, p)
}
