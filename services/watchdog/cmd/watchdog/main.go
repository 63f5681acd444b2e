// Command watchdog runs one watchdog instance against an existing NATS
// server (or cluster) and Chroma.
package main

import (
	"context"
	"errors"
	"flag"
	"os"
	"strconv"
	"strings"
	"time"

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

func parseFloat(s string) (float64, error) { return strconv.ParseFloat(s, 64) }

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
	var errs []error
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
	fs.Float64Var(&cfg.ValidationThreshold, "validation-threshold", svcmain.EnvParse(&errs, "VALIDATION_THRESHOLD", watchdog.DefaultValidationThreshold, parseFloat),
		"valid/total chunks under this fire the validation trigger (env VALIDATION_THRESHOLD)")
	fs.BoolVar(&cfg.PartialOnCollectionFailure, "partial-on-collection-failure", svcmain.EnvParse(&errs, "PARTIAL_ON_COLLECTION_FAILURE", false, strconv.ParseBool),
		"roll back only the collections under the threshold when the job reports per-collection figures (env PARTIAL_ON_COLLECTION_FAILURE)")
	fs.DurationVar(&cfg.DefaultTimeLimit, "time-limit", svcmain.EnvParse(&errs, "MIGRATION_TIME_LIMIT", watchdog.DefaultTimeLimit, time.ParseDuration),
		"time limit of a migration whose started event sets none (env MIGRATION_TIME_LIMIT)")
	fs.DurationVar(&cfg.AbortGrace, "abort-grace", svcmain.EnvParse(&errs, "ABORT_GRACE", 5*time.Second, time.ParseDuration),
		"after abort, wait this long for the job to stop before the rollback (env ABORT_GRACE)")
	automatic := fs.Bool("automatic-rollback", svcmain.EnvParse(&errs, "AUTOMATIC_ROLLBACK_ENABLED", true, strconv.ParseBool),
		"roll back when a trigger fires; false raises an alert naming the command instead (env AUTOMATIC_ROLLBACK_ENABLED)")
	fs.BoolVar(&cfg.RollbackOnFailure, "rollback-on-failure", svcmain.EnvParse(&errs, "ROLLBACK_ON_FAILURE", false, strconv.ParseBool),
		"roll back a migration whose job reports failed (env ROLLBACK_ON_FAILURE)")
	fs.DurationVar(&cfg.HeartbeatInterval, "heartbeat-interval", svcmain.EnvParse(&errs, "HEARTBEAT_INTERVAL", watchdog.DefaultHeartbeatInterval, time.ParseDuration),
		"how often Chroma's heartbeat is checked (env HEARTBEAT_INTERVAL)")
	fs.DurationVar(&cfg.HeartbeatTimeout, "heartbeat-timeout", svcmain.EnvParse(&errs, "HEARTBEAT_TIMEOUT", time.Duration(0), time.ParseDuration),
		"bound of one heartbeat check; 0 is the interval, at most 5s (env HEARTBEAT_TIMEOUT)")
	fs.IntVar(&cfg.HeartbeatFailures, "heartbeat-failures", svcmain.EnvParse(&errs, "HEARTBEAT_FAILURES", watchdog.DefaultHeartbeatFailures, strconv.Atoi),
		"failed heartbeats in a row that pause running migrations (env HEARTBEAT_FAILURES)")
	watch := fs.String("watch-paths", os.Getenv("WATCH_PATHS"), "comma-separated paths whose free space is watched; default the JetStream store and Chroma data dirs (env WATCH_PATHS)")
	jsDir := fs.String("jetstream-store-dir", os.Getenv("JETSTREAM_STORE_DIR"), "the JetStream store directory, watched by default (env JETSTREAM_STORE_DIR)")
	chromaDir := fs.String("chroma-data-dir", os.Getenv("CHROMA_DATA_DIR"), "Chroma's persist directory, watched by default (env CHROMA_DATA_DIR)")
	minFreeMiB := fs.Uint64("disk-min-free-mb", svcmain.EnvParse(&errs, "DISK_MIN_FREE_MB", uint64(watchdog.DefaultDiskMinFree>>20), func(s string) (uint64, error) { return strconv.ParseUint(s, 10, 64) }),
		"free space in MiB under which running migrations are paused (env DISK_MIN_FREE_MB)")
	fs.DurationVar(&cfg.DiskInterval, "disk-interval", svcmain.EnvParse(&errs, "DISK_INTERVAL", watchdog.DefaultDiskInterval, time.ParseDuration),
		"how often disk space and JetStream storage are checked (env DISK_INTERVAL)")
	fs.Float64Var(&cfg.JetStreamNear, "jetstream-near", svcmain.EnvParse(&errs, "JETSTREAM_NEAR", watchdog.DefaultJetStreamNear, parseFloat),
		"share of a JetStream account or stream limit counted as nearly full; negative disables (env JETSTREAM_NEAR)")
	fs.DurationVar(&cfg.TickInterval, "tick", svcmain.EnvParse(&errs, "TICK_INTERVAL", time.Second, time.ParseDuration),
		"how often deadlines and pending work are checked (env TICK_INTERVAL)")
	fs.DurationVar(&cfg.RequestTimeout, "request-timeout", svcmain.EnvParse(&errs, "REQUEST_TIMEOUT", 30*time.Minute, time.ParseDuration),
		"bound of a snapshot or rollback request; a rollback start verifies the archive first (env REQUEST_TIMEOUT)")
	metricsListen := fs.String("metrics-listen", os.Getenv("METRICS_LISTEN"), "host:port serving Prometheus /metrics and /healthz (env METRICS_LISTEN; off when empty)")
	svcmain.RedactDefaults(fs, "nats-url")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if len(errs) > 0 {
		return errs[0]
	}
	r, err := bus.ParseReplicas(*replicas)
	if err != nil {
		return err
	}
	cfg.Replicas = r
	cfg.AutomaticRollbackDisabled = !*automatic
	cfg.DiskMinFree = *minFreeMiB << 20
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
		ChromaInterval: cfg.HeartbeatInterval, Log: log})
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
