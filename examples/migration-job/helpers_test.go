package main

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/nats-io/nats.go/jetstream"
)

var subj = contract.Subjects{Prefix: contract.DefaultPrefix}

// runJob runs the example job in-process and returns its exit code; its log
// is shown when the test fails.
func runJob(t *testing.T, args ...string) int {
	t.Helper()
	var out testenv.SyncBuffer
	code := run(t.Context(), args, &out)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("job log (%s):\n%s", strings.Join(args, " "), out.String())
		}
	})
	return code
}

// jobEvents reads the events of job from the migration stream.
func jobEvents(t *testing.T, n *testenv.NATS, job string) []contract.MigrationEvent {
	t.Helper()
	ctx := t.Context()
	stream, err := n.JS.Stream(ctx, contract.StreamMigrations)
	if err != nil {
		t.Fatal(err)
	}
	filter := subj.MigrationEvent(job, ">")
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, c := range info.State.Subjects {
		want += int(c)
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		t.Fatal(err)
	}
	var out []contract.MigrationEvent
	for len(out) < want {
		batch, err := cons.Fetch(want-len(out), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := len(out)
		for m := range batch.Messages() {
			var ev contract.MigrationEvent
			if err := json.Unmarshal(m.Data(), &ev); err != nil {
				t.Fatal(err)
			}
			event := m.Subject()[strings.LastIndexByte(m.Subject(), '.')+1:]
			if err := contract.ValidateMigrationEvent(event, job, &ev); err != nil {
				t.Errorf("invalid %s event: %v", event, err)
			}
			out = append(out, ev)
		}
		if len(out) == got {
			t.Fatalf("read %d of %d events", got, want)
		}
	}
	return out
}

// eventsOfType filters events by message type.
func eventsOfType(evs []contract.MigrationEvent, typ string) []contract.MigrationEvent {
	var out []contract.MigrationEvent
	for _, ev := range evs {
		if ev.Type == typ {
			out = append(out, ev)
		}
	}
	return out
}

// dbState is the full content of a database as the exact adapter reads it.
type dbState map[string]*collState

type collState struct {
	Metadata      record.Metadata
	Configuration json.RawMessage
	Space         string
	Records       *record.Batch
}

func dump(t *testing.T, cc *chroma.Client, tenant, db string) dbState {
	t.Helper()
	ctx := t.Context()
	cols, err := cc.ListCollections(ctx, tenant, db)
	if err != nil {
		t.Fatalf("list collections of %s/%s: %v", tenant, db, err)
	}
	out := dbState{}
	for _, c := range cols {
		recs, err := testenv.ReadAll(ctx, cc, tenant, db, c.ID, 1000)
		if err != nil {
			t.Fatalf("read %s/%s/%s: %v", tenant, db, c.Name, err)
		}
		var cfg struct {
			HNSW struct{ Space string } `json:"hnsw"`
		}
		_ = json.Unmarshal(c.Configuration, &cfg)
		out[c.Name] = &collState{Metadata: c.Metadata, Configuration: c.Configuration, Space: cfg.HNSW.Space, Records: recs}
	}
	return out
}

func (s dbState) names() []string {
	var out []string
	for n := range s {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (s dbState) records() int {
	n := 0
	for _, c := range s {
		n += c.Records.Len()
	}
	return n
}

// recordDiff compares one record field by field; embeddings bit-exact, or
// within a relative 1e-6 when tolerant (cosine spaces renormalise).
func recordDiff(gi int, g *record.Batch, wi int, w *record.Batch, tolerant bool) string {
	if !reflect.DeepEqual(g.Documents[gi], w.Documents[wi]) {
		return fmt.Sprintf("document %v, want %v", deref(g.Documents[gi]), deref(w.Documents[wi]))
	}
	if !reflect.DeepEqual(g.URIs[gi], w.URIs[wi]) {
		return fmt.Sprintf("uri %v, want %v", deref(g.URIs[gi]), deref(w.URIs[wi]))
	}
	if !reflect.DeepEqual(normMeta(g.Metadatas[gi]), normMeta(w.Metadatas[wi])) {
		return fmt.Sprintf("metadata %v, want %v", g.Metadatas[gi], w.Metadatas[wi])
	}
	return embeddingDiff(g.Embeddings[gi], w.Embeddings[wi], tolerant)
}

func embeddingDiff(got, want []float32, tolerant bool) string {
	if (got == nil) != (want == nil) || len(got) != len(want) {
		return fmt.Sprintf("embedding has %d values (nil %v), want %d (nil %v)", len(got), got == nil, len(want), want == nil)
	}
	scale := 0.0
	for _, v := range want {
		scale = max(scale, math.Abs(float64(v)))
	}
	for i := range want {
		if math.Float32bits(got[i]) == math.Float32bits(want[i]) {
			continue
		}
		if tolerant && math.Abs(float64(got[i])-float64(want[i])) <= 1e-6*scale {
			continue
		}
		return fmt.Sprintf("embedding value %d is %v, want %v", i, got[i], want[i])
	}
	return ""
}

// compareDB checks that got holds exactly want's collections with the same
// metadata, configuration and records; embeddings bit-exact except in
// cosine spaces.
func compareDB(t *testing.T, label string, got, want dbState) {
	t.Helper()
	if g, w := got.names(), want.names(); !reflect.DeepEqual(g, w) {
		t.Errorf("%s: collections %q, want %q", label, g, w)
	}
	for name, w := range want {
		g, ok := got[name]
		if !ok {
			continue
		}
		if !reflect.DeepEqual(normMeta(g.Metadata), normMeta(w.Metadata)) {
			t.Errorf("%s/%s: metadata %v, want %v", label, name, g.Metadata, w.Metadata)
		}
		if !jsonEqual(g.Configuration, w.Configuration) {
			t.Errorf("%s/%s: configuration %s, want %s", label, name, g.Configuration, w.Configuration)
		}
		compareRecords(t, label+"/"+name, g.Records, w.Records, w.Space == "cosine")
	}
}

func compareRecords(t *testing.T, label string, g, w *record.Batch, tolerant bool) {
	t.Helper()
	if g.Len() != w.Len() {
		t.Errorf("%s: %d records, want %d", label, g.Len(), w.Len())
	}
	idx := map[string]int{}
	for i, id := range g.IDs {
		idx[id] = i
	}
	bad := 0
	for wi, id := range w.IDs {
		gi, ok := idx[id]
		d := "missing"
		if ok {
			d = recordDiff(gi, g, wi, w, tolerant)
		}
		if d != "" {
			if bad++; bad <= 5 {
				t.Errorf("%s: record %q: %s", label, id, d)
			}
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d records differ in all", label, bad)
	}
}

func deref(s *string) any {
	if s == nil {
		return nil
	}
	return *s
}

func normMeta(m record.Metadata) record.Metadata {
	if len(m) == 0 {
		return nil
	}
	return m
}

func jsonEqual(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return string(a) == string(b)
	}
	return reflect.DeepEqual(x, y)
}

// migrated is what the job means a record to become.
func migrated(b *record.Batch, i int, by string) (*string, record.Metadata) {
	var doc *string
	if b.Documents[i] != nil {
		d := strings.Join(strings.Fields(*b.Documents[i]), " ")
		doc = &d
	}
	m := record.Metadata{}
	for k, v := range b.Metadatas[i] {
		m[k] = v
	}
	m[migratedByKey] = by
	return doc, m
}
