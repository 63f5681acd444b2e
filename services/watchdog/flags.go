package watchdog

import (
	"errors"
	"flag"
	"strconv"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/svcmain"
)

// RegisterFlags registers on fs the watchdog's trigger, heartbeat, disk
// and timing settings, each defaulting from its environment variable, for
// bin/watchdog and `chromadb-rollback serve` alike. After fs is parsed,
// the returned func completes cfg, or names the variable that did not
// parse or the setting that is out of range, before anything starts.
func RegisterFlags(fs *flag.FlagSet, cfg *Config) func() error {
	var errs []error
	parseFloat := func(s string) (float64, error) { return strconv.ParseFloat(s, 64) }
	fs.Float64Var(&cfg.ValidationThreshold, "validation-threshold", svcmain.EnvParse(&errs, "VALIDATION_THRESHOLD", DefaultValidationThreshold, parseFloat),
		"valid/total chunks under this fire the validation trigger (env VALIDATION_THRESHOLD)")
	fs.BoolVar(&cfg.PartialOnCollectionFailure, "partial-on-collection-failure", svcmain.EnvParse(&errs, "PARTIAL_ON_COLLECTION_FAILURE", false, strconv.ParseBool),
		"when the job reports per-collection figures, roll back only the collections under the threshold; one under it fires the trigger even when the total meets it (env PARTIAL_ON_COLLECTION_FAILURE)")
	fs.DurationVar(&cfg.DefaultTimeLimit, "time-limit", svcmain.EnvParse(&errs, "MIGRATION_TIME_LIMIT", DefaultTimeLimit, time.ParseDuration),
		"time limit of a migration whose started event sets none (env MIGRATION_TIME_LIMIT)")
	fs.DurationVar(&cfg.AbortGrace, "abort-grace", svcmain.EnvParse(&errs, "ABORT_GRACE", 5*time.Second, time.ParseDuration),
		"after abort, wait this long for the job to stop before the rollback (env ABORT_GRACE)")
	automatic := fs.Bool("automatic-rollback", svcmain.EnvParse(&errs, "AUTOMATIC_ROLLBACK_ENABLED", true, strconv.ParseBool),
		"roll back when a trigger fires; false raises an alert naming the command instead (env AUTOMATIC_ROLLBACK_ENABLED)")
	fs.BoolVar(&cfg.RollbackOnFailure, "rollback-on-failure", svcmain.EnvParse(&errs, "ROLLBACK_ON_FAILURE", false, strconv.ParseBool),
		"roll back a migration whose job reports failed (env ROLLBACK_ON_FAILURE)")
	fs.DurationVar(&cfg.HeartbeatInterval, "heartbeat-interval", svcmain.EnvParse(&errs, "HEARTBEAT_INTERVAL", DefaultHeartbeatInterval, time.ParseDuration),
		"how often Chroma's heartbeat is checked (env HEARTBEAT_INTERVAL)")
	fs.DurationVar(&cfg.HeartbeatTimeout, "heartbeat-timeout", svcmain.EnvParse(&errs, "HEARTBEAT_TIMEOUT", time.Duration(0), time.ParseDuration),
		"bound of one heartbeat check; 0 is the interval, at most 5s (env HEARTBEAT_TIMEOUT)")
	fs.IntVar(&cfg.HeartbeatFailures, "heartbeat-failures", svcmain.EnvParse(&errs, "HEARTBEAT_FAILURES", DefaultHeartbeatFailures, strconv.Atoi),
		"failed heartbeats in a row that pause running migrations (env HEARTBEAT_FAILURES)")
	minFreeMiB := fs.Uint64("disk-min-free-mb", svcmain.EnvParse(&errs, "DISK_MIN_FREE_MB", uint64(DefaultDiskMinFree>>20), func(s string) (uint64, error) { return strconv.ParseUint(s, 10, 64) }),
		"free space in MiB under which running migrations are paused (env DISK_MIN_FREE_MB)")
	fs.DurationVar(&cfg.DiskInterval, "disk-interval", svcmain.EnvParse(&errs, "DISK_INTERVAL", DefaultDiskInterval, time.ParseDuration),
		"how often disk space and JetStream storage are checked (env DISK_INTERVAL)")
	fs.Float64Var(&cfg.JetStreamNear, "jetstream-near", svcmain.EnvParse(&errs, "JETSTREAM_NEAR", DefaultJetStreamNear, parseFloat),
		"share of a JetStream account or stream limit counted as nearly full; negative disables (env JETSTREAM_NEAR)")
	fs.DurationVar(&cfg.ArchiveCheckInterval, "archive-check-interval", svcmain.EnvParse(&errs, "ARCHIVE_CHECK_INTERVAL", DefaultArchiveCheckInterval, time.ParseDuration),
		"how often every verified snapshot's archive is looked up in the object store; one gone is an alert; negative disables (env ARCHIVE_CHECK_INTERVAL)")
	fs.DurationVar(&cfg.TickInterval, "tick", svcmain.EnvParse(&errs, "TICK_INTERVAL", time.Second, time.ParseDuration),
		"how often deadlines and pending work are checked (env TICK_INTERVAL)")
	fs.DurationVar(&cfg.RequestTimeout, "request-timeout", svcmain.EnvParse(&errs, "REQUEST_TIMEOUT", 30*time.Minute, time.ParseDuration),
		"bound of a snapshot or rollback request; a rollback start verifies the archive first (env REQUEST_TIMEOUT)")
	return func() error {
		if len(errs) > 0 {
			return errs[0]
		}
		// Config takes 0 for the default; given as a setting, 0 would
		// silently become the default too, where who gave it meant none.
		switch {
		case cfg.ValidationThreshold == 0:
			return errors.New("validation threshold 0: want a ratio in (0, 1], e.g. 0.95; --automatic-rollback=false turns rollbacks into alerts")
		case cfg.DefaultTimeLimit == 0:
			return errors.New("time limit 0: want a positive duration, e.g. 1h (a started event may set its own)")
		case cfg.HeartbeatFailures == 0:
			return errors.New("heartbeat failures 0: at least 1")
		case *minFreeMiB == 0:
			return errors.New("disk min free 0 MiB: at least 1; migrations are paused when free space falls under it")
		}
		cfg.AutomaticRollbackDisabled = !*automatic
		cfg.DiskMinFree = *minFreeMiB << 20
		c := *cfg
		c.setDefaults()
		return c.validateSettings()
	}
}
