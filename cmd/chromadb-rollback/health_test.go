package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
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
	for _, name := range []string{"nats", "chroma", "jetstream"} {
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
