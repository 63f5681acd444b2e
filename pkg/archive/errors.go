package archive

import "errors"

// Error classes. Errors returned by this package wrap one of these with the
// entry concerned and what differed; match them with errors.Is.
var (
	// ErrChecksumMismatch means an entry's SHA-256 or a collection's
	// content digest differs from the manifest.
	ErrChecksumMismatch = errors.New("archive: checksum mismatch")
	// ErrTruncated means the stream ended early: inside the zstd or tar
	// stream, inside an entry, or before manifest.json.
	ErrTruncated = errors.New("archive: truncated")
	// ErrCorrupt means the bytes do not form a valid archive: bad
	// compression, bad tar or JSON, an unknown, missing, extra or reordered
	// entry, or counts and shapes that disagree.
	ErrCorrupt = errors.New("archive: corrupt")
	// ErrFormat means the input is not this format or version (including
	// input that is not zstd at all, such as the seed's .tar.gz archives).
	ErrFormat = errors.New("archive: unknown format")
)
