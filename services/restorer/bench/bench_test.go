// Package bench measures rollbacks against the limit Chroma sets: a
// minimal add of the same records. It holds only a benchmark (make bench).
package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/archive"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/chromadb-rollback/chromadb-rollback/services/restorer"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// workload is one database the benchmark seeds, snapshots and rolls back.
type workload struct {
	name        string // figure prefix and database name
	collections int
	records     int
	dim         int
	docChars    int
}

// workloads are the seed's workload (4 collections, 9,832 records of 384-d
// with ~500-char documents) and a scale workload (one collection of
// 50,000 x 768-d), as in the snapshotter's benchmark.
var workloads = []workload{
	{name: "seed", collections: 4, records: 9832, dim: 384, docChars: 500},
	{name: "scale", collections: 1, records: 50000, dim: 768, docChars: 500},
}

const tenant = "default_tenant"

var subj = contract.Subjects{Prefix: contract.DefaultPrefix}

// BenchmarkRollbackWorkloads seeds both workloads into one real Chroma and
// snapshots each (an in-process snapshotter, which also takes the safety
// snapshots). Then per workload and round it measures the limit, a minimal
// add of the archive's records batch by batch with one request in flight
// into fresh collections of the same configuration, and a full rollback end
// to end through a separate restorer process (confirmed, without a safety
// snapshot) after half of every collection's records were deleted: from the
// start request until the operation's record says completed, with the
// process's peak RSS; the seed workload gets at least three rounds. It
// also gets one-collection partial rollbacks (at least five rounds, each
// against a raw add of that collection just before), and, while the time
// budget allows, one full rollback per workload with the safety snapshot.
// Each raw add and each rollback begins on a quiet machine
// (testenv.WaitQuiet); ratios are the median over rounds of each round's
// rollback against its raw add (testenv.MedianRatio), with the ratio of
// the medians besides. Record counts are checked after every write; the
// figures ("bench: NAME value=X unit=U") are reported, never asserted. The
// whole run happens once per call, whatever b.N.
//
// Knobs: BENCH_ROUNDS (default 1; at least 3 for the seed workload's full
// rollbacks and 5 for its partial ones), BENCH_WORKLOADS (e.g. "seed"),
// BENCH_LOG_DIR (keeps the restorers' logs), BENCH_SAFETY ("auto": within
// BENCH_BUDGET, default 12m; "1" always; "0" never), BENCH_CPUPROFILE=1
// (rollbacks run in-process with CPU and heap profiles in BENCH_LOG_DIR; no
// RSS figures then), BENCH_DAMAGE (fraction of records deleted, default 0.5),
// BENCH_RESTORER_GODEBUG (the restorer process's GODEBUG, e.g. gctrace=1),
// BENCH_TRACE_CHROMA=1 (restorers reach Chroma through a proxy here that
// times their requests and Chroma's idle time), BENCH_READBACK=1 (also a raw add that reads each batch back as it goes,
// like the restorer's verification: what that verification costs Chroma).
func BenchmarkRollbackWorkloads(b *testing.B) {
	began := time.Now()
	ws := workloads
	if only := os.Getenv("BENCH_WORKLOADS"); only != "" {
		ws = slices.DeleteFunc(slices.Clone(ws), func(w workload) bool {
			return !slices.Contains(strings.Split(only, ","), w.name)
		})
	}
	rounds := 1 // a pass of 50,000 x 768 adds takes about 90 s
	if v, err := strconv.Atoi(os.Getenv("BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	budget := 12 * time.Minute
	if d, err := time.ParseDuration(os.Getenv("BENCH_BUDGET")); err == nil && d > 0 {
		budget = d
	}
	damage := 0.5
	if f, err := strconv.ParseFloat(os.Getenv("BENCH_DAMAGE"), 64); err == nil && f > 0 && f <= 1 {
		damage = f
	}
	readback := os.Getenv("BENCH_READBACK") == "1"
	logDir := os.Getenv("BENCH_LOG_DIR")
	if logDir == "" {
		logDir = b.TempDir()
	}

	e := &benchEnv{b: b, logDir: logDir, inProcess: os.Getenv("BENCH_CPUPROFILE") != ""}
	if os.Getenv("BENCH_TRACE_CHROMA") == "1" || traceTimeline {
		e.tracer = &chromaTracer{}
	}
	if !e.inProcess {
		e.bin = restorerBinary(b)
	}
	e.chroma = testenv.StartChroma(b)
	e.nats = testenv.StartNATS(b)
	e.cc = e.chroma.Client(b)
	e.chromaPid = findChromaPid(e.chroma.DataDir)
	e.restorerChromaURL = e.chroma.URL
	if e.tracer != nil {
		e.restorerChromaURL = e.tracer.start(b, e.chroma.URL)
	}
	ctx := b.Context()
	b.StopTimer()
	e.startSnapshotter()

	for _, w := range ws {
		start := time.Now()
		if err := testenv.SeedWorkload(ctx, e.cc, tenant, w.name, w.collections, w.records, w.dim, w.docChars); err != nil {
			b.Fatalf("seed %s: %v", w.name, err)
		}
		d := time.Since(start)
		testenv.Emit(w.name+"_seeding", d.Seconds(), "s")
		testenv.Emit(w.name+"_seeding_rate", float64(w.records)/d.Seconds(), "records/s")
	}
	testenv.SettleAfterSeeding(b)
	testenv.Emit("rounds", float64(rounds), "count")
	testenv.Emit("loadavg_before", testenv.LoadAvg(), "load")

	var measured time.Duration
	peaks := map[string]float64{}
	type later struct {
		w      workload
		snap   *contract.SnapshotManifest
		arc    *loadedArchive
		raw    time.Duration
		rbLast time.Duration
	}
	var safety []later
	for _, w := range ws {
		p := w.name + "_"
		snapStart := time.Now()
		m := e.snapshot(w.name)
		testenv.Emit(p+"snapshot_seconds", time.Since(snapStart).Seconds(), "s")
		if m.TotalRecords != int64(w.records) {
			b.Errorf("%s: snapshot holds %d records, seeded %d", w.name, m.TotalRecords, w.records)
		}
		arc := e.loadArchive(m)
		testenv.Emit(p+"archive_batches", float64(arc.batchCount()), "count")
		testenv.Emit(p+"archive_batch_records", float64(arc.colls[0][0].Len()), "records")

		var raws, rbs []time.Duration
		var peakKB int64
		var rawCores, rbCores, rbCPU []float64
		var gaps, readbacks []time.Duration
		phases := map[string][]time.Duration{}
		// A round of the seed workload takes about 15 s and Chroma's add
		// alone varies by 10-15% between rounds: one round cannot decide a
		// 1.15 target, so it gets at least three and the median.
		wr := rounds
		if w.name == "seed" {
			wr = max(rounds, 3)
		}
		for r := range wr {
			raw := e.rawAdd(w, arc, r, nil)
			raws = append(raws, raw.total)
			rawCores = append(rawCores, raw.chromaCores)
			testenv.Emit(fmt.Sprintf("%sround%d_raw_add_seconds", p, r+1), raw.total.Seconds(), "s")
			if readback {
				rd := e.rawAddReadback(w, arc, r)
				readbacks = append(readbacks, rd)
				testenv.Emit(fmt.Sprintf("%sround%d_raw_add_readback_seconds", p, r+1), rd.Seconds(), "s")
			}

			dmg := e.damage(w.name, arc, nil, damage)
			testenv.Emit(fmt.Sprintf("%sround%d_damage_seconds", p, r+1), dmg.Seconds(), "s")

			b.StartTimer()
			rb := e.rollback(w.name, fmt.Sprintf("full-%d", r+1), contract.RollbackRequest{SnapshotID: m.SnapshotID, NoSafetySnapshot: true})
			b.StopTimer()
			measured += rb.dur
			e.checkRestored(w.name, m, rb, nil, int64(w.records))
			rbs = append(rbs, rb.dur)
			peakKB = max(peakKB, rb.hwmKB)
			rbCores = append(rbCores, rb.chromaCores)
			rbCPU = append(rbCPU, rb.cpu.Seconds())
			gaps = append(gaps, rb.maxGap)
			for ph, d := range rb.phases {
				phases[ph] = append(phases[ph], d)
			}
			testenv.Emit(fmt.Sprintf("%sround%d_rollback_seconds", p, r+1), rb.dur.Seconds(), "s")
			rb.emitTrace(fmt.Sprintf("%sround%d_rollback_chroma_", p, r+1))
			if !e.inProcess {
				testenv.Emit(fmt.Sprintf("%sround%d_restorer_peak_rss", p, r+1), float64(rb.hwmKB)/1024, "MB")
			}
		}
		rawDur, rbDur := testenv.Median(raws), testenv.Median(rbs)
		n := float64(w.records)
		testenv.Emit(p+"raw_add", n/rawDur.Seconds(), "records/s")
		testenv.Emit(p+"raw_add_seconds", rawDur.Seconds(), "s")
		testenv.Emit(p+"raw_add_chroma_cores", testenv.Median(rawCores), "cores")
		testenv.Emit(p+"rollback", n/rbDur.Seconds(), "records/s")
		testenv.Emit(p+"rollback_seconds", rbDur.Seconds(), "s")
		// Each round's rollback against that round's raw add; the ratio
		// of the medians besides.
		ratio := testenv.MedianRatio(rbs, raws)
		testenv.Emit(p+"rollback_vs_raw_add", ratio, "ratio")
		testenv.Emit(p+"rollback_vs_raw_add_of_medians", rbDur.Seconds()/rawDur.Seconds(), "ratio")
		testenv.Emit(p+"rollback_chroma_cores", testenv.Median(rbCores), "cores")
		testenv.Emit(p+"restorer_cpu_seconds", testenv.Median(rbCPU), "s")
		testenv.Emit(p+"rollback_longest_write_gap_seconds", testenv.Median(gaps).Seconds(), "s")
		if len(readbacks) > 0 {
			rd := testenv.Median(readbacks)
			testenv.Emit(p+"raw_add_readback", n/rd.Seconds(), "records/s")
			testenv.Emit(p+"raw_add_readback_seconds", rd.Seconds(), "s")
			testenv.Emit(p+"rollback_vs_raw_add_readback", rbDur.Seconds()/rd.Seconds(), "ratio")
		}
		for _, ph := range slices.Sorted(maps.Keys(phases)) {
			testenv.Emit(p+"rollback_phase_"+ph+"_seconds", testenv.Median(phases[ph]).Seconds(), "s")
		}
		b.ReportMetric(n/rawDur.Seconds(), p+"raw_add_records/s")
		b.ReportMetric(n/rbDur.Seconds(), p+"rollback_records/s")
		b.ReportMetric(ratio, p+"rollback/raw_add")
		if !e.inProcess {
			peakMB := float64(peakKB) / 1024
			peaks[w.name] = peakMB
			testenv.Emit(p+"restorer_peak_rss", peakMB, "MB")
			b.ReportMetric(peakMB, p+"restorer_peak_rss_MB")
		}

		if w.name == "seed" && w.collections > 1 {
			// One collection, restored while the others are left alone,
			// against a raw add of that collection just before: rounds
			// of about 2 s each, whose raw add alone varies by 15%, so at
			// least five, and the median.
			one := arc.md.Collections[0].Name
			var recs int64
			for _, bt := range arc.colls[0] {
				recs += int64(bt.Len())
			}
			var partRaws, partRbs []time.Duration
			var rb rollbackRun
			for r := range max(rounds, 5) {
				raw := e.rawAdd(w, arc, 100+r, []int{0})
				e.damage(w.name, arc, []int{0}, damage)
				b.StartTimer()
				rb = e.rollback(w.name, fmt.Sprintf("partial-%d", r+1), contract.RollbackRequest{SnapshotID: m.SnapshotID, NoSafetySnapshot: true, Collections: []string{one}})
				b.StopTimer()
				measured += rb.dur
				e.checkRestored(w.name, m, rb, []string{one}, recs)
				partRaws = append(partRaws, raw.perColl[0])
				partRbs = append(partRbs, rb.dur)
				testenv.Emit(fmt.Sprintf("seed_partial_round%d_raw_add_seconds", r+1), raw.perColl[0].Seconds(), "s")
				testenv.Emit(fmt.Sprintf("seed_partial_round%d_rollback_seconds", r+1), rb.dur.Seconds(), "s")
				rb.emitTrace(fmt.Sprintf("seed_partial_round%d_rollback_chroma_", r+1))
			}
			rbDur := testenv.Median(partRbs)
			testenv.Emit("seed_partial_rollback", float64(recs)/rbDur.Seconds(), "records/s")
			testenv.Emit("seed_partial_rollback_seconds", rbDur.Seconds(), "s")
			testenv.Emit("seed_partial_raw_add_seconds", testenv.Median(partRaws).Seconds(), "s")
			ratio := testenv.MedianRatio(partRbs, partRaws)
			testenv.Emit("seed_partial_rollback_vs_raw_add", ratio, "ratio")
			testenv.Emit("seed_partial_rollback_vs_raw_add_of_medians", rbDur.Seconds()/testenv.Median(partRaws).Seconds(), "ratio")
			for _, ph := range slices.Sorted(maps.Keys(rb.phases)) {
				testenv.Emit("seed_partial_rollback_phase_"+ph+"_seconds", rb.phases[ph].Seconds(), "s")
			}
			if !e.inProcess {
				testenv.Emit("seed_partial_restorer_peak_rss", float64(rb.hwmKB)/1024, "MB")
			}
			b.ReportMetric(ratio, "seed_partial/raw_add")
		}
		safety = append(safety, later{w: w, snap: m, arc: arc, raw: rawDur, rbLast: rbs[len(rbs)-1]})
		arc.drop() // keep only the ids from here on
		runtime.GC()
	}
	if peaks["scale"] > 0 && peaks["seed"] > 0 {
		growth := peaks["scale"] / peaks["seed"]
		testenv.Emit("restorer_rss_growth_scale_vs_seed", growth, "ratio")
		b.ReportMetric(growth, "restorer_rss_scale/seed")
	}

	// With the safety snapshot, as time allows: it adds a snapshot of what
	// is overwritten (here the damaged collections) before the restore.
	mode := os.Getenv("BENCH_SAFETY")
	for _, l := range safety {
		p := l.w.name + "_"
		estimate := l.rbLast*13/10 + 30*time.Second
		if mode == "0" || (mode != "1" && time.Since(began)+estimate > budget) {
			b.Logf("%s: rollback with a safety snapshot skipped (BENCH_SAFETY=%q, %s spent, about %s more, budget %s)",
				l.w.name, mode, time.Since(began).Round(time.Second), estimate.Round(time.Second), budget)
			continue
		}
		e.damage(l.w.name, l.arc, nil, damage)
		rb := e.rollback(l.w.name, "safety", contract.RollbackRequest{SnapshotID: l.snap.SnapshotID})
		e.checkRestored(l.w.name, l.snap, rb, nil, int64(l.w.records))
		if rb.op.Restore == nil || rb.op.Restore.SafetySnapshotID == "" {
			b.Errorf("%s: rollback with a safety snapshot names none", l.w.name)
		}
		n := float64(l.w.records)
		testenv.Emit(p+"rollback_with_safety", n/rb.dur.Seconds(), "records/s")
		testenv.Emit(p+"rollback_with_safety_seconds", rb.dur.Seconds(), "s")
		testenv.Emit(p+"rollback_with_safety_vs_raw_add", rb.dur.Seconds()/l.raw.Seconds(), "ratio")
		testenv.Emit(p+"rollback_with_safety_phase_safety_snapshot_seconds", rb.phases["safety_snapshot"].Seconds(), "s")
		if !e.inProcess {
			testenv.Emit(p+"rollback_with_safety_restorer_peak_rss", float64(rb.hwmKB)/1024, "MB")
		}
	}
	e.quiet.Emit("")
	testenv.Emit("loadavg_after", testenv.LoadAvg(), "load")
	testenv.Emit("total_seconds", time.Since(began).Seconds(), "s")
	b.ReportMetric(float64(measured.Nanoseconds())/float64(b.N), "ns/op")
}

type benchEnv struct {
	b         *testing.B
	chroma    *testenv.Chroma
	nats      *testenv.NATS
	cc        *chroma.Client
	chromaPid int
	bin       string
	logDir    string
	inProcess bool
	// restorerChromaURL is where restorers send their Chroma requests: the
	// server, or the tracer in front of it.
	restorerChromaURL string
	tracer            *chromaTracer
	// quiet: every raw add and rollback begins on a quiet machine, so that
	// neither pays for what the step before left behind (Chroma's and the
	// kernel's writes after the damage or the previous round).
	quiet testenv.Quieter
}

// quietTimeout bounds each wait for a quiet machine before a measurement.
const quietTimeout = 30 * time.Second

// startSnapshotter runs a snapshotter with its defaults in this process,
// for the snapshots and the safety snapshots.
func (e *benchEnv) startSnapshotter() {
	b := e.b
	nc := e.nats.Connect(b)
	svc, err := snapshotter.New(snapshotter.Config{ChromaURL: e.chroma.URL, Instance: "bench-snapshotter"}, nc, subj, e.cc, nil)
	if err != nil {
		b.Fatalf("new snapshotter: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	exited, done := make(chan error, 1), make(chan struct{})
	go func() {
		exited <- svc.Run(ctx)
		close(done)
	}()
	b.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
		}
	})
	if err := waitAnswer(e.nats.Conn, subj.API("snapshot", "list"), 30*time.Second, exited); err != nil {
		b.Fatalf("snapshotter: %v", err)
	}
}

// snapshot takes a snapshot of db and returns its manifest.
func (e *benchEnv) snapshot(db string) *contract.SnapshotManifest {
	b := e.b
	ctx := b.Context()
	req, _ := json.Marshal(contract.SnapshotCreateRequest{Envelope: contract.NewEnvelope(contract.TypeSnapshotCreateRequest),
		Name: "bench-" + db, Tenant: tenant, Database: db, Actor: "bench"})
	msg, err := e.nats.Conn.Request(subj.API("snapshot", "create"), req, time.Minute)
	if err != nil {
		b.Fatalf("snapshot %s: %v", db, err)
	}
	if code := msg.Header.Get("Nats-Service-Error-Code"); code != "" {
		b.Fatalf("snapshot %s: error %s: %s", db, code, msg.Data)
	}
	var rep contract.SnapshotCreateReply
	if err := json.Unmarshal(msg.Data, &rep); err != nil {
		b.Fatalf("snapshot reply: %v", err)
	}
	deadline := time.Now().Add(10 * time.Minute)
	for {
		var op contract.Operation
		if entry, err := e.nats.Assets.State.Get(ctx, contract.OperationKey(rep.OpID)); err == nil && json.Unmarshal(entry.Value(), &op) == nil {
			if op.Status == contract.StatusCompleted {
				break
			}
			if op.Status == contract.StatusFailed {
				b.Fatalf("snapshot %s failed: %s", db, op.Error)
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("snapshot %s did not end within 10m", db)
		}
		time.Sleep(20 * time.Millisecond)
	}
	entry, err := e.nats.Assets.Manifests.Get(ctx, rep.SnapshotID)
	if err != nil {
		b.Fatalf("manifest %s: %v", rep.SnapshotID, err)
	}
	var m contract.SnapshotManifest
	if err := json.Unmarshal(entry.Value(), &m); err != nil {
		b.Fatalf("decode manifest: %v", err)
	}
	return &m
}

// loadedArchive is a snapshot's archive read into memory: what the
// restorer reads, batch by batch.
type loadedArchive struct {
	md    *archive.Metadata
	colls [][]*batchRecs // per collection, its batches in order
	ids   [][]string     // per collection, its ids in order
}

// batchRecs is one archive batch; drop releases the records.
type batchRecs struct {
	recs *archive.Batch
	n    int
}

func (br *batchRecs) Len() int { return br.n }

func (a *loadedArchive) batchCount() int {
	n := 0
	for _, c := range a.colls {
		n += len(c)
	}
	return n
}

// drop releases the records, keeping the ids (for damage).
func (a *loadedArchive) drop() {
	for _, c := range a.colls {
		for _, br := range c {
			br.recs = nil
		}
	}
}

func (e *benchEnv) loadArchive(m *contract.SnapshotManifest) *loadedArchive {
	b := e.b
	ctx, cancel := context.WithTimeout(b.Context(), 10*time.Minute)
	defer cancel()
	obj, err := e.nats.Assets.Snapshots.Get(ctx, m.Object)
	if err != nil {
		b.Fatalf("open archive %s: %v", m.Object, err)
	}
	defer obj.Close()
	r, err := archive.NewReader(obj)
	if err != nil {
		b.Fatalf("read archive %s: %v", m.Object, err)
	}
	a := &loadedArchive{md: r.Metadata()}
	a.colls = make([][]*batchRecs, len(a.md.Collections))
	a.ids = make([][]string, len(a.md.Collections))
	for {
		bt, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			b.Fatalf("read archive %s: %v", m.Object, err)
		}
		a.colls[bt.Collection] = append(a.colls[bt.Collection], &batchRecs{recs: bt, n: bt.Records.Len()})
		a.ids[bt.Collection] = append(a.ids[bt.Collection], bt.Records.IDs...)
	}
	for i, c := range a.colls {
		if len(c) == 0 {
			b.Fatalf("archive %s: collection %q has no batches", m.Object, a.md.Collections[i].Name)
		}
	}
	return a
}

type rawRun struct {
	total       time.Duration
	perColl     []time.Duration
	chromaCores float64 // Chroma's CPU use while adding, in cores
}

// rawAdd is the limit: the archive's batches added as they are (one add
// call each, which pkg/chroma sizes by bytes like the restorer's adds),
// one request in flight as with the restorer's default AddWorkers of 1,
// into fresh collections with the archived configuration and metadata in
// a database of their own. Only the adds are timed. The collections are
// deleted afterwards.
func (e *benchEnv) rawAdd(w workload, a *loadedArchive, round int, only []int) rawRun {
	b := e.b
	ctx := b.Context()
	db := w.name + "_raw"
	if err := e.cc.CreateDatabase(ctx, tenant, db); err != nil && !errors.Is(err, chroma.ErrAlreadyExists) {
		b.Fatalf("create database %s: %v", db, err)
	}
	run := rawRun{perColl: make([]time.Duration, len(a.colls))}
	var cpu time.Duration
	e.quiet.Wait(quietTimeout) // once: the rollback it is compared with cannot pause between collections
	for i, info := range a.md.Collections {
		if only != nil && !slices.Contains(only, i) {
			continue
		}
		name := fmt.Sprintf("%s_r%d", info.Name, round+1)
		c, err := e.cc.CreateCollection(ctx, tenant, db, chroma.CreateCollection{Name: name, Configuration: info.Configuration})
		if err != nil {
			b.Fatalf("raw add: create %s: %v", name, err)
		}
		if len(info.Metadata) > 0 {
			if err := e.cc.ModifyCollection(ctx, tenant, db, c.ID, nil, info.Metadata); err != nil {
				b.Fatalf("raw add: metadata of %s: %v", name, err)
			}
		}
		cpu0 := procCPU(e.chromaPid)
		start := time.Now()
		for _, br := range a.colls[i] {
			if err := e.cc.Add(ctx, tenant, db, c.ID, br.recs.Records); err != nil {
				b.Fatalf("raw add: %s %s: %v", name, br.recs.Name, err)
			}
		}
		run.perColl[i] = time.Since(start)
		run.total += run.perColl[i]
		cpu += procCPU(e.chromaPid) - cpu0
		want := 0
		for _, br := range a.colls[i] {
			want += br.Len()
		}
		if n, err := e.cc.Count(ctx, tenant, db, c.ID); err != nil || n != want {
			b.Errorf("raw add: %s holds %d records (%v), added %d", name, n, err, want)
		}
		if err := e.cc.DeleteCollection(ctx, tenant, db, name); err != nil {
			b.Fatalf("raw add: delete %s: %v", name, err)
		}
	}
	if run.total > 0 {
		run.chromaCores = cpu.Seconds() / run.total.Seconds()
	}
	return run
}

// rawAddReadback is rawAdd plus what the restorer's verification asks of
// Chroma: each batch, once added, is read back by id with every column
// while the next one is added. Only the writing and reading are timed.
func (e *benchEnv) rawAddReadback(w workload, a *loadedArchive, round int) time.Duration {
	b := e.b
	ctx := b.Context()
	db := w.name + "_raw"
	var total time.Duration
	e.quiet.Wait(quietTimeout)
	for i, info := range a.md.Collections {
		name := fmt.Sprintf("%s_rb%d", info.Name, round+1)
		c, err := e.cc.CreateCollection(ctx, tenant, db, chroma.CreateCollection{Name: name, Configuration: info.Configuration})
		if err != nil {
			b.Fatalf("raw add with read-back: create %s: %v", name, err)
		}
		start := time.Now()
		added := make(chan *batchRecs, 1)
		readErr := make(chan error, 1)
		go func() {
			var first error
			for br := range added {
				if first != nil {
					continue
				}
				got, err := e.cc.Get(ctx, tenant, db, c.ID, chroma.GetRequest{IDs: br.recs.Records.IDs})
				if err == nil && got.Len() != br.Len() {
					err = fmt.Errorf("read back %d of %d records", got.Len(), br.Len())
				}
				first = err
			}
			readErr <- first
		}()
		for _, br := range a.colls[i] {
			if err := e.cc.Add(ctx, tenant, db, c.ID, br.recs.Records); err != nil {
				b.Fatalf("raw add with read-back: %s %s: %v", name, br.recs.Name, err)
			}
			added <- br
		}
		close(added)
		if err := <-readErr; err != nil {
			b.Fatalf("raw add with read-back: %s: %v", name, err)
		}
		total += time.Since(start)
		if err := e.cc.DeleteCollection(ctx, tenant, db, name); err != nil {
			b.Fatalf("raw add with read-back: delete %s: %v", name, err)
		}
	}
	return total
}

// damage deletes a fraction of the records of the named archive
// collections (all when only is nil), spread evenly, the way a bad
// migration loses records, and returns how long that took.
func (e *benchEnv) damage(db string, a *loadedArchive, only []int, fraction float64) time.Duration {
	b := e.b
	ctx := b.Context()
	start := time.Now()
	step := max(int(1/fraction+0.5), 1)
	for i, info := range a.md.Collections {
		if only != nil && !slices.Contains(only, i) {
			continue
		}
		c, err := e.cc.GetCollection(ctx, tenant, db, info.Name)
		if err != nil {
			b.Fatalf("damage: get %s: %v", info.Name, err)
		}
		var ids []string
		for k, id := range a.ids[i] {
			if k%step == 0 {
				ids = append(ids, id)
			}
		}
		if err := e.cc.Delete(ctx, tenant, db, c.ID, ids); err != nil {
			b.Fatalf("damage: delete from %s: %v", info.Name, err)
		}
		if n, err := e.cc.Count(ctx, tenant, db, c.ID); err != nil || n != len(a.ids[i])-len(ids) {
			b.Fatalf("damage: %s holds %d records (%v), want %d", info.Name, n, err, len(a.ids[i])-len(ids))
		}
	}
	return time.Since(start)
}

// checkRestored checks, after a rollback, that the database holds exactly
// the snapshot's collections with their counts, nothing staged or left
// over, that the collections not named in only (all when nil) were not
// replaced, and that the operation reports the records written as verified.
func (e *benchEnv) checkRestored(db string, m *contract.SnapshotManifest, rb rollbackRun, only []string, written int64) {
	b := e.b
	ctx := b.Context()
	colls, err := e.cc.ListCollections(ctx, tenant, db)
	if err != nil {
		b.Fatalf("list %s: %v", db, err)
	}
	got := map[string]chroma.Collection{}
	for _, c := range colls {
		got[c.Name] = c
	}
	if len(colls) != len(m.Collections) {
		names := slices.Sorted(maps.Keys(got))
		b.Errorf("%s after %s rollback: %d collections %v, the snapshot has %d", db, rb.kind, len(colls), names, len(m.Collections))
	}
	for _, want := range m.Collections {
		c, ok := got[want.Name]
		if !ok {
			b.Errorf("%s after %s rollback: collection %q is missing", db, rb.kind, want.Name)
			continue
		}
		n, err := e.cc.Count(ctx, tenant, db, c.ID)
		if err != nil || int64(n) != want.Count {
			b.Errorf("%s after %s rollback: %q holds %d records (%v), the snapshot %d", db, rb.kind, want.Name, n, err, want.Count)
		}
		if before, ok := rb.idsBefore[want.Name]; ok && only != nil && !slices.Contains(only, want.Name) && before != c.ID {
			b.Errorf("%s after %s rollback: %q was replaced (%s -> %s) though not named", db, rb.kind, want.Name, before, c.ID)
		}
	}
	if rs := rb.op.Restore; rs == nil || !rs.Verified || rs.RecordsWritten != written {
		b.Errorf("%s after %s rollback: restore report %+v, want verified with %d records written", db, rb.kind, rs, written)
	}
}

type rollbackRun struct {
	kind        string
	dur         time.Duration
	reply       time.Duration // until the start request was answered
	op          contract.Operation
	hwmKB       int64
	cpu         time.Duration // the restorer's user+system CPU
	chromaCores float64
	phases      map[string]time.Duration
	idsBefore   map[string]string // collection name -> id before the rollback
	// maxGap is the longest time between progress messages reporting more
	// records written (a stalled restore shows here).
	maxGap time.Duration
	trace  *chromaTrace // with BENCH_TRACE_CHROMA=1
}

// rollback starts a restorer (a fresh process, or in this process with
// profiles), asks it for the rollback req of db (confirmed), and waits for
// the operation to end. It returns the time from the request until the
// operation record said completed, the time per phase as the operation
// record showed them, and the process's peak RSS.
func (e *benchEnv) rollback(db, kind string, req contract.RollbackRequest) rollbackRun {
	b := e.b
	ctx := b.Context()
	tag := db + "-" + kind
	logPath := filepath.Join(e.logDir, "restorer-"+tag+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	defer logf.Close()
	fail := func(format string, args ...any) {
		logTail(b, logPath)
		b.Fatalf(format, args...)
	}

	exited := make(chan error, 1)
	var stop func()
	var pid int
	var cpu func() time.Duration
	if e.inProcess {
		stop, cpu = e.startInProcess(tag, logf, exited)
	} else {
		stop, pid, cpu = e.startProcess(tag, logf, exited)
	}
	defer stop()
	if err := waitAnswer(e.nats.Conn, subj.API("rollback", "status"), 30*time.Second, exited); err != nil {
		stop()
		fail("restorer for %s: %v", tag, err)
	}

	run := &rollbackRun{kind: kind, idsBefore: map[string]string{}}
	if colls, err := e.cc.ListCollections(ctx, tenant, db); err == nil {
		for _, c := range colls {
			run.idsBefore[c.Name] = c.ID
		}
	}
	opID := contract.NewID("op_bench_")
	req.Envelope = contract.NewEnvelope(contract.TypeRollbackRequest)
	req.OpID, req.Confirm, req.Actor, req.Reason = opID, true, "bench", "rollback benchmark ("+kind+")"
	body, err := json.Marshal(req)
	if err != nil {
		b.Fatal(err)
	}

	// The operation record's updates give the phases and the end.
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	watch, err := e.nats.Assets.State.Watch(wctx, contract.OperationKey(opID))
	if err != nil {
		b.Fatalf("watch operation: %v", err)
	}
	defer func() { _ = watch.Stop() }()
	var progMu sync.Mutex
	var progPhases []string
	var lastWrite time.Time // the last progress message that counted more records
	var lastDone int64
	progress, err := e.nats.Conn.Subscribe(subj.Progress(opID), func(m *nats.Msg) {
		at := time.Now()
		var pr contract.Progress
		if json.Unmarshal(m.Data, &pr) == nil {
			progMu.Lock()
			if len(progPhases) == 0 || progPhases[len(progPhases)-1] != pr.Phase {
				progPhases = append(progPhases, pr.Phase)
			}
			if pr.Phase == "restoring" && pr.DoneRecords > lastDone {
				if !lastWrite.IsZero() {
					run.maxGap = max(run.maxGap, at.Sub(lastWrite))
				}
				lastWrite, lastDone = at, pr.DoneRecords
			}
			progMu.Unlock()
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = progress.Unsubscribe() }()
	if err := e.nats.Conn.Flush(); err != nil {
		b.Fatal(err)
	}

	e.quiet.Wait(quietTimeout)
	cpu0, chroma0 := cpu(), procCPU(e.chromaPid)
	if e.tracer != nil {
		e.tracer.reset()
	}
	start := time.Now()
	type answer struct {
		msg *nats.Msg
		err error
		at  time.Time
	}
	answered := make(chan answer, 1)
	go func() {
		msg, err := e.nats.Conn.Request(subj.API("rollback", "start"), body, 5*time.Minute)
		answered <- answer{msg, err, time.Now()}
	}()
	run.phases = map[string]time.Duration{}
	phase, since := "start_request", start
	var replied bool
	deadline := time.After(30 * time.Minute)
wait:
	for {
		select {
		case a := <-answered:
			replied = true
			run.reply = a.at.Sub(start)
			if a.err != nil {
				fail("start rollback of %s: %v", tag, a.err)
			}
			if code := a.msg.Header.Get("Nats-Service-Error-Code"); code != "" {
				fail("start rollback of %s: error %s: %s", tag, code, a.msg.Data)
			}
			var rep contract.RollbackReply
			if err := json.Unmarshal(a.msg.Data, &rep); err != nil || rep.OpID != opID || rep.Refused != "" {
				fail("start rollback of %s: reply %s (%v)", tag, a.msg.Data, err)
			}
		case entry, ok := <-watch.Updates():
			if !ok {
				fail("watch of operation %s ended", opID)
			}
			if entry == nil || entry.Operation() != jetstream.KeyValuePut {
				continue
			}
			at := time.Now()
			var op contract.Operation
			if err := json.Unmarshal(entry.Value(), &op); err != nil {
				fail("decode operation: %v", err)
			}
			name := op.Phase
			if name == "" {
				name = op.Status
			}
			if name != phase {
				run.phases[phase] += at.Sub(since)
				phase, since = name, at
			}
			switch op.Status {
			case contract.StatusCompleted:
				run.dur = at.Sub(start)
				run.op = op
				break wait
			case contract.StatusFailed, contract.StatusCancelled:
				fail("rollback %s of %s ended %s: %s", opID, tag, op.Status, op.Error)
			}
		case err := <-exited:
			exited <- err
			fail("restorer exited during the rollback of %s: %v", tag, err)
		case <-deadline:
			fail("rollback of %s did not end within 30m", tag)
		}
	}
	delete(run.phases, contract.StatusCompleted)
	if !replied {
		// A reply after completion would be odd, but it is not the point.
		select {
		case a := <-answered:
			run.reply = a.at.Sub(start)
		case <-time.After(10 * time.Second):
		}
	}
	if e.tracer != nil {
		run.trace = e.tracer.read()
	}
	if c := procCPU(e.chromaPid) - chroma0; run.dur > 0 {
		run.chromaCores = c.Seconds() / run.dur.Seconds()
	}
	if pid > 0 {
		if run.hwmKB, err = testenv.PeakRSSKB(pid); err != nil {
			fail("read peak RSS: %v", err)
		}
	}
	run.cpu = cpu() - cpu0
	// The restorer acks its command just after it records the end; stopped
	// before that, the next restorer would get the command redelivered.
	for ackBy := time.Now().Add(10 * time.Second); time.Now().Before(ackBy); time.Sleep(20 * time.Millisecond) {
		if info, err := e.nats.Assets.Commands.Info(ctx); err == nil && info.State.Msgs == 0 {
			break
		}
	}
	stop()
	time.Sleep(100 * time.Millisecond) // the last progress messages
	if t := run.trace; t != nil {
		b.Logf("%s: Chroma idle %.2fs of %.2fs (longest %.2fs), requests: %s", tag, t.idle.Seconds(), run.dur.Seconds(), t.maxIdle.Seconds(), t.summary())
	}
	progMu.Lock()
	defer progMu.Unlock()
	b.Logf("%s: op %s: %.1fs (start answered after %.2fs), progress phases %v, operation phases %v, longest wait between records written %.2fs, add rate %.0f/s as the restorer measured it",
		tag, opID, run.dur.Seconds(), run.reply.Seconds(), progPhases, fmtPhases(run.phases), run.maxGap.Seconds(), addRate(run.op))
	return *run
}

func addRate(op contract.Operation) float64 {
	if op.Restore == nil {
		return 0
	}
	return op.Restore.AddRate
}

func fmtPhases(ph map[string]time.Duration) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(ph)) {
		parts = append(parts, fmt.Sprintf("%s=%.2fs", k, ph[k].Seconds()))
	}
	return strings.Join(parts, " ")
}

// startProcess runs the restorer binary; stop ends it (SIGTERM, then kill).
// emitTrace prints, with BENCH_TRACE_CHROMA=1, how long Chroma sat idle
// during the rollback and what its requests took, by kind.
func (rb rollbackRun) emitTrace(prefix string) {
	t := rb.trace
	if t == nil {
		return
	}
	for _, line := range t.timeline {
		fmt.Printf("trace: %s %s\n", prefix, line)
	}
	testenv.Emit(prefix+"idle_seconds", t.idle.Seconds(), "s")
	testenv.Emit(prefix+"longest_idle_seconds", t.maxIdle.Seconds(), "s")
	for _, k := range slices.Sorted(maps.Keys(t.kinds)) {
		testenv.Emit(prefix+k+"_seconds", t.kinds[k].dur.Seconds(), "s")
		testenv.Emit(prefix+k+"_requests", float64(t.kinds[k].n), "count")
	}
}

func (e *benchEnv) startProcess(tag string, logf *os.File, exited chan error) (stop func(), pid int, cpu func() time.Duration) {
	b := e.b
	cmd := exec.Command(e.bin, "--nats-url", e.nats.URL, "--chroma-url", e.restorerChromaURL, "--instance", "bench-"+tag)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "LOG_LEVEL=info")
	if v := os.Getenv("BENCH_RESTORER_GODEBUG"); v != "" { // e.g. gctrace=1, into its log
		cmd.Env = append(cmd.Env, "GODEBUG="+v)
	}
	if err := cmd.Start(); err != nil {
		b.Fatalf("start restorer: %v", err)
	}
	go func() { exited <- cmd.Wait() }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	return stop, cmd.Process.Pid, func() time.Duration { return procCPU(cmd.Process.Pid) }
}

// startInProcess runs a restorer in this process with a CPU profile for
// the whole run, a heap profile at the heap's peak and an allocation
// profile at its end, all in the log directory.
func (e *benchEnv) startInProcess(tag string, logf *os.File, exited chan error) (stop func(), cpu func() time.Duration) {
	b := e.b
	nc, err := nats.Connect(e.nats.URL, nats.Name("bench-"+tag))
	if err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(logf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cc, err := chroma.New(e.restorerChromaURL)
	if err != nil {
		b.Fatal(err)
	}
	svc, err := restorer.New(restorer.Config{ChromaURL: e.restorerChromaURL, Instance: "bench-" + tag}, nc, subj, cc, log)
	if err != nil {
		b.Fatalf("new restorer: %v", err)
	}
	pf, err := os.Create(filepath.Join(e.logDir, "restorer-"+tag+".cpu.pprof"))
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(pf); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	// A heap profile whenever the heap reaches a new peak: what the
	// restorer held at its largest.
	go func() {
		var peak uint64
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse <= peak {
				continue
			}
			peak = ms.HeapInuse
			if hf, err := os.Create(filepath.Join(e.logDir, "restorer-"+tag+".peakheap.pprof")); err == nil {
				_ = pprof.Lookup("heap").WriteTo(hf, 0)
				hf.Close()
			}
		}
	}()
	done := make(chan error, 1)
	go func() {
		err := svc.Run(ctx)
		done <- err
		if ctx.Err() == nil {
			exited <- err
		}
	}()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		pprof.StopCPUProfile()
		pf.Close()
		if hf, err := os.Create(filepath.Join(e.logDir, "restorer-"+tag+".allocs.pprof")); err == nil {
			_ = pprof.Lookup("allocs").WriteTo(hf, 0)
			hf.Close()
		}
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
		}
		nc.Close()
	}
	return stop, func() time.Duration { return procCPU(os.Getpid()) }
}

// restorerBinary builds the restorer from the working tree into a temp dir
// (a second or two from the build cache). It never takes bin/restorer:
// that is as old as the last `make build`, and a bench of a change run
// without one measured the code before it.
func restorerBinary(b *testing.B) string {
	b.Helper()
	p := filepath.Join(b.TempDir(), "restorer")
	cmd := exec.Command("go", "build", "-o", p, "./cmd/restorer")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build restorer: %v\n%s", err, out)
	}
	return p
}

// waitAnswer waits until a service answers on subject, or exited reports.
func waitAnswer(nc *nats.Conn, subject string, timeout time.Duration, exited chan error) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, err := nc.Request(subject, []byte(`{}`), time.Second); err == nil {
			return nil
		}
		select {
		case err := <-exited:
			exited <- err
			return fmt.Errorf("exited: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("no answer on %s within %s", subject, timeout)
}

// findChromaPid finds the Chroma server process by its data directory
// argument (0 when not found: no Chroma CPU figures then).
func findChromaPid(dataDir string) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if slices.Contains(strings.Split(string(data), "\x00"), dataDir) {
			return pid
		}
	}
	return 0
}

// procCPU is a process's user+system CPU time so far (0 when unknown).
func procCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100) // USER_HZ is 100 on Linux
}

// logTail logs the end of a restorer's log.
func logTail(b *testing.B, path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		return
	}
	if len(data) > 16<<10 {
		data = data[len(data)-16<<10:]
	}
	b.Logf("restorer output (%s):\n%s", path, bytes.TrimSpace(data))
}

// chromaTracer is a reverse proxy in front of Chroma that times the
// requests going through it and the time no request is in flight.
type chromaTracer struct {
	mu        sync.Mutex
	inflight  int
	idleSince time.Time
	t         chromaTrace
}

type chromaTrace struct {
	idle, maxIdle time.Duration
	kinds         map[string]kindStat // add, get, count... or <method>_other
	// timeline: every request, from the window's start, with
	// BENCH_TRACE_CHROMA=timeline
	timeline []string
	start    time.Time
}

type kindStat struct {
	n        int
	dur, max time.Duration
}

func (t *chromaTrace) summary() string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(t.kinds)) {
		parts = append(parts, fmt.Sprintf("%s %d in %.2fs (longest %.2fs)", k, t.kinds[k].n, t.kinds[k].dur.Seconds(), t.kinds[k].max.Seconds()))
	}
	return strings.Join(parts, ", ")
}

// start serves the proxy until the benchmark ends and returns its URL.
func (ct *chromaTracer) start(b *testing.B, target string) string {
	u, err := url.Parse(target)
	if err != nil {
		b.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		kind := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
		switch kind {
		case "add", "get", "count", "upsert", "delete", "update", "query":
		default: // collections by name or id, databases and the like
			kind = strings.ToLower(r.Method) + "_other"
		}
		begin := ct.begin()
		rp.ServeHTTP(w, r)
		ct.end(kind, begin)
	}))
	b.Cleanup(srv.Close)
	ct.reset()
	return srv.URL
}

var traceTimeline = os.Getenv("BENCH_TRACE_CHROMA") == "timeline"

func (ct *chromaTracer) begin() time.Time {
	now := time.Now()
	ct.mu.Lock()
	defer ct.mu.Unlock()
	if ct.inflight == 0 {
		d := now.Sub(ct.idleSince)
		ct.t.idle += d
		ct.t.maxIdle = max(ct.t.maxIdle, d)
	}
	ct.inflight++
	return now
}

func (ct *chromaTracer) end(kind string, begin time.Time) {
	now := time.Now()
	ct.mu.Lock()
	defer ct.mu.Unlock()
	ct.inflight--
	if ct.inflight == 0 {
		ct.idleSince = now
	}
	if traceTimeline {
		ct.t.timeline = append(ct.t.timeline, fmt.Sprintf("%6.3fs-%6.3fs %s", begin.Sub(ct.t.start).Seconds(), now.Sub(ct.t.start).Seconds(), kind))
	}
	k := ct.t.kinds[kind]
	k.n++
	k.dur += now.Sub(begin)
	k.max = max(k.max, now.Sub(begin))
	ct.t.kinds[kind] = k
}

// reset starts a new window.
func (ct *chromaTracer) reset() {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	ct.t = chromaTrace{kinds: map[string]kindStat{}, start: time.Now()}
	ct.idleSince = ct.t.start
}

// read returns the window so far, the current idle stretch included.
func (ct *chromaTracer) read() *chromaTrace {
	now := time.Now()
	ct.mu.Lock()
	defer ct.mu.Unlock()
	t := ct.t
	t.kinds = maps.Clone(ct.t.kinds)
	t.timeline = slices.Clone(ct.t.timeline)
	if ct.inflight == 0 {
		d := now.Sub(ct.idleSince)
		t.idle += d
		t.maxIdle = max(t.maxIdle, d)
	}
	return &t
}
