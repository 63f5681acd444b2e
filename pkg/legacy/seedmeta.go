package legacy

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// SeedMetadata is the metadata.json of a seed archive. The seed document
// gives its fields: chromadb_version, snapshot_timestamp, collections_count
// and total_chunks. Other fields are ignored; a missing field is not
// checked, a field of the wrong type is an error.
type SeedMetadata struct {
	ChromaVersion    string `json:"chromadb_version,omitempty"`
	Timestamp        string `json:"snapshot_timestamp,omitempty"`
	CollectionsCount *int64 `json:"collections_count,omitempty"`
	TotalChunks      *int64 `json:"total_chunks,omitempty"`
}

func parseSeedMetadata(data []byte) (*SeedMetadata, error) {
	obj, err := jsonObject(data)
	if err != nil {
		return nil, fmt.Errorf("metadata.json: %w", err)
	}
	var md SeedMetadata
	if md.ChromaVersion, _, err = stringField(obj, "chromadb_version"); err != nil {
		return nil, fmt.Errorf("metadata.json: %w", err)
	}
	if md.Timestamp, _, err = stringField(obj, "snapshot_timestamp"); err != nil {
		return nil, fmt.Errorf("metadata.json: %w", err)
	}
	if md.CollectionsCount, err = countField(obj, "collections_count"); err != nil {
		return nil, fmt.Errorf("metadata.json: %w", err)
	}
	if md.TotalChunks, err = countField(obj, "total_chunks"); err != nil {
		return nil, fmt.Errorf("metadata.json: %w", err)
	}
	return &md, nil
}

// ParseTimestamp reads the seed tool's timestamps: Python's
// datetime.isoformat() with or without fraction and zone (a timestamp without
// a zone is taken as UTC), or str(datetime) with a space.
func ParseTimestamp(s string) (time.Time, bool) {
	s = strings.TrimSpace(s)
	for _, layout := range []string{
		time.RFC3339Nano,
		"2006-01-02T15:04:05.999999999",
		"2006-01-02 15:04:05.999999999Z07:00",
		"2006-01-02 15:04:05.999999999",
		"20060102_150405",
		"2006-01-02",
	} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), true
		}
	}
	return time.Time{}, false
}

// Checksum fields looked for in a seed manifest, and the fields that may
// name its algorithm.
var (
	checksumFields  = []string{"checksum", "sha256", "checksum_sha256", "sha256_checksum", "archive_checksum", "archive_sha256"}
	algorithmFields = []string{"checksum_algorithm", "checksum_type", "hash_algorithm", "algorithm"}
)

// SeedManifest is what the converter understood of a seed manifest, the
// JSON file the seed tool kept beside each archive
// (manifests/<snapshot>.json). The seed document names its purpose
// (integrity and reference data, a SHA-256 checksum) but not every field, so
// fields are looked for under the names the document and the tool use:
//
//   - checksum: "checksum", "sha256", "checksum_sha256", "sha256_checksum",
//     "archive_checksum" or "archive_sha256": 64 hex digits, optionally
//     prefixed "sha256:"; or an object {"algorithm": "sha256", "value": hex}.
//     At least one is required and all present must agree; an algorithm
//     field ("checksum_algorithm", ...), if any, must say SHA-256.
//   - counts: "total_chunks" and "collections_count", at the top level or
//     inside a "metadata" object (the archive's metadata.json copied in).
//   - names: "snapshot_name" or "name", and "snapshot_id".
//   - "collections": a list of names, a list of objects with "name", or an
//     object keyed by name; "batch_metadata": collection -> list of batch
//     names (or an object keyed by batch name).
//
// Other fields are ignored.
type SeedManifest struct {
	SHA256           string
	SnapshotID       string
	Name             string
	Timestamp        string
	ChromaVersion    string
	CollectionsCount *int64
	TotalChunks      *int64
	// Collections is nil when the manifest does not list them.
	Collections []string
	// Batches is nil when the manifest has no batch_metadata; Ordered says
	// whether its lists are in order (lists) or sets (object keys).
	Batches        map[string][]string
	BatchesOrdered bool
	Warnings       []string
}

// ParseManifest reads a seed manifest. It fails, wrapping ErrManifest, when
// the JSON is not an object, has no usable SHA-256 checksum, or has a field
// of the wrong type.
func ParseManifest(data []byte) (*SeedManifest, error) {
	fail := func(format string, args ...any) (*SeedManifest, error) {
		return nil, fmt.Errorf("%w: manifest: %s", ErrManifest, fmt.Sprintf(format, args...))
	}
	obj, err := jsonObject(data)
	if err != nil {
		return fail("%v", err)
	}
	m := &SeedManifest{}
	var inner map[string]json.RawMessage
	if raw, ok := obj["metadata"]; ok && !isNull(raw) {
		if inner, err = jsonObject(raw); err != nil {
			return fail("field \"metadata\": %v", err)
		}
	}

	for _, k := range algorithmFields {
		alg, ok, err := stringField(obj, k)
		if err != nil {
			return fail("%v", err)
		}
		if ok && normAlg(alg) != "sha256" {
			return fail("field %q says the checksum is %q; only SHA-256 is supported", k, alg)
		}
	}
	var from string
	for _, k := range checksumFields {
		raw, ok := obj[k]
		if !ok || isNull(raw) {
			continue
		}
		sum, err := checksumValue(k, raw)
		if err != nil {
			return fail("%v", err)
		}
		if m.SHA256 != "" && sum != m.SHA256 {
			return fail("fields %q and %q give different checksums (%s, %s)", from, k, m.SHA256, sum)
		}
		m.SHA256, from = sum, k
	}
	if m.SHA256 == "" {
		return fail("no SHA-256 checksum: looked for %s", strings.Join(checksumFields, ", "))
	}

	for _, f := range []struct {
		dst  *string
		keys []string
	}{
		{&m.Name, []string{"snapshot_name", "name"}},
		{&m.SnapshotID, []string{"snapshot_id", "id"}},
		{&m.Timestamp, []string{"snapshot_timestamp", "timestamp", "created_at"}},
		{&m.ChromaVersion, []string{"chromadb_version"}},
	} {
		for _, k := range f.keys {
			s, ok, err := stringField(obj, k)
			if err == nil && !ok && inner != nil {
				s, ok, err = stringField(inner, k)
			}
			if err != nil {
				return fail("%v", err)
			}
			if ok && s != "" {
				*f.dst = s
				break
			}
		}
	}
	for _, f := range []struct {
		dst **int64
		key string
	}{{&m.CollectionsCount, "collections_count"}, {&m.TotalChunks, "total_chunks"}} {
		top, err := countField(obj, f.key)
		if err != nil {
			return fail("%v", err)
		}
		var in *int64
		if inner != nil {
			if in, err = countField(inner, f.key); err != nil {
				return fail("metadata: %v", err)
			}
		}
		if top != nil && in != nil && *top != *in {
			return fail("%q is %d at the top level but %d in \"metadata\"", f.key, *top, *in)
		}
		if top == nil {
			top = in
		}
		*f.dst = top
	}

	if raw, ok := obj["collections"]; ok && !isNull(raw) {
		names, err := nameList(raw)
		if err != nil {
			m.Warnings = append(m.Warnings, fmt.Sprintf("manifest field \"collections\" not understood (%v); not checked", err))
		} else {
			m.Collections = names
		}
	}
	if raw, ok := obj["batch_metadata"]; ok && !isNull(raw) {
		bm, err := jsonObject(raw)
		if err != nil {
			m.Warnings = append(m.Warnings, fmt.Sprintf("manifest field \"batch_metadata\" not understood (%v); not checked", err))
		} else {
			m.Batches, m.BatchesOrdered = map[string][]string{}, true
			for coll, v := range bm {
				if bytes.HasPrefix(bytes.TrimSpace(v), []byte("{")) {
					m.BatchesOrdered = false
				}
				names, err := nameList(v)
				if err != nil {
					m.Warnings = append(m.Warnings, fmt.Sprintf("manifest batch_metadata of %q not understood (%v); batches not checked", coll, err))
					m.Batches = nil
					break
				}
				m.Batches[coll] = names
			}
		}
	}
	return m, nil
}

// check compares the manifest with what the archive holds.
func (m *SeedManifest) check(sum string, colls []collInfo, total int64, md *SeedMetadata) error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrManifest, fmt.Sprintf(format, args...))
	}
	if sum != m.SHA256 {
		return fail("checksum mismatch: the file's sha256 is %s, the manifest says %s (the archive is damaged, or it is not the archive this manifest describes)", sum, m.SHA256)
	}
	if m.CollectionsCount != nil && *m.CollectionsCount != int64(len(colls)) {
		return fail("the manifest says collections_count %d, the archive holds %d collections", *m.CollectionsCount, len(colls))
	}
	if m.TotalChunks != nil && *m.TotalChunks != total {
		return fail("the manifest says total_chunks %d, the archive holds %d records", *m.TotalChunks, total)
	}
	if md != nil && m.ChromaVersion != "" && md.ChromaVersion != "" && m.ChromaVersion != md.ChromaVersion {
		return fail("the manifest says chromadb_version %q, metadata.json %q", m.ChromaVersion, md.ChromaVersion)
	}
	have := make([]string, len(colls))
	byName := make(map[string]*collInfo, len(colls))
	for i := range colls {
		have[i] = colls[i].name
		byName[colls[i].name] = &colls[i]
	}
	if m.Collections != nil {
		want := slices.Sorted(slices.Values(m.Collections))
		got := slices.Sorted(slices.Values(have))
		if !slices.Equal(want, got) {
			return fail("the manifest lists collections %q, the archive holds %q", want, got)
		}
	}
	if m.Batches != nil {
		if len(m.Batches) != len(colls) {
			return fail("the manifest's batch_metadata covers %d collections, the archive holds %d", len(m.Batches), len(colls))
		}
		for name, want := range m.Batches {
			c, ok := byName[name]
			if !ok {
				return fail("the manifest's batch_metadata names collection %q, which the archive does not hold", name)
			}
			got := c.seedBatches
			if !m.BatchesOrdered {
				want, got = slices.Sorted(slices.Values(want)), slices.Sorted(slices.Values(got))
			}
			if !slices.Equal(want, got) {
				return fail("collection %q: the manifest lists batches %s, the archive holds %s", name, summarize(want), summarize(got))
			}
		}
	}
	return nil
}

func summarize(names []string) string {
	if len(names) <= 4 {
		return fmt.Sprintf("%q", names)
	}
	return fmt.Sprintf("%q ... %q (%d)", names[:2], names[len(names)-1], len(names))
}

func normAlg(s string) string {
	return strings.NewReplacer("-", "", "_", "", " ", "").Replace(strings.ToLower(strings.TrimSpace(s)))
}

func checksumValue(key string, raw json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		obj, oerr := jsonObject(raw)
		if oerr != nil {
			return "", fmt.Errorf("field %q: want a hex SHA-256 string or {\"algorithm\", \"value\"}, got %.40s", key, raw)
		}
		alg, ok, err := stringField(obj, "algorithm")
		if err != nil {
			return "", fmt.Errorf("field %q: %w", key, err)
		}
		if ok && normAlg(alg) != "sha256" {
			return "", fmt.Errorf("field %q: algorithm %q; only SHA-256 is supported", key, alg)
		}
		v, ok, err := stringField(obj, "value")
		if err != nil || !ok {
			return "", fmt.Errorf("field %q: want a \"value\" string with the hex SHA-256", key)
		}
		s = v
	}
	v := strings.ToLower(strings.TrimSpace(s))
	v = strings.TrimPrefix(strings.TrimPrefix(v, "sha256:"), "sha256-")
	if b, err := hex.DecodeString(v); err != nil || len(b) != 32 {
		return "", fmt.Errorf("field %q: %q is not a SHA-256 (64 hex digits)", key, s)
	}
	return v, nil
}

func nameList(raw json.RawMessage) ([]string, error) {
	raw = bytes.TrimSpace(raw)
	if bytes.HasPrefix(raw, []byte("{")) {
		obj, err := jsonObject(raw)
		if err != nil {
			return nil, err
		}
		names := make([]string, 0, len(obj))
		for k := range obj {
			names = append(names, k)
		}
		return names, nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, fmt.Errorf("want a list or an object, got %.40s", raw)
	}
	names := make([]string, 0, len(items))
	for _, it := range items {
		var s string
		if json.Unmarshal(it, &s) == nil {
			names = append(names, s)
			continue
		}
		var o struct {
			Name string `json:"name"`
		}
		if json.Unmarshal(it, &o) != nil || o.Name == "" {
			return nil, fmt.Errorf("item %.40s is neither a name nor an object with a \"name\"", it)
		}
		names = append(names, o.Name)
	}
	return names, nil
}

func isNull(raw json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(raw), []byte("null")) }

func jsonObject(data []byte) (map[string]json.RawMessage, error) {
	data = bytes.TrimSpace(data)
	if !bytes.HasPrefix(data, []byte("{")) {
		return nil, fmt.Errorf("want a JSON object, got %.40q", data)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil {
		return nil, fmt.Errorf("malformed JSON: %v", err)
	}
	return obj, nil
}

// stringField reads an optional string field; null counts as absent.
func stringField(obj map[string]json.RawMessage, key string) (string, bool, error) {
	raw, ok := obj[key]
	if !ok || isNull(raw) {
		return "", false, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false, fmt.Errorf("field %q: want a string, got %.40s", key, raw)
	}
	return s, true, nil
}

// countField reads an optional non-negative integer field.
func countField(obj map[string]json.RawMessage, key string) (*int64, error) {
	raw, ok := obj[key]
	if !ok || isNull(raw) {
		return nil, nil
	}
	var n int64
	if err := json.Unmarshal(raw, &n); err != nil || n < 0 {
		return nil, fmt.Errorf("field %q: want a non-negative integer, got %.40s", key, raw)
	}
	return &n, nil
}

// CheckNative compares the manifest with a file that is not a seed archive
// (a native archive given with a manifest): its checksum, and the counts
// and collection names when the manifest has them.
func (m *SeedManifest) CheckNative(sum string, collections []string, total int64) error {
	colls := make([]collInfo, len(collections))
	for i, n := range collections {
		colls[i].name = n
	}
	cp := *m
	cp.Batches = nil // native batch names are not the seed's
	return cp.check(sum, colls, total, nil)
}
