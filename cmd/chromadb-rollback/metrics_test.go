package main

import (
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/disk"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/metrics"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/chromadb-rollback/chromadb-rollback/services/restorer"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
	"github.com/chromadb-rollback/chromadb-rollback/services/watchdog"
	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// metricsStack is what `serve` runs, with its metrics endpoint: the
// services record into one registry, served on a random port.
type metricsStack struct {
	cli
	nats    *testenv.NATS
	chroma  *chroma.Client
	wd      *watchdog.Service
	base    string // http://host:port of the metrics endpoint
	watched string // the path the watchdog watches
}

// Fixture: 800 records in two collections.
const (
	metricsCollections = 2
	metricsRecords     = 800
)

func startMetricsStack(t *testing.T) *metricsStack {
	t.Helper()
	ch := testenv.StartChroma(t)
	cc := ch.Client(t)
	if err := testenv.SeedWorkload(t.Context(), cc, tTenant, tDB, metricsCollections, metricsRecords, 16, 80); err != nil {
		t.Fatal(err)
	}
	n := testenv.StartNATS(t)
	t.Cleanup(func() { testenv.CheckAudit(t, n.JS) }) // after the services stopped
	subj := contract.Subjects{Prefix: "chroma"}
	// As serve wires it.
	ep, err := metrics.OpenEndpoint(metrics.EndpointOptions{Listen: "127.0.0.1:0", NATS: n.Connect(t), Chroma: cc.Heartbeat, ChromaURL: ch.URL})
	if err != nil {
		t.Fatal(err)
	}
	s := &metricsStack{cli: cli{t: t, url: n.URL}, nats: n, chroma: cc, base: "http://" + ep.Addr().String(), watched: t.TempDir()}
	snap, err := snapshotter.New(snapshotter.Config{ChromaURL: ch.URL, DataDir: t.TempDir(), Metrics: ep.Metrics()}, n.Connect(t), subj, cc, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	rest, err := restorer.New(restorer.Config{ChromaURL: ch.URL, Metrics: ep.Metrics()}, n.Connect(t), subj, cc, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	s.wd, err = watchdog.New(watchdog.Config{ChromaURL: ch.URL, Metrics: ep.Metrics(), DiskPaths: []string{s.watched}, DiskInterval: 100 * time.Millisecond},
		n.Connect(t), subj, ch.Client(t, chroma.WithRetryMaxElapsed(0)), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runAll(ctx, snap.Run, rest.Run, s.wd.Run, ep.Run) }()
	t.Cleanup(func() { cancel(); <-done })
	for _, subject := range []string{subj.API("snapshot", "list"), subj.API("rollback", "status"), subj.API("status")} {
		deadline := time.Now().Add(20 * time.Second)
		for {
			if _, err := n.Conn.Request(subject, []byte(`{}`), time.Second); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s does not answer", subject)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return s
}

// get fetches path from the metrics endpoint over HTTP.
func (s *metricsStack) get(path string) (int, string) {
	s.t.Helper()
	resp, err := http.Get(s.base + path)
	if err != nil {
		s.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, string(body)
}

// scrape parses /metrics as Prometheus does.
func (s *metricsStack) scrape() series {
	s.t.Helper()
	code, body := s.get("/metrics")
	if code != http.StatusOK {
		s.t.Fatalf("GET /metrics: %d\n%s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		s.t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return series(fams)
}

type series map[string]*dto.MetricFamily

// find returns the sample of name with exactly labels.
func (ss series) find(name string, labels map[string]string) *dto.Metric {
	f := ss[name]
	if f == nil {
		return nil
	}
next:
	for _, m := range f.GetMetric() {
		if len(m.GetLabel()) != len(labels) {
			continue
		}
		for _, l := range m.GetLabel() {
			if labels[l.GetName()] != l.GetValue() {
				continue next
			}
		}
		return m
	}
	return nil
}

// value is a counter's or gauge's value; ok is false when absent.
func (ss series) value(name string, labels map[string]string) (float64, bool) {
	m := ss.find(name, labels)
	switch {
	case m == nil:
		return 0, false
	case m.Counter != nil:
		return m.Counter.GetValue(), true
	case m.Gauge != nil:
		return m.Gauge.GetValue(), true
	}
	return 0, false
}

// TestMetricsAfterSnapshotAndRollback (issue 5, acceptance 6): after a
// snapshot, a refused snapshot and a rollback, /metrics has every named
// series with the values the operations had, /healthz says ready, and
// `status --json` reports storage figures that match JetStream's own.
func TestMetricsAfterSnapshotAndRollback(t *testing.T) {
	s := startMetricsStack(t)
	ctx := t.Context()
	const fixture = metricsRecords

	code, stdout, stderr := s.run("snapshot", "create", "--name", "pre_migration", "--json")
	if code != exitOK {
		t.Fatalf("snapshot create: exit %d: %s", code, stderr)
	}
	var m contract.SnapshotManifest
	if err := json.Unmarshal([]byte(stdout), &m); err != nil {
		t.Fatal(err)
	}
	if m.TotalRecords != fixture || m.Size <= 0 {
		t.Fatalf("snapshot: %d records, %d bytes; want %d records", m.TotalRecords, m.Size, fixture)
	}
	// A forced failure: a snapshot of a collection that does not exist.
	if code, _, stderr = s.run("snapshot", "create", "--name", "bad", "--collections", "no_such_collection"); code != exitFailed || !strings.Contains(stderr, "not found") {
		t.Fatalf("snapshot of an unknown collection: exit %d: %s", code, stderr)
	}

	// A bad migration: half of one collection deleted, the other dropped;
	// the rollback writes every record of the snapshot back.
	before := state(t, s.chroma)
	w0, err := s.chroma.GetCollection(ctx, tTenant, tDB, "workload_00")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.chroma.Delete(ctx, tTenant, tDB, w0.ID, before["workload_00"].IDs[:before["workload_00"].Len()/2]); err != nil {
		t.Fatal(err)
	}
	if err := s.chroma.DeleteCollection(ctx, tTenant, tDB, "workload_01"); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = s.run("rollback", "pre_migration", "--yes", "--no-safety-snapshot", "--json")
	if code != exitOK {
		t.Fatalf("rollback: exit %d\n%s\n%s", code, stdout, stderr)
	}
	sameState(t, "after rollback", state(t, s.chroma), before)
	var op contract.Operation
	if err := json.Unmarshal([]byte(stdout), &op); err != nil || op.Restore == nil {
		t.Fatalf("rollback --json: %v\n%s", err, stdout)
	}
	if op.Restore.RecordsWritten != fixture {
		t.Fatalf("rollback wrote %d records, want %d", op.Restore.RecordsWritten, fixture)
	}

	t.Run("metrics", func(t *testing.T) {
		ss := s.scrape()
		db := map[string]string{"tenant": tTenant, "database": tDB}
		withOutcome := func(o string) map[string]string {
			return map[string]string{"tenant": tTenant, "database": tDB, "outcome": o}
		}
		for _, name := range []string{"chromadb_rollback_snapshot_duration_seconds", "chromadb_rollback_restore_duration_seconds"} {
			h := ss.find(name, withOutcome("completed")).GetHistogram()
			if h.GetSampleCount() != 1 || h.GetSampleSum() <= 0 {
				t.Errorf("%s{completed}: %d samples, sum %v; want 1 sample > 0", name, h.GetSampleCount(), h.GetSampleSum())
			}
			if ss.find(name, withOutcome("failed")) != nil {
				t.Errorf("%s{failed} is there: nothing failed in a job", name)
			}
		}
		for _, c := range []struct {
			name string
			want float64
		}{
			{"chromadb_rollback_snapshot_records_total", fixture},
			{"chromadb_rollback_snapshot_bytes_total", float64(m.Size)},
			{"chromadb_rollback_restore_records_total", fixture},
			{"chromadb_rollback_restore_bytes_total", float64(m.Size)}, // the archive read and verified
			{"chromadb_rollback_fence_raised", 0},
		} {
			if got, ok := ss.value(c.name, db); !ok || got != c.want {
				t.Errorf("%s%v = %v (present %v), want %v", c.name, db, got, ok, c.want)
			}
		}
		refused := map[string]string{"service": "snapshotter", "operation": "snapshot.create", "reason": "not_found"}
		if got, _ := ss.value("chromadb_rollback_operation_failures_total", refused); got != 1 {
			t.Errorf("operation_failures_total%v = %v, want 1", refused, got)
		}
		if n := len(ss["chromadb_rollback_operation_failures_total"].GetMetric()); n != 1 {
			t.Errorf("%d failure series, want only the refused snapshot's", n)
		}
		age, ok := ss.value("chromadb_rollback_newest_verified_snapshot_age_seconds", db)
		if since := time.Since(m.StartedAt).Seconds(); !ok || age < 0 || age > since+1 || age > 300 {
			t.Errorf("newest_verified_snapshot_age_seconds = %v (present %v); the snapshot started %.1fs ago", age, ok, since)
		}
		// The snapshot holds the whole database: it is the newest full one too.
		if full, ok := ss.value("chromadb_rollback_newest_full_snapshot_age_seconds", db); !ok || math.Abs(full-age) > 1 {
			t.Errorf("newest_full_snapshot_age_seconds = %v (present %v), want the newest snapshot's age %v", full, ok, age)
		}
		if lag, ok := ss.value("chromadb_rollback_audit_lag_messages", nil); !ok || lag < 0 || math.IsNaN(lag) {
			t.Errorf("audit_lag_messages = %v (present %v)", lag, ok)
		}
		if v, _ := ss.value("chromadb_rollback_state_scrape_ok", nil); v != 1 {
			t.Errorf("state_scrape_ok = %v", v)
		}
		if _, ok := ss["chromadb_rollback_watchdog_triggers_total"]; ok {
			t.Error("watchdog_triggers_total has a sample before any trigger")
		}

		// A trigger: free space on the watched path under the threshold
		// raises the disk alert, counted once.
		s.wd.SetDiskMinFree(math.MaxUint64)
		defer s.wd.SetDiskMinFree(1)
		deadline := time.Now().Add(10 * time.Second)
		for {
			got, _ := s.scrape().value("chromadb_rollback_watchdog_triggers_total", map[string]string{"trigger": "disk"})
			if got == 1 {
				break
			}
			if got > 1 || time.Now().After(deadline) {
				t.Fatalf("watchdog_triggers_total{disk} = %v, want 1", got)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("healthz", func(t *testing.T) {
		deadline := time.Now().Add(10 * time.Second)
		for {
			code, body := s.get("/healthz")
			var h contract.Health
			if err := json.Unmarshal([]byte(body), &h); err != nil {
				t.Fatalf("/healthz %d %q: %v", code, body, err)
			}
			names := map[string]bool{}
			for _, c := range h.Checks {
				names[c.Name] = c.OK
			}
			if code == http.StatusOK && h.OK && reflect.DeepEqual(names, map[string]bool{"nats": true, "jetstream": true, "chroma": true}) {
				break
			}
			if time.Now().After(deadline) { // the first Chroma heartbeat may still be on its way
				t.Fatalf("/healthz: %d %+v", code, h)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("status storage", func(t *testing.T) { s.checkStorage(t, m.Size) })
}

// jsFigures is what JetStream says of the account and every stream,
// less what every request changes (API counters, transient consumers).
type jsFigures struct {
	store, memory uint64
	streamCount   int
	limits        jetstream.AccountLimits
	streams       map[string]jetstream.StreamState
}

func (s *metricsStack) jsFigures(t *testing.T) jsFigures {
	t.Helper()
	ai, err := s.nats.JS.AccountInfo(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	f := jsFigures{store: ai.Store, memory: ai.Memory, streamCount: ai.Streams, limits: ai.Limits, streams: map[string]jetstream.StreamState{}}
	lister := s.nats.JS.ListStreams(t.Context())
	for info := range lister.Info() {
		st := info.State
		st.Consumers, st.FirstTime, st.LastTime = 0, time.Time{}, time.Time{} // transient ordered consumers come and go
		f.streams[info.Config.Name] = st
	}
	if err := lister.Err(); err != nil {
		t.Fatal(err)
	}
	return f
}

// checkStorage: `status --json` reports the account's use and limits and
// every stream's bytes and messages exactly as JetStream states them
// (read while nothing is written), and the watched path's free space;
// `status` prints them.
func (s *metricsStack) checkStorage(t *testing.T, archiveSize int64) {
	var rep contract.StatusReport
	var js jsFigures
	for attempt := 0; ; attempt++ {
		before := s.jsFigures(t)
		code, stdout, stderr := s.run("status", "--json")
		if code != exitOK {
			t.Fatalf("status --json: exit %d: %s", code, stderr)
		}
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
			t.Fatal(err)
		}
		if js = s.jsFigures(t); reflect.DeepEqual(before, js) {
			break // nothing was written meanwhile: the report must match exactly
		}
		if attempt == 20 {
			t.Fatal("JetStream never stood still for a status request")
		}
		time.Sleep(100 * time.Millisecond)
	}
	u := rep.Storage
	if u == nil || u.Account == nil || len(u.Errors) != 0 {
		t.Fatalf("status storage: %+v", u)
	}
	a := u.Account
	if a.StoreBytes != js.store || a.MemoryBytes != js.memory || a.MaxStoreBytes != js.limits.MaxStore || a.MaxMemoryBytes != js.limits.MaxMemory ||
		a.Streams != js.streamCount || a.MaxStreams != js.limits.MaxStreams || a.MaxConsumers != js.limits.MaxConsumers {
		t.Errorf("account %+v; JetStream says %+v", a, js)
	}
	if a.StoreBytes == 0 || a.Consumers < 3 { // the snapshotter's, restorer's and watchdog's durables at least
		t.Errorf("account %+v: nothing stored, or fewer than 3 consumers", a)
	}
	if len(u.Streams) != len(js.streams) {
		t.Errorf("%d streams reported, JetStream has %d", len(u.Streams), len(js.streams))
	}
	var sum uint64
	got := map[string]contract.StreamUse{}
	for _, st := range u.Streams {
		got[st.Stream] = st
		sum += st.Bytes
		want, ok := js.streams[st.Stream]
		if !ok || st.Bytes != want.Bytes || st.Messages != want.Msgs {
			t.Errorf("stream %s: %d bytes, %d messages; JetStream says %d bytes, %d messages", st.Stream, st.Bytes, st.Messages, want.Bytes, want.Msgs)
		}
	}
	if sum != a.StoreBytes+a.MemoryBytes {
		t.Errorf("streams hold %d bytes, the account %d", sum, a.StoreBytes+a.MemoryBytes)
	}
	for stream, w := range map[string]contract.StreamUse{
		"CHROMA_AUDIT":         {Name: contract.StreamAudit, Kind: contract.StorageStream, Storage: "file"},
		"KV_CHROMA_MANIFESTS":  {Name: contract.BucketManifests, Kind: contract.StorageKV, Storage: "file"},
		"KV_CHROMA_STATE":      {Name: contract.BucketState, Kind: contract.StorageKV, Storage: "file"},
		"OBJ_CHROMA_SNAPSHOTS": {Name: contract.ObjectSnapshots, Kind: contract.StorageObjectStore, Storage: "file"},
	} {
		g := got[stream]
		if g.Name != w.Name || g.Kind != w.Kind || g.Storage != w.Storage || g.Messages == 0 {
			t.Errorf("stream %s: %+v, want name %s, kind %s, %s storage, some messages", stream, g, w.Name, w.Kind, w.Storage)
		}
	}
	if obj := got["OBJ_CHROMA_SNAPSHOTS"]; obj.Bytes < uint64(archiveSize) {
		t.Errorf("the object store holds %d bytes, less than the %d-byte archive", obj.Bytes, archiveSize)
	}
	free, err := disk.Free(s.watched)
	if err != nil {
		t.Fatal(err)
	}
	if len(u.Disks) != 1 || u.Disks[0].Path != s.watched || u.Disks[0].Error != "" || u.Disks[0].FreeBytes == 0 ||
		math.Abs(float64(u.Disks[0].FreeBytes)-float64(free)) > 256<<20 {
		t.Errorf("disks %+v; %s has %d bytes free", u.Disks, s.watched, free)
	}

	code, stdout, stderr := s.run("status")
	if code != exitOK {
		t.Fatalf("status: exit %d: %s", code, stderr)
	}
	for _, want := range []string{"\nStorage\n", "JetStream account: file ", "NAME", "BYTES", "CHROMA_SNAPSHOTS", "object_store", "CHROMA_MANIFESTS", "kv",
		"CHROMA_AUDIT", "WATCHED PATH", s.watched} {
		if !strings.Contains(stdout, want) {
			t.Errorf("status output lacks %q:\n%s", want, stdout)
		}
	}
}
