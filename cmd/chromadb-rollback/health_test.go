package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/crypt"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/chromadb-rollback/chromadb-rollback/services/auditor"
	"github.com/chromadb-rollback/chromadb-rollback/services/restorer"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
	"github.com/chromadb-rollback/chromadb-rollback/services/watchdog"
	"github.com/nats-io/nats.go/micro"
)

// healthUntil runs health-check --json until done accepts its checks (by
// name), failing the test after a minute; it returns the last run.
func healthUntil(t *testing.T, c cli, done func(map[string]contract.HealthCheck) bool) (int, contract.Health, map[string]contract.HealthCheck, string) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		code, stdout, stderr := c.run("health-check", "--json")
		var h contract.Health
		if err := json.Unmarshal([]byte(stdout), &h); err != nil {
			t.Fatalf("health-check output %q (%s): %v", stdout, stderr, err)
		}
		got := map[string]contract.HealthCheck{}
		for _, ch := range h.Checks {
			got[ch.Name] = ch
		}
		if done(got) {
			return code, h, got, stdout
		}
		if time.Now().After(deadline) {
			t.Fatalf("health-check never got there: exit %d\n%s%s", code, stdout, stderr)
		}
	}
}

func passing(got map[string]contract.HealthCheck, names ...string) bool {
	for _, n := range names {
		if !got[n].OK {
			return false
		}
	}
	return true
}

// TestHealthCheckNamesMissingService: health-check checks each of the
// four services, by the micro discovery of the configured prefix, and
// fails naming the one that is not running. Found by hand: it asked only
// the snapshotter's and the auditor's health, and passed with no restorer
// or watchdog running, though the runbook's first step says it covers
// all four.
func TestHealthCheckNamesMissingService(t *testing.T) {
	ch := testenv.StartChroma(t)
	cc := ch.Client(t)
	n := testenv.StartNATS(t)
	c := startSnapshotter(t, n, snapshotter.Config{ChromaURL: ch.URL, DataDir: t.TempDir()}, cc)
	startRestorer(t, n, restorer.Config{ChromaURL: ch.URL}, cc)
	aud, err := auditor.New(auditor.Config{DataDir: t.TempDir()}, n.Connect(t), contract.Subjects{Prefix: "chroma"}, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	runUntilCleanup(t, aud.Run)
	// A watchdog of another deployment (prefix "other") on the same
	// account does not count for this one.
	svc, err := micro.AddService(n.Connect(t), micro.Config{Name: watchdog.ServiceName, Version: watchdog.Version, Metadata: map[string]string{"instance": "elsewhere"}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = svc.Stop() }()
	if err := svc.AddEndpoint("status", micro.HandlerFunc(func(r micro.Request) { _ = r.Respond([]byte("{}")) }), micro.WithEndpointSubject("other.api.status")); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	code, h, got, out := healthUntil(t, c, func(got map[string]contract.HealthCheck) bool {
		return passing(got, "service_snapshotter", "service_restorer", "service_auditor", "audit_trail")
	})
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("health-check took %v", took)
	}
	w := got["service_watchdog"]
	if code != exitFailed || h.OK || w.OK || !strings.Contains(w.Detail, "no chromadb-watchdog answered $SRV.INFO.chromadb-watchdog") ||
		!strings.Contains(w.Detail, "the watchdog is not running") || !strings.Contains(w.Detail, `1 instance of it answered for another --prefix than "chroma", serving other.api.status`) {
		t.Errorf("without a watchdog: exit %d, ok %v, service_watchdog %+v; want it failed, naming the watchdog\n%s", code, h.OK, w, out)
	}
	for _, name := range []string{"nats", "chroma", "jetstream", "archive_encryption"} {
		if !got[name].OK {
			t.Errorf("%s check %+v; want it to pass without the watchdog", name, got[name])
		}
	}
	code, stdout, stderr := c.run("health-check")
	if code != exitFailed || !regexp.MustCompile(`(?m)^FAIL +service_watchdog +no chromadb-watchdog answered`).MatchString(stdout) {
		t.Errorf("health-check's text does not name the missing watchdog: exit %d\n%s%s", code, stdout, stderr)
	}

	startWatchdog(t, n, ch)
	code, h, got, out = healthUntil(t, c, func(got map[string]contract.HealthCheck) bool { return got["service_watchdog"].OK })
	if code != exitOK || !h.OK || !strings.Contains(got["service_watchdog"].Detail, "chromadb-watchdog "+watchdog.Version+": 1 instance") {
		t.Errorf("with every service: exit %d\n%s", code, out)
	}
}

// TestHealthCheckEncryptedWithoutIdentity: serve with --age-recipients and
// no identity warns at start, and health-check fails archive_encryption:
// the restorer could not decrypt the snapshots taken, so every rollback
// to them (the watchdog's included) would be refused. Found by hand: all
// was OK until the automatic rollback failed.
func TestHealthCheckEncryptedWithoutIdentity(t *testing.T) {
	ch := testenv.StartChroma(t)
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	pub := id.Recipient().String()
	c, serveLog := launchServe(t, "--chroma-url", ch.URL, "--data-dir", t.TempDir(), "--age-recipients", pub)
	code, h, got, out := healthUntil(t, c, func(got map[string]contract.HealthCheck) bool {
		return passing(got, "service_snapshotter", "service_restorer", "service_watchdog", "service_auditor")
	})
	e := got["archive_encryption"]
	if code != exitFailed || h.OK || e.OK || !strings.Contains(e.Detail, "new archives are encrypted with age to "+pub) ||
		!strings.Contains(e.Detail, "has no identity to decrypt") || !strings.Contains(e.Detail, "will be refused") ||
		!strings.Contains(e.Detail, "--age-identity-file") {
		t.Errorf("health-check: exit %d, archive_encryption %+v; want it failed, saying rollbacks will be refused\n%s", code, e, out)
	}
	if log := serveLog.String(); !strings.Contains(log, "level=WARN") || !strings.Contains(log, "no identity was given (--age-identity-file") {
		t.Errorf("serve did not warn that its restorer cannot decrypt:\n%s", log)
	}
}

// TestEncryptionCheck: every restorer instance must hold an identity for
// what every snapshotter instance encrypts to.
func TestEncryptionCheck(t *testing.T) {
	info := func(instance string, meta ...string) micro.Info {
		i := micro.Info{}
		i.Metadata = map[string]string{"instance": instance}
		for k := 0; k+1 < len(meta); k += 2 {
			i.Metadata[meta[k]] = meta[k+1]
		}
		return i
	}
	snap := func(keys string) micro.Info { return info("s", contract.MetaAgeRecipients, keys) }
	rest := func(name, keys string) micro.Info { return info(name, contract.MetaAgeIdentities, keys) }
	for _, tc := range []struct {
		name         string
		snapshotters []micro.Info
		restorers    []micro.Info
		ok, said     bool
		want         string
	}{
		{"no snapshotter", nil, []micro.Info{rest("r1", "")}, true, false, ""},
		{"no restorer", []micro.Info{snap("age1a")}, nil, true, false, ""},
		{"plain", []micro.Info{info("s")}, []micro.Info{rest("r1", "")}, true, true, "stored unencrypted"},
		{"identity", []micro.Info{snap("age1a,age1b")}, []micro.Info{rest("r1", "age1b")}, true, true, "every restorer holds an identity"},
		{"no identity", []micro.Info{snap("age1a")}, []micro.Info{rest("r1", "")}, false, true, "restorer r1 has no identity to decrypt those encrypted to age1a"},
		{"other identity", []micro.Info{snap("age1a")}, []micro.Info{rest("r1", "age1z")}, false, true, "the identities of restorer r1 (age1z) are not among the recipients age1a"},
		{"one of two restorers", []micro.Info{snap("age1a")}, []micro.Info{rest("r1", "age1a"), rest("r2", "")}, false, true, "restorer r2 has no identity"},
		{"two snapshotters", []micro.Info{snap("age1a"), snap("age1b")}, []micro.Info{rest("r1", "age1a")}, false, true, "are not among the recipients age1b"},
	} {
		c, said := encryptionCheck(tc.snapshotters, tc.restorers, nil)
		if said != tc.said || (said && (c.OK != tc.ok || !strings.Contains(c.Detail, tc.want))) {
			t.Errorf("%s: %+v (said %v); want ok %v saying %q", tc.name, c, said, tc.ok, tc.want)
		}
	}

	// The snapshots already stored count too: after the keys were changed
	// (new --age-recipients, an identity file without the old key), or
	// encryption turned off, health-check said OK while every snapshot
	// encrypted to the old key, the restore point among them, could no
	// longer be rolled back to. Found by hand, rotating keys.
	enc := func(id string, keys ...string) contract.SnapshotManifest {
		return contract.SnapshotManifest{SnapshotID: id, Encryption: contract.EncryptionAge, Recipients: keys}
	}
	plain := contract.SnapshotManifest{SnapshotID: "snap_plain"}
	for _, tc := range []struct {
		name         string
		snapshotters []micro.Info
		restorers    []micro.Info
		stored       []contract.SnapshotManifest
		ok           bool
		want         []string
	}{
		{"rotated, old key kept", []micro.Info{snap("age1new")}, []micro.Info{rest("r1", "age1new,age1old")},
			[]contract.SnapshotManifest{enc("snap_1", "age1old"), plain}, true, []string{"every restorer holds an identity for the 1 encrypted snapshot stored"}},
		{"rotated, old key dropped", []micro.Info{snap("age1new")}, []micro.Info{rest("r1", "age1new")},
			[]contract.SnapshotManifest{enc("snap_1", "age1old"), enc("snap_2", "age1old"), enc("snap_3", "age1new"), plain}, false,
			[]string{"every restorer holds an identity for them, but restorer r1 cannot decrypt 2 stored snapshots encrypted to age1old (snap_1, snap_2)", "will be refused", "--age-identity-file"}},
		{"encryption off, identity dropped", []micro.Info{info("s")}, []micro.Info{rest("r1", "")},
			[]contract.SnapshotManifest{enc("snap_1", "age1old", "age1other"), enc("snap_2", "age1other", "age1old"), enc("snap_3", "age1old", "age1other"), enc("snap_4", "age1old", "age1other")}, false,
			[]string{"stored unencrypted (no --age-recipients), but restorer r1 cannot decrypt 4 stored snapshots encrypted to age1old,age1other (snap_1, snap_2, snap_3 and 1 more)"}},
		{"one of two restorers", []micro.Info{snap("age1new")}, []micro.Info{rest("r1", "age1new,age1old"), rest("r2", "age1new")},
			[]contract.SnapshotManifest{enc("snap_1", "age1old")}, false, []string{"restorer r2 cannot decrypt 1 stored snapshot encrypted to age1old (snap_1)"}},
		{"new and stored both", []micro.Info{snap("age1new")}, []micro.Info{rest("r1", "age1x")},
			[]contract.SnapshotManifest{enc("snap_1", "age1old")}, false, []string{"are not among the recipients age1new", "and restorer r1 cannot decrypt 1 stored snapshot"}},
	} {
		c, said := encryptionCheck(tc.snapshotters, tc.restorers, tc.stored)
		if !said || c.OK != tc.ok {
			t.Errorf("%s: %+v (said %v); want ok %v", tc.name, c, said, tc.ok)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(c.Detail, w) {
				t.Errorf("%s: %q does not say %q", tc.name, c.Detail, w)
			}
		}
	}
}

// TestKeysWarning: serve warns when it encrypts to keys it holds no
// identity for.
func TestKeysWarning(t *testing.T) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := age.GenerateX25519Identity()
	file := filepath.Join(t.TempDir(), "key.txt")
	if err := os.WriteFile(file, []byte(id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ids, err := crypt.LoadIdentities(file)
	if err != nil {
		t.Fatal(err)
	}
	mine, _ := crypt.ParseRecipients(id.Recipient().String())
	theirs, _ := crypt.ParseRecipients(other.Recipient().String())
	for _, tc := range []struct {
		name string
		r    *crypt.Recipients
		i    *crypt.Identities
		want string
	}{
		{"plain", nil, nil, ""},
		{"plain with identity", nil, ids, ""},
		{"identity", mine, ids, ""},
		{"no identity", mine, nil, "no identity was given"},
		{"other identity", theirs, ids, "none of the identities"},
	} {
		got := keysWarning(tc.r, tc.i)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) || strings.Contains(got, "AGE-SECRET-KEY") {
			t.Errorf("%s: %q; want %q", tc.name, got, tc.want)
		}
	}
}

// TestHealthCheckNamesInstanceWithoutChroma: two restorers, one with a
// wrong Chroma token (a mistyped secret, a token revoked on one machine).
// health-check asks every instance of the snapshotter, restorer and
// watchdog whether it reaches Chroma and fails naming that restorer. Found
// by hand on the documented topology: health-check was all OK, since its
// chroma check is the one snapshotter that answers chroma.api.health,
// while every rollback the bad restorer took failed with 401.
func TestHealthCheckNamesInstanceWithoutChroma(t *testing.T) {
	ch := testenv.StartChroma(t)
	proxy := testenv.StartChromaAuthProxy(t, ch.URL, "right-token")
	client := func(token string) *chroma.Client {
		cl, err := chroma.New(proxy.URL, chroma.WithToken(token), chroma.WithRetryMaxElapsed(0))
		if err != nil {
			t.Fatal(err)
		}
		return cl
	}
	good := func() *chroma.Client { return client("right-token") }
	n := testenv.StartNATS(t)
	c := startSnapshotter(t, n, snapshotter.Config{ChromaURL: proxy.URL, Instance: "snap-a"}, good())
	startRestorer(t, n, restorer.Config{ChromaURL: proxy.URL, Instance: "rest-a"}, good())
	startRestorer(t, n, restorer.Config{ChromaURL: proxy.URL, Instance: "rest-b"},
		client("wrong-token"))
	wd, err := watchdog.New(watchdog.Config{ChromaURL: proxy.URL, Instance: "wd-a", DiskPaths: []string{t.TempDir()}}, n.Connect(t),
		contract.Subjects{Prefix: "chroma"}, good(), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	runUntilCleanup(t, wd.Run)
	aud, err := auditor.New(auditor.Config{DataDir: t.TempDir()}, n.Connect(t), contract.Subjects{Prefix: "chroma"}, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	runUntilCleanup(t, aud.Run)

	code, h, got, out := healthUntil(t, c, func(got map[string]contract.HealthCheck) bool {
		return passing(got, "service_snapshotter", "service_restorer", "service_watchdog", "service_auditor") &&
			strings.Contains(got["service_restorer"].Detail, "2 instances")
	})
	ci := got["chroma_instances"]
	if code != exitFailed || h.OK || ci.OK || !strings.Contains(ci.Detail, "1 of 4 instances cannot reach Chroma") ||
		!strings.Contains(ci.Detail, "restorer rest-b: ") || !strings.Contains(ci.Detail, "Unauthorized") ||
		strings.Contains(ci.Detail, "rest-a") || strings.Contains(ci.Detail, "wrong-token") {
		t.Errorf("with a restorer whose token is wrong: exit %d, chroma_instances %+v; want it failed, naming rest-b alone\n%s", code, ci, out)
	}
	if !got["chroma"].OK {
		t.Errorf("chroma check %+v; the snapshotter reaches Chroma", got["chroma"])
	}
}
