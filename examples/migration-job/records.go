package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	chromago "github.com/amikos-tech/chroma-go/pkg/api/v2"
	"github.com/amikos-tech/chroma-go/pkg/embeddings"
)

// page is one page of records as the job reads them through chroma-go.
type page struct {
	IDs        []string
	Documents  []*string // nil: the record has no document
	Metadatas  []map[string]any
	Embeddings [][]float32
}

func (p *page) Len() int { return len(p.IDs) }

// nullDocumentError is how chroma-go v0.4.0 fails a whole get result when a
// single record has a null document.
const nullDocumentError = "invalid document type"

// readPage reads limit records from offset, in Chroma's get order
// (insertion order), with documents, metadata and embeddings.
//
// chroma-go v0.4.0 cannot decode a result in which any record has a null
// document, so a page that fails that way is read again in two requests:
// the records without documents, then the documents of those ids that have
// one, selected with where_document {"$contains": ""} (on Chroma 1.0 it
// matches every record whose document is not null, "" included). Records
// the second request does not return have a null document.
func readPage(ctx context.Context, col chromago.Collection, offset, limit int) (*page, error) {
	res, err := col.Get(ctx, chromago.WithOffset(offset), chromago.WithLimit(limit),
		chromago.WithInclude(chromago.IncludeDocuments, chromago.IncludeMetadatas, chromago.IncludeEmbeddings))
	if err == nil {
		p, err := fromResult(res, true)
		if err != nil {
			return nil, fmt.Errorf("get %s at %d: %w", col.Name(), offset, err)
		}
		return p, nil
	}
	if !strings.Contains(err.Error(), nullDocumentError) {
		return nil, fmt.Errorf("get %s at %d: %w", col.Name(), offset, err)
	}
	res, err = col.Get(ctx, chromago.WithOffset(offset), chromago.WithLimit(limit),
		chromago.WithInclude(chromago.IncludeMetadatas, chromago.IncludeEmbeddings))
	if err != nil {
		return nil, fmt.Errorf("get %s at %d without documents: %w", col.Name(), offset, err)
	}
	p, err := fromResult(res, false)
	if err != nil || p.Len() == 0 {
		return p, err
	}
	docs, err := col.Get(ctx, chromago.WithIDs(docIDs(p.IDs)...), chromago.WithWhereDocument(chromago.Contains("")),
		chromago.WithInclude(chromago.IncludeDocuments))
	if err != nil {
		return nil, fmt.Errorf("get the documents of %s at %d: %w", col.Name(), offset, err)
	}
	byID := make(map[string]string, docs.Count())
	for i, id := range docs.GetIDs() {
		byID[string(id)] = docs.GetDocuments()[i].ContentString()
	}
	for i, id := range p.IDs {
		if d, ok := byID[id]; ok {
			p.Documents[i] = &d
		}
	}
	return p, nil
}

// fromResult converts a chroma-go result; documents are taken only when
// withDocs (otherwise they stay nil for the caller to fill).
func fromResult(res chromago.GetResult, withDocs bool) (*page, error) {
	n := res.Count()
	p := &page{
		IDs:        make([]string, n),
		Documents:  make([]*string, n),
		Metadatas:  make([]map[string]any, n),
		Embeddings: make([][]float32, n),
	}
	docs, metas, embs := res.GetDocuments(), res.GetMetadatas(), res.GetEmbeddings()
	if (withDocs && len(docs) != n) || len(metas) != n || len(embs) != n {
		return nil, fmt.Errorf("result of %d ids has %d documents, %d metadatas, %d embeddings", n, len(docs), len(metas), len(embs))
	}
	for i, id := range res.GetIDs() {
		p.IDs[i] = string(id)
		if withDocs {
			d := docs[i].ContentString()
			p.Documents[i] = &d
		}
		m, err := metadataValues(metas[i])
		if err != nil {
			return nil, fmt.Errorf("record %q: %w", id, err)
		}
		p.Metadatas[i] = m
		if embs[i] != nil {
			p.Embeddings[i] = embs[i].ContentAsFloat32()
		}
	}
	return p, nil
}

// metadataValues turns chroma-go's metadata into plain typed values
// (string, int64, float64, bool, or slices of them).
func metadataValues(m chromago.DocumentMetadata) (map[string]any, error) {
	if m == nil {
		return nil, nil
	}
	keyed, ok := m.(interface{ Keys() []string })
	if !ok {
		return nil, fmt.Errorf("metadata of type %T cannot list its keys", m)
	}
	out := map[string]any{}
	for _, k := range keyed.Keys() {
		raw, _ := m.GetRaw(k)
		if mv, ok := raw.(chromago.MetadataValue); ok {
			raw, _ = mv.GetRaw()
		}
		switch raw.(type) {
		case string, int64, float64, bool, []string, []int64, []float64, []bool:
		default:
			return nil, fmt.Errorf("metadata %q has a value of type %T", k, raw)
		}
		out[k] = raw
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// exactMetadata is a chroma-go DocumentMetadata that writes its values
// exactly. chroma-go v0.4.0 writes record metadata floats with 15 decimals
// ("%.15f"): 0.5180714504553056 would be stored as 0.518071450455306 and
// -1e-300 as 0. Here floats keep every digit and stay floats (1.0 is sent
// as 1.0, not 1), ints stay ints.
type exactMetadata struct {
	chromago.DocumentMetadata // chroma-go's view of the same values
	values                    map[string]any
}

var _ chromago.DocumentMetadata = exactMetadata{}

func newExactMetadata(values map[string]any) (exactMetadata, error) {
	m, err := chromago.NewDocumentMetadataFromMap(values)
	if err != nil {
		return exactMetadata{}, err
	}
	return exactMetadata{DocumentMetadata: m, values: values}, nil
}

// MarshalJSON encodes the values exactly.
func (m exactMetadata) MarshalJSON() ([]byte, error) {
	return marshalExact(m.values)
}

// exactCollectionMetadata does the same for collection metadata.
type exactCollectionMetadata struct {
	chromago.CollectionMetadata
	values map[string]any
}

// MarshalJSON encodes the values exactly.
func (m exactCollectionMetadata) MarshalJSON() ([]byte, error) {
	return marshalExact(m.values)
}

func marshalExact(values map[string]any) ([]byte, error) {
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		b.Write(kb)
		b.WriteByte(':')
		if err := writeExact(&b, values[k]); err != nil {
			return nil, fmt.Errorf("metadata %q: %w", k, err)
		}
	}
	b.WriteByte('}')
	return []byte(b.String()), nil
}

func writeExact(b *strings.Builder, v any) error {
	switch x := v.(type) {
	case float64:
		s, err := formatFloat(x)
		if err != nil {
			return err
		}
		b.WriteString(s)
	case []float64:
		b.WriteByte('[')
		for i, f := range x {
			if i > 0 {
				b.WriteByte(',')
			}
			s, err := formatFloat(f)
			if err != nil {
				return err
			}
			b.WriteString(s)
		}
		b.WriteByte(']')
	default:
		data, err := json.Marshal(x)
		if err != nil {
			return err
		}
		b.Write(data)
	}
	return nil
}

// formatFloat writes the shortest text that parses back to f, always
// recognisable as a float.
func formatFloat(f float64) (string, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "", fmt.Errorf("%v cannot be sent as JSON", f)
	}
	s := strconv.FormatFloat(f, 'g', -1, 64)
	if !strings.ContainsAny(s, ".eE") {
		s += ".0"
	}
	return s, nil
}

// noopEmbeddingFunction never embeds: the job always sends the embeddings
// it read. Giving chroma-go an embedding function also keeps it from
// building its default one (which downloads an ONNX runtime).
type noopEmbeddingFunction struct{}

var _ embeddings.EmbeddingFunction = noopEmbeddingFunction{}

var errNoEmbedding = fmt.Errorf("the migration job does not compute embeddings: every write carries the embeddings it read")

func (noopEmbeddingFunction) EmbedDocuments(context.Context, []string) ([]embeddings.Embedding, error) {
	return nil, errNoEmbedding
}

func (noopEmbeddingFunction) EmbedQuery(context.Context, string) (embeddings.Embedding, error) {
	return nil, errNoEmbedding
}

func (noopEmbeddingFunction) Name() string                                  { return "noop" }
func (noopEmbeddingFunction) GetConfig() embeddings.EmbeddingFunctionConfig { return nil }
func (noopEmbeddingFunction) DefaultSpace() embeddings.DistanceMetric       { return embeddings.L2 }
func (noopEmbeddingFunction) SupportedSpaces() []embeddings.DistanceMetric {
	return []embeddings.DistanceMetric{embeddings.L2, embeddings.COSINE, embeddings.IP}
}
