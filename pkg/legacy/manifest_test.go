package legacy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// withManifest builds the sample archive and a manifest edited by edit.
func withManifest(t *testing.T, edit func(m map[string]any)) ([]byte, []byte) {
	t.Helper()
	data, manifest, err := BuildSeedArchive(sampleArchive(), "snapshot_20251130_143022", "pre_migration_2025-11-30")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(manifest, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	out, _ := json.Marshal(m)
	return data, out
}

func TestManifestAccepted(t *testing.T) {
	cases := map[string]func(m map[string]any){
		"as written": func(m map[string]any) {},
		"sha256 field with prefix, upper case": func(m map[string]any) {
			m["sha256"] = "SHA256:" + strings.ToUpper(m["checksum"].(string))
			delete(m, "checksum")
		},
		"checksum object": func(m map[string]any) {
			m["checksum"] = map[string]any{"algorithm": "SHA-256", "value": m["checksum"]}
		},
		"counts inside metadata": func(m map[string]any) {
			m["metadata"] = map[string]any{"total_chunks": m["total_chunks"], "collections_count": m["collections_count"], "chromadb_version": "0.3.21"}
			delete(m, "total_chunks")
			delete(m, "collections_count")
		},
		"only a checksum": func(m map[string]any) {
			for k := range m {
				if k != "checksum" {
					delete(m, k)
				}
			}
		},
		"collections as objects, batch_metadata as counts": func(m map[string]any) {
			m["collections"] = []any{map[string]any{"name": "sergio_corpus"}, map[string]any{"name": "empty_collection"}, map[string]any{"name": "sergio.personality"}}
			m["batch_metadata"] = map[string]any{
				"sergio_corpus":      map[string]any{"batch_000004": 5, "batch_000000": 10, "batch_000001": 10, "batch_000002": 10, "batch_000003": 10},
				"empty_collection":   map[string]any{},
				"sergio.personality": map[string]any{"batch_000000": 7},
			}
		},
		"unknown fields": func(m map[string]any) { m["archive_path"] = 7; m["retention_days"] = 7 },
	}
	for name, edit := range cases {
		t.Run(name, func(t *testing.T) {
			data, manifest := withManifest(t, edit)
			res, _, err := convert(data, Options{Manifest: manifest})
			if err != nil {
				t.Fatalf("refused: %v\nmanifest %s", err, manifest)
			}
			if res.SeedManifest == nil || res.SeedManifest.SHA256 != res.SHA256 {
				t.Errorf("manifest not checked: %+v", res.SeedManifest)
			}
		})
	}
	_, manifest := withManifest(t, func(m map[string]any) {})
	sm, err := ParseManifest(manifest)
	if err != nil || sm.Name != "pre_migration_2025-11-30" || sm.SnapshotID != "snapshot_20251130_143022" || sm.Timestamp != "2025-11-30T14:30:22" {
		t.Errorf("parsed manifest %+v, %v", sm, err)
	}
}

func TestManifestRefused(t *testing.T) {
	other := sha256.Sum256([]byte("another archive"))
	cases := []struct {
		name string
		edit func(m map[string]any)
		is   error
		msg  string
	}{
		{"checksum mismatch", func(m map[string]any) { m["checksum"] = hex.EncodeToString(other[:]) }, ErrManifest, "checksum mismatch: the file's sha256 is"},
		{"total_chunks", func(m map[string]any) { m["total_chunks"] = 51 }, ErrManifest, "the manifest says total_chunks 51, the archive holds 52 records"},
		{"collections_count", func(m map[string]any) { m["collections_count"] = 4 }, ErrManifest, "collections_count 4, the archive holds 3"},
		{"count in metadata disagrees", func(m map[string]any) { m["metadata"] = map[string]any{"total_chunks": 9} }, ErrManifest, `"total_chunks" is 52 at the top level but 9`},
		{"collection names", func(m map[string]any) { m["collections"] = []any{"a", "b", "c"} }, ErrManifest, "the manifest lists collections"},
		{"batch names", func(m map[string]any) {
			m["batch_metadata"].(map[string]any)["sergio_corpus"] = []any{"batch_000000"}
		}, ErrManifest, `collection "sergio_corpus": the manifest lists batches`},
		{"chroma version", func(m map[string]any) { m["chromadb_version"] = "0.4.0" }, ErrManifest, `chromadb_version "0.4.0", metadata.json "0.3.21"`},
		{"no checksum", func(m map[string]any) { delete(m, "checksum") }, ErrManifest, "no SHA-256 checksum: looked for checksum, sha256"},
		{"two checksums disagree", func(m map[string]any) { m["sha256"] = hex.EncodeToString(other[:]) }, ErrManifest, `fields "checksum" and "sha256" give different checksums`},
		{"md5", func(m map[string]any) { m["checksum_algorithm"] = "md5" }, ErrManifest, "only SHA-256 is supported"},
		{"not hex", func(m map[string]any) { m["checksum"] = "abc" }, ErrManifest, "is not a SHA-256 (64 hex digits)"},
		{"count is a string", func(m map[string]any) { m["total_chunks"] = "52" }, ErrManifest, `field "total_chunks": want a non-negative integer`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data, manifest := withManifest(t, tc.edit)
			_, out, err := convert(data, Options{Manifest: manifest})
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %v\nwant one wrapping %v saying %q", err, tc.is, tc.msg)
			}
			if len(out) != 0 {
				t.Errorf("%d bytes written", len(out))
			}
		})
	}
	for name, m := range map[string]string{"not JSON": "checksum: abc", "a list": `["x"]`, "empty": " "} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseManifest([]byte(m))
			if !errors.Is(err, ErrManifest) {
				t.Errorf("error %v, want ErrManifest", err)
			}
		})
	}
}

// TestDamagedArchiveWithManifest: a damaged archive is reported as not
// matching its manifest, which is the actionable fact, with the parse error.
func TestDamagedArchiveWithManifest(t *testing.T) {
	data, manifest := withManifest(t, func(m map[string]any) {})
	damaged := bytes.Clone(data)
	damaged[len(damaged)/2] ^= 0x01
	_, out, err := convert(damaged, Options{Manifest: manifest})
	if !errors.Is(err, ErrManifest) || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "checksum mismatch") || !strings.Contains(err.Error(), "reading it failed too") {
		t.Errorf("error %v", err)
	}
	if len(out) != 0 {
		t.Errorf("%d bytes written", len(out))
	}
}
