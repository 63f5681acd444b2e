package main

import (
	"encoding/json"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/chromadb-rollback/chromadb-rollback/services/restorer"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
)

// TestCLIBatchInfo: `snapshot info` shows which records each batch holds,
// so that an operator can name the batches a migration damaged; the plan of
// a batch-level rollback shows each named batch's records. A manifest
// written before batches' records were recorded still lists, shows (saying
// the detail is not recorded), verifies and restores.
func TestCLIBatchInfo(t *testing.T) {
	ch := testenv.StartChroma(t)
	cc := ch.Client(t)
	ctx := t.Context()
	// corpus: 10 records in insertion order, read in pages of at most 4
	// (4, 3, 3). The first id is long, the last holds a tab.
	ids := []string{"https://example.com/handbook/chapter-01/section-03#chunk-0001",
		"doc-01", "doc-02", "doc-03", "doc-04", "doc-05", "doc-06", "doc-07", "doc-08", "tab\there"}
	corpus, err := cc.CreateCollection(ctx, tTenant, tDB, chroma.CreateCollection{Name: "corpus", Configuration: json.RawMessage(`{"hnsw":{"space":"l2"}}`)})
	if err != nil {
		t.Fatal(err)
	}
	b := &record.Batch{IDs: ids}
	for i := range ids {
		b.Embeddings = append(b.Embeddings, []float32{float32(i), 1, 2})
		b.Metadatas = append(b.Metadatas, record.Metadata{"n": int64(i)})
	}
	if err := cc.Add(ctx, tTenant, tDB, corpus.ID, b); err != nil {
		t.Fatal(err)
	}
	if _, err := cc.CreateCollection(ctx, tTenant, tDB, chroma.CreateCollection{Name: "empty"}); err != nil {
		t.Fatal(err)
	}
	n := testenv.StartNATS(t)
	c := startSnapshotter(t, n, snapshotter.Config{ChromaURL: ch.URL, DataDir: t.TempDir(), MaxPageRecords: 4}, cc)
	startRestorer(t, n, restorer.Config{ChromaURL: ch.URL}, cc)
	before := state(t, cc)

	m := c.createSnapshot("before")
	wantRecords := []contract.BatchRecords{
		{Count: 4, First: ids[0], Last: "doc-03"},
		{Count: 3, First: "doc-04", Last: "doc-06"},
		{Count: 3, First: "doc-07", Last: "tab\there"},
	}
	check := func(what string, m *contract.SnapshotManifest, want []contract.BatchRecords) {
		t.Helper()
		for _, c := range m.Collections {
			w := want
			if c.Name == "empty" {
				w = nil
			}
			if !reflect.DeepEqual(c.BatchRecords, w) {
				t.Errorf("%s: collection %q: batch records %+v, want %+v", what, c.Name, c.BatchRecords, w)
			}
		}
	}
	check("create --json", &m, wantRecords)
	code, stdout, _ := c.run("snapshot", "info", "before", "--json")
	var info contract.SnapshotManifest
	if err := json.Unmarshal([]byte(stdout), &info); code != exitOK || err != nil {
		t.Fatalf("info --json: exit %d, %v: %s", code, err, stdout)
	}
	check("info --json", &info, wantRecords)

	// One row a batch; long ids cut in the middle, a tab quoted; the
	// empty collection has no batches to list.
	code, stdout, _ = c.run("snapshot", "info", "before")
	for _, row := range []string{
		`\nbatches of corpus \(records in insertion order\):\n  BATCH +RECORDS +FIRST ID +LAST ID\n`,
		`\n  batch_000000 +4 +https://exam…#chunk-0001 +doc-03\n`,
		`\n  batch_000001 +3 +doc-04 +doc-06\n`,
		`\n  batch_000002 +3 +doc-07 +"tab\\there"\n`,
	} {
		if code != exitOK || !regexp.MustCompile(row).MatchString(stdout) {
			t.Errorf("snapshot info: exit %d, want the line %q\n%s", code, row, stdout)
		}
	}
	if strings.Contains(stdout, "batches of empty") || strings.Contains(stdout, "not recorded") {
		t.Errorf("snapshot info lists batches of the empty collection, or says they are not recorded:\n%s", stdout)
	}

	// A migration damages doc-05 and doc-06: batch_000001 holds them.
	damage := &record.Batch{IDs: []string{"doc-05", "doc-06"}, Embeddings: [][]float32{{9, 9, 9}, {9, 9, 9}},
		Metadatas: []record.Metadata{{"n": int64(-1)}, {"n": int64(-1)}}}
	if err := cc.Upsert(ctx, tTenant, tDB, corpus.ID, damage); err != nil {
		t.Fatal(err)
	}
	damaged := state(t, cc)
	plan := func(what string) {
		t.Helper()
		code, stdout, stderr := c.run("rollback", "before", "--dry-run", "--batches", "corpus:batch_000001,batch_000002")
		if row := regexp.MustCompile(`\n  corpus +corpus +upsert +10 +10 +6 +batch_000001 \(3\), batch_000002 \(3\)\n`); code != exitOK || !row.MatchString(stdout) {
			t.Errorf("%s: dry run: exit %d, want corpus's row to say 6 records to write, 3 in batch_000001 and 3 in batch_000002\n%s%s", what, code, stdout, stderr)
		}
		code, stdout, _ = c.run("rollback", "before", "--dry-run", "--batches", "corpus:batch_000001,batch_000002", "--json")
		var p contract.RollbackPlan
		if err := json.Unmarshal([]byte(stdout), &p); code != exitOK || err != nil {
			t.Fatalf("%s: dry run --json: exit %d, %v: %s", what, code, err, stdout)
		}
		for _, it := range p.Items {
			if it.Collection == "corpus" && !reflect.DeepEqual(it.BatchCounts, []int64{3, 3}) {
				t.Errorf("%s: plan of corpus: batch counts %v, want [3 3]", what, it.BatchCounts)
			}
		}
	}
	plan("new manifest")
	sameState(t, "after dry runs", state(t, cc), damaged)

	// A manifest written before the batches' records were recorded.
	entry, err := n.Assets.Manifests.Get(ctx, m.SnapshotID)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(entry.Value(), &raw); err != nil {
		t.Fatal(err)
	}
	for _, c := range raw["collections"].([]any) {
		delete(c.(map[string]any), "batch_records")
	}
	old, err := json.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Assets.Manifests.Put(ctx, m.SnapshotID, old); err != nil {
		t.Fatal(err)
	}
	if code, stdout, _ := c.run("snapshot", "list"); code != exitOK || !strings.Contains(stdout, m.SnapshotID) {
		t.Errorf("snapshot list with an old manifest: exit %d\n%s", code, stdout)
	}
	code, stdout, _ = c.run("snapshot", "info", m.SnapshotID, "--json")
	info = contract.SnapshotManifest{}
	if err := json.Unmarshal([]byte(stdout), &info); code != exitOK || err != nil || strings.Contains(stdout, "batch_records") {
		t.Fatalf("info --json of an old manifest: exit %d, %v: %s", code, err, stdout)
	}
	check("info --json of an old manifest", &info, nil)
	code, stdout, _ = c.run("snapshot", "info", m.SnapshotID)
	if want := "\nbatches: the records of each batch and their ids are not recorded in this snapshot's manifest (it was written before they were); " +
		"`chromadb-rollback rollback " + m.SnapshotID + " --dry-run --batches COLLECTION:BATCH,...` shows the records of the batches it names\n"; code != exitOK ||
		!strings.Contains(stdout, "batch_000000..batch_000002 (3)") || !strings.HasSuffix(stdout, want) || strings.Contains(stdout, "batches of corpus") {
		t.Errorf("info of an old manifest: exit %d, want the batch range and to end with %q\n%s", code, want, stdout)
	}
	if code, stdout, _ := c.run("snapshot", "verify", m.SnapshotID); code != exitOK || !strings.HasPrefix(stdout, "OK") {
		t.Errorf("verify with an old manifest: exit %d\n%s", code, stdout)
	}
	// The plan's counts come from the archive, so an old manifest has them too.
	plan("old manifest")
	code, stdout, stderr := c.run("rollback", m.SnapshotID, "--batches", "corpus:batch_000001", "--yes", "--no-safety-snapshot")
	if code != exitOK {
		t.Fatalf("batch-level rollback with an old manifest: exit %d\n%s%s", code, stdout, stderr)
	}
	// The batch's records are the snapshot's again; the rollback deleted
	// and re-added them, so they are now last in get order.
	want := map[string]*record.Batch{"empty": before["empty"], "corpus": {}}
	w, old0 := want["corpus"], before["corpus"]
	for _, k := range []int{0, 1, 2, 3, 7, 8, 9, 4, 5, 6} {
		w.IDs, w.Embeddings, w.Documents = append(w.IDs, old0.IDs[k]), append(w.Embeddings, old0.Embeddings[k]), append(w.Documents, old0.Documents[k])
		w.Metadatas, w.URIs = append(w.Metadatas, old0.Metadatas[k]), append(w.URIs, old0.URIs[k])
	}
	sameState(t, "after the batch-level rollback", state(t, cc), want)
}
