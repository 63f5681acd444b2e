package legacy

import "errors"

// Error classes. Every error of this package that is about the input wraps
// one of these, with the entry, collection, batch and record concerned;
// match them with errors.Is. Errors reading the underlying source (network,
// disk) are returned wrapped but unclassified.
var (
	// ErrNotSeed means the input is not a gzip-compressed tar at all (it may
	// be a native archive, a plain tar, a zip, a JSON file...).
	ErrNotSeed = errors.New("legacy: not a seed archive")
	// ErrInvalid means the input is a gzip tar but not a valid seed archive:
	// a missing or duplicated collections.json, a path trick, a corrupt
	// stream, wrong JSON types, duplicate ids, counts that disagree with
	// metadata.json, and so on.
	ErrInvalid = errors.New("legacy: invalid seed archive")
	// ErrManifest means the archive does not match the seed manifest given
	// with it (checksum, counts, names), or the manifest itself is unusable.
	ErrManifest = errors.New("legacy: archive does not match its manifest")
	// ErrTooLarge means a limit was exceeded (see Limits): an oversized
	// entry or batch, too many entries, or a decompression bomb.
	ErrTooLarge = errors.New("legacy: limit exceeded")
)
