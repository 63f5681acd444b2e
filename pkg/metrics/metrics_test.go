package metrics_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/bus"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/metrics"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// readmeListsSeries fails for each of our series in fams (every one, once
// the test recorded a sample of each) that the README's metrics table
// does not list.
func readmeListsSeries(t *testing.T, fams map[string]*dto.MetricFamily) {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var ours int
	for name := range fams {
		short, ok := strings.CutPrefix(name, metrics.Namespace+"_")
		if !ok {
			continue
		}
		ours++
		if !strings.Contains(string(readme), "| `"+short+"` |") {
			t.Errorf("README.md's metrics table does not list %s", short)
		}
	}
	if ours < 10 {
		t.Errorf("only %d of our series scraped; the check sees too little", ours)
	}
}

// scrape GETs /metrics and parses the text exposition.
func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", rec.Code, rec.Body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// value returns the value of the series name{labels} (metrics.SeriesValue);
// ok is false when it is absent.
func value(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
	return metrics.SeriesValue(f, labels)
}

func want(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string, w float64) {
	t.Helper()
	got, ok := value(fams, name, labels)
	if !ok {
		t.Errorf("%s%v is missing", name, labels)
		return
	}
	if got != w {
		t.Errorf("%s%v = %v, want %v", name, labels, got, w)
	}
}

func putJSON(t *testing.T, kv jetstream.KeyValue, key string, v any) {
	t.Helper()
	data, _ := json.Marshal(v)
	if _, err := kv.Put(t.Context(), key, data); err != nil {
		t.Fatal(err)
	}
}

// TestMetrics: what services record and what is read from JetStream at
// scrape time come out of /metrics with their labels and values.
func TestMetrics(t *testing.T) {
	n := testenv.StartNATS(t)
	ctx := t.Context()
	r := metrics.New()
	r.WatchState(n.JS, metrics.StateOptions{})
	r.WatchState(n.JS, metrics.StateOptions{}) // a second service in the process: no duplicate registration

	acme := map[string]string{"tenant": "acme", "database": "prod"}
	r.Snapshot(metrics.Op{Tenant: "acme", Database: "prod", Outcome: metrics.OutcomeCompleted, Duration: 3 * time.Second, Records: 1000, Bytes: 4096})
	r.Snapshot(metrics.Op{Tenant: "acme", Database: "prod", Outcome: metrics.OutcomeCompleted, Duration: time.Second, Records: 500, Bytes: 1024})
	r.Snapshot(metrics.Op{Tenant: "acme", Database: "prod", Outcome: metrics.OutcomeFailed, Duration: time.Second, Records: 7, Bytes: 7})
	r.Restore(metrics.Op{Tenant: "acme", Database: "prod", Outcome: metrics.OutcomeCompleted, Duration: 2 * time.Second, Records: 1500, Bytes: 5120})
	r.Restore(metrics.Op{Tenant: "acme", Database: "prod", Outcome: metrics.OutcomeCancelled, Duration: time.Second})
	r.Failure("snapshotter", "snapshot.create", metrics.CodeReason(contract.CodeNotFound))
	r.Failure("snapshotter", "snapshot.create", metrics.CodeReason(contract.CodeNotFound))
	r.Failure("restorer", "rollback", metrics.ReasonCancelled)
	r.Trigger(contract.TriggerValidation)

	// State: acme/prod has two verified snapshots, a newer partial one
	// (a rollback's safety snapshot, say) and a fence; beta/main a
	// verified one; gamma/x only an unverified one; delta/y only a fence;
	// eps/z only a partial one.
	started := time.Now().Add(-time.Minute).UTC()
	m := func(id, tenant, db string, startedAt time.Time, verified bool) contract.SnapshotManifest {
		mf := contract.SnapshotManifest{SnapshotID: id, Tenant: tenant, Database: db, StartedAt: startedAt}
		if verified {
			mf.VerifiedAt = startedAt.Add(time.Second)
		}
		return mf
	}
	putJSON(t, n.Assets.Manifests, "snap_1", m("snap_1", "acme", "prod", started.Add(-time.Hour), true))
	putJSON(t, n.Assets.Manifests, "snap_2", m("snap_2", "acme", "prod", started, true))
	putJSON(t, n.Assets.Manifests, "snap_3", m("snap_3", "beta", "main", started.Add(-24*time.Hour), true))
	putJSON(t, n.Assets.Manifests, "snap_4", m("snap_4", "gamma", "x", started, false))
	putJSON(t, n.Assets.Manifests, "snap_5", m("snap_5", "beta", "main", started, true))
	partial := func(mf contract.SnapshotManifest) contract.SnapshotManifest { mf.Partial = true; return mf }
	putJSON(t, n.Assets.Manifests, "snap_6", partial(m("snap_6", "acme", "prod", started.Add(50*time.Second), true)))
	putJSON(t, n.Assets.Manifests, "snap_7", partial(m("snap_7", "eps", "z", started, true)))
	// beta/main also holds an archive of two days ago, imported just now:
	// its data is older than snap_3's.
	imported := m("snap_8", "beta", "main", started.Add(55*time.Second), true)
	twoDays := started.Add(-48 * time.Hour)
	imported.ImportedFrom = &contract.ImportOrigin{Format: "native", SourceCreatedAt: &twoDays}
	putJSON(t, n.Assets.Manifests, "snap_8", imported)
	if err := n.Assets.Manifests.Delete(ctx, "snap_5"); err != nil { // a deleted snapshot does not count
		t.Fatal(err)
	}
	putJSON(t, n.Assets.State, contract.FenceKey("acme", "prod"), contract.Fence{Tenant: "acme", Database: "prod", OpID: "op_1"})
	putJSON(t, n.Assets.State, contract.FenceKey("delta", "y"), contract.Fence{Tenant: "delta", Database: "y", OpID: "op_2"})

	h := r.Handler(nil)
	fams := scrape(t, h)
	want(t, fams, "chromadb_rollback_audit_lag_messages", nil, 0) // no auditor consumer yet

	// The auditor's consumer has read one of four events and acked none.
	cons, err := n.Assets.Audit.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: metrics.DefaultAuditConsumer, AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	audit := bus.NewAuditor(n.JS, n.Assets.Subjects, "test", nil)
	for range 4 {
		if err := audit.Emit(ctx, contract.AuditEvent{Action: "snapshot.create", Outcome: contract.OutcomeStarted}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cons.Fetch(1); err != nil {
		t.Fatal(err)
	}

	fams = scrape(t, h)
	want(t, fams, "chromadb_rollback_snapshot_duration_seconds", map[string]string{"tenant": "acme", "database": "prod", "outcome": "completed"}, 2)
	want(t, fams, "chromadb_rollback_snapshot_duration_seconds", map[string]string{"tenant": "acme", "database": "prod", "outcome": "failed"}, 1)
	if sum := fams["chromadb_rollback_snapshot_duration_seconds"].GetMetric()[0].GetHistogram().GetSampleSum(); sum <= 0 {
		t.Errorf("snapshot duration sum %v, want > 0", sum)
	}
	want(t, fams, "chromadb_rollback_snapshot_records_total", acme, 1500) // the failed one's records are not counted
	want(t, fams, "chromadb_rollback_snapshot_bytes_total", acme, 5120)
	want(t, fams, "chromadb_rollback_restore_duration_seconds", map[string]string{"tenant": "acme", "database": "prod", "outcome": "completed"}, 1)
	want(t, fams, "chromadb_rollback_restore_duration_seconds", map[string]string{"tenant": "acme", "database": "prod", "outcome": "cancelled"}, 1)
	want(t, fams, "chromadb_rollback_restore_records_total", acme, 1500)
	want(t, fams, "chromadb_rollback_restore_bytes_total", acme, 5120)
	want(t, fams, "chromadb_rollback_operation_failures_total", map[string]string{"service": "snapshotter", "operation": "snapshot.create", "reason": "not_found"}, 2)
	want(t, fams, "chromadb_rollback_operation_failures_total", map[string]string{"service": "restorer", "operation": "rollback", "reason": "cancelled"}, 1)
	want(t, fams, "chromadb_rollback_watchdog_triggers_total", map[string]string{"trigger": "validation"}, 1)

	want(t, fams, "chromadb_rollback_fence_raised", acme, 1)
	want(t, fams, "chromadb_rollback_fence_raised", map[string]string{"tenant": "beta", "database": "main"}, 0)
	want(t, fams, "chromadb_rollback_fence_raised", map[string]string{"tenant": "delta", "database": "y"}, 1)
	if _, ok := value(fams, "chromadb_rollback_fence_raised", map[string]string{"tenant": "gamma", "database": "x"}); ok {
		t.Error("fence_raised of a database with only an unverified snapshot and no fence is reported")
	}
	age := func(tenant, db string) float64 {
		v, ok := value(fams, "chromadb_rollback_newest_verified_snapshot_age_seconds", map[string]string{"tenant": tenant, "database": db})
		if !ok {
			t.Errorf("newest_verified_snapshot_age_seconds of %s/%s is missing", tenant, db)
		}
		return v
	}
	if a := age("acme", "prod"); a < 10 || a > 60 { // snap_6, ten seconds old
		t.Errorf("age of acme/prod %v, want about 10", a)
	}
	fullAge := func(tenant, db string) float64 {
		v, ok := value(fams, "chromadb_rollback_newest_full_snapshot_age_seconds", map[string]string{"tenant": tenant, "database": db})
		if !ok {
			t.Errorf("newest_full_snapshot_age_seconds of %s/%s is missing", tenant, db)
		}
		return v
	}
	if a := fullAge("acme", "prod"); a < 60 || a > 120 { // snap_2: the newer snap_6 is partial
		t.Errorf("full age of acme/prod %v, want about 60", a)
	}
	if a := fullAge("beta", "main"); a < 24*3600 || a > 24*3600+120 {
		t.Errorf("full age of beta/main %v, want about a day", a)
	}
	if a := age("eps", "z"); a < 60 || a > 120 {
		t.Errorf("age of eps/z %v, want about 60", a)
	}
	if _, ok := value(fams, "chromadb_rollback_newest_full_snapshot_age_seconds", map[string]string{"tenant": "eps", "database": "z"}); ok {
		t.Error("a database with only a partial snapshot gives a full snapshot age")
	}
	if a := age("beta", "main"); a < 24*3600 || a > 24*3600+120 { // snap_3: snap_5 was deleted, snap_8's data is older
		t.Errorf("age of beta/main %v, want about a day", a)
	}
	for _, name := range []string{"chromadb_rollback_newest_verified_snapshot_age_seconds", "chromadb_rollback_newest_full_snapshot_age_seconds"} {
		if _, ok := value(fams, name, map[string]string{"tenant": "gamma", "database": "x"}); ok {
			t.Errorf("an unverified snapshot gives %s", name)
		}
	}
	readmeListsSeries(t, fams)
	want(t, fams, "chromadb_rollback_audit_lag_messages", nil, 4) // three pending, one delivered unacked
	want(t, fams, "chromadb_rollback_state_scrape_ok", nil, 1)
	if _, ok := fams["go_goroutines"]; !ok {
		t.Error("the Go runtime's series are missing")
	}

	// Lowering the fence shows at the next scrape.
	if err := n.Assets.State.Delete(ctx, contract.FenceKey("acme", "prod")); err != nil {
		t.Fatal(err)
	}
	want(t, scrape(t, h), "chromadb_rollback_fence_raised", acme, 0)

	var nilReg *metrics.Registry // a service built without metrics
	nilReg.Snapshot(metrics.Op{})
	nilReg.Restore(metrics.Op{})
	nilReg.Failure("a", "b", "c")
	nilReg.Trigger("x")
	nilReg.AddCheck("x", nil)
	nilReg.WatchState(n.JS, metrics.StateOptions{})
}

// TestStateScrapeBounded: a JetStream that never answers costs a scrape
// the state timeout, not more; the state series are left out and
// state_scrape_ok says 0, the rest is served.
func TestStateScrapeBounded(t *testing.T) {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	t.Cleanup(s.Shutdown)
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	// Something takes the JetStream API requests and never answers.
	sub, err := nc.SubscribeSync("$JS.API.>")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	r := metrics.New()
	r.WatchState(js, metrics.StateOptions{Timeout: 300 * time.Millisecond})
	r.Trigger("time")
	start := time.Now()
	fams := scrape(t, r.Handler(nil))
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("scrape took %s with a state timeout of 300ms", took)
	}
	want(t, fams, "chromadb_rollback_state_scrape_ok", nil, 0)
	want(t, fams, "chromadb_rollback_watchdog_triggers_total", map[string]string{"trigger": "time"}, 1)
	for _, name := range []string{"chromadb_rollback_fence_raised", "chromadb_rollback_newest_verified_snapshot_age_seconds", "chromadb_rollback_audit_lag_messages"} {
		if _, ok := fams[name]; ok {
			t.Errorf("%s served although JetStream did not answer", name)
		}
	}
}

// healthz GETs /healthz.
func healthz(t *testing.T, h http.Handler) (int, contract.Health) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	var got contract.Health
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatalf("/healthz body %q: %v", rec.Body, err)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("/healthz content type %q", ct)
	}
	return rec.Code, got
}

func checkOf(h contract.Health, name string) contract.HealthCheck {
	for _, c := range h.Checks {
		if c.Name == name {
			return c
		}
	}
	return contract.HealthCheck{Name: name, Detail: "missing"}
}

// TestHealthz: 200 while NATS, JetStream and the cached Chroma heartbeat
// are fine; 503 naming the check when one fails or does not answer in
// time; the heartbeat is answered from its cache.
func TestHealthz(t *testing.T) {
	n := testenv.StartNATS(t)
	r := metrics.New()
	r.AddCheck("nats", metrics.NATSCheck(n.Conn))
	r.AddCheck("jetstream", metrics.JetStreamCheck(n.JS))
	var chromaErr error
	probes := 0
	hb := metrics.NewHeartbeat("Chroma at http://chroma", func(context.Context) error { probes++; return chromaErr }, time.Hour)
	r.AddCheck("chroma", hb.Check)
	h := r.Handler(nil)

	code, got := healthz(t, h)
	if code != http.StatusServiceUnavailable || got.OK || checkOf(got, "chroma").OK || !strings.Contains(checkOf(got, "chroma").Detail, "no heartbeat yet") {
		t.Errorf("before the first heartbeat: %d %+v", code, got)
	}
	hb.Probe(t.Context())
	code, got = healthz(t, h)
	if code != http.StatusOK || !got.OK || len(got.Checks) != 3 || got.Type != contract.TypeHealth {
		t.Fatalf("all fine: %d %+v", code, got)
	}
	for _, name := range []string{"nats", "jetstream", "chroma"} {
		if c := checkOf(got, name); !c.OK || c.Detail == "" {
			t.Errorf("check %s: %+v", name, c)
		}
	}
	if probes != 1 {
		t.Errorf("/healthz probed Chroma itself: %d probes, want 1", probes)
	}

	chromaErr = errors.New("connection refused")
	hb.Probe(t.Context())
	code, got = healthz(t, h)
	if c := checkOf(got, "chroma"); code != http.StatusServiceUnavailable || got.OK || c.OK || !strings.Contains(c.Detail, "connection refused") || !strings.Contains(c.Detail, "last success") {
		t.Errorf("chroma down: %d %+v", code, got)
	}
	if !checkOf(got, "nats").OK || !checkOf(got, "jetstream").OK {
		t.Errorf("chroma down fails other checks: %+v", got)
	}
	chromaErr = nil
	hb.Probe(t.Context())

	// A check that hangs is cut at HealthTimeout and named.
	r.AddCheck("slow", func(ctx context.Context) (string, error) {
		<-ctx.Done()
		time.Sleep(100 * time.Millisecond) // even a check that returns late
		return "", ctx.Err()
	})
	start := time.Now()
	code, got = healthz(t, h)
	if took := time.Since(start); took > metrics.HealthTimeout+time.Second {
		t.Errorf("/healthz took %s", took)
	}
	if c := checkOf(got, "slow"); code != http.StatusServiceUnavailable || c.OK || !strings.Contains(c.Detail, "no answer within") {
		t.Errorf("hanging check: %d %+v", code, got)
	}
	r.AddCheck("slow", func(context.Context) (string, error) { return "fine now", nil }) // replaced, not added
	if code, got = healthz(t, h); code != http.StatusOK || len(got.Checks) != 4 {
		t.Errorf("replaced check: %d %+v", code, got)
	}

	// NATS gone: the connection check fails at once.
	n.Conn.Close()
	if code, got = healthz(t, h); code != http.StatusServiceUnavailable || checkOf(got, "nats").OK {
		t.Errorf("closed connection: %d %+v", code, got)
	}
}

// TestServer: the listener is bound before serving (a port in use fails
// at once) and Serve stops when its context ends.
func TestServer(t *testing.T) {
	r := metrics.New()
	srv, err := r.Listen("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Listen(srv.Addr().String(), nil); err == nil || !strings.Contains(err.Error(), "metrics listen") {
		t.Errorf("second listen on %s: %v", srv.Addr(), err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	resp, err := http.Get("http://" + srv.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Errorf("GET /metrics: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	resp, err = http.Post("http://"+srv.Addr().String()+"/metrics", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /metrics: %d", resp.StatusCode)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not stop")
	}
}

// TestStorage: every stream is reported with its kind and figures as
// JetStream states them; a path that cannot be read is named, the others
// still reported.
func TestStorage(t *testing.T) {
	n := testenv.StartNATS(t)
	dir := t.TempDir()
	u := metrics.Storage(t.Context(), n.JS, []string{dir, dir + "/missing"})
	if len(u.Errors) != 0 || u.Account == nil {
		t.Fatalf("storage: %+v", u)
	}
	ai, err := n.JS.AccountInfo(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if u.Account.Streams != ai.Streams || u.Account.StoreBytes != ai.Store || u.Account.MaxStoreBytes != ai.Limits.MaxStore || len(u.Streams) != ai.Streams {
		t.Errorf("account %+v, %d streams; JetStream says %+v", u.Account, len(u.Streams), ai)
	}
	kinds := map[string]string{}
	for _, s := range u.Streams {
		kinds[s.Name] = s.Kind
		info, err := n.JS.Stream(t.Context(), s.Stream)
		if err != nil {
			t.Fatal(err)
		}
		if st := info.CachedInfo().State; s.Bytes != st.Bytes || s.Messages != st.Msgs || s.Storage != "file" && s.Storage != "memory" {
			t.Errorf("stream %s: %+v, JetStream says %d bytes, %d messages", s.Stream, s, st.Bytes, st.Msgs)
		}
	}
	for name, kind := range map[string]string{contract.StreamAudit: contract.StorageStream, contract.StreamCommands: contract.StorageStream,
		contract.BucketManifests: contract.StorageKV, contract.BucketState: contract.StorageKV, contract.ObjectSnapshots: contract.StorageObjectStore} {
		if kinds[name] != kind {
			t.Errorf("%s is %q, want %q", name, kinds[name], kind)
		}
	}
	if len(u.Disks) != 2 || u.Disks[0].FreeBytes == 0 || u.Disks[0].Error != "" || u.Disks[1].Error == "" || u.Disks[1].Path != dir+"/missing" {
		t.Errorf("disks: %+v", u.Disks)
	}
}

// TestEndpoint: what a service main wires: /healthz with NATS, JetStream
// and Chroma's heartbeat, /metrics with the state gauges, served beside
// the service and stopped with it; a nil Endpoint only runs the service.
func TestEndpoint(t *testing.T) {
	n := testenv.StartNATS(t)
	ep, err := metrics.OpenEndpoint(metrics.EndpointOptions{Listen: "127.0.0.1:0", NATS: n.Conn, ChromaURL: "http://chroma",
		Chroma: func(context.Context) error { return nil }, ChromaInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ep.Addr().String()
	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		var b strings.Builder
		_, _ = io.Copy(&b, resp.Body)
		return resp.StatusCode, b.String()
	}
	ran := false
	err = ep.Serve(t.Context(), func(ctx context.Context) error {
		ran = true
		ep.Metrics().Trigger("disk")
		deadline := time.Now().Add(10 * time.Second)
		for {
			code, body := get("/healthz")
			if code == http.StatusOK {
				for _, name := range []string{`"nats"`, `"jetstream"`, `"chroma"`, "Chroma at http://chroma answered"} {
					if !strings.Contains(body, name) {
						t.Errorf("/healthz lacks %s: %s", name, body)
					}
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("/healthz: %d %s", code, body)
			}
			time.Sleep(20 * time.Millisecond)
		}
		code, body := get("/metrics")
		if code != http.StatusOK || !strings.Contains(body, "chromadb_rollback_state_scrape_ok 1") ||
			!strings.Contains(body, `chromadb_rollback_watchdog_triggers_total{trigger="disk"} 1`) {
			t.Errorf("/metrics: %d\n%s", code, body)
		}
		return errors.New("service ended")
	})
	if !ran || err == nil || err.Error() != "service ended" {
		t.Errorf("Serve: ran %v, err %v", ran, err)
	}
	if code, _ := get("/metrics"); code != 0 {
		t.Errorf("the endpoint still answers after its service ended: %d", code)
	}

	off, err := metrics.OpenEndpoint(metrics.EndpointOptions{NATS: n.Conn})
	if err != nil || off != nil {
		t.Fatalf("endpoint without an address: %v, %v", off, err)
	}
	if err := off.Serve(t.Context(), func(context.Context) error { return nil }); err != nil || off.Metrics() != nil {
		t.Errorf("nil endpoint: %v", err)
	}
	if _, err := metrics.OpenEndpoint(metrics.EndpointOptions{Listen: "127.0.0.1:0"}); err == nil {
		t.Error("an endpoint without NATS opened")
	}
}

// TestAuditLagOfSeveralAuditors: with the StatefulSet's auditors (each its
// own consumer, none named "auditor") the lag is the largest backlog
// among the consumers named, not 0 for a consumer that does not exist.
func TestAuditLagOfSeveralAuditors(t *testing.T) {
	n := testenv.StartNATS(t)
	ctx := t.Context()
	audit := bus.NewAuditor(n.JS, n.Assets.Subjects, "test", nil)
	for range 5 {
		if err := audit.Emit(ctx, contract.AuditEvent{Action: "snapshot.create", Outcome: contract.OutcomeStarted}); err != nil {
			t.Fatal(err)
		}
	}
	// auditor-0 has written and acked three; auditor-1 none.
	c0, err := n.Assets.Audit.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "auditor-0", AckPolicy: jetstream.AckAllPolicy})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c0.Fetch(3)
	if err != nil {
		t.Fatal(err)
	}
	var last jetstream.Msg
	for m := range batch.Messages() {
		last = m
	}
	if last == nil {
		t.Fatal("auditor-0 fetched nothing")
	}
	if err := last.DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Assets.Audit.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "auditor-1", AckPolicy: jetstream.AckAllPolicy}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		consumers string
		lag       float64
	}{{"auditor-0,auditor-1", 5}, {"auditor-0", 2}, {" auditor-0 , gone", 2}, {"", 0}} {
		r := metrics.New()
		r.WatchState(n.JS, metrics.StateOptions{AuditConsumer: c.consumers})
		fams := scrape(t, r.Handler(nil))
		if got, _ := value(fams, "chromadb_rollback_audit_lag_messages", nil); got != c.lag {
			t.Errorf("consumers %q: audit_lag_messages = %v, want %v", c.consumers, got, c.lag)
		}
		want(t, fams, "chromadb_rollback_state_scrape_ok", nil, 1)
	}
}
