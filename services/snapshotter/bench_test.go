package snapshotter_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// benchWorkload is one database the benchmark seeds and snapshots.
type benchWorkload struct {
	name        string // figure prefix and database name
	collections int
	records     int
	dim         int
	docChars    int
	// minRounds is the fewest rounds it gets, whatever BENCH_ROUNDS.
	minRounds int
}

// benchWorkloads are the seed's workload (4 collections, 9,832 records of
// 384-d with ~500-char documents) and a scale workload (one collection of
// 50,000 x 768-d).
var benchWorkloads = []benchWorkload{
	// A seed round takes about two seconds, and its ratio moved from 1.48
	// to 1.72 between the three rounds of one run: at least five of them,
	// for a steadier median.
	{name: "seed", collections: 4, records: 9832, dim: 384, docChars: 500, minRounds: 5},
	{name: "scale", collections: 1, records: 50000, dim: 768, docChars: 500},
}

const benchTenant = "default_tenant"

// BenchmarkSnapshotWorkloads seeds both workloads into one real Chroma, then
// for each measures the raw read limit (a minimal paginated get with two
// workers), a snapshot end to end through a separate snapshotter process
// (its peak RSS included, at the end and with half the records exported),
// and the archive's size against the floor
// (float32 bytes plus gzip of the other columns' JSON) and against a plain
// JSON export. Each raw get and each snapshot begins on a quiet machine
// (testenv.WaitQuiet), so that neither pays for what ran before it; the
// ratio is the median over rounds of each round's snapshot against its raw
// get (testenv.MedianRatio), with the ratio of the medians besides:
// BENCH_ROUNDS rounds (default 3), at least five for the seed workload.
// Figures are printed as "bench: NAME value=X unit=U"; nothing is asserted
// about them. The whole run happens once per call, whatever b.N.
func BenchmarkSnapshotWorkloads(b *testing.B) {
	workloads := benchWorkloads
	if only := os.Getenv("BENCH_WORKLOADS"); only != "" { // e.g. "seed" while iterating
		workloads = slices.DeleteFunc(slices.Clone(workloads), func(w benchWorkload) bool {
			return !slices.Contains(strings.Split(only, ","), w.name)
		})
	}
	bin := snapshotterBinary(b)
	ch := testenv.StartChroma(b)
	nt := testenv.StartNATS(b)
	cc := ch.Client(b)
	ctx := b.Context()
	b.StopTimer()

	for _, w := range workloads {
		if err := cc.CreateDatabase(ctx, benchTenant, w.name); err != nil && !errors.Is(err, chroma.ErrAlreadyExists) {
			b.Fatalf("create database %s: %v", w.name, err)
		}
		start := time.Now()
		if err := testenv.SeedWorkload(ctx, cc, benchTenant, w.name, w.collections, w.records, w.dim, w.docChars); err != nil {
			b.Fatalf("seed %s: %v", w.name, err)
		}
		d := time.Since(start)
		testenv.Emit(w.name+"_seeding", d.Seconds(), "s")
		testenv.Emit(w.name+"_seeding_rate", float64(w.records)/d.Seconds(), "records/s")
	}

	testenv.SettleAfterSeeding(b)

	rounds := 3
	if v, err := strconv.Atoi(os.Getenv("BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	testenv.Emit("rounds", float64(rounds), "count")
	testenv.Emit("loadavg_before", testenv.LoadAvg(), "load")

	var measured time.Duration
	peaks := map[string]float64{}
	for _, w := range workloads {
		colls, err := cc.ListCollections(ctx, benchTenant, w.name)
		if err != nil {
			b.Fatalf("list %s: %v", w.name, err)
		}
		limit := benchPageSize(w.dim)
		p := w.name + "_"
		n := max(rounds, w.minRounds)
		testenv.Emit(p+"rounds", float64(n), "count")
		testenv.Emit(p+"page_records", float64(limit), "records")
		testenv.Emit(p+"page_wire_bytes", float64(pageWireBytes(b, ch.URL, w.name, colls[0].ID, limit)), "bytes")

		// A first pass warms Chroma's caches for the timed reads and keeps
		// the records for the size comparisons.
		pages, _, err := rawGet(ctx, cc, w.name, colls, limit, true)
		if err != nil {
			b.Fatalf("%s: warm-up get: %v", w.name, err)
		}
		floor, jsonSize := sizeFloor(b, pages)
		pages = nil
		runtime.GC()

		// Rounds of (raw get, snapshot), each snapshot by a fresh process;
		// medians damp the noise of a shared machine.
		var raws, snaps []time.Duration
		var rawCores, snapCores []float64
		cpuUse := map[string][]time.Duration{} // CPU seconds by process and measurement
		// Each measurement begins on a quiet machine: what the one before
		// left behind (the object store's writes, say) is not its cost.
		q := &testenv.Quieter{}
		var snap snapshotRun
		var peakKB int64
		var secondHalf []float64 // each round's end peak over its peak at half way
		var halfDone []float64
		phases := map[string][]time.Duration{}
		var faults []float64
		for r := range n {
			q.Wait(quietTimeout)
			cpu := testenv.SampleCPU()
			chromaCPU, selfCPU := testenv.ProcessCPU(ch.Pid()), testenv.ProcessCPU(0)
			_, rawDur, err := rawGet(ctx, cc, w.name, colls, limit, false)
			if err != nil {
				b.Fatalf("%s: raw get: %v", w.name, err)
			}
			rawCores = append(rawCores, cpu.BusyCores(testenv.SampleCPU()))
			cpuUse["raw_get_chroma"] = append(cpuUse["raw_get_chroma"], testenv.ProcessCPU(ch.Pid())-chromaCPU)
			cpuUse["raw_get_client"] = append(cpuUse["raw_get_client"], testenv.ProcessCPU(0)-selfCPU)
			chromaCPU = testenv.ProcessCPU(ch.Pid())
			raws = append(raws, rawDur)
			b.StartTimer()
			snap = runSnapshot(b, bin, nt, ch.URL, w.name, r, q)
			b.StopTimer()
			snapCores = append(snapCores, snap.busyCores)
			cpuUse["snapshot_chroma"] = append(cpuUse["snapshot_chroma"], testenv.ProcessCPU(ch.Pid())-chromaCPU)
			cpuUse["snapshot_nats_and_bench"] = append(cpuUse["snapshot_nats_and_bench"], snap.selfCPU)
			cpuUse["snapshot_snapshotter"] = append(cpuUse["snapshot_snapshotter"], snap.cpu)
			cpuUse["snapshot_snapshotter_system"] = append(cpuUse["snapshot_snapshotter_system"], snap.sysCPU)
			faults = append(faults, float64(snap.faults))
			measured += snap.dur
			snaps = append(snaps, snap.dur)
			peakKB = max(peakKB, snap.hwmKB)
			if snap.halfKB > 0 {
				secondHalf = append(secondHalf, float64(snap.hwmKB)/float64(snap.halfKB))
				halfDone = append(halfDone, snap.halfDone)
			}
			for ph, d := range snap.phases {
				phases[ph] = append(phases[ph], d)
			}
			if snap.manifest.TotalRecords != int64(w.records) {
				b.Errorf("%s: snapshot holds %d records, seeded %d", w.name, snap.manifest.TotalRecords, w.records)
			}
			testenv.Emit(fmt.Sprintf("%sround%d_raw_get_seconds", p, r+1), rawDur.Seconds(), "s")
			testenv.Emit(fmt.Sprintf("%sround%d_snapshot_seconds", p, r+1), snap.dur.Seconds(), "s")
			testenv.Emit(fmt.Sprintf("%sround%d_snapshotter_peak_rss", p, r+1), float64(snap.hwmKB)/1024, "MB")
		}
		rawDur, snapDur := testenv.Median(raws), testenv.Median(snaps)
		rawRate := float64(w.records) / rawDur.Seconds()
		snapRate := float64(w.records) / snapDur.Seconds()
		peakMB := float64(peakKB) / 1024
		peaks[w.name] = peakMB
		size := float64(snap.manifest.Size)

		testenv.Emit(p+"raw_get", rawRate, "records/s")
		testenv.Emit(p+"raw_get_seconds", rawDur.Seconds(), "s")
		testenv.Emit(p+"snapshot", snapRate, "records/s")
		testenv.Emit(p+"snapshot_seconds", snapDur.Seconds(), "s")
		// Each round's snapshot against that round's raw get; the ratio
		// of the medians besides.
		ratio := testenv.MedianRatio(snaps, raws)
		testenv.Emit(p+"snapshot_vs_raw_get", ratio, "ratio")
		testenv.Emit(p+"snapshot_vs_raw_get_of_medians", snapDur.Seconds()/rawDur.Seconds(), "ratio")
		// How busy the machine's cores were: a read that is CPU-bound
		// leaves a snapshot no spare core for its own work.
		testenv.Emit(p+"raw_get_busy_cores", testenv.Median(rawCores), "cores")
		testenv.Emit(p+"snapshot_busy_cores", testenv.Median(snapCores), "cores")
		q.Emit(p)
		// Where the CPU went, by process: Chroma serving the reads, the
		// client decoding them (raw get), and in a snapshot the
		// snapshotter, and this process with the embedded NATS server.
		for _, k := range slices.Sorted(maps.Keys(cpuUse)) {
			testenv.Emit(p+"cpu_"+k+"_seconds", testenv.Median(cpuUse[k]).Seconds(), "s")
		}
		// A fresh process touches its heap for the first time: each fault
		// is a page of it, paid for in system CPU.
		testenv.Emit(p+"snapshotter_minor_faults", testenv.Median(faults), "count")
		for _, ph := range slices.Sorted(maps.Keys(phases)) {
			testenv.Emit(p+"phase_"+ph+"_seconds", testenv.Median(phases[ph]).Seconds(), "s")
		}
		testenv.Emit(p+"archive_bytes", size, "bytes")
		testenv.Emit(p+"archive_raw_bytes", float64(snap.manifest.RawBytes), "bytes")
		testenv.Emit(p+"floor_bytes", float64(floor), "bytes")
		testenv.Emit(p+"json_bytes", float64(jsonSize), "bytes")
		testenv.Emit(p+"archive_vs_floor", size/float64(floor), "ratio")
		testenv.Emit(p+"archive_vs_json", size/float64(jsonSize), "ratio")
		testenv.Emit(p+"snapshotter_peak_rss", peakMB, "MB")
		// Flat in collection size: the peak at the end against the peak
		// with half the records exported (the largest over the rounds; no
		// line when no progress came between half way and the end).
		if len(secondHalf) > 0 {
			testenv.Emit(p+"rss_growth_second_half", slices.Max(secondHalf), "ratio")
			testenv.Emit(p+"rss_half_measured_at", slices.Min(halfDone), "done")
		}

		b.ReportMetric(rawRate, p+"raw_get_records/s")
		b.ReportMetric(snapRate, p+"snapshot_records/s")
		b.ReportMetric(ratio, p+"snapshot/raw")
		b.ReportMetric(size/float64(floor), p+"archive/floor")
		b.ReportMetric(size/float64(jsonSize), p+"archive/json")
		b.ReportMetric(peakMB, p+"peak_rss_MB")
	}
	if peaks["scale"] > 0 && peaks["seed"] > 0 {
		growth := peaks["scale"] / peaks["seed"]
		testenv.Emit("rss_growth_scale_vs_seed", growth, "ratio")
		b.ReportMetric(growth, "rss_scale/seed")
	}
	testenv.Emit("loadavg_after", testenv.LoadAvg(), "load")
	b.ReportMetric(float64(measured.Nanoseconds())/float64(b.N), "ns/op")
}

// pageWireBytes is the size of the body of one get answer of limit records
// as Chroma sends it (what the client's decoder has to hold).
func pageWireBytes(b *testing.B, base, db, collID string, limit int) int64 {
	body := fmt.Sprintf(`{"limit":%d,"offset":0,"include":["embeddings","documents","metadatas","uris"]}`, limit)
	u := fmt.Sprintf("%s/api/v2/tenants/%s/databases/%s/collections/%s/get", base, benchTenant, db, collID)
	resp, err := http.Post(u, "application/json", strings.NewReader(body))
	if err != nil {
		b.Fatalf("get page: %v", err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("get page: status %d, %v", resp.StatusCode, err)
	}
	return n
}

// benchPageSize is the snapshotter's default page size (16 MiB pages as
// Chroma sends them, at most 2,500 records), so both reads page alike.
func benchPageSize(dim int) int {
	return min(max((16<<20)/(1024+dim*11), 50), 2500)
}

type pageJob struct {
	idx    int
	collID string
	offset int
}

// rawGet reads every record of colls with two workers in parallel, pages of
// limit records with every column, and returns the pages (when keep) in get
// order and how long it took.
func rawGet(ctx context.Context, cc *chroma.Client, db string, colls []chroma.Collection, limit int, keep bool) ([]*record.Batch, time.Duration, error) {
	start := time.Now()
	var jobs []pageJob
	for _, c := range colls {
		n, err := cc.Count(ctx, benchTenant, db, c.ID)
		if err != nil {
			return nil, 0, err
		}
		for off := 0; off < n; off += limit {
			jobs = append(jobs, pageJob{len(jobs), c.ID, off})
		}
	}
	out := make([]*record.Batch, len(jobs))
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	ch := make(chan pageJob)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for j := range ch {
				p, err := cc.Get(ctx, benchTenant, db, j.collID, chroma.GetRequest{Limit: limit, Offset: j.offset, Include: chroma.IncludeAll})
				if err != nil {
					cancel(err)
					return
				}
				if keep {
					out[j.idx] = p
				}
			}
		})
	}
feed:
	for _, j := range jobs {
		select {
		case ch <- j:
		case <-ctx.Done():
			break feed
		}
	}
	close(ch)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, 0, err
	}
	return out, time.Since(start), nil
}

// sizeFloor returns the smallest size an archive of pages could reasonably
// have, float32 embeddings plus gzip (default level) of the JSON of the
// other columns as the archive stores them, and the size of a plain JSON
// export (the get answers with embeddings as JSON numbers).
func sizeFloor(b *testing.B, pages []*record.Batch) (floor, jsonSize int64) {
	var gz countWriter
	zw := gzip.NewWriter(&gz)
	for _, p := range pages {
		for _, e := range p.Embeddings {
			floor += int64(len(e)) * 4
		}
		cols, err := json.Marshal(struct {
			IDs       []string          `json:"ids"`
			Documents []*string         `json:"documents"`
			Metadatas []record.Metadata `json:"metadatas"`
			URIs      []*string         `json:"uris"`
		}{p.IDs, p.Documents, p.Metadatas, p.URIs})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := zw.Write(cols); err != nil {
			b.Fatal(err)
		}
		all, err := json.Marshal(struct {
			IDs        []string          `json:"ids"`
			Embeddings [][]float32       `json:"embeddings"`
			Documents  []*string         `json:"documents"`
			Metadatas  []record.Metadata `json:"metadatas"`
			URIs       []*string         `json:"uris"`
		}{p.IDs, p.Embeddings, p.Documents, p.Metadatas, p.URIs})
		if err != nil {
			b.Fatal(err)
		}
		jsonSize += int64(len(all))
	}
	if err := zw.Close(); err != nil {
		b.Fatal(err)
	}
	return floor + gz.n, jsonSize
}

type countWriter struct{ n int64 }

func (w *countWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	return len(p), nil
}

// snapshotterBinary builds the snapshotter from this module's working tree
// into a temp dir (a second or two from the build cache). It never takes
// bin/snapshotter: that is as old as the last `make build`, and a bench of
// a change run without one measured the code before it.
func snapshotterBinary(b *testing.B) string {
	b.Helper()
	p := filepath.Join(b.TempDir(), "snapshotter")
	cmd := exec.Command("go", "build", "-o", p, "./cmd/snapshotter")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build snapshotter: %v\n%s", err, out)
	}
	return p
}

type snapshotRun struct {
	dur      time.Duration
	manifest contract.SnapshotManifest
	hwmKB    int64
	// halfKB is the process's peak RSS when the first progress message
	// saying that half the records or more were exported came (0 if none
	// came before the end), halfDone the share they said was done.
	halfKB   int64
	halfDone float64
	// busyCores is how many of the machine's cores were busy on average
	// during the snapshot.
	busyCores float64
	// cpu is the CPU time the snapshotter used from its start to the
	// snapshot's end, less what it used before the request.
	cpu time.Duration
	// selfCPU is what this process (the embedded NATS server among it)
	// used from the request to the snapshot's end.
	selfCPU time.Duration
	// faults is the snapshotter's minor page faults in the same span:
	// memory it touched for the first time (or again after returning it),
	// and sysCPU the part of cpu spent in the kernel, those faults' cost
	// among it.
	faults uint64
	sysCPU time.Duration
	// phases is how long each progress phase lasted, "queued" being the
	// time from the request to the first progress message.
	phases map[string]time.Duration
}

// phaseTimer records when each progress phase was first seen.
type phaseTimer struct {
	mu     sync.Mutex
	start  time.Time
	order  []string
	firsts map[string]time.Time
	end    time.Time
}

func (pt *phaseTimer) seen(phase string, at time.Time) {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	if _, ok := pt.firsts[phase]; !ok {
		pt.firsts[phase] = at
		pt.order = append(pt.order, phase)
	}
}

// durations returns each phase's length, up to the next phase or end.
func (pt *phaseTimer) durations() map[string]time.Duration {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	out := map[string]time.Duration{}
	prev, prevAt := "queued", pt.start
	for _, ph := range pt.order {
		out[prev] += pt.firsts[ph].Sub(prevAt)
		prev, prevAt = ph, pt.firsts[ph]
	}
	out[prev] += pt.end.Sub(prevAt)
	return out
}

// quietTimeout bounds each wait for a quiet machine before a measurement.
const quietTimeout = 30 * time.Second

// runSnapshot starts a fresh snapshotter process, asks it for a snapshot of
// db over NATS, waits for the operation to complete and returns how long
// that took, the manifest and the process's peak RSS; the process is
// stopped before returning.
func runSnapshot(b *testing.B, bin string, nt *testenv.NATS, chromaURL, db string, round int, q *testenv.Quieter) snapshotRun {
	b.Helper()
	ctx := b.Context()
	logDir := os.Getenv("BENCH_LOG_DIR") // keeps the children's logs
	if logDir == "" {
		logDir = b.TempDir()
	}
	logPath := filepath.Join(logDir, fmt.Sprintf("snapshotter-%s-%d.log", db, round+1))
	logf, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	defer logf.Close()
	args := []string{"--nats-url", nt.URL, "--chroma-url", chromaURL, "--instance", "bench-" + db}
	if os.Getenv("BENCH_CPUPROFILE") != "" { // profiles land next to the logs
		args = append(args, "--cpuprofile", filepath.Join(logDir, fmt.Sprintf("snapshotter-%s-%d.pprof", db, round+1)))
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "LOG_LEVEL=info")
	if err := cmd.Start(); err != nil {
		b.Fatalf("start snapshotter: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	stop := func() {
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
	fail := func(format string, args ...any) {
		stop()
		logTail(b, logPath)
		b.Fatalf(format, args...)
	}
	defer stop()

	subj := contract.Subjects{Prefix: contract.DefaultPrefix}
	if err := waitAnswer(nt.Conn, subj.API("snapshot", "list"), 30*time.Second, exited); err != nil {
		fail("snapshotter for %s: %v", db, err)
	}

	req, err := json.Marshal(contract.SnapshotCreateRequest{
		Envelope: contract.NewEnvelope(contract.TypeSnapshotCreateRequest),
		Name:     fmt.Sprintf("bench-%s-%d", db, round+1), Tenant: benchTenant, Database: db, Actor: "bench",
	})
	if err != nil {
		b.Fatal(err)
	}
	pt := &phaseTimer{firsts: map[string]time.Time{}}
	var half struct {
		sync.Mutex
		kb   int64
		done float64
	}
	sub, err := nt.Conn.Subscribe(subj.Progress("*"), func(m *nats.Msg) {
		at := time.Now()
		var pr contract.Progress
		if json.Unmarshal(m.Data, &pr) == nil && pr.Phase != "" && !pr.Done {
			pt.seen(pr.Phase, at)
		}
		// The peak when half the records are out: if memory grew with
		// the records exported, the end's peak would be above it.
		if pr.Phase == "exporting" && pr.TotalRecords > 0 && 2*pr.DoneRecords >= pr.TotalRecords {
			half.Lock()
			if half.kb == 0 {
				if kb, err := testenv.PeakRSSKB(cmd.Process.Pid); err == nil {
					half.kb, half.done = kb, float64(pr.DoneRecords)/float64(pr.TotalRecords)
				}
			}
			half.Unlock()
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nt.Conn.Flush(); err != nil {
		b.Fatal(err)
	}
	q.Wait(quietTimeout)
	cpu := testenv.SampleCPU()
	idleCPU, selfCPU := testenv.ProcessCPU(cmd.Process.Pid), testenv.ProcessCPU(0)
	idleFaults, idleSys := testenv.ProcessMinorFaults(cmd.Process.Pid), testenv.ProcessSystemCPU(cmd.Process.Pid)
	start := time.Now()
	pt.start = start
	msg, err := nt.Conn.Request(subj.API("snapshot", "create"), req, 60*time.Second)
	if err != nil {
		fail("create snapshot of %s: %v", db, err)
	}
	if code := msg.Header.Get("Nats-Service-Error-Code"); code != "" {
		fail("create snapshot of %s: error %s: %s", db, code, msg.Data)
	}
	var rep contract.SnapshotCreateReply
	if err := json.Unmarshal(msg.Data, &rep); err != nil {
		fail("decode create reply: %v", err)
	}
	// The operation record's updates say when it ended: a watch sees the
	// change as it happens, where polling would add up to its period.
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	watch, err := nt.Assets.State.Watch(wctx, contract.OperationKey(rep.OpID))
	if err != nil {
		fail("watch operation %s: %v", rep.OpID, err)
	}
	defer func() { _ = watch.Stop() }()
	var op contract.Operation
	deadline := time.After(30 * time.Minute)
wait:
	for {
		select {
		case entry, ok := <-watch.Updates():
			if !ok {
				fail("watch of operation %s ended", rep.OpID)
			}
			if entry == nil || entry.Operation() != jetstream.KeyValuePut {
				continue // nil: the current value was delivered
			}
			if err := json.Unmarshal(entry.Value(), &op); err != nil {
				fail("decode operation: %v", err)
			}
			if op.Status == contract.StatusCompleted || op.Status == contract.StatusFailed {
				break wait
			}
		case err := <-exited:
			exited <- err
			fail("snapshotter exited during the snapshot of %s: %v", db, err)
		case <-deadline:
			fail("snapshot of %s did not end within 30m", db)
		}
	}
	dur := time.Since(start)
	busy := cpu.BusyCores(testenv.SampleCPU())
	used, self := testenv.ProcessCPU(cmd.Process.Pid)-idleCPU, testenv.ProcessCPU(0)-selfCPU
	faults, sys := testenv.ProcessMinorFaults(cmd.Process.Pid)-idleFaults, testenv.ProcessSystemCPU(cmd.Process.Pid)-idleSys
	pt.mu.Lock()
	pt.end = start.Add(dur)
	pt.mu.Unlock()
	if op.Status != contract.StatusCompleted {
		fail("snapshot of %s ended %s: %s", db, op.Status, op.Error)
	}
	hwm, err := testenv.PeakRSSKB(cmd.Process.Pid)
	if err != nil {
		fail("read peak RSS: %v", err)
	}
	entry, err := nt.Assets.Manifests.Get(ctx, rep.SnapshotID)
	if err != nil {
		fail("get manifest %s: %v", rep.SnapshotID, err)
	}
	var m contract.SnapshotManifest
	if err := json.Unmarshal(entry.Value(), &m); err != nil {
		fail("decode manifest: %v", err)
	}
	half.Lock()
	defer half.Unlock()
	return snapshotRun{dur: dur, manifest: m, hwmKB: hwm, halfKB: half.kb, halfDone: half.done, busyCores: busy, cpu: used, selfCPU: self, faults: faults, sysCPU: sys, phases: pt.durations()}
}

// waitAnswer waits until a service answers on subject, or the process exits.
func waitAnswer(nc *nats.Conn, subject string, timeout time.Duration, exited chan error) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, err := nc.Request(subject, []byte(`{}`), time.Second); err == nil {
			return nil
		}
		select {
		case err := <-exited:
			exited <- err
			return fmt.Errorf("process exited: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("no answer on %s within %s", subject, timeout)
}

// logTail logs the end of a child's log.
func logTail(b *testing.B, path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		return
	}
	if len(data) > 16<<10 {
		data = data[len(data)-16<<10:]
	}
	b.Logf("snapshotter output (%s):\n%s", path, bytes.TrimSpace(data))
}
