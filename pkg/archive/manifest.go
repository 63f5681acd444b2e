package archive

// Manifest is manifest.json, the last entry: what the archive must contain.
type Manifest struct {
	Format string `json:"format"`
	// Entries lists every entry before manifest.json, in order.
	Entries []ManifestEntry `json:"entries"`
	// Collections has one element per collection of the metadata, in order.
	Collections  []ManifestCollection `json:"collections"`
	TotalRecords int64                `json:"total_records"`
}

// ManifestEntry is one tar entry: its name, uncompressed size and the hex
// SHA-256 of its uncompressed bytes.
type ManifestEntry struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// ManifestCollection is what was archived of one collection.
type ManifestCollection struct {
	Index int    `json:"index"`
	ID    string `json:"id"`
	Name  string `json:"name"`
	// Count is the number of records archived.
	Count int64 `json:"count"`
	// Batches are the batch names in order ("batch_000000", ...).
	Batches []string `json:"batches"`
	// BatchRecords says what each of Batches holds, in the same order.
	// Only Writer.Close fills it, from the batches as they were written:
	// it is not part of manifest.json (v1 readers refuse fields they do
	// not know), so a Reader's manifest has none.
	BatchRecords []BatchRecords `json:"-"`
	// ContentDigest is record.Digest's Sum over the records in order.
	ContentDigest string `json:"content_digest"`
}

// BatchRecords is what one batch holds: its number of records and the ids
// of its first and last record, in the order they were written (Chroma's
// get order, which is insertion order).
type BatchRecords struct {
	Count   int
	FirstID string
	LastID  string
}
