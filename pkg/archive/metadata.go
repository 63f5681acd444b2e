package archive

import (
	"encoding/json"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
)

// FormatV1 is the format string of this archive version, in metadata.json
// and manifest.json.
const FormatV1 = "chromadb-rollback.v1.archive"

// Metadata is metadata.json, the first entry: what the snapshot is of.
type Metadata struct {
	// Format is FormatV1; NewWriter fills it in when empty.
	Format     string `json:"format"`
	SnapshotID string `json:"snapshot_id"`
	Name       string `json:"name"`
	// CreatedAt is written in UTC (RFC 3339).
	CreatedAt     time.Time        `json:"created_at"`
	ChromaVersion string           `json:"chroma_version"`
	Tenant        string           `json:"tenant"`
	Database      string           `json:"database"`
	Collections   []CollectionInfo `json:"collections"`
}

// CollectionInfo describes one collection of the snapshot as Chroma
// reported it when the snapshot started.
type CollectionInfo struct {
	// Index is the collection's position in Metadata.Collections, which
	// names its directory (collections/0000). NewWriter sets it.
	Index    int             `json:"index"`
	ID       string          `json:"id"`
	Name     string          `json:"name"`
	Metadata record.Metadata `json:"metadata"`
	// Configuration is Chroma's collection configuration, kept verbatim.
	Configuration json.RawMessage `json:"configuration"`
	// Dimension is nil when Chroma did not know it (no records yet).
	Dimension *int `json:"dimension"`
	// ExpectedCount is Chroma's count when the snapshot started; the
	// archived count may differ if the collection changed meanwhile.
	ExpectedCount int64 `json:"expected_count"`
}
