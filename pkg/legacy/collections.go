package legacy

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
)

// maxBatchName bounds a seed batch name.
const maxBatchName = 256

// sink receives collections.json as it is parsed: a collection, its batches
// in order (empty ones included), the end of the collection.
type sink interface {
	startCollection(name string) error
	batch(name string, b *record.Batch) error
	endCollection(dim *int) error
}

// parser reads collections.json token by token, holding one batch.
//
//	{"<collection>": {"<batch>": [{"id": ..., "text": ..., "embedding": [...], "metadata": {...}}, ...], ...}, ...}
type parser struct {
	dec      *json.Decoder
	budget   *budgetReader
	lim      Limits
	checkIDs bool
	sink     sink

	coll, batchName string
}

func parseCollections(r io.Reader, lim Limits, checkIDs bool, s sink) error {
	p := &parser{lim: lim, checkIDs: checkIDs, sink: s}
	p.budget = &budgetReader{r: &squeezeReader{r: &utf8Reader{r: r}}, limit: lim.MaxBatchBytes, what: p.overBudget}
	p.dec = json.NewDecoder(p.budget)
	return p.run()
}

func (p *parser) overBudget() string {
	if p.batchName == "" {
		return fmt.Sprintf("collections.json: more than %d bytes outside any batch", p.lim.MaxBatchBytes)
	}
	return fmt.Sprintf("collection %q, batch %q: more than %d bytes of JSON in one batch (the limit)", p.coll, p.batchName, p.lim.MaxBatchBytes)
}

// invalid wraps a content error with where it is.
func (p *parser) invalid(format string, args ...any) error {
	where := "collections.json"
	if p.coll != "" {
		where += fmt.Sprintf(": collection %q", p.coll)
	}
	if p.batchName != "" {
		where += fmt.Sprintf(", batch %q", p.batchName)
	}
	return fmt.Errorf("%w: %s: %s", ErrInvalid, where, fmt.Sprintf(format, args...))
}

// syntax classifies a decoder error: limits and source errors pass through,
// the rest is invalid JSON.
func (p *parser) syntax(what string, err error) error {
	if errors.Is(err, ErrTooLarge) || errors.Is(err, ErrInvalid) {
		return err
	}
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		hint := ""
		if bytes.Contains([]byte(se.Error()), []byte("'N'")) || bytes.Contains([]byte(se.Error()), []byte("'I'")) {
			hint = " (NaN and Infinity are not JSON, and Chroma cannot store them)"
		}
		return p.invalid("%s: malformed JSON at byte %d: %v%s", what, se.Offset, err, hint)
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return p.invalid("%s: the JSON ends early (truncated file?)", what)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return p.invalid("%s: %v", what, err)
	}
	return err // the tar or gzip layer below: classified by the caller
}

func (p *parser) token(what string) (json.Token, error) {
	tok, err := p.dec.Token()
	if err != nil {
		return nil, p.syntax(what, err)
	}
	return tok, nil
}

func (p *parser) delim(want json.Delim, what string) error {
	tok, err := p.token(what)
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return p.invalid("%s: want %q, got %s", what, string(want), describe(tok))
	}
	return nil
}

func describe(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		switch v {
		case '{':
			return "an object"
		case '[':
			return "a list"
		}
		return fmt.Sprintf("%q", string(v))
	case string:
		return fmt.Sprintf("the string %.40q", v)
	case float64, json.Number:
		return fmt.Sprintf("the number %v", v)
	case bool:
		return fmt.Sprintf("%v", v)
	case nil:
		return "null"
	}
	return fmt.Sprintf("%v", tok)
}

func (p *parser) run() error {
	if err := p.delim('{', "top level (an object of collections)"); err != nil {
		return err
	}
	seen := map[string]bool{}
	for p.dec.More() {
		tok, err := p.token("collection name")
		if err != nil {
			return err
		}
		name := tok.(string) // object keys are strings
		if err := contract.ValidateChromaName("collection name", name); err != nil {
			return p.invalid("%v", err)
		}
		if seen[name] {
			return p.invalid("collection %q appears twice", name)
		}
		if len(seen) >= p.lim.MaxCollections {
			return fmt.Errorf("%w: collections.json: more than %d collections", ErrTooLarge, p.lim.MaxCollections)
		}
		seen[name] = true
		p.coll = name
		if err := p.collection(); err != nil {
			return err
		}
		p.coll = ""
	}
	if err := p.delim('}', "end of the top level"); err != nil {
		return err
	}
	if tok, err := p.dec.Token(); err != io.EOF {
		if err != nil {
			return p.syntax("after the top-level object", err)
		}
		return p.invalid("data after the top-level object: %s", describe(tok))
	}
	return nil
}

func (p *parser) collection() error {
	if err := p.sink.startCollection(p.coll); err != nil {
		return err
	}
	if err := p.delim('{', "value (an object of batches)"); err != nil {
		return err
	}
	seenBatch := map[string]bool{}
	var ids map[[16]byte]struct{}
	if p.checkIDs {
		ids = map[[16]byte]struct{}{}
	}
	var dim *int
	for p.dec.More() {
		tok, err := p.token("batch name")
		if err != nil {
			return err
		}
		name := tok.(string)
		if name == "" || len(name) > maxBatchName {
			return p.invalid("batch name %.40q: want 1 to %d bytes", name, maxBatchName)
		}
		if seenBatch[name] {
			return p.invalid("batch %q appears twice", name)
		}
		seenBatch[name] = true
		p.batchName = name
		// The budget starts at the batch: one batch is held at a time.
		p.budget.limit = p.budget.n + p.lim.MaxBatchBytes
		b, err := p.batch(ids, &dim)
		if err != nil {
			return err
		}
		if err := p.sink.batch(name, b); err != nil {
			return err
		}
		p.batchName = ""
		p.budget.limit = p.budget.n + p.lim.MaxBatchBytes
	}
	if err := p.delim('}', "end of the collection"); err != nil {
		return err
	}
	return p.sink.endCollection(dim)
}

func (p *parser) batch(ids map[[16]byte]struct{}, dim **int) (*record.Batch, error) {
	if err := p.delim('[', "value (a list of records)"); err != nil {
		return nil, err
	}
	b := &record.Batch{IDs: []string{}, Embeddings: [][]float32{}, Documents: []*string{}, Metadatas: []record.Metadata{}}
	var uris []*string
	hasURI := false
	for i := 0; p.dec.More(); i++ {
		rec, err := p.record(i)
		if err != nil {
			return nil, err
		}
		if rec.embedding != nil {
			if len(rec.embedding) == 0 {
				return nil, p.invalid("record %d (id %q): empty embedding", i, rec.id)
			}
			if *dim == nil {
				d := len(rec.embedding)
				*dim = &d
			} else if len(rec.embedding) != **dim {
				return nil, p.invalid("record %d (id %q): embedding has %d dimensions, earlier records %d (a collection has one dimension)", i, rec.id, len(rec.embedding), **dim)
			}
		}
		if ids != nil {
			key := idKey(rec.id)
			if _, dup := ids[key]; dup {
				return nil, p.invalid("record %d: id %q appears twice in the collection", i, rec.id)
			}
			ids[key] = struct{}{}
		}
		b.IDs = append(b.IDs, rec.id)
		b.Embeddings = append(b.Embeddings, rec.embedding)
		b.Documents = append(b.Documents, rec.text)
		b.Metadatas = append(b.Metadatas, rec.metadata)
		uris = append(uris, rec.uri)
		hasURI = hasURI || rec.hasURI
	}
	if err := p.delim(']', "end of the batch"); err != nil {
		return nil, err
	}
	if hasURI {
		b.URIs = uris
	}
	return b, nil
}

func idKey(id string) [16]byte {
	s := sha256.Sum256([]byte(id))
	return [16]byte(s[:16])
}

type seedRecord struct {
	id        string
	text      *string
	embedding []float32
	metadata  record.Metadata
	uri       *string
	hasURI    bool
}

// Fields of a record. "document" is accepted for "text", "uri" for
// what Chroma calls a record's URI.
const (
	fID = 1 << iota
	fText
	fEmbedding
	fMetadata
	fURI
)

func (p *parser) record(i int) (*seedRecord, error) {
	what := fmt.Sprintf("record %d", i)
	tok, err := p.token(what)
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, p.invalid("%s: want an object with id, text, embedding and metadata, got %s", what, describe(tok))
	}
	rec := &seedRecord{}
	var seen int
	var rawMeta json.RawMessage
	for p.dec.More() {
		tok, err := p.token(what + " field name")
		if err != nil {
			return nil, err
		}
		key := tok.(string)
		var bit int
		switch key {
		case "id":
			bit = fID
		case "text", "document":
			bit = fText
		case "embedding":
			bit = fEmbedding
		case "metadata":
			bit = fMetadata
		case "uri":
			bit = fURI
		default:
			return nil, p.invalid("%s: unknown field %.60q (a seed record has id, text, embedding and metadata)", what, key)
		}
		if seen&bit != 0 {
			return nil, p.invalid("%s: field %q given twice", what, key)
		}
		seen |= bit
		fieldWhat := fmt.Sprintf("%s field %q", what, key)
		switch bit {
		case fID:
			tok, err := p.token(fieldWhat)
			if err != nil {
				return nil, err
			}
			s, ok := tok.(string)
			if !ok {
				return nil, p.invalid("%s: id must be a string, got %s", what, describe(tok))
			}
			if s == "" {
				return nil, p.invalid("%s: id is empty (Chroma refuses empty ids: no rollback could write it)", what)
			}
			rec.id = s
			what = fmt.Sprintf("record %d (id %q)", i, s)
		case fText, fURI:
			tok, err := p.token(fieldWhat)
			if err != nil {
				return nil, err
			}
			var sp *string
			switch v := tok.(type) {
			case string:
				sp = &v
			case nil:
			default:
				return nil, p.invalid("%s: %s must be a string or null, got %s", what, key, describe(tok))
			}
			if bit == fText {
				rec.text = sp
			} else {
				rec.uri, rec.hasURI = sp, true
			}
		case fEmbedding:
			var e float32List
			if err := p.dec.Decode(&e); err != nil {
				var le listError
				if errors.As(err, &le) {
					return nil, p.invalid("%s: %v", fieldWhat, err)
				}
				return nil, p.syntax(fieldWhat+" (want a list of numbers or null)", err)
			}
			rec.embedding = e
		case fMetadata:
			if err := p.dec.Decode(&rawMeta); err != nil {
				return nil, p.syntax(fieldWhat, err)
			}
		}
	}
	if err := p.delim('}', "end of "+what); err != nil {
		return nil, err
	}
	if seen&fID == 0 {
		return nil, p.invalid("%s: no \"id\"", what)
	}
	if rawMeta != nil {
		md, err := parseMetadata(rawMeta)
		if err != nil {
			return nil, p.invalid("%s: %v", what, err)
		}
		rec.metadata = md
	}
	return rec, nil
}

// parseMetadata decodes a record's metadata exactly: integers as int64,
// numbers with a fraction or exponent as float64, strings and bools. Nested
// objects, lists and null values are refused: Chroma cannot store them. An
// empty object becomes nil, as Chroma returns it.
func parseMetadata(raw json.RawMessage) (record.Metadata, error) {
	raw = bytes.TrimSpace(raw)
	if isNull(raw) {
		return nil, nil
	}
	if !bytes.HasPrefix(raw, []byte("{")) {
		return nil, fmt.Errorf("metadata must be an object or null, got %.40s", raw)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, fmt.Errorf("metadata: %v", err)
	}
	if len(obj) == 0 {
		return nil, nil
	}
	for k, v := range obj {
		v = bytes.TrimSpace(v)
		switch {
		case isNull(v):
			return nil, fmt.Errorf("metadata key %q is null (Chroma metadata values are strings, numbers and booleans)", k)
		case v[0] == '{' || v[0] == '[':
			kind := "an object"
			if v[0] == '[' {
				kind = "a list"
			}
			return nil, fmt.Errorf("metadata key %q holds %s (%.40s); Chroma metadata values are strings, numbers and booleans, never nested", k, kind, v)
		}
		if !utf8.ValidString(k) {
			return nil, fmt.Errorf("metadata key %q is not valid UTF-8", k)
		}
		if strings.HasPrefix(k, "chroma:") {
			// Chroma takes chroma:document as the document and drops the
			// other chroma:* keys: no rollback could restore the record.
			return nil, fmt.Errorf("metadata key %q: keys starting with \"chroma:\" are reserved by Chroma, which would not store it", k)
		}
	}
	var md record.Metadata
	if err := md.UnmarshalJSON(raw); err != nil {
		return nil, err
	}
	return md, nil
}
