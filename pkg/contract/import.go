package contract

import "time"

// Import formats: what an imported file was.
const (
	// ImportFormatNative is this project's own archive (a .tar.zst from
	// `snapshot export`).
	ImportFormatNative = "native"
	// ImportFormatSeed is the old Python tool's .tar.gz with collections.json
	// and metadata.json.
	ImportFormatSeed = "seed"
)

// ImportStagingPrefix starts the object name under which a client stages a
// file for chroma.api.snapshot.import. The snapshotter deletes only staging
// objects, so an import request can never remove a snapshot's archive.
const ImportStagingPrefix = "import/"

// ImportOrigin records where an imported snapshot came from.
type ImportOrigin struct {
	// Format is ImportFormatSeed or ImportFormatNative.
	Format string `json:"format"`
	// File is the imported file's base name, as the client gave it.
	File string `json:"file,omitempty"`
	// Size and SHA256 are those of the imported file itself (the stored
	// archive is a new object with its own size and digest).
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// ManifestChecked is true when a seed manifest was given and the file's
	// checksum and counts agreed with it.
	ManifestChecked bool `json:"manifest_checked"`
	// SourceSnapshotID, SourceName, SourceCreatedAt and SourceChromaVersion
	// are what the file (or its seed manifest) said about the original
	// snapshot, when it said it. A seed timestamp without a zone is read
	// as UTC.
	SourceSnapshotID    string     `json:"source_snapshot_id,omitempty"`
	SourceName          string     `json:"source_name,omitempty"`
	SourceCreatedAt     *time.Time `json:"source_created_at,omitempty"`
	SourceChromaVersion string     `json:"source_chroma_version,omitempty"`
	// Warnings are what was accepted but is worth knowing (entries ignored,
	// batches renamed, names sanitized).
	Warnings []string `json:"warnings,omitempty"`
	// Encryption is the imported file's: EncryptionAge for a native
	// archive encrypted with age (Size and SHA256 are the ciphertext's),
	// which the snapshotter decrypted with its identity.
	Encryption string `json:"encryption,omitempty"`
}
