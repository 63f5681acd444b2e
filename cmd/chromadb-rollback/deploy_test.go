package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/metrics"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/migration"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/chromadb-rollback/chromadb-rollback/services/auditor"
	"github.com/chromadb-rollback/chromadb-rollback/services/restorer"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
	"github.com/chromadb-rollback/chromadb-rollback/services/watchdog"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// deployStack is the four services, each connected with its own user of
// deploy/nats/accounts.conf to a server loaded from deploy/nats/single.conf.
type deployStack struct {
	t    *testing.T
	url  string
	pw   testenv.DeployPasswords
	logs testenv.SyncBuffer

	mu     sync.Mutex
	errors map[string][]string // asynchronous server errors by user
}

// connect connects as user and records the server's errors to it.
func (s *deployStack) connect(user string) *nats.Conn {
	s.t.Helper()
	nc, err := s.pw.Config(user).Connect(s.url, nats.Name(user), nats.MaxReconnects(-1),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			s.mu.Lock()
			s.errors[user] = append(s.errors[user], err.Error())
			s.mu.Unlock()
		}))
	if err != nil {
		s.t.Fatalf("connect as %s: %v", user, err)
	}
	s.t.Cleanup(nc.Close)
	return nc
}

// refused lists the permission violations the server sent to users.
func (s *deployStack) refused(users ...string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, u := range users {
		for _, e := range s.errors[u] {
			if strings.Contains(e, "Permissions Violation") {
				out = append(out, u+": "+e)
			}
		}
	}
	return out
}

// cli runs the CLI as the operator.
func (s *deployStack) cli(args ...string) (int, string, string) {
	s.t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(s.t.Context(), 2*time.Minute)
	defer cancel()
	base := []string{"--nats-url", s.url, "--nats-user", "operator", "--nats-password", s.pw["operator"], "--actor", "ops@example"}
	code := run(ctx, append(base, args...), strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

// Each service runs with its own user of the real deploy config: the
// snapshotter, restorer, watchdog and auditor start, an operator takes a
// snapshot, exports it and rolls a damaged database back with the CLI, the
// watchdog takes a migration job's pre-migration snapshot, the auditor
// answers, and the server refused none of the services anything. No log
// line or audit event holds a password.
func TestDeployServicesWithOwnUsers(t *testing.T) {
	ch := testenv.StartChroma(t)
	cc := ch.Client(t)
	if err := testenv.SeedWorkload(t.Context(), cc, tTenant, tDB, 2, 200, 16, 60); err != nil {
		t.Fatal(err)
	}
	pw := testenv.SetDeployPasswords(t)
	srv := testenv.StartDeployServer(t, "single.conf")
	s := &deployStack{t: t, url: srv.ClientURL(), pw: pw, errors: map[string][]string{}}
	log := testenv.Logger(t, &s.logs)
	subj := contract.Subjects{Prefix: contract.DefaultPrefix}

	// As each service's main wires it: its metrics endpoint on the same
	// connection, so the scrape-time reads run with the service's user.
	var endpoints []*metrics.Endpoint
	endpoint := func(nc *nats.Conn) *metrics.Endpoint {
		ep, err := metrics.OpenEndpoint(metrics.EndpointOptions{Listen: "127.0.0.1:0", NATS: nc, Chroma: cc.Heartbeat, ChromaURL: ch.URL, Log: log})
		if err != nil {
			t.Fatal(err)
		}
		endpoints = append(endpoints, ep)
		return ep
	}
	snc := s.connect("snapshotter")
	sep := endpoint(snc)
	snap, err := snapshotter.New(snapshotter.Config{ChromaURL: ch.URL, DataDir: t.TempDir(), Instance: "snapshotter-1", Metrics: sep.Metrics()},
		snc, subj, cc, log.With("service", "snapshotter"))
	if err != nil {
		t.Fatal(err)
	}
	rnc := s.connect("restorer")
	rep := endpoint(rnc)
	rest, err := restorer.New(restorer.Config{ChromaURL: ch.URL, Instance: "restorer-1", Metrics: rep.Metrics()}, rnc, subj, cc, log.With("service", "restorer"))
	if err != nil {
		t.Fatal(err)
	}
	wnc := s.connect("watchdog")
	wep := endpoint(wnc)
	wd, err := watchdog.New(watchdog.Config{ChromaURL: ch.URL, Instance: "watchdog-1", TickInterval: 200 * time.Millisecond, Metrics: wep.Metrics()},
		wnc, subj, ch.Client(t, chroma.WithRetryMaxElapsed(0)), log.With("service", "watchdog"))
	if err != nil {
		t.Fatal(err)
	}
	aud, err := auditor.New(auditor.Config{DataDir: t.TempDir(), Instance: "auditor-1"}, s.connect("auditor"), subj, log.With("service", "auditor"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runAll(ctx, func(ctx context.Context) error { return sep.Serve(ctx, snap.Run) },
			func(ctx context.Context) error { return rep.Serve(ctx, rest.Run) },
			func(ctx context.Context) error { return wep.Serve(ctx, wd.Run) }, aud.Run)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && ctx.Err() == nil {
			t.Errorf("services: %v", err)
		}
	})

	// The operator's health check passes once every service answers.
	var code int
	var stdout, stderr string
	for deadline := time.Now().Add(30 * time.Second); ; {
		if code, stdout, stderr = s.cli("health-check", "--json"); code == exitOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health-check as the operator: exit %d\n%s%s\nlogs:\n%s", code, stdout, stderr, s.logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	// It found each service by the micro discovery ($SRV.INFO.<name>):
	// accounts.conf lets the operator ask and each service's user answer.
	var h contract.Health
	if err := json.Unmarshal([]byte(stdout), &h); err != nil {
		t.Fatalf("health-check --json: %v\n%s", err, stdout)
	}
	for _, name := range []string{"service_snapshotter", "service_restorer", "service_watchdog", "service_auditor"} {
		if !slices.ContainsFunc(h.Checks, func(c contract.HealthCheck) bool { return c.Name == name && c.OK }) {
			t.Errorf("health-check as the operator lacks a passing %s: %+v", name, h.Checks)
		}
	}

	code, stdout, stderr = s.cli("snapshot", "create", "--name", "pre_migration", "--json")
	if code != exitOK {
		t.Fatalf("snapshot create as the operator: exit %d: %s\nlogs:\n%s", code, stderr, s.logs.String())
	}
	var m contract.SnapshotManifest
	if err := json.Unmarshal([]byte(stdout), &m); err != nil || m.TotalRecords != 200 {
		t.Fatalf("snapshot: %v, %d records, want 200", err, m.TotalRecords)
	}
	if code, stdout, stderr = s.cli("snapshot", "verify", m.SnapshotID); code != exitOK {
		t.Errorf("snapshot verify: exit %d\n%s%s", code, stdout, stderr)
	}
	// The listing looks each snapshot's archive up, with the snapshotter's user.
	if code, stdout, stderr = s.cli("snapshot", "list"); code != exitOK || !strings.Contains(stdout, m.SnapshotID) || stderr != "" {
		t.Errorf("snapshot list: exit %d\n%s%s", code, stdout, stderr)
	}
	export := filepath.Join(t.TempDir(), "pre.tar.zst")
	if code, _, stderr = s.cli("snapshot", "export", m.SnapshotID, "-o", export); code != exitOK {
		t.Errorf("snapshot export as the operator: exit %d: %s", code, stderr)
	} else if fi, err := os.Stat(export); err != nil || fi.Size() != m.Size {
		t.Errorf("exported archive: %v, want %d bytes", err, m.Size)
	}

	// A bad migration, rolled back by the operator.
	before := state(t, cc)
	w0, err := cc.GetCollection(t.Context(), tTenant, tDB, "workload_00")
	if err != nil {
		t.Fatal(err)
	}
	if err := cc.Delete(t.Context(), tTenant, tDB, w0.ID, before["workload_00"].IDs[:40]); err != nil {
		t.Fatal(err)
	}
	if code, stdout, stderr = s.cli("rollback", "pre_migration", "--yes", "--reason", "bad migration"); code != exitOK {
		t.Fatalf("rollback as the operator: exit %d\n%s%s\nlogs:\n%s", code, stdout, stderr, s.logs.String())
	}
	sameState(t, "after the rollback", state(t, cc), before)

	// A migration job asks the watchdog for its pre-migration snapshot.
	job, err := migration.New(s.connect("job_reindex"), "reindex")
	if err != nil {
		t.Fatal(err)
	}
	defer job.Close()
	if _, err := job.Start(t.Context(), migration.StartOptions{Tenant: tTenant, Database: tDB, TakeSnapshot: true}); err != nil {
		t.Fatalf("job start: %v", err)
	}
	wctx, wcancel := context.WithTimeout(t.Context(), time.Minute)
	id, err := job.WaitForSnapshot(wctx)
	wcancel()
	if err != nil {
		t.Fatalf("the watchdog's pre-migration snapshot: %v\nlogs:\n%s", err, s.logs.String())
	}
	if code, stdout, stderr = s.cli("snapshot", "info", id); code != exitOK || !strings.Contains(stdout, id) {
		t.Errorf("snapshot info %s: exit %d\n%s%s", id, code, stdout, stderr)
	}
	if err := job.Complete(t.Context()); err != nil {
		t.Errorf("job complete: %v", err)
	}
	// A run that names its snapshot: the watchdog pins it after looking,
	// with its own user, that its archive is in the object store.
	job2, err := migration.New(s.connect("job_reindex"), "reindex")
	if err != nil {
		t.Fatal(err)
	}
	defer job2.Close()
	if _, err := job2.Start(t.Context(), migration.StartOptions{Tenant: tTenant, Database: tDB, SnapshotID: "pre_migration"}); err != nil {
		t.Fatalf("job start naming its snapshot: %v", err)
	}
	wctx, wcancel = context.WithTimeout(t.Context(), time.Minute)
	pinned, err := job2.WaitForSnapshot(wctx)
	wcancel()
	if err != nil || pinned != m.SnapshotID {
		t.Errorf("the watchdog pinned %q (%v), want %s\nlogs:\n%s", pinned, err, m.SnapshotID, s.logs.String())
	}
	if err := job2.Complete(t.Context()); err != nil {
		t.Errorf("job complete: %v", err)
	}

	if code, stdout, stderr = s.cli("status"); code != exitOK {
		t.Errorf("status as the operator: exit %d\n%s%s", code, stdout, stderr)
	}
	// The auditor has the trail of all this.
	for deadline := time.Now().Add(10 * time.Second); ; {
		code, stdout, stderr = s.cli("audit-log", "--action", "rollback", "--outcome", "completed", "--json")
		if code == exitOK && strings.Contains(stdout, `"rollback"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("audit-log as the operator: exit %d\n%s%s", code, stdout, stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Every service's metrics and health read what they need with its user.
	for _, ep := range endpoints {
		for _, path := range []string{"/metrics", "/healthz"} {
			resp, err := http.Get("http://" + ep.Addr().String() + path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET %s: %s\n%s", path, resp.Status, body)
			}
			if path == "/metrics" && !strings.Contains(string(body), metrics.Namespace+"_state_scrape_ok 1") {
				t.Errorf("GET /metrics: the state gauges were not read:\n%s", grepLines(string(body), "state"))
			}
		}
	}

	if r := s.refused("snapshotter", "restorer", "watchdog", "auditor", "job_reindex"); len(r) > 0 {
		t.Errorf("the server refused the services:\n%s", strings.Join(r, "\n"))
	}

	// No password in any log line or audit event.
	operator := s.connect("operator")
	js, err := jetstream.New(operator)
	if err != nil {
		t.Fatal(err)
	}
	var audit strings.Builder
	for _, msg := range testenv.ReadAudit(t, js) {
		fmt.Fprintf(&audit, "%s\n", msg.Data)
	}
	for user, p := range pw {
		for what, text := range map[string]string{"the services' logs": s.logs.String(), "the audit stream": audit.String()} {
			if strings.Contains(text, p) {
				t.Errorf("%s holds the password of %s", what, user)
			}
		}
	}
}

// grepLines returns the lines of text that contain sub.
func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
