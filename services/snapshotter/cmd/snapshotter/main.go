// Command snapshotter runs one snapshotter instance against an existing NATS
// server (or cluster) and Chroma.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/crypt"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/metrics"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/natsconn"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/svcmain"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
	"github.com/nats-io/nats.go"
)

func main() { svcmain.Main("snapshotter", run) }

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("snapshotter", flag.ContinueOnError)
	natsURL := fs.String("nats-url", svcmain.Env("NATS_URL", nats.DefaultURL), "NATS server URL (env NATS_URL)")
	prefix := fs.String("prefix", svcmain.Env("CHROMA_PREFIX", contract.DefaultPrefix), "subject prefix (env CHROMA_PREFIX)")
	var conn natsconn.Config
	conn.RegisterFlags(fs)
	var cfg snapshotter.Config
	var cf svcmain.Chroma
	cf.Register(fs, "Chroma server URL")
	fs.StringVar(&cfg.Instance, "instance", svcmain.Instance("snapshotter"), "instance name, unique among instances (env INSTANCE; default service-host-pid)")
	replicas := fs.String("replicas", svcmain.Env(bus.EnvReplicas, "1"), "copies JetStream keeps of the streams, buckets and object store this instance creates: 1 on one server, 3 on a cluster (env JETSTREAM_REPLICAS)")
	fs.StringVar(&cfg.DataDir, "data-dir", os.Getenv("DATA_DIR"), "path whose free space health reports (env DATA_DIR)")
	fs.DurationVar(&cfg.AckWait, "ack-wait", 30*time.Second, "redeliver a job whose worker is silent this long")
	fs.IntVar(&cfg.FetchWorkers, "fetch-workers", 2, "pages fetched from Chroma in parallel")
	retention := fs.String("retention", svcmain.Env("RETENTION", "7d"), "delete snapshots older than this, daily at 00:00 UTC, unless kept: a duration (72h), days (7d) or off (env RETENTION)")
	// 120 MiB: peak RSS 116-131 MB in the bench, whatever the collection's
	// size; at 100 MiB it was 107-115 MB, for 0.1-0.27 s more CPU per
	// 50,000 x 768 snapshot spent collecting and returning memory.
	setMemoryLimit := svcmain.MemoryLimit(fs, 120)
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile to this file until exit (for benchmarks)")
	metricsListen := fs.String("metrics-listen", os.Getenv("METRICS_LISTEN"), "host:port serving Prometheus /metrics and /healthz (env METRICS_LISTEN; off when empty)")
	auditConsumers := fs.String("audit-consumers", svcmain.Env("AUDIT_CONSUMERS", metrics.DefaultAuditConsumer), "the auditors' durable consumers on CHROMA_AUDIT, comma-separated: audit_lag_messages is the largest of their backlogs (env AUDIT_CONSUMERS)")
	keys := crypt.ConfigFromEnv()
	fs.StringVar(&keys.Recipients, "age-recipients", keys.Recipients, "encrypt every new archive with age to these X25519 public keys (age1..., comma-separated; env AGE_RECIPIENTS)")
	fs.StringVar(&keys.RecipientsFile, "age-recipients-file", keys.RecipientsFile, "file of age public keys to encrypt to, one per line (env AGE_RECIPIENTS_FILE)")
	fs.StringVar(&keys.IdentityFile, "age-identity-file", keys.IdentityFile, "age identity file (AGE-SECRET-KEY-1...) to decrypt archives for a full verify and for importing encrypted files (env AGE_IDENTITY_FILE)")
	svcmain.RedactDefaults(fs, "nats-url")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var err error
	if cfg.Replicas, err = bus.ParseReplicas(*replicas); err != nil {
		return err
	}
	if cfg.Retention, err = snapshotter.ParseRetention(*retention); err != nil {
		return fmt.Errorf("--retention: %w", err)
	}
	if cfg.Recipients, cfg.Identities, err = keys.Load(); err != nil {
		return err
	}
	setMemoryLimit()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	log, err := svcmain.Logger()
	if err != nil {
		return err
	}
	if cfg.Recipients != nil {
		log.Info("new archives are encrypted with age", "recipients", cfg.Recipients.String())
	}
	if cfg.Identities != nil {
		log.Info("age identity loaded", "identity", cfg.Identities)
	}
	subj, err := contract.NewSubjects(*prefix)
	if err != nil {
		return err
	}
	cfg.ChromaURL = cf.URL
	cc, err := cf.Client(log)
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
	svc, err := snapshotter.New(cfg, nc, subj, cc, log)
	if err != nil {
		return err
	}
	return ep.Serve(ctx, svc.Run)
}
