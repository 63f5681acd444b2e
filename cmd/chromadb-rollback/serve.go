package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/crypt"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/gate"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/metrics"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/natsembed"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/svcmain"
	"github.com/chromadb-rollback/chromadb-rollback/services/auditor"
	"github.com/chromadb-rollback/chromadb-rollback/services/restorer"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
	"github.com/chromadb-rollback/chromadb-rollback/services/watchdog"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
)

// chromaFlags are the Chroma connection settings shared by serve and services.
type chromaFlags struct {
	url, token, authHeader string
}

func (f *chromaFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.url, "chroma-url", os.Getenv("CHROMA_URL"), "Chroma server URL (env CHROMA_URL)")
	// Help shows the default, so never credentials in CHROMA_URL.
	cmd.Flags().Lookup("chroma-url").DefValue = chroma.RedactURL(f.url)
	// The token comes from CHROMA_TOKEN, as for the services: a flag's
	// value shows in ps. The flag still works, with a warning, and is hidden.
	cmd.Flags().StringVar(&f.token, "chroma-token", "", "Chroma auth token")
	_ = cmd.Flags().MarkDeprecated("chroma-token", "it shows in ps and shell history; set CHROMA_TOKEN instead")
	cmd.Flags().StringVar(&f.authHeader, "chroma-auth-header", envOr("CHROMA_AUTH_HEADER", "x-chroma-token"), "how the token is sent: x-chroma-token or bearer (env CHROMA_AUTH_HEADER)")
}

func (f *chromaFlags) client(log *slog.Logger, extra ...chroma.Option) (*chroma.Client, error) {
	if f.url == "" {
		return nil, usageErr("--chroma-url (or CHROMA_URL) is required")
	}
	opts := append([]chroma.Option{chroma.WithLogger(log)}, extra...)
	if f.token == "" {
		f.token = os.Getenv("CHROMA_TOKEN")
	}
	if f.token != "" {
		opts = append(opts, chroma.WithToken(f.token))
		switch strings.ToLower(f.authHeader) {
		case "x-chroma-token", "":
			opts = append(opts, chroma.WithAuthHeader(chroma.AuthXChromaToken))
		case "bearer", "authorization":
			opts = append(opts, chroma.WithAuthHeader(chroma.AuthBearer))
		default:
			return nil, usageErr("--chroma-auth-header %q: want x-chroma-token or bearer", f.authHeader)
		}
	}
	return chroma.New(f.url, opts...)
}

func newLogger(w io.Writer) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(envOr("LOG_LEVEL", "info"))); err != nil {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// serveMemoryLimitMiB is serve's soft heap limit by default: the
// snapshotter's and the restorer's 120 MiB each, with room for the
// watchdog, the auditor and the embedded JetStream server.
const serveMemoryLimitMiB = 512

func (a *app) serveCmd() *cobra.Command {
	var cf chromaFlags
	var metricsListen string
	var dataDir, listen, gateListen, allowURLs, chromaDataDir, retention, replicas string
	var keys crypt.Config
	// The watchdog's trigger settings, as bin/watchdog takes them.
	var wcfg watchdog.Config
	wflags := flag.NewFlagSet("watchdog", flag.ContinueOnError)
	watchdogSettings := watchdog.RegisterFlags(wflags, &wcfg)
	// Every service and the JetStream server share one heap here: without
	// a limit it grew to 585 MB under document-heavy snapshots and
	// rollbacks, twice what was live.
	setMemoryLimit := svcmain.MemoryLimit(wflags, serveMemoryLimitMiB)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run an embedded JetStream server and the services in one process",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if v := os.Getenv("LOG_LEVEL"); v != "" {
				var level slog.Level
				if err := level.UnmarshalText([]byte(v)); err != nil {
					return usageErr("LOG_LEVEL %q: want debug, info, warn or error", v)
				}
			}
			log := newLogger(a.stderr)
			setMemoryLimit()
			if err := watchdogSettings(); err != nil {
				return usageErr("%v", err)
			}
			retentionPeriod, err := snapshotter.ParseRetention(retention)
			if err != nil {
				return usageErr("--retention: %v", err)
			}
			nreplicas, err := bus.ParseReplicas(replicas)
			if err != nil {
				return usageErr("%v", err)
			}
			for _, l := range []struct{ flag, val string }{{"listen", listen}, {"gate-listen", gateListen}, {"metrics-listen", metricsListen}} {
				if l.val == "" || (l.flag == "metrics-listen" && l.val == "off") {
					continue
				}
				if err := checkHostPort(l.val); err != nil {
					return usageErr("--%s %q: %v", l.flag, l.val, err)
				}
			}
			if nreplicas != 1 {
				return usageErr("--replicas %d: serve runs one embedded JetStream server, which keeps 1 copy; to replicate, run the services (bin/snapshotter, ...) with --replicas %d against a JetStream cluster (deploy/README.md)", nreplicas, nreplicas)
			}
			recipients, identities, err := keys.Load()
			if err != nil {
				return usageErr("%v", err)
			}
			if recipients != nil {
				log.Info("new archives are encrypted with age", "recipients", recipients.String())
			}
			if identities != nil {
				log.Info("age identity loaded", "identity", identities)
			}
			if w := keysWarning(recipients, identities); w != "" {
				log.Warn(w, "recipients", recipients.String())
			}
			cc, err := cf.client(log)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(dataDir, 0o755); err != nil {
				return fmt.Errorf("data dir: %w", err)
			}
			store := filepath.Join(dataDir, "jetstream")
			ns, err := natsembed.Start(natsembed.Options{Listen: listen, StoreDir: store, Log: log})
			if err != nil {
				return err
			}
			defer func() {
				ns.Shutdown()
				ns.WaitForShutdown()
			}()
			log.Info("embedded NATS ready", "url", ns.ClientURL(), "store", store)
			nc, err := nats.Connect(ns.ClientURL(), nats.Name("chromadb-rollback-serve"), nats.InProcessServer(ns))
			if err != nil {
				return err
			}
			defer nc.Close()
			if metricsListen == "off" {
				metricsListen = ""
			}
			// One registry for every service in the process.
			ep, err := metrics.OpenEndpoint(metrics.EndpointOptions{Listen: metricsListen, NATS: nc, Chroma: cc.Heartbeat, ChromaURL: cf.url, Log: log})
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			v, err := cc.Version(hctx)
			cancel()
			if err != nil {
				log.Warn("chroma not reachable yet; snapshots will fail until it is", "chroma_url", chroma.RedactURL(cf.url), "err", err)
			} else {
				log.Info("chroma reachable", "chroma_url", chroma.RedactURL(cf.url), "version", v)
			}
			snap, err := snapshotter.New(snapshotter.Config{ChromaURL: cf.url, Instance: hostInstance("snapshotter"), Replicas: nreplicas, DataDir: dataDir, Retention: retentionPeriod, Metrics: ep.Metrics(),
				Recipients: recipients, Identities: identities}, nc, a.subj, cc, log)
			if err != nil {
				return err
			}
			rcfg := restorer.Config{ChromaURL: cf.url, Instance: hostInstance("restorer"), Replicas: nreplicas, ChromaToken: cf.token, AllowedChromaURLs: splitList(allowURLs), Metrics: ep.Metrics(), Identities: identities}
			var runGate func(context.Context) error
			if gateListen != "" {
				g, run, err := a.gateRunner(ctx, nc, cf.url, gateListen, log)
				if err != nil {
					return err
				}
				// The restorer waits for the writes this gate let through
				// before it saw the fence, before it reads the database.
				rcfg.Quiesce, runGate = g.Quiesce, run
			}
			if strings.EqualFold(cf.authHeader, "bearer") || strings.EqualFold(cf.authHeader, "authorization") {
				rcfg.ChromaAuthHeader = chroma.AuthBearer
			}
			rest, err := restorer.New(rcfg, nc, a.subj, cc, log)
			if err != nil {
				return err
			}
			wcc, err := cf.client(log, chroma.WithRetryMaxElapsed(0)) // the watchdog counts heartbeat failures itself
			if err != nil {
				return err
			}
			wcfg.ChromaURL, wcfg.Instance, wcfg.Replicas, wcfg.DiskPaths, wcfg.Metrics = cf.url, hostInstance("watchdog"), nreplicas, []string{store}, ep.Metrics()
			if chromaDataDir != "" {
				wcfg.DiskPaths = append(wcfg.DiskPaths, chromaDataDir)
			}
			wd, err := watchdog.New(wcfg, nc, a.subj, wcc, log)
			if err != nil {
				return err
			}
			aud, err := auditor.New(auditor.Config{DataDir: dataDir, Instance: hostInstance("auditor"), Replicas: nreplicas}, nc, a.subj, log)
			if err != nil {
				return err
			}
			services := []func(context.Context) error{snap.Run, rest.Run, wd.Run, aud.Run}
			if ep != nil {
				services = append(services, ep.Run)
			}
			if runGate != nil {
				services = append(services, runGate)
			}
			fmt.Fprintf(a.stderr, "chromadb-rollback serving: NATS %s, Chroma %s, data %s (Ctrl-C to stop)\n", ns.ClientURL(), chroma.RedactURL(cf.url), dataDir)
			if ep != nil {
				fmt.Fprintf(a.stderr, "metrics: http://%[1]s/metrics, health: http://%[1]s/healthz\n", ep.Addr())
			}
			return runAll(ctx, services...)
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&dataDir, "data-dir", envOr("DATA_DIR", "./data"), "where the embedded JetStream keeps its data and the auditor its trail, rollback_audit.jsonl (env DATA_DIR)")
	cmd.Flags().StringVar(&listen, "listen", envOr("NATS_LISTEN", "127.0.0.1:4222"), "host:port of the embedded NATS server (env NATS_LISTEN)")
	cmd.Flags().StringVar(&replicas, "replicas", envOr(bus.EnvReplicas, "1"), "copies JetStream keeps of each stream, bucket and the object store; the embedded server is one node, so 1 (env JETSTREAM_REPLICAS)")
	cmd.Flags().StringVar(&gateListen, "gate-listen", os.Getenv("GATE_LISTEN"), "host:port of the read-only gate, an HTTP proxy to Chroma that refuses writes while a rollback fences the database (env GATE_LISTEN; off when empty)")
	cmd.Flags().StringVar(&metricsListen, "metrics-listen", envOr("METRICS_LISTEN", "127.0.0.1:9464"), "host:port serving Prometheus /metrics and /healthz for all the services in this process; off turns it off (env METRICS_LISTEN)")
	cmd.Flags().StringVar(&chromaDataDir, "chroma-data-dir", os.Getenv("CHROMA_DATA_DIR"), "Chroma's data directory, watched for free disk space by the watchdog (env CHROMA_DATA_DIR)")
	cmd.Flags().StringVar(&retention, "retention", envOr("RETENTION", "7d"), "the snapshotter deletes snapshots older than this daily at 00:00 UTC, unless kept: a duration (72h), days (7d) or off (env RETENTION)")
	cmd.Flags().StringVar(&allowURLs, "allow-chroma-url", os.Getenv("ALLOW_CHROMA_URLS"), "comma-separated other Chroma servers a rollback may restore into, or * (env ALLOW_CHROMA_URLS)")
	cmd.Flags().AddGoFlagSet(wflags)
	keys = crypt.ConfigFromEnv()
	cmd.Flags().StringVar(&keys.Recipients, "age-recipients", keys.Recipients, "encrypt every new archive with age to these X25519 public keys (age1..., comma-separated; env AGE_RECIPIENTS)")
	cmd.Flags().StringVar(&keys.RecipientsFile, "age-recipients-file", keys.RecipientsFile, "file of age public keys to encrypt to, one per line (env AGE_RECIPIENTS_FILE)")
	cmd.Flags().StringVar(&keys.IdentityFile, "age-identity-file", keys.IdentityFile, "age identity file (AGE-SECRET-KEY-1...) with which the restorer and a full verify decrypt archives (env AGE_IDENTITY_FILE)")
	return cmd
}

// keysWarning says, when serve encrypts new archives with keys its
// restorer cannot decrypt, that rollbacks to them will be refused; "" when
// it can, or nothing is encrypted. The README's setup gives the restorer
// the identity: without it snapshots are taken and verified (ciphertext
// only) as usual, and only the rollback fails (the watchdog refuses them
// as a migration's restore point).
func keysWarning(recipients *crypt.Recipients, identities *crypt.Identities) string {
	keys := recipients.Keys()
	if len(keys) == 0 {
		return ""
	}
	const then = "the restorer cannot decrypt them, so a rollback to them, automatic ones included, will be refused until serve is restarted with the identity; verify checks their ciphertext only"
	pubs := identities.Recipients()
	switch {
	case len(pubs) == 0:
		return "new archives are encrypted with age but no identity was given (--age-identity-file, env AGE_IDENTITY_FILE): " + then
	case crypt.CanDecrypt(keys, pubs):
		return ""
	}
	return "new archives are encrypted with age to keys none of the identities of --age-identity-file is for (its public keys: " + strings.Join(pubs, ", ") + "): " + then
}

// gateRunner opens the fence watch and returns the gate (its Quiesce is the
// restorer's) and its serve loop.
func (a *app) gateRunner(ctx context.Context, nc *nats.Conn, chromaURL, listen string, log *slog.Logger) (*gate.Gate, func(context.Context) error, error) {
	upstream, err := url.Parse(chromaURL)
	if err != nil {
		return nil, nil, usageErr("--chroma-url %q: %v", chroma.RedactURL(chromaURL), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, nil, err
	}
	bctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	assets, err := bus.Bootstrap(bctx, js, bus.Config{Subjects: a.subj})
	if err != nil {
		return nil, nil, err
	}
	fences, err := gate.WatchFences(ctx, assets.State, gate.FencesLogger(log), gate.FencesConn(nc))
	if err != nil {
		return nil, nil, err
	}
	g := gate.New(upstream, fences, gate.WithLogger(log))
	return g, func(ctx context.Context) error { return g.Serve(ctx, listen) }, nil
}

// runAll runs the services until ctx ends or one of them fails, which
// stops the others; it returns the first failure.
func runAll(ctx context.Context, services ...func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(services))
	for _, run := range services {
		go func() {
			err := run(ctx)
			if err != nil && ctx.Err() == nil {
				cancel()
			}
			errs <- err
		}()
	}
	var first error
	for range services {
		if err := <-errs; err != nil && first == nil && !errors.Is(err, context.Canceled) {
			first = err
		}
	}
	return first
}

func hostInstance(service string) string {
	h, _ := os.Hostname()
	return fmt.Sprintf("%s-%s-%d", service, h, os.Getpid())
}

// checkHostPort says what is wrong with a listen address that is not
// host:port with a port number, before serve starts anything on it.
func checkHostPort(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port, such as 127.0.0.1:4222 (%v)", err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}
