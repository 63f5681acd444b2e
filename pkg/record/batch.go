package record

import "fmt"

// Batch is a run of records in columns, as Chroma's get and add endpoints
// exchange them. Index i of every non-nil column belongs to IDs[i]. A nil
// embedding, document or URI is a null (distinct from an empty string).
type Batch struct {
	IDs        []string
	Embeddings [][]float32
	Documents  []*string
	Metadatas  []Metadata
	URIs       []*string
}

// Len is the number of records in b.
func (b *Batch) Len() int { return len(b.IDs) }

// Validate checks that every non-nil column has one entry per id.
func (b *Batch) Validate() error {
	n := len(b.IDs)
	check := func(name string, l int, present bool) error {
		if present && l != n {
			return fmt.Errorf("batch: %d ids but %d %s", n, l, name)
		}
		return nil
	}
	for _, c := range []struct {
		name    string
		l       int
		present bool
	}{
		{"embeddings", len(b.Embeddings), b.Embeddings != nil},
		{"documents", len(b.Documents), b.Documents != nil},
		{"metadatas", len(b.Metadatas), b.Metadatas != nil},
		{"uris", len(b.URIs), b.URIs != nil},
	} {
		if err := check(c.name, c.l, c.present); err != nil {
			return err
		}
	}
	return nil
}

// Slice returns records [i, j) of b, sharing memory with b.
func (b *Batch) Slice(i, j int) *Batch {
	out := &Batch{IDs: b.IDs[i:j]}
	if b.Embeddings != nil {
		out.Embeddings = b.Embeddings[i:j]
	}
	if b.Documents != nil {
		out.Documents = b.Documents[i:j]
	}
	if b.Metadatas != nil {
		out.Metadatas = b.Metadatas[i:j]
	}
	if b.URIs != nil {
		out.URIs = b.URIs[i:j]
	}
	return out
}
