// Package legacy converts archives of the seed tool (the old Python
// chromadb_snapshot.py) into native archives (package archive), streaming,
// so that users of the old tool keep their snapshots.
//
// # The seed format
//
// A seed archive is a gzip-compressed tar holding two JSON files:
//
//	collections.json  {"<collection>": {"batch_000000": [{"id": "...", "text": "...",
//	                   "embedding": [0.1, ...], "metadata": {...}}, ...], ...}, ...}
//	metadata.json     {"chromadb_version": "0.3.21", "snapshot_timestamp": "2025-11-30T14:30:22",
//	                   "collections_count": 4, "total_chunks": 9832}
//
// and a manifest JSON kept beside it (manifests/<snapshot>.json) with the
// archive's SHA-256; see SeedManifest for the fields read.
//
// # Liberal about layout
//
//   - collections.json and metadata.json may sit at the root of the tar, under
//     "./", or under any directory prefix (tarfile.add(dir, arcname=...) writes
//     "snapshot_20251130_143022/collections.json"; without arcname the full path
//     minus its leading "/"), in either order, with or without directory entries.
//   - metadata.json beside collections.json is used; if it is elsewhere and the
//     only one, it is used with a warning; if it is missing, the counts are not
//     checked and a warning says so.
//   - Other entries (logs, a copy of the manifest) are ignored with a warning.
//   - ustar, PAX and GNU tars; multi-member gzip; zero padding after the tar's
//     end (tar pads to 10 KiB records).
//   - JSON with or without indentation, ASCII-escaped or raw UTF-8; a record's
//     fields in any order; "document" for "text"; an optional "uri"; missing
//     text, embedding or metadata are null.
//   - Any distinct batch names, in document order: non-empty batches become the
//     native batch_000000, batch_000001, ... in that order (the seed tool's own
//     names are exactly these, so they are kept); empty batches are skipped.
//     A renaming is reported as a warning.
//   - The seed manifest's checksum under several names (see SeedManifest).
//
// # Strict about content
//
// Refused, with an error naming the entry, collection, batch and record:
// input that is not gzip or holds no tar (ErrNotSeed); no collections.json,
// two of them, an entry name with ".." or an absolute path, a link named
// collections.json or metadata.json, a corrupt or truncated stream, data after
// the tar, malformed JSON or invalid UTF-8, a record that is not an object,
// an unknown record field or one given twice, an id that is not a string, an
// id twice in one collection, text that is not a string or null, an
// embedding that is not a list of numbers within float32 range (NaN and
// Infinity included), an empty embedding, embeddings of different
// dimensions in one collection, metadata values that are null, objects or
// lists, integers beyond int64, counts in metadata.json that differ from
// collections.json (ErrInvalid); a manifest whose checksum, counts or names
// differ from the archive (ErrManifest); anything beyond Limits: file size,
// decompressed size, compression ratio, entries, one batch's size
// (ErrTooLarge).
//
// # Exactness
//
// Embeddings are parsed straight to float32 (never through float64), so the
// decimal text Python wrote for a float32 value gives back that value bit
// for bit. Metadata integers stay int64 and numbers with a fraction or
// exponent float64; "text" becomes the document, null staying null and ""
// staying "". An empty metadata object becomes null, which is what Chroma
// stores and returns for it. Escaped lone surrogates (Python writes them for
// strings that are not valid Unicode) decode as U+FFFD, like every JSON
// decoder in Go.
//
// # What is synthesized
//
// The seed format has no tenant, database, collection ids, collection
// metadata or configuration. The native archive gets the tenant and database
// from Options (default_tenant and default_database by default), a
// deterministic synthetic collection id (SyntheticCollectionID), nil
// collection metadata, a null configuration (a restore creates the
// collection with Chroma's defaults), the dimension found in the data and
// the record count as expected count.
//
// # Streaming and memory
//
// Convert reads the input twice (see Convert); it holds one seed batch at a
// time, the native writer's encoding of it, and per collection a 16-byte
// hash of every id (to refuse duplicates). Writing seed archives for tests:
// WriteSeedArchive, BuildSeedArchive and SeedManifestJSON.
package legacy
