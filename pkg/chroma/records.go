package chroma

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"unicode/utf8"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/internal/jsonx"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
)

// Include names a column a get returns besides the ids.
type Include string

// Columns of a get.
const (
	IncludeEmbeddings Include = "embeddings"
	IncludeDocuments  Include = "documents"
	IncludeMetadatas  Include = "metadatas"
	IncludeURIs       Include = "uris"
)

// IncludeAll is every column, what a backup reads.
var IncludeAll = []Include{IncludeEmbeddings, IncludeDocuments, IncludeMetadatas, IncludeURIs}

// GetRequest selects records of a collection.
type GetRequest struct {
	// IDs restricts the get to these ids (results come in storage order,
	// not in this order); nil means all records.
	IDs []string
	// Limit caps the records returned; 0 means no limit.
	Limit int
	// Offset skips records in storage order (insertion order).
	Offset int
	// Include lists the columns to return; nil means IncludeAll, an empty
	// non-nil slice means ids only.
	Include []Include
}

// Get reads records of a collection. Columns not included are nil in the
// returned batch; within an included column a nil entry is a null.
func (c *Client) Get(ctx context.Context, tenant, db, collectionID string, q GetRequest) (*record.Batch, error) {
	op := "get records of " + collectionID
	if err := checkNames(op, "tenant", tenant, "database", db, "collection id", collectionID); err != nil {
		return nil, err
	}
	if q.Limit < 0 || q.Offset < 0 {
		return nil, fmt.Errorf("chroma: %s: negative limit or offset", op)
	}
	body := struct {
		IDs     []string  `json:"ids,omitempty"`
		Limit   *int      `json:"limit,omitempty"`
		Offset  int       `json:"offset,omitempty"`
		Include []Include `json:"include"`
	}{IDs: q.IDs, Offset: q.Offset, Include: q.Include}
	if q.Limit > 0 {
		body.Limit = &q.Limit
	}
	if body.Include == nil {
		body.Include = IncludeAll
	}
	if q.IDs != nil && len(q.IDs) == 0 {
		return &record.Batch{IDs: []string{}}, nil
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("chroma: %s: encode request: %w", op, err)
	}
	var b *record.Batch
	err = c.do(ctx, op, http.MethodPost, collPath(tenant, db, collectionID)+"/get", raw, func(r io.Reader) error {
		var err error
		b, err = DecodeGetResponse(r)
		return err
	})
	if err != nil {
		return nil, err
	}
	if b.Len() > 0 {
		for _, inc := range body.Include {
			if missing(b, inc) {
				return nil, fmt.Errorf("chroma: %s: server returned no %s though asked", op, inc)
			}
		}
	}
	return b, nil
}

func missing(b *record.Batch, inc Include) bool {
	switch inc {
	case IncludeEmbeddings:
		return b.Embeddings == nil
	case IncludeDocuments:
		return b.Documents == nil
	case IncludeMetadatas:
		return b.Metadatas == nil
	case IncludeURIs:
		return b.URIs == nil
	}
	return false
}

// DecodeGetResponse decodes the body of a get answer into a batch and checks
// that every column has one entry per id. Empty metadata is returned as
// nil, as Chroma cannot store it. Embeddings are parsed as float32
// directly, so they are bit-exact; metadata keeps int64 and float64 apart.
func DecodeGetResponse(r io.Reader) (*record.Batch, error) {
	data, err := readBody(r)
	if err != nil {
		return nil, err
	}
	var resp getResponse
	if err := decodeGetObject(data, &resp); err != nil {
		return nil, err
	}
	if resp.IDs == nil {
		return nil, errors.New("get answer has no ids")
	}
	// Chroma cannot keep empty metadata apart from none: it stores {} as
	// null, yet answers {} for a record with a URI and no metadata (the URI
	// lives in a hidden metadata key). Both mean "no metadata": nil.
	for i, m := range resp.Metadatas {
		if m != nil && len(m) == 0 {
			resp.Metadatas[i] = nil
		}
	}
	b := &record.Batch{
		IDs:        resp.IDs,
		Embeddings: resp.Embeddings,
		Documents:  resp.Documents,
		Metadatas:  resp.Metadatas,
		URIs:       resp.URIs,
	}
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("get answer: %w", err)
	}
	return b, nil
}

// maxPresize bounds the buffer allocated up front from a Content-Length.
const maxPresize = 256 << 20

// readBody reads a whole answer into one buffer, sized from the
// Content-Length when the reader knows it: a get page is tens of MB, and a
// buffer grown by doubling costs twice the memory and a copy per doubling.
func readBody(r io.Reader) ([]byte, error) {
	cl, ok := r.(interface{ ContentLength() int64 })
	if !ok || cl.ContentLength() <= 0 || cl.ContentLength() > maxPresize {
		return io.ReadAll(r)
	}
	buf := make([]byte, 0, cl.ContentLength()+1) // +1 sees EOF without growing
	for {
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
		if len(buf) == cap(buf) { // longer than announced: let append grow it
			buf = append(buf, 0)[:len(buf)]
		}
	}
}

// Add inserts the records of b. Ids the collection already holds are
// silently skipped by Chroma (so a retried add is harmless); use Upsert to
// overwrite them. Every record needs an embedding. b is sent in as many
// requests as the byte and record limits require; on error, earlier
// requests may have been applied.
func (c *Client) Add(ctx context.Context, tenant, db, collectionID string, b *record.Batch) error {
	return c.write(ctx, "add", tenant, db, collectionID, b)
}

// Upsert inserts the records of b, replacing records with the same ids.
// It is split like Add.
func (c *Client) Upsert(ctx context.Context, tenant, db, collectionID string, b *record.Batch) error {
	return c.write(ctx, "upsert", tenant, db, collectionID, b)
}

func (c *Client) write(ctx context.Context, verb, tenant, db, collectionID string, b *record.Batch) error {
	op := verb + " records to " + collectionID
	if err := checkNames(op, "tenant", tenant, "database", db, "collection id", collectionID); err != nil {
		return err
	}
	if b == nil || b.Len() == 0 {
		return nil
	}
	if err := b.Validate(); err != nil {
		return fmt.Errorf("chroma: %s: %w", op, err)
	}
	if b.Embeddings == nil {
		return fmt.Errorf("chroma: %s: Chroma requires an embedding for every record", op)
	}
	pf, err := c.cachedPreflight(ctx)
	if err != nil {
		return err
	}
	maxRecords := c.maxBatchSize
	if maxRecords == 0 {
		maxRecords = pf.MaxBatchSize
	}
	if maxRecords <= 0 {
		maxRecords = 1000
	}
	enc := newWriteEncoder(b, pf.SupportsBase64Encoding)
	path := collPath(tenant, db, collectionID) + "/" + verb
	for i := range b.IDs {
		rec, err := enc.encode(i)
		if err != nil {
			return fmt.Errorf("chroma: %s: record %q: %w", op, b.IDs[i], err)
		}
		if enc.n > 0 && (enc.n >= maxRecords || enc.size+rec > c.maxRequestBytes) {
			if err := c.do(ctx, op, http.MethodPost, path, enc.body(), nil); err != nil {
				return err
			}
			enc.reset()
		}
		if enc.size+rec > c.maxRequestBytes {
			return fmt.Errorf("chroma: %s: record %q encodes to %d bytes, over the request limit of %d", op, b.IDs[i], rec, c.maxRequestBytes)
		}
		enc.commit()
	}
	if enc.n > 0 {
		return c.do(ctx, op, http.MethodPost, path, enc.body(), nil)
	}
	return nil
}

// writeEncoder builds add/upsert bodies column by column, knowing their
// size before a record is committed to the request.
type writeEncoder struct {
	b      *record.Batch
	base64 bool
	cols   [5][]byte // ids, embeddings, documents, metadatas, uris
	pend   [5][]byte // the encoded pending record
	n      int       // records committed
	size   int       // body size with the committed records
	f32    []byte
}

const (
	colIDs = iota
	colEmbeddings
	colDocuments
	colMetadatas
	colURIs
)

var colNames = [5]string{`"ids"`, `"embeddings"`, `"documents"`, `"metadatas"`, `"uris"`}

func newWriteEncoder(b *record.Batch, b64 bool) *writeEncoder {
	e := &writeEncoder{b: b, base64: b64}
	e.reset()
	return e
}

func (e *writeEncoder) present(col int) bool {
	switch col {
	case colDocuments:
		return e.b.Documents != nil
	case colMetadatas:
		return e.b.Metadatas != nil
	case colURIs:
		return e.b.URIs != nil
	}
	return true
}

func (e *writeEncoder) reset() {
	e.n = 0
	e.size = 1 // {
	for col := range e.cols {
		e.cols[col] = e.cols[col][:0]
		if e.present(col) {
			e.size += len(colNames[col]) + 4 // :[] and , or }
		}
	}
}

// encode encodes record i as pending and returns the bytes it adds.
func (e *writeEncoder) encode(i int) (int, error) {
	for col := range e.pend {
		e.pend[col] = e.pend[col][:0]
	}
	var err error
	e.pend[colIDs], err = appendJSONString(e.pend[colIDs], e.b.IDs[i])
	if err != nil {
		return 0, err
	}
	emb := e.b.Embeddings[i]
	if emb == nil {
		return 0, errors.New("no embedding (Chroma refuses null embeddings)")
	}
	if e.base64 {
		e.f32 = e.f32[:0]
		for _, f := range emb {
			e.f32 = binary.LittleEndian.AppendUint32(e.f32, math.Float32bits(f))
		}
		p := append(e.pend[colEmbeddings], '"')
		p = base64.StdEncoding.AppendEncode(p, e.f32)
		e.pend[colEmbeddings] = append(p, '"')
	} else {
		p := append(e.pend[colEmbeddings], '[')
		for j, f := range emb {
			if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
				return 0, fmt.Errorf("embedding value %v cannot be sent as JSON", f)
			}
			if j > 0 {
				p = append(p, ',')
			}
			p = strconv.AppendFloat(p, float64(f), 'g', -1, 32)
		}
		e.pend[colEmbeddings] = append(p, ']')
	}
	if e.b.Documents != nil {
		e.pend[colDocuments], err = appendJSONStringPtr(e.pend[colDocuments], e.b.Documents[i])
		if err != nil {
			return 0, err
		}
	}
	if e.b.URIs != nil {
		e.pend[colURIs], err = appendJSONStringPtr(e.pend[colURIs], e.b.URIs[i])
		if err != nil {
			return 0, err
		}
	}
	if e.b.Metadatas != nil {
		e.pend[colMetadatas], err = e.b.Metadatas[i].AppendJSON(e.pend[colMetadatas])
		if err != nil {
			return 0, err
		}
	}
	n := 0
	for col := range e.pend {
		if e.present(col) {
			n += len(e.pend[col]) + 1 // separating comma
		}
	}
	return n, nil
}

func (e *writeEncoder) commit() {
	for col := range e.pend {
		if !e.present(col) {
			continue
		}
		if e.n > 0 {
			e.cols[col] = append(e.cols[col], ',')
		}
		e.cols[col] = append(e.cols[col], e.pend[col]...)
		e.size += len(e.pend[col]) + 1
	}
	e.n++
}

func (e *writeEncoder) body() []byte {
	out := make([]byte, 0, e.size)
	out = append(out, '{')
	first := true
	for col := range e.cols {
		if !e.present(col) {
			continue
		}
		if !first {
			out = append(out, ',')
		}
		first = false
		out = append(out, colNames[col]...)
		out = append(out, ':', '[')
		out = append(out, e.cols[col]...)
		out = append(out, ']')
	}
	return append(out, '}')
}

// appendJSONString refuses invalid UTF-8, which encoding/json would
// silently replace (Chroma itself cannot hold it).
func appendJSONString(dst []byte, s string) ([]byte, error) {
	if !utf8.ValidString(s) {
		return nil, fmt.Errorf("string %.40q is not valid UTF-8", s)
	}
	return jsonx.AppendString(dst, s, true), nil
}

func appendJSONStringPtr(dst []byte, s *string) ([]byte, error) {
	if s == nil {
		return append(dst, "null"...), nil
	}
	return appendJSONString(dst, *s)
}

// Delete removes records by id; unknown ids are ignored. An empty ids list
// deletes nothing.
func (c *Client) Delete(ctx context.Context, tenant, db, collectionID string, ids []string) error {
	op := "delete records of " + collectionID
	if err := checkNames(op, "tenant", tenant, "database", db, "collection id", collectionID); err != nil {
		return err
	}
	const chunk = 5000
	for len(ids) > 0 {
		n := min(chunk, len(ids))
		body := struct {
			IDs []string `json:"ids"`
		}{ids[:n]}
		if err := c.sendJSON(ctx, op, http.MethodPost, collPath(tenant, db, collectionID)+"/delete", body, nil); err != nil {
			return err
		}
		ids = ids[n:]
	}
	return nil
}
