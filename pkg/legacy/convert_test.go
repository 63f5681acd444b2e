package legacy

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/archive"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
)

// TestConvertRoundTrip writes a seed archive as the Python tool would,
// converts it, reads the native archive back and compares every record.
func TestConvertRoundTrip(t *testing.T) {
	a := sampleArchive()
	data, manifest, err := BuildSeedArchive(a, "snapshot_20251130_143022", "pre_migration_2025-11-30")
	if err != nil {
		t.Fatal(err)
	}
	var progressed int64
	res, native, err := convert(data, Options{SnapshotID: "snap_x", Name: "pre_migration_2025-11-30", Manifest: manifest,
		Progress: func(done, total int64) { progressed = done }})
	if err != nil {
		t.Fatalf("convert: %v", err)
	}
	sum := sha256.Sum256(data)
	if res.SHA256 != hex.EncodeToString(sum[:]) || res.Size != int64(len(data)) {
		t.Errorf("result sha256/size %s/%d, want %x/%d", res.SHA256, res.Size, sum, len(data))
	}
	if res.SeedManifest == nil || res.Seed == nil || res.Seed.ChromaVersion != "0.3.21" {
		t.Errorf("seed manifest %+v, metadata %+v", res.SeedManifest, res.Seed)
	}
	if res.CollectionsEntry != "snapshot_20251130_143022/collections.json" || res.MetadataEntry != "snapshot_20251130_143022/metadata.json" {
		t.Errorf("entries %q, %q", res.CollectionsEntry, res.MetadataEntry)
	}
	if len(res.Warnings) != 0 {
		t.Errorf("warnings for a clean archive: %q", res.Warnings)
	}
	wantTime := time.Date(2025, 11, 30, 14, 30, 22, 0, time.UTC)
	if res.SourceCreatedAt == nil || !res.SourceCreatedAt.Equal(wantTime) {
		t.Errorf("source created at %v, want %v", res.SourceCreatedAt, wantTime)
	}
	_, total := a.Counts()
	if progressed != total || res.Manifest.TotalRecords != total {
		t.Errorf("progress %d, manifest total %d, want %d", progressed, res.Manifest.TotalRecords, total)
	}

	md, colls := readNative(t, native)
	if md.SnapshotID != "snap_x" || md.Name != "pre_migration_2025-11-30" || md.Tenant != DefaultTenant || md.Database != DefaultDatabase ||
		md.ChromaVersion != "0.3.21" || !md.CreatedAt.Equal(wantTime) {
		t.Errorf("native metadata %+v", md)
	}
	if len(colls) != len(a.Collections) {
		t.Fatalf("%d collections, want %d", len(colls), len(a.Collections))
	}
	for i, sc := range a.Collections {
		c := colls[i]
		if c.info.Name != sc.Name || c.info.ID != SyntheticCollectionID(res.SHA256, sc.Name) || c.info.Metadata != nil || (c.info.Configuration != nil && string(c.info.Configuration) != "null") {
			t.Errorf("collection %d: %+v", i, c.info)
		}
		var seedNames []string
		for _, b := range sc.Batches {
			seedNames = append(seedNames, b.Name)
		}
		if !slices.Equal(c.batches, seedNames) {
			t.Errorf("collection %q: batches %q, want the seed's %q", sc.Name, c.batches, seedNames)
		}
		want := seedRecords(sc)
		if c.info.ExpectedCount != int64(len(want)) {
			t.Errorf("collection %q: expected count %d, want %d", sc.Name, c.info.ExpectedCount, len(want))
		}
		if len(want) > 0 && (c.info.Dimension == nil || *c.info.Dimension != len(want[0].Embedding)) {
			t.Errorf("collection %q: dimension %v", sc.Name, c.info.Dimension)
		}
		compareRecords(t, sc.Name, c.recs, want)
		// The content digest is what a restore compares Chroma with.
		d := record.NewDigest()
		_ = d.Add(c.recs)
		if d.Sum() != res.Manifest.Collections[i].ContentDigest {
			t.Errorf("collection %q: digest differs from the manifest", sc.Name)
		}
	}
	if rep, err := archive.Verify(bytes.NewReader(native)); err != nil || rep.TotalRecords != total {
		t.Errorf("native archive does not verify: %v", err)
	}
}

// TestPythonWrittenArchive has Python itself write a seed archive the way
// the old tool did (tarfile "w:gz", json.dump of numpy-free float lists) and
// converts it. It needs python3, as every integration test needs its real
// component: a skip would pass CI without the check.
func TestPythonWrittenArchive(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 is needed to write an archive the way the seed tool did (install Python 3): %v", err)
	}
	dir := t.TempDir()
	script := `
import json, os, struct, sys, tarfile, hashlib
out = sys.argv[1]
snap = os.path.join(out, "tmp", "snapshot_20251130_143022")
os.makedirs(snap)
def f32(x):
    return struct.unpack("f", struct.pack("f", x))[0]
colls = {"sergio_corpus": {}, "sergio_personality": {}}
n = 0
for b in range(3):
    recs = []
    for i in range(5):
        recs.append({"id": "chunk_%d_%d" % (b, i), "text": None if i == 0 else "t\u00e9xt %d" % i,
                     "embedding": [f32(0.1 * (i + 1)), f32(-1e-7), f32(3.4e38), f32(1.0 / 3)],
                     "metadata": {"source": "doc%d" % b, "chunk": i, "score": 0.5 + i, "ok": i % 2 == 0}})
        n += 1
    colls["sergio_corpus"]["batch_%06d" % b] = recs
colls["sergio_personality"]["batch_000000"] = [{"id": "p1", "text": "", "embedding": [1.0, 2.0, 3.0, 4.0], "metadata": None}]
n += 1
with open(os.path.join(snap, "collections.json"), "w") as fh:
    json.dump(colls, fh, indent=2)
with open(os.path.join(snap, "metadata.json"), "w") as fh:
    json.dump({"chromadb_version": "0.3.21", "snapshot_timestamp": "2025-11-30T14:30:22.123456",
               "collections_count": len(colls), "total_chunks": n}, fh, indent=2)
arc = os.path.join(out, "snapshot_20251130_143022.tar.gz")
with tarfile.open(arc, "w:gz") as tar:
    tar.add(snap, arcname="snapshot_20251130_143022")
h = hashlib.sha256(open(arc, "rb").read()).hexdigest()
with open(os.path.join(out, "snapshot_20251130_143022.json"), "w") as fh:
    json.dump({"snapshot_id": "snapshot_20251130_143022", "checksum": h, "total_chunks": n,
               "collections_count": len(colls)}, fh, indent=2)
`
	cmd := exec.Command(py, "-c", script, dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	manifest, err := os.ReadFile(filepath.Join(dir, "snapshot_20251130_143022.json"))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	res, err := ConvertFile(filepath.Join(dir, "snapshot_20251130_143022.tar.gz"), &out, Options{Manifest: manifest})
	if err != nil {
		t.Fatalf("convert the Python-written archive: %v", err)
	}
	if res.Manifest.TotalRecords != 16 || len(res.Metadata.Collections) != 2 {
		t.Fatalf("converted %d records in %d collections", res.Manifest.TotalRecords, len(res.Metadata.Collections))
	}
	_, colls := readNative(t, out.Bytes())
	c := colls[0]
	if c.info.Name != "sergio_corpus" || !slices.Equal(c.batches, []string{"batch_000000", "batch_000001", "batch_000002"}) {
		t.Errorf("first collection %q with batches %q", c.info.Name, c.batches)
	}
	third := float32(1.0 / 3)
	if e := c.recs.Embeddings[1]; e[0] != float32(0.2) || e[1] != float32(-1e-7) || e[2] != float32(3.4e38) || e[3] != third {
		t.Errorf("embedding %v is not the float32 values Python wrote", e)
	}
	if c.recs.Documents[0] != nil || *c.recs.Documents[1] != "t\u00e9xt 1" {
		t.Errorf("documents %v %v", c.recs.Documents[0], *c.recs.Documents[1])
	}
	want := record.Metadata{"source": "doc0", "chunk": int64(1), "score": 1.5, "ok": false}
	if fmt.Sprint(c.recs.Metadatas[1]) != fmt.Sprint(want) {
		t.Errorf("metadata %#v, want %#v", c.recs.Metadatas[1], want)
	}
	p := colls[1]
	if p.recs.Metadatas[0] != nil || *p.recs.Documents[0] != "" {
		t.Errorf("null metadata / empty text: %#v %q", p.recs.Metadatas[0], *p.recs.Documents[0])
	}
	if res.SourceCreatedAt == nil || res.SourceCreatedAt.Nanosecond() != 123456000 {
		t.Errorf("timestamp with microseconds: %v", res.SourceCreatedAt)
	}
}

// TestLayoutVariants converts the same records under every layout the
// package accepts and expects the same native content.
func TestLayoutVariants(t *testing.T) {
	base := sampleArchive()
	_, ref, err := convert(build(t, base), Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, refColls := readNative(t, ref)
	collJSON, _ := base.CollectionsJSON()
	mdJSON, _ := base.MetadataJSON()
	variants := map[string]struct {
		data []byte
		warn string
	}{}
	for name, mod := range map[string]func(a *SeedArchive){
		"root":           func(a *SeedArchive) { a.Dir = "" },
		"dot prefix":     func(a *SeedArchive) { a.Dir = "./" },
		"deep prefix":    func(a *SeedArchive) { a.Dir = "home/setup/infrafabric/chromadb_snapshots/tmp/snapshot_x" },
		"metadata first": func(a *SeedArchive) { a.MetadataFirst = true },
		"indented":       func(a *SeedArchive) { a.Indent = 2 },
		"indent 4":       func(a *SeedArchive) { a.Indent = 4; a.Dir = "" },
	} {
		a := *base
		mod(&a)
		variants[name] = struct {
			data []byte
			warn string
		}{build(t, &a), ""}
	}
	noMD := *base
	noMD.NoMetadata = true
	variants["no metadata.json"] = struct {
		data []byte
		warn string
	}{build(t, &noMD), "no metadata.json"}
	variants["extra entries and dirs"] = struct {
		data []byte
		warn string
	}{tgz(t,
		tarEntry{name: "./", typ: '5'},
		tarEntry{name: "./snap/", typ: '5'},
		tarEntry{name: "./snap/snapshot.log", body: "log"},
		tarEntry{name: "./snap/metadata.json", body: string(mdJSON)},
		tarEntry{name: "./snap/collections.json", body: string(collJSON)},
		tarEntry{name: "./snap/link", typ: '2', linkname: "snapshot.log"},
	), "ignored 2 other tar entries"}
	variants["metadata elsewhere"] = struct {
		data []byte
		warn string
	}{tgz(t, tarEntry{name: "a/collections.json", body: string(collJSON)}, tarEntry{name: "b/metadata.json", body: string(mdJSON)}), "not beside"}
	// Raw UTF-8 instead of \u escapes (json.dump(..., ensure_ascii=False)).
	raw, err := unescapeNonASCII(collJSON)
	if err != nil {
		t.Fatal(err)
	}
	variants["raw UTF-8"] = struct {
		data []byte
		warn string
	}{tgz(t, tarEntry{name: "collections.json", body: string(raw)}, tarEntry{name: "metadata.json", body: string(mdJSON)}), ""}
	// Two gzip members, split inside the tar: gzip readers must go on.
	var tarBuf bytes.Buffer
	zr, _ := gzip.NewReader(bytes.NewReader(build(t, base)))
	_, _ = io.Copy(&tarBuf, zr)
	half := tarBuf.Len() / 2
	variants["multi-member gzip"] = struct {
		data []byte
		warn string
	}{append(gz(t, tarBuf.Bytes()[:half]), gz(t, tarBuf.Bytes()[half:])...), ""}

	for name, v := range variants {
		t.Run(name, func(t *testing.T) {
			res, native, err := convert(v.data, Options{})
			if err != nil {
				t.Fatalf("convert: %v", err)
			}
			joined := strings.Join(res.Warnings, "; ")
			if (v.warn == "") != (joined == "") || !strings.Contains(joined, v.warn) {
				t.Errorf("warnings %q, want one saying %q", joined, v.warn)
			}
			_, colls := readNative(t, native)
			if len(colls) != len(refColls) {
				t.Fatalf("%d collections, want %d", len(colls), len(refColls))
			}
			for i := range colls {
				compareRecords(t, colls[i].info.Name, colls[i].recs, seedRecords(base.Collections[i]))
			}
		})
	}
}

// unescapeNonASCII turns \uXXXX escapes of non-ASCII back into raw UTF-8.
func unescapeNonASCII(js []byte) ([]byte, error) {
	var out bytes.Buffer
	s := string(js)
	for len(s) > 0 {
		i := strings.Index(s, `\u`)
		if i < 0 || (i > 0 && s[i-1] == '\\') {
			out.WriteString(s)
			break
		}
		out.WriteString(s[:i])
		var r1 rune
		if _, err := fmt.Sscanf(s[i+2:i+6], "%04x", &r1); err != nil {
			return nil, err
		}
		s = s[i+6:]
		if r1 < 0x80 {
			out.WriteString(fmt.Sprintf(`\u%04x`, r1))
			continue
		}
		if r1 >= 0xd800 && r1 < 0xdc00 && strings.HasPrefix(s, `\u`) {
			var r2 rune
			if _, err := fmt.Sscanf(s[2:6], "%04x", &r2); err != nil {
				return nil, err
			}
			s = s[6:]
			r1 = (r1-0xd800)<<10 + (r2 - 0xdc00) + 0x10000
		}
		out.WriteRune(r1)
	}
	return out.Bytes(), nil
}

func TestBatchRenamesAndEmptyBatches(t *testing.T) {
	recs := func(ids ...string) []SeedRecord {
		var out []SeedRecord
		for _, id := range ids {
			out = append(out, SeedRecord{ID: id, Embedding: []float32{1, 2}})
		}
		return out
	}
	a := &SeedArchive{Collections: []SeedCollection{{Name: "c", Batches: []SeedBatch{
		{Name: "first", Records: recs("a", "b")},
		{Name: "batch_000001", Records: nil},
		{Name: "third", Records: recs("c")},
	}}}}
	res, native, err := convert(build(t, a), Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, colls := readNative(t, native)
	if !slices.Equal(colls[0].batches, []string{"batch_000000", "batch_000001"}) || !slices.Equal(colls[0].recs.IDs, []string{"a", "b", "c"}) {
		t.Errorf("batches %q ids %q", colls[0].batches, colls[0].recs.IDs)
	}
	joined := strings.Join(res.Warnings, "; ")
	if !strings.Contains(joined, "numbered batch_000000") || !strings.Contains(joined, "1 empty seed batches skipped") {
		t.Errorf("warnings %q", joined)
	}
}

func TestRecordFieldVariants(t *testing.T) {
	js := `{"c": {"batch_000000": [
		{"metadata": {"k": 1}, "embedding": [1, 2.5], "document": "d", "id": "x"},
		{"id": "y", "uri": "s3://b/y"},
		{"id": "z", "text": null, "embedding": null, "metadata": {}}
	]}}`
	_, native, err := convert(tgz(t, tarEntry{name: "collections.json", body: js}), Options{Tenant: "t1", Database: "d1"})
	if err != nil {
		t.Fatal(err)
	}
	md, colls := readNative(t, native)
	if md.Tenant != "t1" || md.Database != "d1" {
		t.Errorf("tenant/database %s/%s", md.Tenant, md.Database)
	}
	r := colls[0].recs
	if *r.Documents[0] != "d" || r.Metadatas[0]["k"] != int64(1) || r.Embeddings[0][1] != 2.5 {
		t.Errorf("first record: %v %v %v", r.Documents[0], r.Metadatas[0], r.Embeddings[0])
	}
	if r.URIs[1] == nil || *r.URIs[1] != "s3://b/y" || r.URIs[0] != nil {
		t.Errorf("uris %v", r.URIs)
	}
	if r.Documents[1] != nil || r.Embeddings[1] != nil || r.Metadatas[1] != nil || r.Metadatas[2] != nil {
		t.Errorf("missing fields are null: %v %v %v %v", r.Documents[1], r.Embeddings[1], r.Metadatas[1], r.Metadatas[2])
	}
}

// TestSourceChangesBetweenPasses: the second pass must see the bytes the
// first checked; otherwise the output is not a valid archive.
func TestSourceChangesBetweenPasses(t *testing.T) {
	a := sampleArchive()
	first := build(t, a)
	a.Collections[0].Batches[0].Records[0].ID = "changed"
	second := build(t, a)
	calls := 0
	var out bytes.Buffer
	_, err := Convert(func() (io.ReadCloser, error) {
		calls++
		if calls == 1 {
			return io.NopCloser(bytes.NewReader(first)), nil
		}
		return io.NopCloser(bytes.NewReader(second)), nil
	}, &out, Options{})
	if err == nil || !strings.Contains(err.Error(), "changed between the two passes") {
		t.Fatalf("error %v, want one saying the archive changed", err)
	}
	if _, err := archive.Verify(bytes.NewReader(out.Bytes())); err == nil {
		t.Errorf("the output of a failed conversion verifies as an archive")
	}
	if bytes.Contains(out.Bytes(), []byte("manifest.json")) {
		t.Errorf("a failed conversion wrote manifest.json")
	}
}

func TestSyntheticCollectionID(t *testing.T) {
	id := SyntheticCollectionID("abc", "c")
	if id != SyntheticCollectionID("abc", "c") || id == SyntheticCollectionID("abc", "d") || id == SyntheticCollectionID("abd", "c") {
		t.Errorf("ids not deterministic or not distinct")
	}
	if len(id) != 36 || id[14] != '8' || !strings.ContainsAny(id[19:20], "89ab") {
		t.Errorf("%q is not a version 8 UUID", id)
	}
}

func TestParseTimestamp(t *testing.T) {
	for in, want := range map[string]time.Time{
		"2025-11-30T14:30:22":              time.Date(2025, 11, 30, 14, 30, 22, 0, time.UTC),
		"2025-11-30T14:30:22.5":            time.Date(2025, 11, 30, 14, 30, 22, 5e8, time.UTC),
		"2025-11-30T14:30:22+01:00":        time.Date(2025, 11, 30, 13, 30, 22, 0, time.UTC),
		"2025-11-30 14:30:22.123456":       time.Date(2025, 11, 30, 14, 30, 22, 123456000, time.UTC),
		"2025-11-30T14:30:22.123456+00:00": time.Date(2025, 11, 30, 14, 30, 22, 123456000, time.UTC),
		"20251130_143022":                  time.Date(2025, 11, 30, 14, 30, 22, 0, time.UTC),
	} {
		got, ok := ParseTimestamp(in)
		if !ok || !got.Equal(want) {
			t.Errorf("ParseTimestamp(%q) = %v %v, want %v", in, got, ok, want)
		}
	}
	if _, ok := ParseTimestamp("yesterday"); ok {
		t.Errorf("parsed nonsense")
	}
}

// TestPythonJSONText pins the float and string text to what CPython 3.11's
// json.dumps writes for the same values.
func TestPythonJSONText(t *testing.T) {
	for f, want := range map[float64]string{
		0.1: "0.1", 1e-4: "0.0001", 1e-5: "1e-05", 1.5e-5: "1.5e-05", 1e15: "1000000000000000.0", 1e16: "1e+16",
		123456789012345678.0: "1.2345678901234568e+17", 0: "0.0", 1: "1.0", 3.4028234663852886e+38: "3.4028234663852886e+38",
		1.401298464324817e-45: "1.401298464324817e-45", -2.5: "-2.5", 100: "100.0", 0.30000001192092896: "0.30000001192092896",
		1e-7: "1e-07", 12345.678: "12345.678",
	} {
		if got := PyFloat(f); got != want {
			t.Errorf("PyFloat(%v) = %s, want %s", f, got, want)
		}
	}
	if got := PyFloat(negZero()); got != "-0.0" {
		t.Errorf("PyFloat(-0) = %s", got)
	}
	if got, want := PyString("\u00e9\U0001F680\x01\x7f/\""), `"\u00e9\ud83d\ude80\u0001\u007f/\""`; got != want {
		t.Errorf("PyString = %s, want %s", got, want)
	}
	got, err := pyDumps(pyObject{{"a", []any{int64(1), int64(2)}}, {"b", pyObject{}}, {"c", []any{}}}, 2)
	if want := "{\n  \"a\": [\n    1,\n    2\n  ],\n  \"b\": {},\n  \"c\": []\n}"; err != nil || string(got) != want {
		t.Errorf("indented dumps:\n%s\nwant\n%s", got, want)
	}
	got, _ = pyDumps(pyObject{{"a", []any{1.5, nil, true}}}, 0)
	if want := `{"a": [1.5, null, true]}`; string(got) != want {
		t.Errorf("compact dumps %s, want %s", got, want)
	}
}

func negZero() float64 { z := 0.0; return -z }

// TestConvertStreams bounds what a conversion holds: a batch, not the
// archive. 20 batches of 50 x 64-d records under a 128 KiB batch limit
// convert; the same records in one batch are refused.
func TestConvertStreams(t *testing.T) {
	big := sampleBatch("s", 1000, 64)
	a := &SeedArchive{Collections: []SeedCollection{SeedCollectionFromBatch("big", big, 50)}}
	data := build(t, a)
	lim := Limits{MaxBatchBytes: 128 << 10}
	res, _, err := convert(data, Options{Limits: lim})
	if err != nil {
		t.Fatalf("batched archive refused under a per-batch limit: %v", err)
	}
	if res.Manifest.TotalRecords != 1000 {
		t.Errorf("%d records", res.Manifest.TotalRecords)
	}
	one := &SeedArchive{Collections: []SeedCollection{SeedCollectionFromBatch("big", big, 1000)}}
	_, out, err := convert(build(t, one), Options{Limits: lim})
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), `batch "batch_000000"`) {
		t.Errorf("one oversized batch: %v", err)
	}
	if len(out) != 0 {
		t.Errorf("%d bytes written for a refused archive", len(out))
	}
}

// BenchmarkConvert measures both passes over a seed archive of 2,000 x
// 384-d records (the seed workload's shape).
func BenchmarkConvert(b *testing.B) {
	batch := sampleBatch("b", 2000, 384)
	r := rand.New(rand.NewPCG(1, 2))
	for _, e := range batch.Embeddings {
		for k := range e {
			e[k] = float32(r.NormFloat64() * 0.05) // what embedding models emit
		}
	}
	a := &SeedArchive{Collections: []SeedCollection{SeedCollectionFromBatch("bench", batch, 100)}}
	data := build(b, a)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Convert(opener(data), io.Discard, Options{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(2000*b.N)/b.Elapsed().Seconds(), "records/s")
}
