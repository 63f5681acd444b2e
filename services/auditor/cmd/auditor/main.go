// Command auditor runs the auditor against an existing NATS server (or
// cluster): it writes the audit stream into the trail under --data-dir
// and answers chroma.api.audit.*.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/metrics"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/natsconn"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/svcmain"
	"github.com/chromadb-rollback/chromadb-rollback/services/auditor"
	"github.com/nats-io/nats.go"
)

func main() { svcmain.Main("auditor", run) }

func run(ctx context.Context, args []string) error {
	var errs []error
	fs := flag.NewFlagSet("auditor", flag.ContinueOnError)
	natsURL := fs.String("nats-url", svcmain.Env("NATS_URL", nats.DefaultURL), "NATS server URL (env NATS_URL)")
	prefix := fs.String("prefix", svcmain.Env("CHROMA_PREFIX", contract.DefaultPrefix), "subject prefix (env CHROMA_PREFIX)")
	var conn natsconn.Config
	conn.RegisterFlags(fs)
	var cfg auditor.Config
	fs.StringVar(&cfg.DataDir, "data-dir", svcmain.Env("DATA_DIR", "./data"), "directory of the trail "+contract.AuditTrailFile+" (env DATA_DIR)")
	fs.StringVar(&cfg.Instance, "instance", svcmain.Instance("auditor"), "instance name, unique among instances (env INSTANCE; default service-host-pid)")
	replicas := fs.String("replicas", svcmain.Env(bus.EnvReplicas, "1"), "copies JetStream keeps of the streams, buckets and object store this instance creates: 1 on one server, 3 on a cluster (env JETSTREAM_REPLICAS)")
	fs.StringVar(&cfg.Consumer, "consumer", svcmain.Env("AUDIT_CONSUMER", auditor.DefaultConsumer),
		"durable consumer on CHROMA_AUDIT; a second auditor needs its own, and its own data dir (env AUDIT_CONSUMER)")
	fs.IntVar(&cfg.Batch, "batch", svcmain.EnvParse(&errs, "AUDIT_BATCH", auditor.DefaultBatch, strconv.Atoi), "most entries written per fsync (env AUDIT_BATCH)")
	fs.DurationVar(&cfg.AckWait, "ack-wait", svcmain.EnvParse(&errs, "AUDIT_ACK_WAIT", auditor.DefaultAckWait, time.ParseDuration),
		"how long the server waits for an ack before delivering again (env AUDIT_ACK_WAIT)")
	metricsListen := fs.String("metrics-listen", os.Getenv("METRICS_LISTEN"), "host:port serving Prometheus /metrics and /healthz (env METRICS_LISTEN; off when empty)")
	healthCheck := fs.Bool("health-check", false, "ask the running auditor for its health and exit 0 when it is healthy (for container health checks)")
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
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	log, err := svcmain.Logger()
	if err != nil {
		return err
	}
	subj, err := contract.NewSubjects(*prefix)
	if err != nil {
		return err
	}
	// natsconn names the URL with any credentials in it redacted.
	nc, err := conn.Connect(*natsURL, nats.Name(cfg.Instance), nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	defer nc.Close()
	if *healthCheck {
		return checkHealth(ctx, nc, subj)
	}
	// Audit lag is this auditor's own consumer's backlog.
	ep, err := metrics.OpenEndpoint(metrics.EndpointOptions{Listen: *metricsListen, NATS: nc, Log: log,
		State: metrics.StateOptions{AuditConsumer: cfg.Consumer, AuditOnly: true}})
	if err != nil {
		return err
	}
	svc, err := auditor.New(cfg, nc, subj, log)
	if err != nil {
		return err
	}
	return ep.Serve(ctx, svc.Run)
}

// checkHealth asks chroma.api.audit.health and prints the checks.
func checkHealth(ctx context.Context, nc *nats.Conn, subj contract.Subjects) error {
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	msg, err := nc.RequestWithContext(rctx, subj.API("audit", "health"), []byte("{}"))
	if err != nil {
		return fmt.Errorf("ask %s: %w", subj.API("audit", "health"), err)
	}
	var h contract.Health
	if err := json.Unmarshal(msg.Data, &h); err != nil {
		return fmt.Errorf("health reply: %w", err)
	}
	for _, c := range h.Checks {
		mark := "OK  "
		if !c.OK {
			mark = "FAIL"
		}
		fmt.Printf("%s %s: %s\n", mark, c.Name, c.Detail)
	}
	if !h.OK {
		return errors.New("unhealthy")
	}
	return nil
}
