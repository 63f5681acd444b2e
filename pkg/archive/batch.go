package archive

import "github.com/chromadb-rollback/chromadb-rollback/pkg/record"

// Batch is one batch read from an archive.
type Batch struct {
	// Collection is the index into Metadata.Collections.
	Collection int
	// Name is the batch name, "batch_000000" and so on.
	Name    string
	Records *record.Batch
}
