package chroma

import (
	"context"
	"encoding/base64"
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
	// MaxBytes, when positive, bounds the answer GetPage reads: one that
	// Chroma announces (Content-Length) or sends larger is not read, and
	// GetPage returns a *PageTooLargeError saying how large it was, so
	// that the reader asks for fewer records instead of holding it.
	MaxBytes int
}

// PageTooLargeError is GetPage's answer to an answer over MaxBytes.
type PageTooLargeError struct {
	// Size is the answer's size as Chroma announced it; -1 when it did
	// not, and the answer was found larger than MaxBytes reading it.
	Size     int64
	MaxBytes int
}

func (e *PageTooLargeError) Error() string {
	if e.Size < 0 {
		return fmt.Sprintf("answer over %d bytes, the most asked for", e.MaxBytes)
	}
	return fmt.Sprintf("answer of %d bytes, over the %d asked for at most", e.Size, e.MaxBytes)
}

// Get reads records of a collection. Columns not included are nil in the
// returned batch; within an included column a nil entry is a null.
func (c *Client) Get(ctx context.Context, tenant, db, collectionID string, q GetRequest) (*record.Batch, error) {
	b, _, err := c.GetPage(ctx, tenant, db, collectionID, q)
	return b, err
}

// GetPage is Get, and also returns the size in bytes of Chroma's answer:
// what a reader sizes its next pages by, as the records' documents and
// metadata can make a page of a given number of records any size.
func (c *Client) GetPage(ctx context.Context, tenant, db, collectionID string, q GetRequest) (*record.Batch, int, error) {
	op := "get records of " + collectionID
	if err := checkNames(op, "tenant", tenant, "database", db, "collection id", collectionID); err != nil {
		return nil, 0, err
	}
	if q.Limit < 0 || q.Offset < 0 {
		return nil, 0, fmt.Errorf("chroma: %s: negative limit or offset", op)
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
		return &record.Batch{IDs: []string{}}, 0, nil
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return nil, 0, fmt.Errorf("chroma: %s: encode request: %w", op, err)
	}
	var b *record.Batch
	size := 0
	err = c.do(ctx, op, http.MethodPost, collPath(tenant, db, collectionID)+"/get", raw, func(r io.Reader) error {
		if q.MaxBytes > 0 {
			if cl, ok := r.(interface{ ContentLength() int64 }); ok && cl.ContentLength() > int64(q.MaxBytes) {
				return &PageTooLargeError{Size: cl.ContentLength(), MaxBytes: q.MaxBytes}
			}
			r = &limitedBody{r: r, left: int64(q.MaxBytes), max: q.MaxBytes}
		}
		data, err := readBody(r)
		if err != nil {
			return err
		}
		size = len(data)
		b, err = decodeGetBody(data)
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	if b.Len() > 0 {
		for _, inc := range body.Include {
			if missing(b, inc) {
				return nil, 0, fmt.Errorf("chroma: %s: server returned no %s though asked", op, inc)
			}
		}
	}
	return b, size, nil
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
	return decodeGetBody(data)
}

func decodeGetBody(data []byte) (*record.Batch, error) {
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

// limitedBody reads an answer of unannounced size until it has read more
// than max bytes, then fails with a *PageTooLargeError.
type limitedBody struct {
	r    io.Reader
	left int64
	max  int
}

func (l *limitedBody) ContentLength() int64 {
	if cl, ok := l.r.(interface{ ContentLength() int64 }); ok {
		return cl.ContentLength()
	}
	return -1
}

func (l *limitedBody) Read(p []byte) (int, error) {
	if l.left < 0 {
		return 0, &PageTooLargeError{Size: -1, MaxBytes: l.max}
	}
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		return n, &PageTooLargeError{Size: -1, MaxBytes: l.max}
	}
	return n, err
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
	e, err := c.encode(ctx, op, b)
	if err != nil {
		return err
	}
	return c.send(ctx, verb, tenant, db, collectionID, e, 0, e.Len())
}

// Encoded is a batch encoded for Add, ready to be sent whole or by ranges
// of records, so that encoding (about 3 µs a record of 384-d with a
// 500-character document) can happen before the request is due. It holds
// every record's encoding: with base64, 4/3 of the float32 bytes plus the
// documents, metadata and uris as JSON.
type Encoded struct {
	b *record.Batch
	// col[c] holds each record's encoding of column c, each followed by
	// a comma; end[c][i] is the offset just after record i's comma.
	col [5][]byte
	end [5][]int
}

// Len is the number of records encoded.
func (e *Encoded) Len() int { return len(e.b.IDs) }

// Encode checks and encodes b for AddEncoded, as Add would send it
// (embeddings base64-encoded when the server supports it). A record that
// cannot be sent (no embedding, invalid UTF-8, NaN without base64, bigger
// than one request may be) is refused here, before anything is sent.
func (c *Client) Encode(ctx context.Context, b *record.Batch) (*Encoded, error) {
	if b == nil {
		b = &record.Batch{}
	}
	return c.encode(ctx, "encode records", b)
}

// AddEncoded adds records [from, to) of e, in as many requests as the byte
// and record limits require; on error, earlier requests may have been
// applied. Like Add, ids the collection already holds are skipped.
func (c *Client) AddEncoded(ctx context.Context, tenant, db, collectionID string, e *Encoded, from, to int) error {
	if err := checkNames("add records to "+collectionID, "tenant", tenant, "database", db, "collection id", collectionID); err != nil {
		return err
	}
	if from < 0 || to > e.Len() || from > to {
		return fmt.Errorf("chroma: add records to %s: records [%d, %d) of %d encoded", collectionID, from, to, e.Len())
	}
	return c.send(ctx, "add", tenant, db, collectionID, e, from, to)
}

func (c *Client) encode(ctx context.Context, op string, b *record.Batch) (*Encoded, error) {
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("chroma: %s: %w", op, err)
	}
	if b.Len() > 0 && b.Embeddings == nil {
		return nil, fmt.Errorf("chroma: %s: Chroma requires an embedding for every record", op)
	}
	b64 := false
	if b.Len() > 0 {
		pf, err := c.cachedPreflight(ctx)
		if err != nil {
			return nil, err
		}
		b64 = pf.SupportsBase64Encoding
	}
	e := &Encoded{b: b}
	e.grow(b64)
	var f32 []byte
	limit := c.maxRecordBytes - e.overhead()
	for i := range b.IDs {
		size := 0
		for col := range e.col {
			if !e.present(col) {
				continue
			}
			before := len(e.col[col])
			var err error
			e.col[col], f32, err = e.appendRecord(e.col[col], col, i, b64, f32)
			if err != nil {
				return nil, fmt.Errorf("chroma: %s: record %q: %w", op, b.IDs[i], err)
			}
			e.col[col] = append(e.col[col], ',')
			e.end[col] = append(e.end[col], len(e.col[col]))
			size += len(e.col[col]) - before
		}
		if size > limit {
			return nil, fmt.Errorf("chroma: %s: record %q encodes to %d bytes, over the request limit of %d", op, b.IDs[i], size, c.maxRecordBytes)
		}
	}
	return e, nil
}

// grow sizes the column buffers for the whole batch up front: growing them
// by appends copied each byte about three times.
func (e *Encoded) grow(b64 bool) {
	b := e.b
	n := b.Len()
	strs := func(ss []*string) int {
		t := 0
		for _, s := range ss {
			if s != nil {
				t += len(*s) + 3 // quotes, comma; escapes may add more
			} else {
				t += 5
			}
		}
		return t
	}
	var caps [5]int
	for _, id := range b.IDs {
		caps[colIDs] += len(id) + 3
	}
	if n > 0 && b.Embeddings != nil {
		dim := 0
		for _, v := range b.Embeddings {
			dim = max(dim, len(v))
		}
		if b64 {
			caps[colEmbeddings] = n * (base64.StdEncoding.EncodedLen(4*dim) + 3)
		} else {
			caps[colEmbeddings] = n * (12*dim + 3)
		}
	}
	caps[colDocuments] = strs(b.Documents)
	caps[colURIs] = strs(b.URIs)
	caps[colMetadatas] = n * 64
	for col := range e.col {
		if e.present(col) {
			e.col[col] = make([]byte, 0, caps[col])
			e.end[col] = make([]int, 0, n)
		}
	}
}

// appendRecord appends record i's value of column col to dst; f32 is
// scratch space for a base64 embedding.
func (e *Encoded) appendRecord(dst []byte, col, i int, b64 bool, f32 []byte) ([]byte, []byte, error) {
	b := e.b
	var err error
	switch col {
	case colIDs:
		dst, err = appendJSONString(dst, b.IDs[i])
	case colEmbeddings:
		emb := b.Embeddings[i]
		if emb == nil {
			return dst, f32, errors.New("no embedding (Chroma refuses null embeddings)")
		}
		if b64 {
			f32 = record.AppendFloat32s(f32[:0], emb)
			dst = append(dst, '"')
			dst = base64.StdEncoding.AppendEncode(dst, f32)
			dst = append(dst, '"')
			break
		}
		dst = append(dst, '[')
		for j, f := range emb {
			if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
				return dst, f32, fmt.Errorf("embedding value %v cannot be sent as JSON", f)
			}
			if j > 0 {
				dst = append(dst, ',')
			}
			dst = strconv.AppendFloat(dst, float64(f), 'g', -1, 32)
		}
		dst = append(dst, ']')
	case colDocuments:
		dst, err = appendJSONStringPtr(dst, b.Documents[i])
	case colURIs:
		dst, err = appendJSONStringPtr(dst, b.URIs[i])
	case colMetadatas:
		dst, err = b.Metadatas[i].AppendJSON(dst)
	}
	return dst, f32, err
}

const (
	colIDs = iota
	colEmbeddings
	colDocuments
	colMetadatas
	colURIs
)

var colNames = [5]string{`"ids"`, `"embeddings"`, `"documents"`, `"metadatas"`, `"uris"`}

func (e *Encoded) present(col int) bool {
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

// overhead is the size of a body before its records: the braces, each
// column's name with its brackets, and the commas between columns, which
// the comma after each column's last record stands for.
func (e *Encoded) overhead() int {
	n := 1
	for col := range e.col {
		if e.present(col) {
			n += len(colNames[col]) + 3 // :[ and ]
		}
	}
	return n
}

// start is the offset of record i in column col.
func (e *Encoded) start(col, i int) int {
	if i == 0 {
		return 0
	}
	return e.end[col][i-1]
}

// recordSize is what record i adds to a body, its commas included.
func (e *Encoded) recordSize(i int) int {
	n := 0
	for col := range e.col {
		if e.present(col) {
			n += e.end[col][i] - e.start(col, i)
		}
	}
	return n
}

// body is the request body of records [from, to).
func (e *Encoded) body(from, to, size int) []byte {
	out := make([]byte, 0, size)
	out = append(out, '{')
	first := true
	for col := range e.col {
		if !e.present(col) {
			continue
		}
		if !first {
			out = append(out, ',')
		}
		first = false
		out = append(out, colNames[col]...)
		out = append(out, ':', '[')
		out = append(out, e.col[col][e.start(col, from):e.end[col][to-1]-1]...) // less the last comma
		out = append(out, ']')
	}
	return append(out, '}')
}

// send posts records [from, to) of e in requests within the record and
// byte limits.
func (c *Client) send(ctx context.Context, verb, tenant, db, collectionID string, e *Encoded, from, to int) error {
	if from == to {
		return nil
	}
	op := verb + " records to " + collectionID
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
	path := collPath(tenant, db, collectionID) + "/" + verb
	base := e.overhead()
	for from < to {
		size, i := base, from
		for i < to && i-from < maxRecords {
			rec := e.recordSize(i)
			if i > from && size+rec > c.maxRequestBytes {
				break
			}
			size += rec
			i++
		}
		if err := c.do(ctx, op, http.MethodPost, path, e.body(from, i, size), nil); err != nil {
			return err
		}
		from = i
	}
	return nil
}

// appendJSONString refuses invalid UTF-8, which encoding/json would
// silently replace (Chroma itself cannot hold it). < > & are sent as they
// are: escaped (\u003c) they take six times the bytes, and a document of
// HTML that another client stored within Chroma's body limit would not
// fit in it again.
func appendJSONString(dst []byte, s string) ([]byte, error) {
	if !utf8.ValidString(s) {
		return nil, fmt.Errorf("string %.40q is not valid UTF-8", s)
	}
	return jsonx.AppendString(dst, s, false), nil
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
