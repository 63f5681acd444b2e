package watchdog

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
)

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name  string
		edit  func(c *Config)
		field string // "" when valid
	}{
		{"defaults", func(c *Config) {}, ""},
		{"no chroma", func(c *Config) { c.ChromaURL = "" }, "chroma URL"},
		{"threshold above 1", func(c *Config) { c.ValidationThreshold = 1.5 }, "validation threshold"},
		{"negative threshold", func(c *Config) { c.ValidationThreshold = -0.1 }, "validation threshold"},
		// NaN compares false with everything: no ratio would be under it,
		// and the validation trigger would never fire.
		{"NaN threshold", func(c *Config) { c.ValidationThreshold = math.NaN() }, "validation threshold"},
		{"NaN near", func(c *Config) { c.JetStreamNear = math.NaN() }, "near-full"},
		{"negative time limit", func(c *Config) { c.DefaultTimeLimit = -time.Second }, "time limit"},
		{"zero failures", func(c *Config) { c.HeartbeatFailures = -1 }, "heartbeat failures"},
		{"tiny interval", func(c *Config) { c.HeartbeatInterval = time.Millisecond }, "heartbeat interval"},
		{"near above 1", func(c *Config) { c.JetStreamNear = 2 }, "near-full"},
		{"empty path", func(c *Config) { c.DiskPaths = []string{"/tmp", ""} }, "empty path"},
		{"short ack wait", func(c *Config) { c.AckWait = time.Millisecond }, "ack wait"},
		{"tiny archive check interval", func(c *Config) { c.ArchiveCheckInterval = time.Millisecond }, "archive check interval"},
		{"archive check off", func(c *Config) { c.ArchiveCheckInterval = -1 }, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{ChromaURL: "http://127.0.0.1:8000"}
			tc.edit(&c)
			c.setDefaults()
			err := c.Validate()
			switch {
			case tc.field == "" && err != nil:
				t.Errorf("got %v, want no error", err)
			case tc.field != "" && (err == nil || !strings.Contains(err.Error(), tc.field)):
				t.Errorf("got %v, want an error naming %q", err, tc.field)
			}
		})
	}
	var c Config
	c.ChromaURL = "http://x"
	c.setDefaults()
	if c.ValidationThreshold != 0.95 || c.DefaultTimeLimit != time.Hour || c.HeartbeatFailures != 3 || c.DiskMinFree != 100<<20 ||
		c.HeartbeatTimeout != 5*time.Second || c.JetStreamNear != 0.9 {
		t.Errorf("defaults: %+v", c)
	}
}

func TestOperatorCommand(t *testing.T) {
	cases := []struct {
		name   string
		prefix string
		rec    contract.MigrationRecord
		want   string
	}{
		{"full", "", contract.MigrationRecord{Job: "j1", SnapshotID: "snap_1", Trigger: "validation"},
			"chromadb-rollback rollback snap_1 --reason 'validation trigger of migration j1' --yes"},
		{"partial", "chroma", contract.MigrationRecord{Job: "j1", SnapshotID: "snap_1", Trigger: "time", RollbackCollections: []string{"a", "b c"}},
			"chromadb-rollback rollback snap_1 --partial --failed-collections 'a,b c' --reason 'time trigger of migration j1' --yes"},
		{"prefix and quote", "prod.chroma", contract.MigrationRecord{Job: "j", SnapshotID: "it's", Trigger: "failure"},
			`chromadb-rollback --prefix prod.chroma rollback 'it'\''s' --reason 'failure trigger of migration j' --yes`},
		{"no snapshot", "", contract.MigrationRecord{Job: "j", Trigger: "validation"},
			"chromadb-rollback rollback SNAPSHOT --reason 'validation trigger of migration j' --yes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := &Service{subj: contract.Subjects{Prefix: tc.prefix}}
			if got := s.operatorCommand(&tc.rec); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

// TestUnusable: whether a restorer's refusal or failed rollback is about
// the snapshot itself goes by the error code the restorer sets, whatever
// its text says; only an operation recorded without one, by a restorer
// from before error_code, is told by its text.
func TestUnusable(t *testing.T) {
	refusals := []struct {
		name string
		err  error
		want bool
	}{
		{"archive_unusable, any text", &replyError{contract.ErrorBody{Code: 422, Error: "the archive is broken", ErrorCode: contract.ErrorArchiveUnusable}}, true},
		{"gone, any text", &replyError{contract.ErrorBody{Code: 404, Error: "snapshot x is gone", ErrorCode: contract.ErrorArchiveUnusable}}, true},
		{"wrapped", fmt.Errorf("start: %w", &replyError{contract.ErrorBody{Code: 404, ErrorCode: contract.ErrorArchiveUnusable}}), true},
		{"no key", &replyError{contract.ErrorBody{Code: 422, Error: "refusing to restore snapshot s: this restorer has no identity"}}, false},
		// From a restorer older than error_code, during an upgrade.
		{"old restorer, damaged archive", &replyError{contract.ErrorBody{Code: 422, Error: "refusing to restore snapshot s: archive failed verification: replaced"}}, true},
		{"old restorer, snapshot gone", &replyError{contract.ErrorBody{Code: 404, Error: "no snapshot with id or name \"s\""}}, true},
		{"old restorer, other refusal", &replyError{contract.ErrorBody{Code: 409, Error: "a rollback of acme/prod is running"}}, false},
		{"the old text, code other", &replyError{contract.ErrorBody{Code: 422, Error: "archive failed verification", ErrorCode: contract.ErrorOther}}, false},
		{"not a reply", errors.New("no snapshot with id or name \"s\""), false},
	}
	for _, tc := range refusals {
		if got := refusedUnusable(tc.err); got != tc.want {
			t.Errorf("refusal %s: %v, want %v", tc.name, got, tc.want)
		}
	}

	ops := []struct {
		name, record string
		want         bool
	}{
		{"archive_unusable, any text", `{"status":"failed","error":"the archive is broken","error_code":"archive_unusable"}`, true},
		{"other, with the old text", `{"status":"failed","error":"archive failed verification","error_code":"other"}`, false},
		{"other", `{"status":"cancelled","error":"rollback cancelled by ops","error_code":"other"}`, false},
		// Records of restorers from before error_code.
		{"old record, damaged archive", `{"status":"failed","error":"refusing to restore snapshot s: archive failed verification: replaced; nothing was changed"}`, true},
		{"old record, streamed damage", `{"status":"failed","error":"archive failed verification: archive a.tar.zst of snapshot s: checksum mismatch"}`, true},
		{"old record, snapshot gone", `{"status":"failed","error":"no snapshot with id or name \"s\" (see ` + "`snapshot list`" + `)"}`, true},
		{"old record, other failure", `{"status":"failed","error":"restored data does not match the snapshot: corpus"}`, false},
		{"old record, no key", `{"status":"failed","error":"refusing to restore snapshot s: snapshot s is encrypted with age and this restorer has no identity"}`, false},
	}
	for _, tc := range ops {
		var op contract.Operation
		if err := json.Unmarshal([]byte(tc.record), &op); err != nil {
			t.Fatal(err)
		}
		if got := failedUnusable(&op); got != tc.want {
			t.Errorf("operation %s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestSnapshotName(t *testing.T) {
	for job, want := range map[string]string{
		"nightly-42":             "pre_migration_nightly-42",
		"a=b":                    "pre_migration_a-b",
		strings.Repeat("x", 200): "pre_migration_" + strings.Repeat("x", 114),
	} {
		got := snapshotName(job)
		if got != want || contract.ValidateSnapshotName(got) != nil {
			t.Errorf("snapshotName(%q) = %q (valid: %v), want %q", job, got, contract.ValidateSnapshotName(got), want)
		}
	}
}

// FuzzDecodeEvent: whatever a job publishes on whatever subject, decoding
// never panics, and what it accepts is a valid event of a usable job name.
func FuzzDecodeEvent(f *testing.F) {
	good, _ := json.Marshal(contract.MigrationEvent{Envelope: contract.Envelope{Type: contract.TypeMigrationValidation}, Job: "j", ValidChunks: 1, TotalChunks: 2})
	f.Add("chroma.migration.j.validation", good)
	f.Add("chroma.migration.j.started", []byte(`{"type":"chromadb-rollback.v1.migration_started","job":"j","tenant":"t","database":"d","take_snapshot":true}`))
	f.Add("chroma.migration.j", []byte(`{}`))
	f.Add("chroma.migration.j.x.y", []byte(`null`))
	f.Add("chroma.migration..started", []byte(`[]`))
	s := &Service{subj: contract.Subjects{Prefix: "chroma"}}
	f.Fuzz(func(t *testing.T, subject string, data []byte) {
		var in incoming
		var reason string
		in.job, in.event, reason = s.parseSubject(subject)
		if reason == "" {
			reason = decodeEvent(data, &in)
		}
		if reason != "" {
			return
		}
		if in.ev == nil || !jobNameRE.MatchString(in.job) {
			t.Fatalf("accepted %q %q without a usable event", subject, data)
		}
		if err := contract.ValidateMigrationEvent(in.event, in.job, in.ev); err != nil {
			t.Fatalf("accepted an invalid event: %v", err)
		}
	})
}

func TestRetryBackoff(t *testing.T) {
	s := &Service{cfg: Config{RetryInterval: time.Second}, retryAt: map[string]time.Time{}, retries: map[string]int{}}
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second} {
		before := time.Now()
		s.later("j")
		if got := s.retryAt["j"].Sub(before); got < want || got > want+time.Second {
			t.Errorf("failure %d: next try in %s, want %s", i+1, got, want)
		}
	}
	for range 20 {
		s.later("j")
	}
	if got := time.Until(s.retryAt["j"]); got > maxRetryDelay {
		t.Errorf("backoff %s beyond its cap %s", got, maxRetryDelay)
	}
	s.succeeded("j")
	if !s.retryAt["j"].IsZero() || s.retries["j"] != 0 {
		t.Errorf("backoff kept after a success")
	}
}

// TestRollbackFailedAfterEnd: the status lists an ended run whose triggered
// rollback failed after it ended, for contract.EndedRunAlertFor; not one ended by an
// operator after the failure (that is how the alert of a running run is
// cleared), nor a completed or pending rollback. A rollback left to the
// operator (automatic rollback disabled) after the run ended is listed.
func TestRollbackFailedAfterEnd(t *testing.T) {
	ended := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	failedAt := ended.Add(time.Minute)
	base := contract.MigrationRecord{Job: "j", Status: contract.MigrationFailed, EndedAt: ended, Trigger: contract.TriggerTime,
		RollbackStatus: contract.StatusFailed, RollbackEndedAt: failedAt}
	for _, c := range []struct {
		name string
		edit func(r *contract.MigrationRecord)
		now  time.Time
		want bool
	}{
		{"failed after the end", func(*contract.MigrationRecord) {}, failedAt.Add(time.Hour), true},
		{"a day later", func(*contract.MigrationRecord) {}, failedAt.Add(contract.EndedRunAlertFor), false},
		{"ended by an operator after the failure", func(r *contract.MigrationRecord) { r.EndedAt = failedAt.Add(time.Second) }, failedAt.Add(time.Hour), false},
		{"cancelled after the end", func(r *contract.MigrationRecord) { r.RollbackStatus = contract.StatusCancelled }, failedAt.Add(time.Hour), true},
		{"completed", func(r *contract.MigrationRecord) {
			r.RollbackStatus, r.Status = contract.StatusCompleted, contract.MigrationRolledBack
		}, failedAt.Add(time.Hour), false},
		{"still running", func(r *contract.MigrationRecord) { r.RollbackStatus = contract.StatusRunning }, failedAt.Add(time.Hour), false},
		// Automatic rollback disabled: alerted after the run ended (the
		// failure trigger fires on the end) is listed like a failure;
		// alerted while it ran, then ended, is not.
		{"left to the operator after the end", func(r *contract.MigrationRecord) { r.RollbackStatus = contract.RollbackAlerted }, failedAt.Add(time.Hour), true},
		{"left to the operator, then ended", func(r *contract.MigrationRecord) {
			r.RollbackStatus, r.EndedAt = contract.RollbackAlerted, failedAt.Add(time.Second)
		}, failedAt.Add(time.Hour), false},
		{"no trigger", func(r *contract.MigrationRecord) { r.Trigger = "" }, failedAt.Add(time.Hour), false},
		{"recorded before rollback_ended_at", func(r *contract.MigrationRecord) { r.RollbackEndedAt = time.Time{} }, failedAt.Add(time.Hour), false},
	} {
		r := base
		c.edit(&r)
		if got := rollbackFailedAfterEnd(&r, c.now); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// TestFlagsRefuseZero: a setting given as 0 (flag or environment) is
// refused, naming it. It became the default (0.95, 1h, 3, 100 MiB), where
// who gave it most likely meant none.
func TestFlagsRefuseZero(t *testing.T) {
	for _, c := range []struct {
		args      []string
		env, want string
	}{
		{nil, "", ""},
		{[]string{"--validation-threshold", "0.99", "--disk-min-free-mb", "1"}, "", ""},
		{[]string{"--validation-threshold", "0"}, "", "validation threshold 0"},
		{[]string{"--time-limit", "0s"}, "", "time limit 0"},
		{[]string{"--heartbeat-failures", "0"}, "", "heartbeat failures 0"},
		{[]string{"--disk-min-free-mb", "0"}, "", "disk min free 0"},
		{nil, "0", "disk min free 0"},
	} {
		t.Setenv("DISK_MIN_FREE_MB", c.env)
		if c.env == "" {
			os.Unsetenv("DISK_MIN_FREE_MB")
		}
		fs := flag.NewFlagSet("watchdog", flag.ContinueOnError)
		var cfg Config
		done := RegisterFlags(fs, &cfg)
		if err := fs.Parse(c.args); err != nil {
			t.Fatal(err)
		}
		err := done()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%v (DISK_MIN_FREE_MB=%q): %v, want no error", c.args, c.env, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%v (DISK_MIN_FREE_MB=%q): %v, want an error with %q", c.args, c.env, err, c.want)
		}
	}
}
