package archive

// Default limits; see Limits.
const (
	DefaultMaxEntrySize   = 512 << 20
	DefaultMaxCollections = 100_000
	DefaultMaxBatches     = 1 << 20
	DefaultMaxWindowSize  = 32 << 20
)

// Limits bound what a Reader accepts, so a hostile or damaged archive cannot
// make it allocate without bound. A zero field takes its default. Writer
// enforces the defaults, so it never writes an archive a default Reader
// rejects.
type Limits struct {
	// MaxEntrySize caps the uncompressed size of any one entry.
	MaxEntrySize int64
	// MaxCollections caps the number of collections in metadata.json.
	MaxCollections int
	// MaxBatches caps the number of batches in the whole archive; the
	// reader keeps a few dozen bytes per batch until the manifest.
	MaxBatches int
	// MaxWindowSize caps the zstd window (decoder memory). Writer uses a
	// 1 MiB window; archives written before 2026-11-28 used 4 MiB.
	MaxWindowSize uint64
}

func (l Limits) withDefaults() Limits {
	if l.MaxEntrySize <= 0 {
		l.MaxEntrySize = DefaultMaxEntrySize
	}
	if l.MaxCollections <= 0 {
		l.MaxCollections = DefaultMaxCollections
	}
	if l.MaxBatches <= 0 {
		l.MaxBatches = DefaultMaxBatches
	}
	if l.MaxWindowSize == 0 {
		l.MaxWindowSize = DefaultMaxWindowSize
	}
	return l
}
