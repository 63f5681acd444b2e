package archive

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
)

const (
	metadataEntry = "metadata.json"
	manifestEntry = "manifest.json"
)

// batchFile is a batch's .json entry. Nil columns are written as null (not
// omitted) and read back as nil. Dimension and NullEmbeddings are both null
// when the batch had no embeddings column.
type batchFile struct {
	IDs            []string          `json:"ids"`
	Documents      []*string         `json:"documents"`
	Metadatas      []record.Metadata `json:"metadatas"`
	URIs           []*string         `json:"uris"`
	Dimension      *int              `json:"dimension"`
	NullEmbeddings []int             `json:"null_embeddings"`
}

func batchName(k int) string { return fmt.Sprintf("batch_%06d", k) }

func batchEntry(coll int, batch, ext string) string {
	return fmt.Sprintf("collections/%04d/%s.%s", coll, batch, ext)
}

// parseBatchEntry splits "collections/0003/batch_000012.json" into 3, 12 and
// "json". Only the canonical spelling is accepted, so no two names denote the
// same batch.
func parseBatchEntry(name string) (coll, batch int, ext string, ok bool) {
	rest, ok := strings.CutPrefix(name, "collections/")
	if !ok {
		return 0, 0, "", false
	}
	dir, file, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, "", false
	}
	base, ext, ok := strings.Cut(file, ".")
	if !ok || (ext != "json" && ext != "f32") {
		return 0, 0, "", false
	}
	num, ok := strings.CutPrefix(base, "batch_")
	if !ok {
		return 0, 0, "", false
	}
	c, err1 := strconv.Atoi(dir)
	k, err2 := strconv.Atoi(num)
	if err1 != nil || err2 != nil || c < 0 || k < 0 || batchEntry(c, batchName(k), ext) != name {
		return 0, 0, "", false
	}
	return c, k, ext, true
}

// embeddingShape returns the common embedding length and the indices of null
// embeddings of b, or nil, nil when b has no embeddings column.
func embeddingShape(b *record.Batch) (dim *int, nulls []int, err error) {
	if b.Embeddings == nil {
		return nil, nil, nil
	}
	d := -1
	nulls = []int{}
	for i, e := range b.Embeddings {
		switch {
		case e == nil:
			nulls = append(nulls, i)
		case d < 0:
			d = len(e)
		case len(e) != d:
			return nil, nil, fmt.Errorf("record %d (id %q): embedding has %d dimensions, earlier ones %d", i, b.IDs[i], len(e), d)
		}
	}
	d = max(d, 0)
	return &d, nulls, nil
}

// checkUTF8 names the first string of b that JSON would silently alter,
// which would make the archived records differ from the digest taken of
// the originals. appendBatchJSON refuses such strings as it writes them;
// this says which record holds one.
func checkUTF8(b *record.Batch) error {
	for i, id := range b.IDs {
		if !utf8.ValidString(id) {
			return fmt.Errorf("record %d: id %q is not valid UTF-8", i, id)
		}
		if b.Documents != nil && b.Documents[i] != nil && !utf8.ValidString(*b.Documents[i]) {
			return fmt.Errorf("record %d (id %q): document is not valid UTF-8", i, id)
		}
		if b.URIs != nil && b.URIs[i] != nil && !utf8.ValidString(*b.URIs[i]) {
			return fmt.Errorf("record %d (id %q): uri is not valid UTF-8", i, id)
		}
		if b.Metadatas != nil {
			for k, v := range b.Metadatas[i] {
				if !utf8.ValidString(k) {
					return fmt.Errorf("record %d (id %q): metadata key %q is not valid UTF-8", i, id, k)
				}
				if s, isString := v.(string); isString && !utf8.ValidString(s) {
					return fmt.Errorf("record %d (id %q): metadata value of %q is not valid UTF-8", i, id, k)
				}
			}
		}
	}
	return nil
}

// decodeStrict decodes exactly one JSON value with no unknown fields.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after JSON value")
	}
	return nil
}

// decodeBatch builds the record batch from a .json entry and its .f32 data.
// name is the .json entry's name, for errors. With vectors false the batch
// has no embeddings: they were checked against the entry's shape, and
// digest hashes them as they are stored (digest may be nil).
func decodeBatch(name string, js, f32 []byte, vectors bool, digest *record.Digest) (*record.Batch, error) {
	bf, err := decodeBatchJSON(js)
	if err != nil {
		return nil, fmt.Errorf("%w: entry %s: %w", ErrCorrupt, name, err)
	}
	b := &record.Batch{IDs: bf.IDs, Documents: bf.Documents, Metadatas: bf.Metadatas, URIs: bf.URIs}
	n := len(b.IDs)
	if n == 0 {
		return nil, fmt.Errorf("%w: entry %s: batch has no ids", ErrCorrupt, name)
	}
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("%w: entry %s: %w", ErrCorrupt, name, err)
	}
	if err := checkEmbeddings(n, bf.Dimension, bf.NullEmbeddings, f32); err != nil {
		return nil, fmt.Errorf("%w: entry %s: %w", ErrCorrupt, name, err)
	}
	if vectors {
		b.Embeddings = decodeEmbeddings(n, bf.Dimension, bf.NullEmbeddings, f32)
	}
	if digest != nil {
		if vectors || bf.Dimension == nil {
			err = digest.Add(b)
		} else {
			err = digest.AddEncoded(b, *bf.Dimension, bf.NullEmbeddings, f32)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: entry %s: %w", ErrCorrupt, name, err)
		}
	}
	return b, nil
}

// checkEmbeddings checks that f32 holds n embeddings of dim values, less
// the null ones: every length against the bytes actually present.
func checkEmbeddings(n int, dim *int, nulls []int, f32 []byte) error {
	if dim == nil || nulls == nil {
		if dim != nil || nulls != nil {
			return errors.New("dimension and null_embeddings must both be null or both be set")
		}
		if len(f32) != 0 {
			return fmt.Errorf("no embeddings column but %d bytes of float32 data", len(f32))
		}
		return nil
	}
	d := *dim
	if d < 0 {
		return fmt.Errorf("negative dimension %d", d)
	}
	if len(f32)%4 != 0 {
		return fmt.Errorf("bad float32 byte length %d (not a multiple of 4)", len(f32))
	}
	if len(nulls) > n {
		return fmt.Errorf("%d null embeddings for %d records", len(nulls), n)
	}
	for i, x := range nulls {
		if x < 0 || x >= n || (i > 0 && x <= nulls[i-1]) {
			return fmt.Errorf("null_embeddings[%d] = %d: want increasing indices below %d", i, x, n)
		}
	}
	present := n - len(nulls)
	values := len(f32) / 4
	// Compare by division: present*d could overflow for a hostile d.
	if (present == 0 || d == 0) && values != 0 || present > 0 && d > 0 && (values%present != 0 || values/present != d) {
		return fmt.Errorf("bad float32 byte length %d for %d embeddings of dimension %d", len(f32), present, d)
	}
	return nil
}

// decodeEmbeddings splits f32 into n embeddings of dim values, with nil at
// the null indices; checkEmbeddings has passed.
func decodeEmbeddings(n int, dim *int, nulls []int, f32 []byte) [][]float32 {
	if dim == nil {
		return nil
	}
	d := *dim
	flat := record.DecodeFloat32s(make([]float32, len(f32)/4), f32)
	out := make([][]float32, n)
	next := 0
	for i := range out {
		if next < len(nulls) && nulls[next] == i {
			next++
			continue
		}
		// Full slice expression: appending to one embedding must not
		// overwrite the next.
		out[i] = flat[:d:d]
		flat = flat[d:]
	}
	return out
}

// decodeLoose decodes JSON ignoring unknown fields.
func decodeLoose(data []byte, v any) error {
	return json.Unmarshal(data, v)
}
