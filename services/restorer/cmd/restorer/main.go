// Command restorer runs one restorer instance against an existing NATS
// server (or cluster) and Chroma.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/crypt"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/metrics"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/natsconn"
	"github.com/chromadb-rollback/chromadb-rollback/services/restorer"
	"github.com/nats-io/nats.go"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "restorer:", err)
		os.Exit(1)
	}
}

func env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("restorer", flag.ContinueOnError)
	natsURL := fs.String("nats-url", env("NATS_URL", nats.DefaultURL), "NATS server URL (env NATS_URL)")
	prefix := fs.String("prefix", env("CHROMA_PREFIX", contract.DefaultPrefix), "subject prefix (env CHROMA_PREFIX)")
	var conn natsconn.Config
	conn.RegisterFlags(fs)
	authHeader := fs.String("chroma-auth-header", env("CHROMA_AUTH_HEADER", "x-chroma-token"), "how the token is sent: x-chroma-token or bearer (env CHROMA_AUTH_HEADER)")
	allow := fs.String("allow-chroma-url", os.Getenv("ALLOW_CHROMA_URLS"), "comma-separated other Chroma servers a rollback may restore into, or * (env ALLOW_CHROMA_URLS)")
	var cfg restorer.Config
	fs.StringVar(&cfg.ChromaURL, "chroma-url", os.Getenv("CHROMA_URL"), "Chroma server URL (env CHROMA_URL)")
	fs.StringVar(&cfg.Instance, "instance", env("INSTANCE", "restorer"), "instance name (env INSTANCE)")
	replicas := fs.String("replicas", env(bus.EnvReplicas, "1"), "copies JetStream keeps of the streams, buckets and object store this instance creates: 1 on one server, 3 on a cluster (env JETSTREAM_REPLICAS)")
	fs.DurationVar(&cfg.AckWait, "ack-wait", 30*time.Second, "redeliver a job whose worker is silent this long")
	fs.DurationVar(&cfg.LeaseTTL, "lease-ttl", 2*time.Minute, "a lease outlives its holder's last renewal this long")
	fs.IntVar(&cfg.AddWorkers, "add-workers", 1, "add requests in flight per collection (1 keeps insertion order)")
	fs.Float64Var(&cfg.DefaultAddRate, "default-add-rate", 1000, "records/s a plan's estimate assumes before one was measured")
	metricsListen := fs.String("metrics-listen", os.Getenv("METRICS_LISTEN"), "host:port serving Prometheus /metrics and /healthz (env METRICS_LISTEN; off when empty)")
	identityFile := fs.String("age-identity-file", os.Getenv(crypt.EnvIdentityFile), "age identity file (AGE-SECRET-KEY-1...) that decrypts archives encrypted at rest (env AGE_IDENTITY_FILE)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var err error
	if cfg.Replicas, err = bus.ParseReplicas(*replicas); err != nil {
		return err
	}
	if cfg.Identities, err = crypt.LoadIdentities(*identityFile); err != nil {
		return fmt.Errorf("--age-identity-file: %w", err)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(env("LOG_LEVEL", "info"))); err != nil {
		return fmt.Errorf("LOG_LEVEL: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if cfg.Identities != nil {
		log.Info("age identity loaded", "identity", cfg.Identities)
	}
	subj, err := contract.NewSubjects(*prefix)
	if err != nil {
		return err
	}
	if cfg.ChromaURL == "" {
		return fmt.Errorf("--chroma-url (or CHROMA_URL) is required")
	}
	switch strings.ToLower(*authHeader) {
	case "x-chroma-token", "":
		cfg.ChromaAuthHeader = chroma.AuthXChromaToken
	case "bearer", "authorization":
		cfg.ChromaAuthHeader = chroma.AuthBearer
	default:
		return fmt.Errorf("--chroma-auth-header %q: want x-chroma-token or bearer", *authHeader)
	}
	cfg.ChromaToken = os.Getenv("CHROMA_TOKEN")
	for _, u := range strings.Split(*allow, ",") {
		if u = strings.TrimSpace(u); u != "" {
			cfg.AllowedChromaURLs = append(cfg.AllowedChromaURLs, u)
		}
	}
	opts := []chroma.Option{chroma.WithLogger(log), chroma.WithAuthHeader(cfg.ChromaAuthHeader)}
	if cfg.ChromaToken != "" {
		opts = append(opts, chroma.WithToken(cfg.ChromaToken))
	}
	cc, err := chroma.New(cfg.ChromaURL, opts...)
	if err != nil {
		return err
	}
	// natsconn names the URL with any credentials in it redacted.
	nc, err := conn.Connect(*natsURL, nats.Name(cfg.Instance), nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	defer nc.Close()
	ep, err := metrics.OpenEndpoint(metrics.EndpointOptions{Listen: *metricsListen, NATS: nc, Chroma: cc.Heartbeat, ChromaURL: cfg.ChromaURL, Log: log})
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
