package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/nats-io/nats.go"
)

func TestParseConfig(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		substr string
		check  func(*config) string
	}{
		{name: "no job", args: []string{"--take-snapshot"}, substr: "job is required"},
		{name: "job with a dot", args: []string{"--job", "a.b", "--take-snapshot"}, substr: "job"},
		{name: "no snapshot", args: []string{"--job", "j"}, substr: "exactly one"},
		{name: "both snapshots", args: []string{"--job", "j", "--take-snapshot", "--snapshot-id", "s"}, substr: "exactly one"},
		{name: "lose too big", args: []string{"--job", "j", "--take-snapshot", "--lose", "1.5"}, substr: "lose"},
		{name: "lose not a number", args: []string{"--job", "j", "--take-snapshot", "--lose", "ten"}, substr: "lose"},
		{name: "page size", args: []string{"--job", "j", "--take-snapshot", "--page-size", "0"}, substr: "page size"},
		{name: "in place by default", args: []string{"--job", "j", "--take-snapshot", "--tenant", "acme", "--database", "prod"},
			check: func(c *config) string {
				if !c.inPlace() || c.MigratedBy != "j" || c.TargetDatabase != "prod" || c.TargetTenant != "acme" {
					return fmt.Sprintf("%+v", c)
				}
				return ""
			}},
		{name: "copy", args: []string{"--job", "j", "--snapshot-id", "s", "--database", "prod", "--target-database", "prod_v2",
			"--collections", "a, b,", "--lose", "0.1", "--time-limit", "3s"},
			check: func(c *config) string {
				if c.inPlace() || !reflect.DeepEqual(c.Collections, []string{"a", "b"}) || c.Lose != 0.1 || c.TimeLimit != 3*time.Second {
					return fmt.Sprintf("%+v", c)
				}
				return ""
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseConfig(tc.args, &bytes.Buffer{})
			if tc.substr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.substr) {
					t.Errorf("err = %v, want one saying %q", err, tc.substr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if msg := tc.check(c); msg != "" {
				t.Errorf("config: %s", msg)
			}
		})
	}
	t.Run("bad environment", func(t *testing.T) {
		t.Setenv("PAGE_DELAY", "soon")
		if _, err := parseConfig([]string{"--job", "j", "--take-snapshot"}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "PAGE_DELAY") {
			t.Errorf("err = %v, want one naming PAGE_DELAY", err)
		}
	})
	// What the watchdog would refuse, or what would never lose anything,
	// is told before the run starts.
	for _, args := range [][]string{
		{"--lose", "NaN"},
		{"--time-limit", "500ms"},
	} {
		if _, err := parseConfig(append([]string{"--job", "j", "--take-snapshot"}, args...), &bytes.Buffer{}); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
	t.Run("environment", func(t *testing.T) {
		t.Setenv("MIGRATION_JOB", "from-env")
		t.Setenv("TAKE_SNAPSHOT", "true")
		t.Setenv("TIME_LIMIT", "90s")
		c, err := parseConfig(nil, &bytes.Buffer{})
		if err != nil || c.Job != "from-env" || !c.TakeSnapshot || c.TimeLimit != 90*time.Second {
			t.Errorf("config %+v, %v", c, err)
		}
	})
	if code := run(t.Context(), []string{"--job", "j"}, &bytes.Buffer{}); code != exitUsage {
		t.Errorf("exit code %d for bad flags, want %d", code, exitUsage)
	}
}

func TestTransform(t *testing.T) {
	doc := " two\twords \n and\u00a0more  "
	got, meta := transform(&doc, map[string]any{"n": int64(1)}, "job-1")
	if *got != "two words and more" {
		t.Errorf("document %q", *got)
	}
	if !reflect.DeepEqual(meta, map[string]any{"n": int64(1), migratedByKey: "job-1"}) {
		t.Errorf("metadata %v", meta)
	}
	if d, _ := transform(nil, nil, "x"); d != nil {
		t.Errorf("null document became %q", *d)
	}
	empty := ""
	if d, _ := transform(&empty, nil, "x"); d == nil || *d != "" {
		t.Errorf(`"" became %v`, d)
	}
}

// TestLostShare: every collection loses about the share asked, whatever its
// ids look like (the fixture's are short and alike). The choice is a pure
// function of collection and id, so runs lose the same records.
func TestLostShare(t *testing.T) {
	for _, share := range []float64{0, 0.03, 0.10, 1} {
		for _, pattern := range []string{"trait-%04d", "doc.%d.a", "%d"} {
			for _, col := range []string{"personality", "corpus.v1"} {
				n := 0
				for i := range 5000 {
					if lost(share, col, fmt.Sprintf(pattern, i)) {
						n++
					}
				}
				if got := float64(n) / 5000; math.Abs(got-share) > 0.015 {
					t.Errorf("lose %v dropped %v of %s ids %q", share, got, col, pattern)
				}
			}
		}
	}
}

func TestFingerprint(t *testing.T) {
	doc := "d"
	emb := []float32{0.5, -0.25, 3}
	base := fingerprintOf(&doc, map[string]any{"a": int64(1)}, emb)
	near := []float32{0.5, math.Nextafter32(-0.25, 0), 3}
	if !base.matches(fingerprintOf(&doc, map[string]any{"a": int64(1)}, near)) {
		t.Error("a 1-ULP change of an embedding value does not match")
	}
	for name, fp := range map[string]fingerprint{
		"int became float":   fingerprintOf(&doc, map[string]any{"a": 1.0}, emb),
		"null document":      fingerprintOf(nil, map[string]any{"a": int64(1)}, emb),
		"swapped values":     fingerprintOf(&doc, map[string]any{"a": int64(1)}, []float32{-0.25, 0.5, 3}),
		"shorter embedding":  fingerprintOf(&doc, map[string]any{"a": int64(1)}, emb[:2]),
		"no embedding":       fingerprintOf(&doc, map[string]any{"a": int64(1)}, nil),
		"another key":        fingerprintOf(&doc, map[string]any{"a": int64(1), "b": "x"}, emb),
		"another value text": fingerprintOf(&doc, map[string]any{"a": "1"}, emb),
	} {
		if base.matches(fp) {
			t.Errorf("%s matches", name)
		}
	}
}

// FuzzExactMetadata: what marshalExact writes decodes to the same values,
// floats bit for bit and still floats.
func FuzzExactMetadata(f *testing.F) {
	f.Add(0.5180714504553056, int64(9007199254740993), "x")
	f.Add(-1e-300, int64(math.MinInt64), "日本語\x00")
	f.Add(1.0, int64(0), "")
	f.Fuzz(func(t *testing.T, fl float64, i int64, s string) {
		if math.IsNaN(fl) || math.IsInf(fl, 0) {
			return
		}
		data, err := marshalExact(map[string]any{"f": fl, "i": i, "s": s, "b": true})
		if err != nil {
			t.Fatal(err)
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		var got map[string]any
		if err := dec.Decode(&got); err != nil {
			t.Fatalf("%s: %v", data, err)
		}
		num := string(got["f"].(json.Number))
		if !strings.ContainsAny(num, ".eE") {
			t.Errorf("float %v written as %s, which reads as an int", fl, num)
		}
		if back, _ := got["f"].(json.Number).Float64(); math.Float64bits(back) != math.Float64bits(fl) {
			t.Errorf("float %v came back as %v", fl, back)
		}
		if back, _ := got["i"].(json.Number).Int64(); back != i {
			t.Errorf("int %d came back as %d", i, back)
		}
		if utf8Valid(s) && got["s"] != s {
			t.Errorf("string %q came back as %q", s, got["s"])
		}
	})
}

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "\ufffd") == s }

// TestCopyToAnotherDatabase copies the fixture's acme/prod into a new
// database of the same Chroma (no watchdog: the events are only stored),
// pausing and resuming it on the way, and reads the copy back with the exact adapter: every record transformed,
// metadata values exact (types included), embeddings bit-exact where the
// space allows, URIs absent (chroma-go v0.4.0 cannot carry them).
func TestCopyToAnotherDatabase(t *testing.T) {
	srv := testenv.StartChroma(t)
	cc := srv.Client(t, chroma.WithRetryMaxElapsed(3*time.Second))
	if _, err := testenv.SeedFixture(t.Context(), cc); err != nil {
		t.Fatal(err)
	}
	n := testenv.StartNATS(t)
	source := dump(t, cc, "acme", "prod")

	// Heartbeats show the job's progress; the test pauses it after the
	// first and checks it stands still until resumed.
	beats := make(chan contract.MigrationEvent, 100)
	sub, err := n.Conn.Subscribe(subj.MigrationEvent("copy-prod", contract.EventHeartbeat), func(m *nats.Msg) {
		var ev contract.MigrationEvent
		if json.Unmarshal(m.Data, &ev) == nil {
			beats <- ev
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	// The job is a process of its own: the server must know the
	// subscription before the job can publish.
	if err := n.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	exit := make(chan int, 1)
	go func() {
		exit <- runJob(t, "--nats-url", n.URL, "--job", "copy-prod", "--chroma-url", srv.URL,
			"--tenant", "acme", "--database", "prod", "--target-database", "prod_v2",
			"--snapshot-id", "pre_copy", "--page-size", "64", "--page-delay", "100ms")
	}()
	control := func(command string) {
		data, _ := json.Marshal(contract.Control{Envelope: contract.NewEnvelope(contract.TypeControl), Job: "copy-prod", Command: command, Reason: "test"})
		if err := n.Conn.Publish(subj.Control("copy-prod"), data); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-beats:
	case code := <-exit:
		t.Fatalf("the job ended (exit code %d) before its first heartbeat", code)
	case <-time.After(30 * time.Second):
		t.Fatal("no heartbeat within 30s")
	}
	control(contract.ControlPause)
	time.Sleep(300 * time.Millisecond) // the page in flight ends
	for len(beats) > 0 {
		<-beats
	}
	select {
	case ev := <-beats:
		t.Errorf("the paused job went on: heartbeat %q at %d records", ev.Phase, ev.DoneRecords)
	case code := <-exit:
		t.Fatalf("the paused job ended with exit code %d", code)
	case <-time.After(time.Second):
	}
	control(contract.ControlResume)
	if code := <-exit; code != exitOK {
		t.Fatalf("exit code %d", code)
	}

	evs := jobEvents(t, n, "copy-prod")
	if len(evs) == 0 || evs[0].Type != contract.TypeMigrationStarted || evs[0].Database != "prod_v2" || evs[0].SnapshotID != "pre_copy" {
		t.Fatalf("first event %+v, want started for acme/prod_v2", evs[0])
	}
	val := eventsOfType(evs, contract.TypeMigrationValidation)
	if len(val) != 1 || val[0].TotalChunks != int64(source.records()) || val[0].ValidChunks != val[0].TotalChunks {
		t.Errorf("validation events %+v, want one with %d of %d valid", val, source.records(), source.records())
	}
	if last := evs[len(evs)-1]; last.Type != contract.TypeMigrationCompleted {
		t.Errorf("last event %s, want completed", last.Type)
	}
	if len(eventsOfType(evs, contract.TypeMigrationHeartbeat)) == 0 {
		t.Error("no heartbeats")
	}

	target := dump(t, cc, "acme", "prod_v2")
	if g, w := target.names(), source.names(); !reflect.DeepEqual(g, w) {
		t.Fatalf("target collections %q, want %q", g, w)
	}
	bitDiff := map[string]int{}
	for name, s := range source {
		g := target[name]
		if !reflect.DeepEqual(normMeta(g.Metadata), normMeta(s.Metadata)) {
			t.Errorf("%s: collection metadata %v, want %v", name, g.Metadata, s.Metadata)
		}
		if !jsonEqual(g.Configuration, s.Configuration) {
			t.Errorf("%s: configuration %s, want %s", name, g.Configuration, s.Configuration)
		}
		// What the job means the copy to be: transformed, without URIs.
		want := &record.Batch{}
		for i, id := range s.Records.IDs {
			doc, meta := migrated(s.Records, i, "copy-prod")
			want.IDs = append(want.IDs, id)
			want.Documents = append(want.Documents, doc)
			want.Metadatas = append(want.Metadatas, meta)
			want.URIs = append(want.URIs, nil)
			want.Embeddings = append(want.Embeddings, s.Records.Embeddings[i])
		}
		compareRecords(t, "prod_v2/"+name, g.Records, want, true)
		idx := map[string]int{}
		for i, id := range g.Records.IDs {
			idx[id] = i
		}
		for i, id := range want.IDs {
			if k, ok := idx[id]; ok && embeddingDiff(g.Records.Embeddings[k], want.Embeddings[i], false) != "" {
				bitDiff[name+" ("+s.Space+")"]++
			}
		}
	}
	// Expected: only cosine spaces (Chroma renormalises what it stores).
	t.Logf("copied embeddings that differ from the source in some bit, per collection: %v", bitDiff)
}
