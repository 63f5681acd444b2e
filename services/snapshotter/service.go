package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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

// Version is the snapshotter's SemVer, as `nats micro ls` shows it.
const Version = "0.1.0"

// ServiceName is the micro service name.
const ServiceName = "chromadb-snapshotter"

const consumerName = "snapshotter"

// Service is one snapshotter instance.
type Service struct {
	cfg    Config
	nc     *nats.Conn
	subj   contract.Subjects
	chroma *chroma.Client
	log    *slog.Logger

	assets *bus.Assets
	audit  *bus.Auditor
}

// New returns a Service; Run starts it.
func New(cfg Config, nc *nats.Conn, subj contract.Subjects, cc *chroma.Client, log *slog.Logger) (*Service, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// The URL is only shown (logs, health, manifests); cc connects.
	cfg.ChromaURL = chroma.RedactURL(cfg.ChromaURL)
	return &Service{cfg: cfg, nc: nc, subj: subj, chroma: cc, log: log.With("service", "snapshotter", "instance", cfg.Instance)}, nil
}

// Run bootstraps JetStream, serves the API and takes snapshot jobs until ctx
// is done.
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
	s.audit = bus.NewAuditor(js, s.subj, "snapshotter", s.log)

	meta := map[string]string{"instance": s.cfg.Instance}
	if keys := s.cfg.Recipients.Keys(); len(keys) > 0 {
		meta[contract.MetaAgeRecipients] = strings.Join(keys, ",")
	}
	svc, err := micro.AddService(s.nc, micro.Config{
		Name:        ServiceName,
		Version:     Version,
		Description: "snapshots of Chroma into the JetStream object store",
		Metadata:    meta,
	})
	if err != nil {
		return fmt.Errorf("add micro service: %w", err)
	}
	defer svc.Stop()
	g := svc.AddGroup(s.subj.APIGroup("snapshot"))
	for name, h := range map[string]func(context.Context, micro.Request){
		"create":  s.handleCreate,
		"verify":  s.handleVerify,
		"list":    s.handleList,
		"info":    s.handleInfo,
		"delete":  s.handleDelete,
		"import":  s.handleImport,
		"cleanup": s.handleCleanup,
		"keep":    s.handleKeep,
	} {
		if err := g.AddEndpoint(name, bus.Handler(ctx, s.log, h)); err != nil {
			return fmt.Errorf("add endpoint %s: %w", name, err)
		}
	}
	if err := svc.AddEndpoint("health", bus.Handler(ctx, s.log, s.handleHealth), micro.WithEndpointSubject(s.subj.API("health"))); err != nil {
		return fmt.Errorf("add endpoint health: %w", err)
	}
	if err := bus.AddChromaHealth(ctx, svc, s.subj, "snapshotter", s.cfg.Instance, s.cfg.ChromaURL, s.chroma.Version, s.log); err != nil {
		return err
	}

	cons, err := s.assets.Commands.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       consumerName,
		FilterSubject: s.subj.Command("snapshot"),
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
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { s.retentionLoop(ctx) })
	s.log.Info("snapshotter started", "chroma_url", s.cfg.ChromaURL, "retention", retentionString(s.cfg.Retention))
	return s.consume(ctx, cons)
}

// consume takes one job at a time: a snapshot already keeps two cores busy.
func (s *Service) consume(ctx context.Context, cons jetstream.Consumer) error {
	for ctx.Err() == nil {
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(time.Second))
		if err != nil {
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
		if err := batch.Error(); err != nil && ctx.Err() == nil && !errors.Is(err, nats.ErrTimeout) {
			s.log.Debug("fetch ended", "err", err)
			select { // no consumer leader (an election): do not spin
			case <-ctx.Done():
			case <-time.After(bus.FetchPause):
			}
		}
	}
	s.log.Info("snapshotter stopped")
	return nil
}
