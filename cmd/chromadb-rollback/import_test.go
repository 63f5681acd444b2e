package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/legacy"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/testenv"
	"github.com/nats-io/nats.go"
)

// writeSeedLayout writes a seed archive and its manifest as the old tool
// laid them out: <dir>/snapshots/<id>.tar.gz and <dir>/manifests/<id>.json.
func writeSeedLayout(t *testing.T, dir string) (archivePath, manifestPath string) {
	t.Helper()
	b := &record.Batch{}
	for i := range 120 {
		doc := "chunk text"
		b.IDs = append(b.IDs, "chunk_"+string(rune('a'+i%26))+strings.Repeat("x", i/26))
		b.Documents = append(b.Documents, &doc)
		b.Embeddings = append(b.Embeddings, []float32{float32(i) / 7, -0.5, 1e-7})
		b.Metadatas = append(b.Metadatas, record.Metadata{"chunk": int64(i), "source": "a.md"})
	}
	a := &legacy.SeedArchive{Dir: "snapshot_20251130_143022", ChromaVersion: "0.3.21", Timestamp: "2025-11-30T14:30:22",
		Collections: []legacy.SeedCollection{legacy.SeedCollectionFromBatch("sergio_corpus", b, 50)}}
	data, manifest, err := legacy.BuildSeedArchive(a, "snapshot_20251130_143022", "pre_migration_2025-11-30")
	if err != nil {
		t.Fatal(err)
	}
	archivePath = filepath.Join(dir, "snapshots", "snapshot_20251130_143022.tar.gz")
	manifestPath = filepath.Join(dir, "manifests", "snapshot_20251130_143022.json")
	for p, d := range map[string][]byte{archivePath: data, manifestPath: manifest} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, d, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return archivePath, manifestPath
}

func TestCLIImport(t *testing.T) {
	c, n := startStack(t)
	for i := 0; i < 100; i++ {
		if code, _, _ := c.run("snapshot", "list"); code == exitOK {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	dir := t.TempDir()
	arc, man := writeSeedLayout(t, dir)
	stagingLeft := func() []string {
		var left []string
		list, _ := n.Assets.Snapshots.List(t.Context())
		for _, o := range list {
			if strings.HasPrefix(o.Name, contract.ImportStagingPrefix) {
				left = append(left, o.Name)
			}
		}
		return left
	}

	// The manifest is found in ../manifests as the old tool laid it out.
	code, stdout, stderr := c.run("snapshot", "import", arc, "--json")
	if code != exitOK {
		t.Fatalf("import: exit %d: %s", code, stderr)
	}
	var m contract.SnapshotManifest
	if err := json.Unmarshal([]byte(stdout), &m); err != nil {
		t.Fatalf("import --json output %q: %v", stdout, err)
	}
	if !strings.Contains(stderr, "using manifest "+man) || m.ImportedFrom == nil || !m.ImportedFrom.ManifestChecked ||
		m.Name != "pre_migration_2025-11-30" || m.TotalRecords != 120 || m.Tenant != "default_tenant" {
		t.Errorf("import: %+v\nstderr %s", m, stderr)
	}
	if code, stdout, _ := c.run("snapshot", "verify", "pre_migration_2025-11-30"); code != exitOK || !strings.HasPrefix(stdout, "OK") {
		t.Errorf("verify the imported snapshot: exit %d %s", code, stdout)
	}
	if code, stdout, _ := c.run("snapshot", "info", m.SnapshotID); code != exitOK || !strings.Contains(stdout, "batch_000000..batch_000002 (3)") ||
		m.ImportedFrom.SourceCreatedAt == nil ||
		!strings.Contains(stdout, "(seed format, sha256 "+m.ImportedFrom.SHA256[:16]+"); original ") ||
		!strings.Contains(stdout, "taken "+m.ImportedFrom.SourceCreatedAt.UTC().Format(time.RFC3339)+"\n") {
		t.Errorf("info: exit %d\n%s", code, stdout)
	}

	// Plain output is the id; name, tenant and database from the flags.
	code, stdout, stderr = c.run("snapshot", "import", arc, "--no-manifest", "--name", "old_copy", "--tenant", "t2", "--database", "d2")
	id := strings.TrimSpace(stdout)
	if code != exitOK || !strings.HasPrefix(id, "snap_") || !strings.Contains(stderr, "no manifest") {
		t.Fatalf("import --no-manifest: exit %d, stdout %q, stderr %s", code, stdout, stderr)
	}
	code, stdout, _ = c.run("snapshot", "info", id, "--json")
	if err := json.Unmarshal([]byte(stdout), &m); code != exitOK || err != nil || m.Name != "old_copy" || m.Tenant != "t2" || m.Database != "d2" || m.ImportedFrom.ManifestChecked {
		t.Errorf("info of the second import: %+v", m)
	}
	// A name another database's snapshots use: warned on stderr as
	// snapshot create warns, with the id to use instead.
	code, stdout, stderr = c.run("snapshot", "import", arc, "--no-manifest", "--name", "pre_migration_2025-11-30", "--tenant", "t2", "--database", "d2")
	id = strings.TrimSpace(stdout)
	if code != exitOK || !strings.Contains(stderr, `warning: the name "pre_migration_2025-11-30" is also used by snapshots of default_tenant/default_database`) ||
		!strings.Contains(stderr, "refer to this one by its id "+id) {
		t.Errorf("import under a name used in another database: exit %d, stdout %q, stderr %s", code, stdout, stderr)
	}

	// A native archive exported and imported again (the stack's Chroma
	// holds two workload collections of 150 records).
	code, stdout, stderr = c.run("snapshot", "create", "--name", "live")
	if code != exitOK {
		t.Fatalf("create: %s", stderr)
	}
	exported := filepath.Join(dir, "live.tar.zst")
	// With progress bars (as on a terminal): the export's bytes, the
	// upload's, then the import's own progress from its first phase.
	t.Setenv(envProgress, "always")
	if code, _, stderr := c.run("snapshot", "export", strings.TrimSpace(stdout), "-o", exported); code != exitOK || !strings.Contains(stderr, "exporting snap_") {
		t.Fatalf("export: exit %d, stderr %q; want a progress bar", code, stderr)
	}
	code, stdout, stderr = c.run("snapshot", "import", exported, "--name", "live_again")
	if code != exitOK {
		t.Fatalf("import native: exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "uploading live.tar.zst") || !strings.Contains(stderr, "detecting") {
		t.Errorf("import's stderr %q: want the upload's progress bar, then the import's", stderr)
	}
	t.Setenv(envProgress, "never")
	if code, out, _ := c.run("snapshot", "verify", strings.TrimSpace(stdout)); code != exitOK || !strings.Contains(out, "300 records in 2 collections,") {
		t.Errorf("verify the re-imported native archive: exit %d %s", code, out)
	}
	// Its info names the original and when it was taken.
	var live contract.SnapshotManifest
	if code, out, _ := c.run("snapshot", "info", "live", "--json"); code != exitOK || json.Unmarshal([]byte(out), &live) != nil {
		t.Fatalf("info live: exit %d %s", code, out)
	}
	if code, out, _ := c.run("snapshot", "info", strings.TrimSpace(stdout)); code != exitOK ||
		!strings.Contains(out, "imported:    live.tar.zst (native format, sha256 ") ||
		!strings.Contains(out, "original "+live.SnapshotID+`, "live", taken `+live.StartedAt.UTC().Format(time.RFC3339)+"\n") {
		t.Errorf("info of the re-imported native archive: exit %d\n%s", code, out)
	}

	// Refusals: nothing created, nothing staged left behind.
	before, _ := n.Assets.Manifests.ListKeys(t.Context())
	nBefore := 0
	for range before.Keys() {
		nBefore++
	}
	badManifest := filepath.Join(dir, "bad.json")
	os.WriteFile(badManifest, []byte(`{"checksum": "`+strings.Repeat("0", 64)+`", "total_chunks": 120}`), 0o644)
	noChecksum := filepath.Join(dir, "nochecksum.json")
	os.WriteFile(noChecksum, []byte(`{"total_chunks": 120}`), 0o644)
	text := filepath.Join(dir, "notes.txt")
	os.WriteFile(text, []byte("not an archive"), 0o644)
	for _, tc := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"checksum mismatch", []string{arc, "--manifest", badManifest}, exitVerification, "checksum mismatch"},
		{"manifest without checksum", []string{arc, "--manifest", noChecksum}, exitUsage, "no SHA-256 checksum"},
		{"not an archive", []string{text}, exitVerification, "neither gzip"},
		{"missing file", []string{filepath.Join(dir, "nope.tar.gz")}, exitFailed, "no such file"},
		{"bad name", []string{arc, "--name", "a b"}, exitUsage, "--name"},
		{"contradiction", []string{arc, "--manifest", man, "--no-manifest"}, exitUsage, "contradict"},
		{"no file", nil, exitUsage, "takes one argument, 0 given; usage: chromadb-rollback snapshot import FILE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := c.run(append([]string{"snapshot", "import"}, tc.args...)...)
			if code != tc.code || !strings.Contains(stderr, tc.msg) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, stderr, tc.code, tc.msg)
			}
		})
	}
	// With --json the snapshotter's refusal is printed, as for every verb,
	// whatever the exit code: a 422, and a 413 for a decompression bomb.
	bomb := filepath.Join(dir, "bomb.tar.gz")
	writeSpaceBomb(t, bomb, legacy.DefaultRatioAfter+1<<20)
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{arc, "--manifest", badManifest}, contract.CodeVerificationFailed, "checksum mismatch"},
		{[]string{bomb, "--no-manifest"}, contract.CodeTooLarge, "decompression bomb"},
	} {
		code, stdout, _ := c.run(append([]string{"snapshot", "import", "--json"}, tc.args...)...)
		var eb contract.ErrorBody
		if code != exitVerification || json.Unmarshal([]byte(stdout), &eb) != nil || eb.Type != contract.TypeError ||
			eb.Code != tc.code || !strings.Contains(eb.Error, tc.msg) {
			t.Errorf("import --json %v: exit %d, stdout %q; want %d and an error reply %d naming %q", tc.args, code, stdout, exitVerification, tc.code, tc.msg)
		}
	}
	after, _ := n.Assets.Manifests.ListKeys(t.Context())
	nAfter := 0
	for range after.Keys() {
		nAfter++
	}
	if nAfter != nBefore {
		t.Errorf("%d manifests after refused imports, %d before", nAfter, nBefore)
	}
	if left := stagingLeft(); len(left) > 0 {
		t.Errorf("staging objects left behind: %q", left)
	}
}

// writeSpaceBomb writes a seed-format archive whose collections.json is n
// spaces: a few dozen KB that decompress to n bytes.
func writeSpaceBomb(t *testing.T, path string, n int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zw := gzip.NewWriter(f)
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Name: "collections.json", Mode: 0o644, Size: n}); err != nil {
		t.Fatal(err)
	}
	spaces := bytes.Repeat([]byte(" "), 1<<20)
	for left := n; left > 0; left -= int64(len(spaces)) {
		if _, err := tw.Write(spaces[:min(left, int64(len(spaces)))]); err != nil {
			t.Fatal(err)
		}
	}
	if err := errors.Join(tw.Close(), zw.Close()); err != nil {
		t.Fatal(err)
	}
}

// TestImportInterruptedKeepsUpload: an import interrupted (Ctrl-C) once its
// request was sent leaves the upload to the snapshotter that may be
// converting it, and says how to learn how the import ended. It removed
// the upload from under the conversion, which then failed after a 30 s
// stall ("no chunk"), or completed, depending on how far it had read.
// Found by hand. A subscriber that takes the request and never answers
// stands for a snapshotter converting a large file.
func TestImportInterruptedKeepsUpload(t *testing.T) {
	n := testenv.StartNATS(t)
	arc, _ := writeSeedLayout(t, t.TempDir())
	ctx, cancel := cliContext(t, time.Minute)
	defer cancel()
	got := make(chan contract.SnapshotImportRequest, 1)
	sub, err := n.Conn.Subscribe(contract.Subjects{Prefix: contract.DefaultPrefix}.API("snapshot", "import"), func(m *nats.Msg) {
		var req contract.SnapshotImportRequest
		_ = json.Unmarshal(m.Data, &req)
		got <- req
		cancel() // Ctrl-C while the "snapshotter" converts
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	var out, errb bytes.Buffer
	code := run(ctx, []string{"--nats-url", n.URL, "snapshot", "import", arc, "--no-manifest"}, strings.NewReader(""), &out, &errb)
	var req contract.SnapshotImportRequest
	select {
	case req = <-got:
	default:
		t.Fatalf("the import request was not sent: exit %d\n%s", code, errb.String())
	}
	if code == exitOK || !strings.Contains(errb.String(), "interrupted while waiting") ||
		!strings.Contains(errb.String(), "The import may still run (operation "+req.OpID+")") ||
		!strings.Contains(errb.String(), "audit-log --op "+req.OpID) {
		t.Errorf("interrupted import: exit %d, stderr:\n%s", code, errb.String())
	}
	if _, err := n.Assets.Snapshots.GetInfo(t.Context(), req.Object); err != nil {
		t.Errorf("the upload %s the snapshotter converts was removed: %v", req.Object, err)
	}
}
