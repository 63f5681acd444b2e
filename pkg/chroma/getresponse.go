package chroma

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/internal/jsonx"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
)

// getResponse is a get answer's columns.
type getResponse struct {
	IDs        []string
	Embeddings [][]float32
	Documents  []*string
	URIs       []*string
	Metadatas  []record.Metadata
}

// decodeGetObject decodes a get answer in one pass over its bytes. The
// embeddings, most of a page (about 11 bytes of decimal text per float),
// are parsed in place by rowParser, which checks JSON's number grammar
// itself; every other member is small and goes through encoding/json,
// which validates it. json.Unmarshal of the whole answer would scan the
// embeddings three times: to validate the document, to find the end of
// the member, and to parse it.
//
// Members are matched to fields as encoding/json matches them (the last
// of duplicate keys wins, case-insensitively); unknown members must still
// be valid JSON. Anything but one object (or null) with only whitespace
// around it is refused.
func decodeGetObject(data []byte, resp *getResponse) error {
	p := rowParser{Scanner: jsonx.Scanner{Data: data, What: "get answer"}}
	p.Space()
	if p.Literal("null") {
		return p.End()
	}
	err := p.Object(func(key string) error { return resp.member(&p, key) })
	if err != nil {
		return err
	}
	return p.End()
}

// member decodes the value at p into the field key names, if any.
func (r *getResponse) member(p *rowParser, key string) error {
	var err error
	switch {
	case equalFold(key, "embeddings"):
		p.What = "embeddings"
		r.Embeddings, err = p.rows()
		p.What = "get answer"
		return err
	case equalFold(key, "ids"):
		r.IDs, err = p.Strings()
	case equalFold(key, "documents"):
		r.Documents, err = p.NullableStrings()
	case equalFold(key, "uris"):
		r.URIs, err = p.NullableStrings()
	case equalFold(key, "metadatas"):
		p.What = "metadata"
		r.Metadatas, err = jsonx.ScalarObjects[record.Metadata](&p.Scanner)
		p.What = "get answer"
	default:
		start := p.I
		if !p.SkipValue() {
			return p.Fail("a JSON value")
		}
		if !json.Valid(p.Data[start:p.I]) {
			err = fmt.Errorf("invalid JSON")
		}
	}
	if err != nil {
		return fmt.Errorf("get answer member %q: %w", key, err)
	}
	return nil
}

func equalFold(key, name string) bool { return bytes.EqualFold([]byte(key), []byte(name)) }
