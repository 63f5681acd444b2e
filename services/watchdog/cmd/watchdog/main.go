// Command watchdog runs one watchdog instance against an existing NATS
// server (or cluster) and Chroma.
package main

import (
	"context"
	"errors"
	"flag"
	"os"
	"strings"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/metrics"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/natsconn"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/svcmain"
	"github.com/chromadb-rollback/chromadb-rollback/services/watchdog"
	"github.com/nats-io/nats.go"
)

func main() { svcmain.Main("watchdog", run) }

func splitPaths(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("watchdog", flag.ContinueOnError)
	natsURL := fs.String("nats-url", svcmain.Env("NATS_URL", nats.DefaultURL), "NATS server URL (env NATS_URL)")
	prefix := fs.String("prefix", svcmain.Env("CHROMA_PREFIX", contract.DefaultPrefix), "subject prefix (env CHROMA_PREFIX)")
	var conn natsconn.Config
	conn.RegisterFlags(fs)
	var cfg watchdog.Config
	var cf svcmain.Chroma
	cf.Register(fs, "Chroma server URL whose heartbeat is watched")
	fs.StringVar(&cfg.Instance, "instance", svcmain.Instance("watchdog"), "instance name, unique among instances (env INSTANCE; default service-host-pid)")
	replicas := fs.String("replicas", svcmain.Env(bus.EnvReplicas, "1"), "copies JetStream keeps of the streams, buckets and object store this instance creates: 1 on one server, 3 on a cluster (env JETSTREAM_REPLICAS)")
	settings := watchdog.RegisterFlags(fs, &cfg)
	watch := fs.String("watch-paths", os.Getenv("WATCH_PATHS"), "comma-separated paths whose free space is watched; default the JetStream store and Chroma data dirs (env WATCH_PATHS)")
	jsDir := fs.String("jetstream-store-dir", os.Getenv("JETSTREAM_STORE_DIR"), "the JetStream store directory, watched by default (env JETSTREAM_STORE_DIR)")
	chromaDir := fs.String("chroma-data-dir", os.Getenv("CHROMA_DATA_DIR"), "Chroma's persist directory, watched by default (env CHROMA_DATA_DIR)")
	metricsListen := fs.String("metrics-listen", os.Getenv("METRICS_LISTEN"), "host:port serving Prometheus /metrics and /healthz (env METRICS_LISTEN; off when empty)")
	auditConsumers := fs.String("audit-consumers", svcmain.Env("AUDIT_CONSUMERS", metrics.DefaultAuditConsumer), "the auditors' durable consumers on CHROMA_AUDIT, comma-separated: audit_lag_messages is the largest of their backlogs (env AUDIT_CONSUMERS)")
	svcmain.RedactDefaults(fs, "nats-url")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if err := settings(); err != nil {
		return err
	}
	r, err := bus.ParseReplicas(*replicas)
	if err != nil {
		return err
	}
	cfg.Replicas = r
	cfg.DiskPaths = splitPaths(*watch)
	if len(cfg.DiskPaths) == 0 {
		cfg.DiskPaths = splitPaths(*jsDir + "," + *chromaDir)
	}

	log, err := svcmain.Logger()
	if err != nil {
		return err
	}
	subj, err := contract.NewSubjects(*prefix)
	if err != nil {
		return err
	}
	// One attempt per check: the watchdog counts failures itself.
	cfg.ChromaURL = cf.URL
	cc, err := cf.Client(log, chroma.WithRetryMaxElapsed(0))
	if err != nil {
		return err
	}
	// natsconn names the URL with any credentials in it redacted.
	nc, err := conn.Connect(*natsURL, nats.Name(cfg.Instance), nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	defer nc.Close()
	ep, err := metrics.OpenEndpoint(metrics.EndpointOptions{Listen: *metricsListen, NATS: nc, Chroma: cc.Heartbeat, ChromaURL: cfg.ChromaURL,
		ChromaInterval: cfg.HeartbeatInterval, Log: log, State: metrics.StateOptions{AuditConsumer: *auditConsumers}})
	if err != nil {
		return err
	}
	cfg.Metrics = ep.Metrics()
	svc, err := watchdog.New(cfg, nc, subj, cc, log)
	if err != nil {
		return err
	}
	return ep.Serve(ctx, svc.Run)
}
