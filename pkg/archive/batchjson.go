package archive

import (
	"fmt"
	"strconv"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/internal/jsonx"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
)

// A batch's .json entry is written and read here in one pass, without
// reflection: after parsing Chroma's answers it is the largest CPU cost of
// a snapshot, which writes every batch and, verifying as it writes, reads
// it again. appendBatchJSON writes exactly the bytes json.Encoder (with
// SetEscapeHTML(false)) writes for a batchFile, so archives are the same
// as they always were; decodeBatchJSON accepts what the writer writes and
// refuses anything decodeStrict would refuse (FuzzBatchJSON holds both to
// encoding/json). It is stricter than encoding/json where that does not
// matter for archives: field names must be spelled exactly and appear
// once.

// appendBatchJSON appends bf's .json entry, newline included, to dst. A
// string that is not valid UTF-8 fails it with record.ErrInvalidUTF8:
// JSON would alter it, and the archive would not hold what was digested.
func appendBatchJSON(dst []byte, bf *batchFile) ([]byte, error) {
	str := func(dst []byte, s string) ([]byte, error) {
		dst, valid := jsonx.AppendStringValid(dst, s, false)
		if !valid {
			return nil, record.ErrInvalidUTF8
		}
		return dst, nil
	}
	nullable := func(dst []byte, s *string) ([]byte, error) {
		if s == nil {
			return append(dst, "null"...), nil
		}
		return str(dst, *s)
	}
	integer := func(dst []byte, n int) ([]byte, error) { return strconv.AppendInt(dst, int64(n), 10), nil }
	metadata := func(dst []byte, m record.Metadata) ([]byte, error) { return m.AppendJSONStrict(dst) }
	var err error
	dst = append(dst, `{"ids":`...)
	if dst, err = jsonx.AppendArray(dst, bf.IDs, str); err != nil {
		return nil, err
	}
	dst = append(dst, `,"documents":`...)
	if dst, err = jsonx.AppendArray(dst, bf.Documents, nullable); err != nil {
		return nil, err
	}
	dst = append(dst, `,"metadatas":`...)
	if dst, err = jsonx.AppendArray(dst, bf.Metadatas, metadata); err != nil {
		return nil, fmt.Errorf("metadatas: %w", err)
	}
	dst = append(dst, `,"uris":`...)
	if dst, err = jsonx.AppendArray(dst, bf.URIs, nullable); err != nil {
		return nil, err
	}
	dst = append(dst, `,"dimension":`...)
	if bf.Dimension == nil {
		dst = append(dst, "null"...)
	} else {
		dst, _ = integer(dst, *bf.Dimension)
	}
	dst = append(dst, `,"null_embeddings":`...)
	if dst, err = jsonx.AppendArray(dst, bf.NullEmbeddings, integer); err != nil {
		return nil, err
	}
	return append(dst, "}\n"...), nil
}

var batchFields = map[string]uint8{
	"ids": 1 << 0, "documents": 1 << 1, "metadatas": 1 << 2, "uris": 1 << 3, "dimension": 1 << 4, "null_embeddings": 1 << 5,
}

// decodeBatchJSON decodes a batch's .json entry.
func decodeBatchJSON(data []byte) (*batchFile, error) {
	s := &jsonx.Scanner{Data: data, What: "batch"}
	bf := &batchFile{}
	var seen uint8
	s.Space()
	err := s.Object(func(name string) error {
		bit, ok := batchFields[name]
		if !ok {
			return fmt.Errorf("batch: unknown field %q", name)
		}
		if seen&bit != 0 {
			return fmt.Errorf("batch: field %q appears twice", name)
		}
		seen |= bit
		var err error
		switch name {
		case "ids":
			bf.IDs, err = s.Strings()
		case "documents":
			bf.Documents, err = s.NullableStrings()
		case "uris":
			bf.URIs, err = s.NullableStrings()
		case "metadatas":
			s.What = "metadata"
			bf.Metadatas, err = jsonx.ScalarObjects[record.Metadata](s)
			s.What = "batch"
		case "dimension":
			if s.Literal("null") {
				return nil
			}
			var n int64
			n, err = s.Int()
			d := int(n)
			bf.Dimension = &d
		case "null_embeddings":
			bf.NullEmbeddings, err = s.Ints()
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := s.End(); err != nil {
		return nil, err
	}
	return bf, nil
}
