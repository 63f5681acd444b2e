// Command restorer runs one restorer instance against an existing NATS
// server (or cluster) and Chroma.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/crypt"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/metrics"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/natsconn"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/svcmain"
	"github.com/chromadb-rollback/chromadb-rollback/services/restorer"
	"github.com/nats-io/nats.go"
)

func main() { svcmain.Main("restorer", run) }

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("restorer", flag.ContinueOnError)
	natsURL := fs.String("nats-url", svcmain.Env("NATS_URL", nats.DefaultURL), "NATS server URL (env NATS_URL)")
	prefix := fs.String("prefix", svcmain.Env("CHROMA_PREFIX", contract.DefaultPrefix), "subject prefix (env CHROMA_PREFIX)")
	var conn natsconn.Config
	conn.RegisterFlags(fs)
	allow := fs.String("allow-chroma-url", os.Getenv("ALLOW_CHROMA_URLS"), "comma-separated other Chroma servers a rollback may restore into, or * (env ALLOW_CHROMA_URLS)")
	var cfg restorer.Config
	var cf svcmain.Chroma
	cf.Register(fs, "Chroma server URL")
	fs.StringVar(&cfg.Instance, "instance", svcmain.Instance("restorer"), "instance name, unique among instances (env INSTANCE; default service-host-pid)")
	replicas := fs.String("replicas", svcmain.Env(bus.EnvReplicas, "1"), "copies JetStream keeps of the streams, buckets and object store this instance creates: 1 on one server, 3 on a cluster (env JETSTREAM_REPLICAS)")
	fs.DurationVar(&cfg.AckWait, "ack-wait", 30*time.Second, "redeliver a job whose worker is silent this long")
	fs.DurationVar(&cfg.LeaseTTL, "lease-ttl", 2*time.Minute, "a lease outlives its holder's last renewal this long")
	fs.DurationVar(&cfg.LeftoverRetry, "leftover-retry", time.Minute, "retry this often what a stopped rollback could not take back while Chroma did not answer")
	fs.IntVar(&cfg.AddWorkers, "add-workers", 1, "add requests in flight per collection (1 keeps insertion order)")
	fs.Float64Var(&cfg.DefaultAddRate, "default-add-rate", 1000, "records/s of 384-d records a plan's estimate assumes before one was measured (scaled to the plan's dimensions)")
	metricsListen := fs.String("metrics-listen", os.Getenv("METRICS_LISTEN"), "host:port serving Prometheus /metrics and /healthz (env METRICS_LISTEN; off when empty)")
	auditConsumers := fs.String("audit-consumers", svcmain.Env("AUDIT_CONSUMERS", metrics.DefaultAuditConsumer), "the auditors' durable consumers on CHROMA_AUDIT, comma-separated: audit_lag_messages is the largest of their backlogs (env AUDIT_CONSUMERS)")
	identityFile := fs.String("age-identity-file", os.Getenv(crypt.EnvIdentityFile), "age identity file (AGE-SECRET-KEY-1...) that decrypts archives encrypted at rest (env AGE_IDENTITY_FILE)")
	setMemoryLimit := svcmain.MemoryLimit(fs, 120)
	svcmain.RedactDefaults(fs, "nats-url")
	if err := fs.Parse(args); err != nil {
		return err
	}
	setMemoryLimit()
	var err error
	if cfg.Replicas, err = bus.ParseReplicas(*replicas); err != nil {
		return err
	}
	if cfg.Identities, err = crypt.LoadIdentities(*identityFile); err != nil {
		return fmt.Errorf("--age-identity-file: %w", err)
	}
	log, err := svcmain.Logger()
	if err != nil {
		return err
	}
	if cfg.Identities != nil {
		log.Info("age identity loaded", "identity", cfg.Identities)
	}
	subj, err := contract.NewSubjects(*prefix)
	if err != nil {
		return err
	}
	for _, u := range strings.Split(*allow, ",") {
		if u = strings.TrimSpace(u); u != "" {
			cfg.AllowedChromaURLs = append(cfg.AllowedChromaURLs, u)
		}
	}
	cc, err := cf.Client(log)
	if err != nil {
		return err
	}
	// The token also authenticates to the other Chroma servers a rollback
	// may restore into (--allow-chroma-url).
	cfg.ChromaURL, cfg.ChromaToken = cf.URL, cf.Token
	cfg.ChromaAuthHeader, err = cf.Header()
	if err != nil {
		return err
	}
	// natsconn names the URL with any credentials in it redacted.
	nc, err := conn.Connect(*natsURL, nats.Name(cfg.Instance), nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	defer nc.Close()
	ep, err := metrics.OpenEndpoint(metrics.EndpointOptions{Listen: *metricsListen, NATS: nc, Chroma: cc.Heartbeat, ChromaURL: cfg.ChromaURL, Log: log,
		State: metrics.StateOptions{AuditConsumer: *auditConsumers}})
	if err != nil {
		return err
	}
	cfg.Metrics = ep.Metrics()
	svc, err := restorer.New(cfg, nc, subj, cc, log)
	if err != nil {
		return err
	}
	return ep.Serve(ctx, svc.Run)
}
