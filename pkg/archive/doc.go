// Package archive reads and writes the chromadb-rollback native snapshot
// archive, format "chromadb-rollback.v1.archive".
//
// # Layout
//
// An archive is one zstd stream (fastest level, frame checksum on) holding
// one tar stream. Its entries come in a fixed order:
//
//	metadata.json                         Metadata: snapshot, Chroma version, tenant,
//	                                      database and every collection with its
//	                                      metadata, configuration, dimension and
//	                                      expected count
//	collections/0000/batch_000000.json    ids, documents, metadatas, uris, the
//	                                      embedding dimension and the indices of
//	                                      null embeddings, as JSON
//	collections/0000/batch_000000.f32     the non-null embeddings of that batch,
//	                                      concatenated little-endian float32
//	collections/0000/batch_000001.json    ...
//	collections/0002/batch_000000.json    (collection 1 was empty: no batches)
//	...
//	manifest.json                         Manifest: size and SHA-256 of every entry
//	                                      above, and per collection its record
//	                                      count, batch names and content digest
//
// Collections appear in metadata order and their batches in Chroma's get
// order; batch names are numbered from zero per collection. Embeddings are
// stored bit-exact as float32, never as decimal text. Metadata integers stay
// int64 and floats stay float64 (see package record). A column that was
// absent from a batch is JSON null and reads back as a nil column; a present
// column keeps its null entries, so a null document and "" stay distinct.
//
// The content digest is record.Digest over a collection's records in order,
// so it does not depend on how the records were batched, and a restore can
// compare it with what it reads back from Chroma.
//
// # Writing
//
// Writer streams: it holds one encoded batch at a time, never the snapshot,
// and needs no temporary file. The tar format needs each entry's size before
// its bytes, which is why a batch is encoded in memory before it is written.
//
// # Partial writes
//
// The manifest is written last, by Writer.Close. An archive whose writer
// failed or was never closed (the process died, the upload broke) ends
// without manifest.json, or in the middle of an entry or zstd block; Reader
// reports it as ErrTruncated (or ErrCorrupt when the cut lands so that the
// bytes no longer parse) and never as valid. Nothing needs to be cleaned up
// inside the stream itself; whoever stored the bytes deletes the object.
//
// # Reading and verification
//
// Reader streams too. Every batch it returns has passed the structural checks
// (names, order, sizes, column lengths) but is otherwise unverified: entry
// checksums and content digests are compared with the manifest, which comes
// last, only once Next reaches the end. Next returns io.EOF only when all of
// it matched; a consumer that must not act on bad data (a restore) either
// verifies first with Verify or writes into a staging area it discards when
// Next fails. Errors match ErrChecksumMismatch, ErrTruncated, ErrCorrupt or
// ErrFormat with errors.Is; I/O errors of the underlying reader are returned
// wrapped but unclassified.
//
// Reader treats its input as hostile: entry sizes, the number of collections
// and batches and the zstd window are capped (see Limits), and no buffer is
// sized from a length in the input beyond what the input actually delivered.
package archive
