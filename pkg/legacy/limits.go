package legacy

import "github.com/chromadb-rollback/chromadb-rollback/pkg/archive"

// Default limits; see Limits.
const (
	DefaultMaxInputBytes        = 64 << 30
	DefaultMaxUncompressedBytes = 64 << 30
	DefaultMaxRatio             = 200
	DefaultRatioAfter           = 64 << 20
	DefaultMaxMetadataBytes     = 1 << 20
	DefaultMaxBatchBytes        = 256 << 20
	DefaultMaxEntries           = 10_000
)

// Limits bound what the converter reads, so that a hostile or damaged file
// cannot make it run or allocate without bound. A zero field takes its
// default.
type Limits struct {
	// MaxInputBytes caps the compressed input (the .tar.gz itself).
	MaxInputBytes int64
	// MaxUncompressedBytes caps the whole decompressed tar stream, every
	// entry included: the hard bound against decompression bombs.
	MaxUncompressedBytes int64
	// MaxRatio caps decompressed bytes per compressed byte once more than
	// RatioAfter bytes were decompressed, so that a bomb is stopped early.
	// Seed archives (JSON with decimal floats) compress 3-10x.
	MaxRatio   int64
	RatioAfter int64
	// MaxMetadataBytes caps metadata.json, which is read whole.
	MaxMetadataBytes int64
	// MaxBatchBytes caps the JSON text of one seed batch: one batch is held
	// in memory at a time, and so is one record while it is decoded.
	MaxBatchBytes int64
	// MaxEntries caps the number of tar entries.
	MaxEntries int
	// MaxCollections caps the collections of collections.json.
	MaxCollections int
}

func (l Limits) withDefaults() Limits {
	if l.MaxInputBytes <= 0 {
		l.MaxInputBytes = DefaultMaxInputBytes
	}
	if l.MaxUncompressedBytes <= 0 {
		l.MaxUncompressedBytes = DefaultMaxUncompressedBytes
	}
	if l.MaxRatio <= 0 {
		l.MaxRatio = DefaultMaxRatio
	}
	if l.RatioAfter <= 0 {
		l.RatioAfter = DefaultRatioAfter
	}
	if l.MaxMetadataBytes <= 0 {
		l.MaxMetadataBytes = DefaultMaxMetadataBytes
	}
	if l.MaxBatchBytes <= 0 {
		l.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultMaxEntries
	}
	if l.MaxCollections <= 0 {
		l.MaxCollections = archive.DefaultMaxCollections
	}
	return l
}
