package snapshotter_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
)

// TestSnapshotFidelity snapshots every database of the full fixture and
// compares the archive with what Chroma returns, record by record.
func TestSnapshotFidelity(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	fx, err := testenv.SeedFixture(ctx, e.cc)
	if err != nil {
		t.Fatalf("seed fixture: %v", err)
	}
	// Small pages so collections span several batches and pages are read in parallel.
	e.startService(t, snapshotter.Config{MaxPageRecords: 64})

	var named []string // the databases with a snapshot named "fidelity" so far
	for _, db := range fx.Databases {
		t.Run(db.Tenant+"/"+db.Database, func(t *testing.T) {
			rep := e.create(t, contract.SnapshotCreateRequest{Name: "fidelity", Tenant: db.Tenant, Database: db.Database, Actor: "test"})
			// The name is used elsewhere from the second database on:
			// the reply says so, naming them.
			if len(named) == 0 && len(rep.Warnings) > 0 || len(named) > 0 && (len(rep.Warnings) != 1 ||
				!strings.Contains(rep.Warnings[0], strings.Join(named, ", ")) || !strings.Contains(rep.Warnings[0], rep.SnapshotID)) {
				t.Errorf("create warnings %q, with the name used in %v", rep.Warnings, named)
			}
			named = append(named, db.Tenant+"/"+db.Database)
			slices.Sort(named)
			if op := e.waitOp(t, rep.OpID, 2*time.Minute); op.Status != contract.StatusCompleted {
				t.Fatalf("snapshot ended %s: %s", op.Status, op.Error)
			}
			m, ok := e.manifest(t, rep.SnapshotID)
			if !ok {
				t.Fatalf("no manifest for %s", rep.SnapshotID)
			}
			if !m.Consistent {
				t.Errorf("snapshot of a quiet database not consistent: %s", m.Inconsistency)
			}
			md, batches := e.readArchive(t, m.Object)
			if got, want := len(md.Collections), len(db.Collections); got != want {
				t.Fatalf("archive has %d collections, fixture %d", got, want)
			}
			var total int64
			for i, ci := range md.Collections {
				live, err := e.cc.GetCollection(ctx, db.Tenant, db.Database, ci.Name)
				if err != nil {
					t.Fatalf("get collection %q: %v", ci.Name, err)
				}
				if ci.ID != live.ID || !reflect.DeepEqual(ci.Metadata, live.Metadata) {
					t.Errorf("collection %q: archive id/metadata %s %v, Chroma %s %v", ci.Name, ci.ID, ci.Metadata, live.ID, live.Metadata)
				}
				if !jsonEqual(t, ci.Configuration, live.Configuration) {
					t.Errorf("collection %q: archive configuration %s, Chroma %s", ci.Name, ci.Configuration, live.Configuration)
				}
				want, err := testenv.ReadAll(ctx, e.cc, db.Tenant, db.Database, live.ID, 500)
				if err != nil {
					t.Fatal(err)
				}
				got := &record.Batch{}
				for _, b := range batches {
					if b.Collection == i {
						appendBatch(got, b.Records)
					}
				}
				compareRecords(t, ci.Name, got, want)
				// The manifest says what each batch holds, as the archive
				// has it: which batch to name to restore a record.
				var wantBatches []contract.BatchRecords
				for _, b := range batches {
					if ids := b.Records.IDs; b.Collection == i {
						wantBatches = append(wantBatches, contract.BatchRecords{Count: int64(len(ids)), First: ids[0], Last: ids[len(ids)-1]})
					}
				}
				if got := m.Collections[i].BatchRecords; !reflect.DeepEqual(got, wantBatches) || len(got) != len(m.Collections[i].Batches) {
					t.Errorf("collection %q: manifest batch records %+v, the archive's batches %+v (%d batch names)", ci.Name, got, wantBatches, len(m.Collections[i].Batches))
				}
				if n := db.Records[ci.Name]; got.Len() != n {
					t.Errorf("collection %q: archive has %d records, fixture seeded %d", ci.Name, got.Len(), n)
				}
				if m.Collections[i].Count != int64(got.Len()) {
					t.Errorf("collection %q: manifest count %d, archive %d", ci.Name, m.Collections[i].Count, got.Len())
				}
				total += int64(got.Len())
			}
			if m.TotalRecords != total {
				t.Errorf("manifest total %d, archive %d", m.TotalRecords, total)
			}
			code, data := e.request(t, e.subj.API("snapshot", "verify"), mustJSON(t, contract.SnapshotRef{Snapshot: rep.SnapshotID}))
			if code != 0 {
				t.Errorf("verify: error %d: %s", code, data)
			}
		})
	}

	t.Run("list and info by name", func(t *testing.T) {
		code, data := e.request(t, e.subj.API("snapshot", "list"), []byte(`{}`))
		var list contract.SnapshotList
		if code != 0 || json.Unmarshal(data, &list) != nil {
			t.Fatalf("list: %d %s", code, data)
		}
		if len(list.Snapshots) != len(fx.Databases) {
			t.Fatalf("list has %d snapshots, want %d", len(list.Snapshots), len(fx.Databases))
		}
		for i := 1; i < len(list.Snapshots); i++ {
			if list.Snapshots[i].StartedAt.After(list.Snapshots[i-1].StartedAt) {
				t.Errorf("list not newest first at %d", i)
			}
		}
		// Every database's snapshot is named "fidelity": by name, none is
		// meant more than another.
		code, data = e.request(t, e.subj.API("snapshot", "info"), mustJSON(t, contract.SnapshotRef{Snapshot: "fidelity"}))
		if code != contract.CodeBadRequest || !strings.Contains(string(data), "give the snapshot id") {
			t.Errorf("info by a name of %d databases: %d %s", len(fx.Databases), code, data)
		}
		for _, s := range list.Snapshots {
			if !strings.Contains(string(data), s.Tenant+"/"+s.Database+" ("+s.SnapshotID+")") {
				t.Errorf("the refusal does not name %s/%s (%s): %s", s.Tenant, s.Database, s.SnapshotID, data)
			}
		}
		code, data = e.request(t, e.subj.API("snapshot", "info"), mustJSON(t, contract.SnapshotRef{Snapshot: list.Snapshots[0].SnapshotID}))
		var m contract.SnapshotManifest
		if code != 0 || json.Unmarshal(data, &m) != nil {
			t.Fatalf("info by id: %d %s", code, data)
		}
		for _, c := range m.Collections {
			if c.Count > 0 && len(c.Batches) == 0 {
				t.Errorf("collection %q lists no batches", c.Name)
			}
		}
	})
}

func TestSnapshotNamedCollections(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	if _, err := testenv.SeedFixture(ctx, e.cc); err != nil {
		t.Fatal(err)
	}
	e.startService(t, snapshotter.Config{})
	rep := e.create(t, contract.SnapshotCreateRequest{Name: "partial", Tenant: "acme", Database: "prod", Collections: []string{"personality", "corpus.v1"}})
	if op := e.waitOp(t, rep.OpID, time.Minute); op.Status != contract.StatusCompleted {
		t.Fatalf("snapshot: %s %s", op.Status, op.Error)
	}
	m, _ := e.manifest(t, rep.SnapshotID)
	var names []string
	for _, c := range m.Collections {
		names = append(names, c.Name)
	}
	if want := []string{"personality", "corpus.v1"}; !reflect.DeepEqual(names, want) {
		t.Errorf("collections %v, want %v", names, want)
	}
	if !m.Partial {
		t.Errorf("snapshot of named collections not marked partial")
	}

	// Named, every collection of the database (in another order than
	// Chroma lists them): it holds the whole database.
	all, err := e.cc.ListCollections(ctx, "acme", "prod")
	if err != nil || len(all) < 3 {
		t.Fatalf("list: %v, %d collections", err, len(all))
	}
	var every []string
	for i := len(all) - 1; i >= 0; i-- {
		every = append(every, all[i].Name)
	}
	rep = e.create(t, contract.SnapshotCreateRequest{Name: "every", Tenant: "acme", Database: "prod", Collections: every})
	if op := e.waitOp(t, rep.OpID, time.Minute); op.Status != contract.StatusCompleted {
		t.Fatalf("snapshot: %s %s", op.Status, op.Error)
	}
	if m, _ := e.manifest(t, rep.SnapshotID); m.Partial || !m.Consistent || len(m.Collections) != len(all) {
		t.Errorf("snapshot naming every collection: partial %v, consistent %v, %d collections of %d", m.Partial, m.Consistent, len(m.Collections), len(all))
	}
}

func appendBatch(dst, b *record.Batch) {
	dst.IDs = append(dst.IDs, b.IDs...)
	dst.Embeddings = append(dst.Embeddings, b.Embeddings...)
	dst.Documents = append(dst.Documents, b.Documents...)
	dst.Metadatas = append(dst.Metadatas, b.Metadatas...)
	dst.URIs = append(dst.URIs, b.URIs...)
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return bytes.Equal(a, b)
	}
	return reflect.DeepEqual(x, y)
}

// compareRecords checks every field of every record, embeddings bit for bit.
func compareRecords(t *testing.T, coll string, got, want *record.Batch) {
	t.Helper()
	if got.Len() != want.Len() {
		t.Errorf("collection %q: %d records, want %d", coll, got.Len(), want.Len())
		return
	}
	if want.Len() == 0 {
		return
	}
	errs := 0
	report := func(format string, args ...any) {
		if errs++; errs <= 5 {
			t.Errorf("collection %q: "+format, append([]any{coll}, args...)...)
		}
	}
	for i := range want.IDs {
		if got.IDs[i] != want.IDs[i] {
			report("record %d: id %q, want %q", i, got.IDs[i], want.IDs[i])
			continue
		}
		id := want.IDs[i]
		if g, w := strp(got.Documents[i]), strp(want.Documents[i]); g != w {
			report("id %q: document %s, want %s", id, g, w)
		}
		if g, w := strp(got.URIs[i]), strp(want.URIs[i]); g != w {
			report("id %q: uri %s, want %s", id, g, w)
		}
		if !reflect.DeepEqual(got.Metadatas[i], want.Metadatas[i]) {
			report("id %q: metadata %#v, want %#v", id, got.Metadatas[i], want.Metadatas[i])
		}
		ge, we := got.Embeddings[i], want.Embeddings[i]
		if (ge == nil) != (we == nil) || len(ge) != len(we) {
			report("id %q: embedding length %d (nil %v), want %d (nil %v)", id, len(ge), ge == nil, len(we), we == nil)
			continue
		}
		for j := range we {
			if math.Float32bits(ge[j]) != math.Float32bits(we[j]) {
				report("id %q: embedding[%d] bits %08x, want %08x", id, j, math.Float32bits(ge[j]), math.Float32bits(we[j]))
				break
			}
		}
	}
	if errs > 5 {
		t.Errorf("collection %q: %d differences in all", coll, errs)
	}
}

func strp(s *string) string {
	if s == nil {
		return "<null>"
	}
	return fmt.Sprintf("%q", *s)
}

// TestVerifyDetectsDamage damages a stored snapshot in each way an operator
// can meet and checks verify names the problem.
func TestVerifyDetectsDamage(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	if err := testenv.SeedWorkload(ctx, e.cc, "default_tenant", "default_database", 2, 600, 64, 200); err != nil {
		t.Fatal(err)
	}
	e.startService(t, snapshotter.Config{MaxPageRecords: 100})
	rep := e.create(t, contract.SnapshotCreateRequest{Name: "damage"})
	if op := e.waitOp(t, rep.OpID, time.Minute); op.Status != contract.StatusCompleted {
		t.Fatalf("snapshot: %s %s", op.Status, op.Error)
	}
	m, _ := e.manifest(t, rep.SnapshotID)
	obs := e.nats.Assets.Snapshots
	original, err := obs.GetBytes(ctx, m.Object)
	if err != nil {
		t.Fatal(err)
	}
	putObject := func(t *testing.T, data []byte) {
		t.Helper()
		if _, err := obs.PutBytes(ctx, m.Object, data); err != nil {
			t.Fatalf("put object: %v", err)
		}
	}
	verify := func(t *testing.T) (int, contract.VerifyReport) {
		t.Helper()
		code, data := e.request(t, e.subj.API("snapshot", "verify"), mustJSON(t, contract.SnapshotRef{Snapshot: rep.SnapshotID}))
		var vr contract.VerifyReport
		if err := json.Unmarshal(data, &vr); err != nil {
			t.Fatalf("verify reply %s: %v", data, err)
		}
		return code, vr
	}
	if code, vr := verify(t); code != 0 || !vr.OK {
		t.Fatalf("intact snapshot: code %d, report %+v", code, vr)
	}

	flipped := func(off int) []byte {
		b := bytes.Clone(original)
		b[off] ^= 0x40
		return b
	}
	cases := []struct {
		name   string
		damage func(t *testing.T)
		want   string // in the problem text
	}{
		{"flipped byte near start", func(t *testing.T) { putObject(t, flipped(100)) }, "corrupt"},
		{"flipped byte in the middle", func(t *testing.T) { putObject(t, flipped(len(original)/2)) }, "corrupt"},
		{"flipped byte near end", func(t *testing.T) { putObject(t, flipped(len(original)-20)) }, "corrupt"},
		// Put again, so also replaced: the problem says so, with both digests.
		{"replaced by a damaged copy", func(t *testing.T) { putObject(t, flipped(len(original)/3)) }, "it was replaced after the snapshot: the object store records sha256 "},
		{"truncated", func(t *testing.T) { putObject(t, original[:len(original)*2/3]) }, "truncated"},
		{"manifest digest disagrees", func(t *testing.T) {
			bad := *m
			bad.SHA256 = strings.Repeat("0", 64)
			if _, err := e.nats.Assets.Manifests.Put(ctx, m.SnapshotID, mustJSON(t, bad)); err != nil {
				t.Fatal(err)
			}
		}, "manifest says " + strings.Repeat("0", 64)},
		{"manifest content digest disagrees", func(t *testing.T) {
			bad := *m
			bad.Collections = append([]contract.CollectionSummary(nil), m.Collections...)
			bad.Collections[1].ContentDigest = strings.Repeat("f", 64)
			if _, err := e.nats.Assets.Manifests.Put(ctx, m.SnapshotID, mustJSON(t, bad)); err != nil {
				t.Fatal(err)
			}
		}, "does not match its manifest"},
		{"missing archive", func(t *testing.T) {
			if err := obs.Delete(ctx, m.Object); err != nil {
				t.Fatal(err)
			}
		}, "missing"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.damage(t)
			code, vr := verify(t)
			if code != contract.CodeVerificationFailed || vr.OK {
				t.Fatalf("damaged snapshot: code %d ok %v, want %d and not ok", code, vr.OK, contract.CodeVerificationFailed)
			}
			if !strings.Contains(vr.Problem, tc.want) {
				t.Errorf("problem %q does not say %q", vr.Problem, tc.want)
			}
			// The listing names a snapshot without its archive, and only that.
			var list contract.SnapshotList
			if code, data := e.request(t, e.subj.API("snapshot", "list"), []byte(`{}`)); code != 0 || json.Unmarshal(data, &list) != nil {
				t.Fatalf("list: code %d, %s", code, data)
			}
			if want := tc.name == "missing archive"; want != slices.Equal(list.ArchivesMissing, []string{m.SnapshotID}) || (!want && len(list.ArchivesMissing) > 0) {
				t.Errorf("list says the archives of %v are missing", list.ArchivesMissing)
			}
			// Mend it for the next case.
			putObject(t, original)
			if _, err := e.nats.Assets.Manifests.Put(ctx, m.SnapshotID, mustJSON(t, m)); err != nil {
				t.Fatal(err)
			}
			if code, vr := verify(t); code != 0 {
				t.Fatalf("mended snapshot does not verify: %s", vr.Problem)
			}
		})
	}
	failed := findAudit(e.auditEvents(t), "snapshot.verify", contract.OutcomeFailed)
	if len(failed) != len(cases) {
		t.Errorf("%d failed verify audit events, want %d", len(failed), len(cases))
	}
}

// TestSnapshotOfMovingDatabase adds records to a collection while it is
// being exported, through a proxy in front of the real Chroma that writes
// them just before the export's first read: the snapshot keeps every
// record it read, and its manifest says it is not consistent, naming the
// collection with its counts before, exported and after. The other
// collection is consistent.
func TestSnapshotOfMovingDatabase(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	const tenant, db, per = "default_tenant", "moving", 100
	if err := testenv.SeedWorkload(ctx, e.cc, tenant, db, 2, 2*per, 8, 20); err != nil {
		t.Fatal(err)
	}
	const late = 5
	lw := testenv.StartLateWriter(t, e.chroma.URL, e.cc, tenant, db, late, 8)
	cc, err := chroma.New(lw.URL, chroma.WithRetryMaxElapsed(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	e.startServiceWith(t, snapshotter.Config{MaxPageRecords: 64}, cc)

	rep := e.create(t, contract.SnapshotCreateRequest{Name: "moving", Tenant: tenant, Database: db, Actor: "test"})
	if op := e.waitOp(t, rep.OpID, time.Minute); op.Status != contract.StatusCompleted {
		t.Fatalf("snapshot ended %s: %s", op.Status, op.Error)
	}
	m, ok := e.manifest(t, rep.SnapshotID)
	if !ok {
		t.Fatalf("no manifest for %s", rep.SnapshotID)
	}
	if m.Consistent {
		t.Fatalf("snapshot taken while records were added is marked consistent")
	}
	moved := lw.Added()
	var name string
	for _, c := range m.Collections {
		want := contract.CollectionSummary{Count: per, CountBefore: per, CountAfter: per}
		if c.ID == moved {
			name = c.Name
			want = contract.CollectionSummary{Count: per + late, CountBefore: per, CountAfter: per + late}
		}
		if c.Count != want.Count || c.CountBefore != want.CountBefore || c.CountAfter != want.CountAfter {
			t.Errorf("collection %q: %d exported, %d before, %d after; want %d, %d, %d",
				c.Name, c.Count, c.CountBefore, c.CountAfter, want.Count, want.CountBefore, want.CountAfter)
		}
	}
	if name == "" {
		t.Fatalf("no collection of the manifest has the id %q that got the late records", moved)
	}
	wantMsg := fmt.Sprintf("%q: %d before, %d exported, %d after", name, per, per+late, per+late)
	if !strings.Contains(m.Inconsistency, wantMsg) || strings.Count(m.Inconsistency, "before") != 1 {
		t.Errorf("inconsistency %q, want it to name only %s", m.Inconsistency, wantMsg)
	}
	// Every record read is in the archive, the late ones included.
	_, batches := e.readArchive(t, m.Object)
	ids := map[string]bool{}
	for _, b := range batches {
		if m.Collections[b.Collection].ID == moved {
			for _, id := range b.Records.IDs {
				ids[id] = true
			}
		}
	}
	if len(ids) != per+late || !ids[lw.IDs[0]] || !ids[lw.IDs[late-1]] {
		t.Errorf("archive holds %d distinct records of %q, want %d with the late ones", len(ids), name, per+late)
	}
}
