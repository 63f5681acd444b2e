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
	p := rowParser{Scanner: jsonx.Scanner{Data: data, What: "embeddings"}}
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
	if equalFold(key, "embeddings") {
		rows, err := p.rows()
		if err != nil {
			return err
		}
		r.Embeddings = rows
		return nil
	}
	start := p.I
	if !p.SkipValue() {
		return p.Fail("a JSON value")
	}
	v := p.Data[start:p.I]
	var err error
	switch {
	case equalFold(key, "ids"):
		err = json.Unmarshal(v, &r.IDs)
	case equalFold(key, "documents"):
		err = json.Unmarshal(v, &r.Documents)
	case equalFold(key, "uris"):
		err = json.Unmarshal(v, &r.URIs)
	case equalFold(key, "metadatas"):
		err = json.Unmarshal(v, &r.Metadatas)
	default:
		if !json.Valid(v) {
			err = fmt.Errorf("invalid JSON")
		}
	}
	if err != nil {
		return fmt.Errorf("get answer member %q: %w", key, err)
	}
	return nil
}

func equalFold(key, name string) bool { return bytes.EqualFold([]byte(key), []byte(name)) }
