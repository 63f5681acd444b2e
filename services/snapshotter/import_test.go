package snapshotter_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/archive"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/legacy"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/chromadb-rollback/chromadb-rollback/services/snapshotter"
)

// seedInput is the records of a seed archive built in the test, per
// collection, and the archive as the Python tool wrote it.
type seedInput struct {
	names    []string
	records  map[string]*record.Batch
	data     []byte
	manifest []byte
}

func buildSeed(t *testing.T) seedInput {
	t.Helper()
	in := seedInput{records: map[string]*record.Batch{}}
	a := &legacy.SeedArchive{Dir: "snapshot_20251130_143022", ChromaVersion: "0.3.21", Timestamp: "2025-11-30T14:30:22", Indent: 2}
	for k, spec := range []struct {
		name   string
		n, dim int
	}{{"sergio_corpus", 230, 16}, {"sergio_personality", 7, 16}, {"empty_one", 0, 0}} {
		b := &record.Batch{}
		for i := range spec.n {
			b.IDs = append(b.IDs, fmt.Sprintf("chunk_%d_%04d_\u00e9", k, i))
			e := make([]float32, spec.dim)
			for j := range e {
				e[j] = float32(math.Sin(float64(i*spec.dim+j))) / 3
			}
			if i%17 == 5 {
				e = nil
			}
			b.Embeddings = append(b.Embeddings, e)
			var doc *string
			if i%5 != 0 {
				s := fmt.Sprintf("document %d of %s \"quoted\"", i, spec.name)
				doc = &s
			}
			b.Documents = append(b.Documents, doc)
			var md record.Metadata
			if i%4 != 0 {
				md = record.Metadata{"source": fmt.Sprintf("file_%d.md", i%9), "chunk": int64(i), "score": float64(i) / 8, "big": int64(1) << 60, "ok": i%2 == 0}
			}
			b.Metadatas = append(b.Metadatas, md)
			b.URIs = append(b.URIs, nil)
		}
		in.names = append(in.names, spec.name)
		in.records[spec.name] = b
		a.Collections = append(a.Collections, legacy.SeedCollectionFromBatch(spec.name, b, 100))
	}
	var err error
	in.data, in.manifest, err = legacy.BuildSeedArchive(a, "snapshot_20251130_143022", "pre_migration_2025-11-30")
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// stage puts data into the object store under a fresh staging name.
func (e *env) stage(t *testing.T, data []byte) string {
	t.Helper()
	name := contract.ImportStagingPrefix + contract.NewID("")
	if _, err := e.nats.Assets.Snapshots.PutBytes(t.Context(), name, data); err != nil {
		t.Fatalf("stage %s: %v", name, err)
	}
	return name
}

// importFile sends an import request and returns the error code (0 when
// none) and the reply.
func (e *env) importFile(t *testing.T, req contract.SnapshotImportRequest) (int, []byte) {
	t.Helper()
	req.Envelope = contract.NewEnvelope(contract.TypeImportRequest)
	return e.request(t, e.subj.API("snapshot", "import"), mustJSON(t, req))
}

// flatten gathers a collection's records from archive batches, with every
// column present.
func flatten(batches []*archive.Batch, coll int) *record.Batch {
	out := &record.Batch{}
	for _, b := range batches {
		if b.Collection != coll {
			continue
		}
		r, n := b.Records, b.Records.Len()
		out.IDs = append(out.IDs, r.IDs...)
		out.Embeddings = append(out.Embeddings, padded(r.Embeddings, n)...)
		out.Documents = append(out.Documents, padded(r.Documents, n)...)
		out.Metadatas = append(out.Metadatas, padded(r.Metadatas, n)...)
		out.URIs = append(out.URIs, padded(r.URIs, n)...)
	}
	return out
}

func padded[T any](c []T, n int) []T {
	if c == nil {
		return make([]T, n)
	}
	return c
}

func (e *env) verify(t *testing.T, ref string) (int, contract.VerifyReport) {
	t.Helper()
	code, data := e.request(t, e.subj.API("snapshot", "verify"), mustJSON(t, contract.SnapshotRef{Snapshot: ref}))
	var rep contract.VerifyReport
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatalf("verify reply %s: %v", data, err)
	}
	return code, rep
}

// TestImport imports a seed archive and a native one on one stack, and
// refuses what must be refused without creating anything.
func TestImport(t *testing.T) {
	e := newEnv(t)
	e.startService(t, snapshotter.Config{MaxPageRecords: 64})
	seed := buildSeed(t)

	t.Run("seed archive", func(t *testing.T) {
		staged := e.stage(t, seed.data)
		// The caller names the operation, and follows its progress from
		// the start.
		const opID = "op_import_seed_1"
		sub, err := e.nats.Conn.SubscribeSync(e.subj.Progress(opID))
		if err != nil {
			t.Fatal(err)
		}
		code, data := e.importFile(t, contract.SnapshotImportRequest{Object: staged, Manifest: seed.manifest,
			FileName: "snapshot_20251130_143022.tar.gz", Actor: "test", OpID: opID})
		if code != 0 {
			t.Fatalf("import: error %d: %s", code, data)
		}
		phases := map[string]bool{}
		for {
			msg, err := sub.NextMsg(2 * time.Second)
			if err != nil {
				t.Fatalf("progress of %s: %v after phases %v", opID, err, phases)
			}
			var p contract.Progress
			if err := json.Unmarshal(msg.Data, &p); err != nil {
				t.Fatal(err)
			}
			phases[p.Phase] = true
			if p.Done {
				break
			}
		}
		if !phases["converting"] || !phases["completed"] {
			t.Errorf("progress of the import on %s: phases %v, want converting and completed", e.subj.Progress(opID), phases)
		}
		var m contract.SnapshotManifest
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatal(err)
		}
		stored, ok := e.manifest(t, m.SnapshotID)
		if !ok {
			t.Fatalf("no manifest %s in the bucket", m.SnapshotID)
		}
		o := stored.ImportedFrom
		if stored.Name != "pre_migration_2025-11-30" || stored.Tenant != "default_tenant" || stored.Database != "default_database" ||
			stored.ChromaVersion != "0.3.21" || stored.Format != archive.FormatV1 || !stored.Consistent || stored.TotalRecords != 237 ||
			o == nil || o.Format != contract.ImportFormatSeed || !o.ManifestChecked || o.SourceSnapshotID != "snapshot_20251130_143022" ||
			o.File != "snapshot_20251130_143022.tar.gz" || o.Size != int64(len(seed.data)) || o.SourceCreatedAt == nil || stored.VerifiedAt.IsZero() {
			t.Errorf("manifest %+v\norigin %+v", stored, o)
		}
		if slices.Contains(e.objects(t), staged) {
			t.Errorf("staging object %s left behind", staged)
		}
		if code, rep := e.verify(t, m.SnapshotID); code != 0 || !rep.OK || rep.TotalRecords != 237 {
			t.Errorf("verify imported snapshot: code %d, %+v", code, rep)
		}

		md, batches := e.readArchive(t, stored.Object)
		if md.SnapshotID != m.SnapshotID || md.Name != m.Name || len(md.Collections) != 3 {
			t.Fatalf("archive metadata %+v", md)
		}
		for i, name := range seed.names {
			ci := md.Collections[i]
			if ci.Name != name || ci.Metadata != nil || ci.ExpectedCount != int64(seed.records[name].Len()) {
				t.Errorf("collection %d: %+v", i, ci)
			}
			compareRecords(t, name, flatten(batches, i), seed.records[name])
			want := []string{}
			for k := 0; k*100 < seed.records[name].Len(); k++ {
				want = append(want, fmt.Sprintf("batch_%06d", k))
			}
			if got := stored.Collections[i].Batches; !slices.Equal(got, want) {
				t.Errorf("collection %q: batches %q, want the seed's %q", name, got, want)
			}
		}
		// Each batch's records, as the seed's batches of 100 hold them.
		wantRecords := [][]contract.BatchRecords{
			{{Count: 100, First: "chunk_0_0000_é", Last: "chunk_0_0099_é"}, {Count: 100, First: "chunk_0_0100_é", Last: "chunk_0_0199_é"}, {Count: 30, First: "chunk_0_0200_é", Last: "chunk_0_0229_é"}},
			{{Count: 7, First: "chunk_1_0000_é", Last: "chunk_1_0006_é"}},
			nil, // empty_one: no batches
		}
		for i, c := range stored.Collections {
			if !reflect.DeepEqual(c.BatchRecords, wantRecords[i]) {
				t.Errorf("collection %q: batch records %+v, want %+v", c.Name, c.BatchRecords, wantRecords[i])
			}
		}
		evs := e.auditEvents(t)
		done := findAudit(evs, "snapshot.import", contract.OutcomeCompleted)
		if len(findAudit(evs, "snapshot.import", contract.OutcomeStarted)) == 0 || len(done) == 0 || done[0].OpID != opID {
			t.Errorf("audit events for the import missing, or not of operation %s", opID)
		}
	})

	t.Run("native archive exported and imported again", func(t *testing.T) {
		if err := testenv.SeedWorkload(t.Context(), e.cc, "default_tenant", "default_database", 2, 150, 8, 40); err != nil {
			t.Fatal(err)
		}
		rep := e.create(t, contract.SnapshotCreateRequest{Name: "native_src", Actor: "test"})
		if op := e.waitOp(t, rep.OpID, time.Minute); op.Status != contract.StatusCompleted {
			t.Fatalf("snapshot: %s %s", op.Status, op.Error)
		}
		orig, _ := e.manifest(t, rep.SnapshotID)
		data, err := e.nats.Assets.Snapshots.GetBytes(t.Context(), orig.Object)
		if err != nil {
			t.Fatal(err)
		}
		code, body := e.importFile(t, contract.SnapshotImportRequest{Object: e.stage(t, data), FileName: "native_src.tar.zst", Name: "native_copy", Database: "other_db"})
		if code != 0 {
			t.Fatalf("import native: error %d: %s", code, body)
		}
		var m contract.SnapshotManifest
		_ = json.Unmarshal(body, &m)
		if m.SnapshotID == orig.SnapshotID || m.Name != "native_copy" || m.Database != "other_db" || m.TotalRecords != 150 ||
			m.ImportedFrom.Format != contract.ImportFormatNative || m.ImportedFrom.SourceSnapshotID != orig.SnapshotID || m.ImportedFrom.SHA256 != orig.SHA256 {
			t.Errorf("imported manifest %+v\norigin %+v", m, m.ImportedFrom)
		}
		for i, c := range m.Collections {
			oc := orig.Collections[i]
			if c.Name != oc.Name || c.ID != oc.ID || c.Count != oc.Count || c.ContentDigest != oc.ContentDigest || !slices.Equal(c.Batches, oc.Batches) {
				t.Errorf("collection %d: %+v, original %+v", i, c, oc)
			}
			// The same batches hold the same records: 75 a collection,
			// in pages of at most 64 (ids are the collection's name and
			// a number).
			want := []contract.BatchRecords{{Count: 38, First: c.Name + "-0000000", Last: c.Name + "-0000037"}, {Count: 37, First: c.Name + "-0000038", Last: c.Name + "-0000074"}}
			if !reflect.DeepEqual(c.BatchRecords, want) || !reflect.DeepEqual(oc.BatchRecords, want) {
				t.Errorf("collection %q: batch records %+v, original %+v; want %+v", c.Name, c.BatchRecords, oc.BatchRecords, want)
			}
		}
		if code, rep := e.verify(t, "native_copy"); code != 0 || !rep.OK {
			t.Errorf("verify by name: %d %+v", code, rep)
		}
		// The archive does not say whether its snapshot held the whole
		// database: imported as whole, a snapshot of named collections
		// made rollback --drop-extra delete every other collection, and
		// retention let the real full snapshots expire. Found by hand.
		if stored, _ := e.manifest(t, m.SnapshotID); !m.Partial || !stored.Partial ||
			!slices.ContainsFunc(m.ImportedFrom.Warnings, func(w string) bool { return strings.Contains(w, "the import is marked partial") }) {
			t.Errorf("native import: partial %v (stored %v), warnings %q; want it partial, saying why", m.Partial, stored.Partial, m.ImportedFrom.Warnings)
		}
		md, _ := e.readArchive(t, m.Object)
		if md.SnapshotID != m.SnapshotID || md.Database != "other_db" || md.Tenant != "default_tenant" {
			t.Errorf("rewritten metadata %+v", md)
		}
		// The same file into the same database again: a second snapshot
		// of the same data, which the import said nothing of. Found by
		// hand.
		first := m.SnapshotID
		code, body = e.importFile(t, contract.SnapshotImportRequest{Object: e.stage(t, data), Name: "native_copy", Database: "other_db"})
		var again contract.SnapshotManifest
		_ = json.Unmarshal(body, &again)
		wantAgain := "this file was imported into default_tenant/other_db before, as " + first + ": the snapshots hold the same data"
		if code != 0 || again.ImportedFrom == nil || !slices.ContainsFunc(again.ImportedFrom.Warnings, func(w string) bool { return strings.HasPrefix(w, wantAgain) }) {
			t.Errorf("the same file imported again: %d, %s; want the warning %q", code, body, wantAgain)
		}
		if slices.ContainsFunc(m.ImportedFrom.Warnings, func(w string) bool { return strings.Contains(w, "imported into") }) {
			t.Errorf("first import warns %q", m.ImportedFrom.Warnings)
		}
		// Without a name, the archive's own name is kept.
		code, body = e.importFile(t, contract.SnapshotImportRequest{Object: e.stage(t, data)})
		m = contract.SnapshotManifest{}
		_ = json.Unmarshal(body, &m)
		if code != 0 || m.Name != "native_src" {
			t.Errorf("import without name: %d, name %q", code, m.Name)
		}
		if m.ImportedFrom != nil && slices.ContainsFunc(m.ImportedFrom.Warnings, func(w string) bool { return strings.Contains(w, "also used") }) {
			t.Errorf("import under a name used in its own database only: warnings %q", m.ImportedFrom.Warnings)
		}
		// A name other databases' snapshots use: warned as snapshot.create
		// warns, naming them and the id to use. Found by hand: the import
		// said nothing, and every later command by that name exited 2.
		code, body = e.importFile(t, contract.SnapshotImportRequest{Object: e.stage(t, data), Name: "native_copy", Database: "third_db"})
		m = contract.SnapshotManifest{}
		_ = json.Unmarshal(body, &m)
		want := fmt.Sprintf("the name %q is also used by snapshots of default_tenant/other_db: a name used in more than one database is refused where a snapshot is asked for by name, so refer to this one by its id %s", "native_copy", m.SnapshotID)
		if code != 0 || m.ImportedFrom == nil || !slices.Contains(m.ImportedFrom.Warnings, want) {
			t.Errorf("import under a name used in another database: %d, %s; want the warning %q", code, body, want)
		}
		if stored, _ := e.manifest(t, m.SnapshotID); stored.ImportedFrom == nil || !slices.Contains(stored.ImportedFrom.Warnings, want) {
			t.Errorf("stored manifest's import warnings %+v; want the name's", stored.ImportedFrom)
		}
	})

	t.Run("refused", func(t *testing.T) {
		var bad []byte
		{
			var m map[string]any
			_ = json.Unmarshal(seed.manifest, &m)
			m["checksum"] = strings.Repeat("ab", 32)
			bad, _ = json.Marshal(m)
		}
		corrupt := slices.Clone(seed.data)
		corrupt[len(corrupt)/2] ^= 0x40
		cases := []struct {
			name    string
			req     contract.SnapshotImportRequest
			data    []byte
			code    int
			msg     string
			started bool
		}{
			{"bad manifest checksum", contract.SnapshotImportRequest{Manifest: bad}, seed.data, contract.CodeVerificationFailed, "checksum mismatch", true},
			{"total_chunks disagree", contract.SnapshotImportRequest{Manifest: []byte(`{"checksum": "` + sha(seed.data) + `", "total_chunks": 1}`)}, seed.data, contract.CodeVerificationFailed, "total_chunks 1", true},
			{"manifest with no checksum", contract.SnapshotImportRequest{Manifest: []byte(`{"total_chunks": 237}`)}, seed.data, contract.CodeBadRequest, "no SHA-256 checksum", false},
			{"corrupt archive", contract.SnapshotImportRequest{}, corrupt, contract.CodeVerificationFailed, "file refused", true},
			{"not an archive", contract.SnapshotImportRequest{}, []byte(`{"checksum": "x"}`), contract.CodeVerificationFailed, "a JSON file", true},
			{"format mismatch", contract.SnapshotImportRequest{Format: "native"}, seed.data, contract.CodeBadRequest, "the file is a seed archive", true},
			{"bad format", contract.SnapshotImportRequest{Format: "zip"}, seed.data, contract.CodeBadRequest, `zip`, false},
			{"bad name", contract.SnapshotImportRequest{Name: "a b"}, seed.data, contract.CodeBadRequest, "invalid", false},
			{"bad op_id", contract.SnapshotImportRequest{OpID: "op_a.b"}, seed.data, contract.CodeBadRequest, "op_id", false},
			{"missing object", contract.SnapshotImportRequest{Object: contract.ImportStagingPrefix + "nothing_here"}, nil, contract.CodeNotFound, "no staged object", false},
			{"not a staging name", contract.SnapshotImportRequest{Object: "snap_x.tar.zst"}, nil, contract.CodeBadRequest, "not a staging name", false},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				before := len(e.manifests(t))
				req := tc.req
				if tc.data != nil {
					req.Object = e.stage(t, tc.data)
				}
				objsBefore := e.objects(t)
				code, body := e.importFile(t, req)
				if code != tc.code || !strings.Contains(string(body), tc.msg) {
					t.Errorf("code %d %s\nwant %d saying %q", code, body, tc.code, tc.msg)
				}
				if n := len(e.manifests(t)); n != before {
					t.Errorf("%d manifests after a refused import, %d before", n, before)
				}
				objs := e.objects(t)
				for _, o := range objs {
					if !slices.Contains(objsBefore, o) {
						t.Errorf("refused import left object %s", o)
					}
				}
				if staged := slices.Contains(objs, req.Object); tc.data != nil && staged == tc.started {
					t.Errorf("staging object present %v after a refusal (started %v)", staged, tc.started)
				}
				if tc.data != nil && !tc.started {
					_ = e.nats.Assets.Snapshots.Delete(t.Context(), req.Object)
				}
			})
		}
		evs := e.auditEvents(t)
		if len(findAudit(evs, "snapshot.import", contract.OutcomeFailed)) < 4 || len(findAudit(evs, "snapshot.import", contract.OutcomeRejected)) < 4 {
			t.Errorf("audit: %d failed, %d rejected imports", len(findAudit(evs, "snapshot.import", contract.OutcomeFailed)), len(findAudit(evs, "snapshot.import", contract.OutcomeRejected)))
		}
	})
}

func sha(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// manifests lists the manifest keys.
func (e *env) manifests(t *testing.T) []string {
	t.Helper()
	lister, err := e.nats.Assets.Manifests.ListKeys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	return keys
}
