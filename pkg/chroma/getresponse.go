package chroma

import (
	"bytes"
	"encoding/json"
	"fmt"

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
	p := rowParser{data: data}
	p.space()
	if p.literal("null") {
		return p.end()
	}
	if !p.consume('{') {
		return p.fail("a JSON object")
	}
	p.space()
	if p.consume('}') {
		return p.end()
	}
	for {
		p.space()
		end, ok := skipString(data, p.i)
		if !ok {
			return p.fail("a member name")
		}
		var key string
		if err := json.Unmarshal(data[p.i:end], &key); err != nil {
			return fmt.Errorf("member name at byte %d: %w", p.i, err)
		}
		p.i = end
		p.space()
		if !p.consume(':') {
			return p.fail("':' after a member name")
		}
		p.space()
		if err := resp.member(&p, key); err != nil {
			return err
		}
		p.space()
		if p.consume('}') {
			return p.end()
		}
		if !p.consume(',') {
			return p.fail("',' or '}' between members")
		}
	}
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
	start := p.i
	end, ok := skipValue(p.data, start)
	if !ok {
		return p.fail("a JSON value")
	}
	p.i = end
	v := p.data[start:end]
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

// skipString returns the end of the JSON string starting at i. Its
// content is checked by whoever decodes it.
func skipString(data []byte, i int) (int, bool) {
	if i >= len(data) || data[i] != '"' {
		return 0, false
	}
	for i++; i < len(data); i++ {
		switch data[i] {
		case '\\':
			i++
		case '"':
			return i + 1, true
		}
	}
	return 0, false
}

// skipValue returns the end of the JSON value starting at i: a string, an
// object or array (brackets counted outside strings), or a literal or
// number (up to a delimiter). The value is checked by whoever decodes it.
func skipValue(data []byte, i int) (int, bool) {
	if i >= len(data) {
		return 0, false
	}
	switch data[i] {
	case '"':
		return skipString(data, i)
	case '{', '[':
		depth := 0
		for i < len(data) {
			switch data[i] {
			case '"':
				end, ok := skipString(data, i)
				if !ok {
					return 0, false
				}
				i = end
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, true
				}
			}
			i++
		}
		return 0, false
	}
	start := i
	for i < len(data) {
		switch data[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return i, i > start
		}
		i++
	}
	return i, i > start
}
