package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/natsconn"
)

// config is the job's configuration: flags, each defaulting from an
// environment variable.
type config struct {
	NATSURL string
	// NATS authenticates the connection (natsconn flags: --nats-user, --nats-creds, --nats-ca ...).
	NATS          natsconn.Config
	SubjectPrefix string
	Job           string

	ChromaURL       string
	TargetChromaURL string
	Tenant          string
	Database        string
	TargetTenant    string
	TargetDatabase  string
	Collections     []string

	SnapshotID      string
	TakeSnapshot    bool
	SnapshotTimeout time.Duration
	TimeLimit       time.Duration

	PageSize   int
	PageDelay  time.Duration
	Lose       float64
	MigratedBy string
	LogLevel   slog.Level
}

// inPlace reports whether the job rewrites the source database itself.
func (c *config) inPlace() bool {
	return strings.TrimRight(c.ChromaURL, "/") == strings.TrimRight(c.TargetChromaURL, "/") &&
		c.Tenant == c.TargetTenant && c.Database == c.TargetDatabase
}

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

// parseConfig reads flags (defaults from the environment) and validates them.
func parseConfig(args []string, stderr io.Writer) (*config, error) {
	fs := flag.NewFlagSet("migration-job", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := &config{}
	var collections, level, lose, pageSize string
	var envErrs []error
	durationEnv := func(name string, def time.Duration) time.Duration {
		v, ok := os.LookupEnv(name)
		if !ok {
			return def
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			envErrs = append(envErrs, fmt.Errorf("%s=%q: want a duration such as 90s or 1h", name, v))
			return def
		}
		return d
	}
	takeSnapshot := false
	if v, ok := os.LookupEnv("TAKE_SNAPSHOT"); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			envErrs = append(envErrs, fmt.Errorf("TAKE_SNAPSHOT=%q: want true or false", v))
		}
		takeSnapshot = b
	}
	fs.StringVar(&c.NATSURL, "nats-url", env("NATS_URL", "nats://127.0.0.1:4222"), "NATS server URL (NATS_URL)")
	c.NATS.RegisterFlags(fs)
	fs.StringVar(&c.SubjectPrefix, "subject-prefix", env("SUBJECT_PREFIX", contract.DefaultPrefix), "first subject token(s) (SUBJECT_PREFIX)")
	fs.StringVar(&c.Job, "job", env("MIGRATION_JOB", ""), "job name, one subject token, e.g. reindex-2025-11 (MIGRATION_JOB)")
	fs.StringVar(&c.ChromaURL, "chroma-url", env("CHROMA_URL", "http://127.0.0.1:8000"), "source Chroma URL (CHROMA_URL)")
	fs.StringVar(&c.TargetChromaURL, "target-chroma-url", env("TARGET_CHROMA_URL", ""), "target Chroma URL (TARGET_CHROMA_URL; default: the source's)")
	fs.StringVar(&c.Tenant, "tenant", env("CHROMA_TENANT", "default_tenant"), "source tenant (CHROMA_TENANT)")
	fs.StringVar(&c.Database, "database", env("CHROMA_DATABASE", "default_database"), "source database (CHROMA_DATABASE)")
	fs.StringVar(&c.TargetTenant, "target-tenant", env("TARGET_TENANT", ""), "target tenant (TARGET_TENANT; default: the source's)")
	fs.StringVar(&c.TargetDatabase, "target-database", env("TARGET_DATABASE", ""), "target database (TARGET_DATABASE; default: the source's, i.e. in place)")
	fs.StringVar(&collections, "collections", env("COLLECTIONS", ""), "comma-separated collection names (COLLECTIONS; default: all)")
	fs.StringVar(&c.SnapshotID, "snapshot-id", env("SNAPSHOT_ID", ""), "pre-migration snapshot id or name, taken beforehand (SNAPSHOT_ID)")
	fs.BoolVar(&c.TakeSnapshot, "take-snapshot", takeSnapshot, "have the watchdog take the pre-migration snapshot and wait for it (TAKE_SNAPSHOT=true)")
	fs.DurationVar(&c.SnapshotTimeout, "snapshot-timeout", durationEnv("SNAPSHOT_TIMEOUT", 30*time.Minute), "how long to wait for the watchdog's snapshot (SNAPSHOT_TIMEOUT)")
	fs.DurationVar(&c.TimeLimit, "time-limit", durationEnv("TIME_LIMIT", 0), "time limit of the run; 0 takes the watchdog's default of 1h (TIME_LIMIT)")
	fs.StringVar(&pageSize, "page-size", env("PAGE_SIZE", "100"), "records read and written per request (PAGE_SIZE)")
	fs.DurationVar(&c.PageDelay, "page-delay", durationEnv("PAGE_DELAY", 0), "sleep after every page, to make a slow job (PAGE_DELAY)")
	fs.StringVar(&lose, "lose", env("LOSE", "0"), "share of records to drop on purpose, 0 to 1, chosen deterministically by id (LOSE)")
	fs.StringVar(&c.MigratedBy, "migrated-by", env("MIGRATED_BY", ""), `value of the "migrated_by" metadata key added to every record (MIGRATED_BY; default: the job name)`)
	fs.StringVar(&level, "log-level", env("LOG_LEVEL", "info"), "debug, info, warn or error (LOG_LEVEL)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if len(envErrs) > 0 {
		return nil, errors.Join(envErrs...)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, name := range strings.Split(collections, ",") {
		if name = strings.TrimSpace(name); name != "" {
			c.Collections = append(c.Collections, name)
		}
	}
	if err := c.LogLevel.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level: %w", err)
	}
	var err error
	if c.Lose, err = strconv.ParseFloat(lose, 64); err != nil || !(c.Lose >= 0 && c.Lose <= 1) { // NaN too
		return nil, fmt.Errorf("lose %q: want a share between 0 and 1, e.g. 0.10", lose)
	}
	if c.PageSize, err = strconv.Atoi(pageSize); err != nil || c.PageSize < 1 {
		return nil, fmt.Errorf("page size %q: want a positive number of records", pageSize)
	}
	if c.TargetChromaURL == "" {
		c.TargetChromaURL = c.ChromaURL
	}
	if c.TargetTenant == "" {
		c.TargetTenant = c.Tenant
	}
	if c.TargetDatabase == "" {
		c.TargetDatabase = c.Database
	}
	if c.MigratedBy == "" {
		c.MigratedBy = c.Job
	}
	return c, c.validate()
}

// validate reports the first invalid field.
func (c *config) validate() error {
	if c.Job == "" {
		return errors.New("job is required (--job or MIGRATION_JOB)")
	}
	if err := contract.ValidToken(c.Job); err != nil {
		return fmt.Errorf("job: %w", err)
	}
	if (c.SnapshotID == "") == !c.TakeSnapshot {
		return errors.New("name the pre-migration snapshot (--snapshot-id) or ask the watchdog for one (--take-snapshot); exactly one")
	}
	if c.TimeLimit < 0 || c.PageDelay < 0 || c.SnapshotTimeout <= 0 {
		return errors.New("time limit and page delay must not be negative; the snapshot timeout must be positive")
	}
	if c.TimeLimit > 0 && c.TimeLimit < time.Second {
		return fmt.Errorf("time limit %s is under a second, which the watchdog refuses: 0 takes its default (1h)", c.TimeLimit)
	}
	for _, n := range []struct{ field, v string }{
		{"tenant", c.Tenant}, {"database", c.Database}, {"target tenant", c.TargetTenant}, {"target database", c.TargetDatabase},
	} {
		if err := contract.ValidateChromaName(n.field, n.v); err != nil {
			return err
		}
	}
	return nil
}
