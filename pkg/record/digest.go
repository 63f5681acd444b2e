package record

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
)

// Digest is a SHA-256 over records in order, independent of batch
// boundaries: the same records give the same sum however they were paged.
// Each record contributes its id, document, URI, canonical metadata JSON and
// embedding bits, each length-prefixed and null-flagged, so no two different
// records encode alike.
type Digest struct {
	h   hash.Hash
	n   int64
	buf []byte
}

// NewDigest returns an empty content digest.
func NewDigest() *Digest { return &Digest{h: sha256.New()} }

// Add hashes every record of b. Metadata that cannot be encoded is reported.
func (d *Digest) Add(b *Batch) error {
	for i := range b.IDs {
		var e []float32
		if b.Embeddings != nil {
			e = b.Embeddings[i]
		}
		buf, err := d.appendFields(d.buf[:0], b, i)
		if err != nil {
			return err
		}
		if e == nil {
			buf = append(buf, 0)
		} else {
			buf = append(buf, 1)
			buf = binary.LittleEndian.AppendUint64(buf, uint64(len(e)))
			buf = AppendFloat32s(buf, e)
		}
		d.h.Write(buf)
		d.buf = buf
		d.n++
	}
	return nil
}

// AddEncoded hashes the records of b as Add would, with their embeddings
// given as an archive stores them rather than in b: f32 holds, as
// little-endian float32 bits, the embeddings of dim values of every record
// whose index is not in nulls (increasing). Nothing is decoded, so a
// verifier need not materialize the vectors. It panics if f32 is shorter
// than that; callers check the shape first.
func (d *Digest) AddEncoded(b *Batch, dim int, nulls []int, f32 []byte) error {
	size := dim * 4
	for i := range b.IDs {
		buf, err := d.appendFields(d.buf[:0], b, i)
		if err != nil {
			return err
		}
		if len(nulls) > 0 && nulls[0] == i {
			nulls = nulls[1:]
			d.h.Write(append(buf, 0))
		} else {
			buf = append(buf, 1)
			buf = binary.LittleEndian.AppendUint64(buf, uint64(dim))
			d.h.Write(buf)
			d.h.Write(f32[:size])
			f32 = f32[size:]
		}
		d.buf = buf
		d.n++
	}
	return nil
}

// appendFields appends record i's id, document, URI and metadata.
func (d *Digest) appendFields(buf []byte, b *Batch, i int) ([]byte, error) {
	buf = appendString(buf, &b.IDs[i])
	buf = appendString(buf, column(b.Documents, i))
	buf = appendString(buf, column(b.URIs, i))
	var md Metadata
	if b.Metadatas != nil {
		md = b.Metadatas[i]
	}
	// The metadata's JSON goes after room for its length.
	at := len(buf)
	buf = append(buf, make([]byte, 8)...)
	buf, err := md.AppendJSON(buf)
	if err != nil {
		return nil, err
	}
	binary.LittleEndian.PutUint64(buf[at:], uint64(len(buf)-at-8))
	return buf, nil
}

// Count is the number of records added.
func (d *Digest) Count() int64 { return d.n }

// Sum is the hex SHA-256 of everything added so far.
func (d *Digest) Sum() string { return hex.EncodeToString(d.h.Sum(nil)) }

func column(c []*string, i int) *string {
	if c == nil {
		return nil
	}
	return c[i]
}

func appendString(buf []byte, s *string) []byte {
	if s == nil {
		return append(buf, 0)
	}
	buf = append(buf, 1)
	buf = binary.LittleEndian.AppendUint64(buf, uint64(len(*s)))
	return append(buf, *s...)
}
