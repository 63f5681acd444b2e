package record

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/internal/jsonx"
)

// Metadata is one record's or one collection's metadata. Values are string,
// int64, float64 or bool; a nil Metadata is JSON null.
type Metadata map[string]any

// MarshalJSON encodes m with sorted keys, ints as integers and floats always
// with a fraction or exponent, so the type survives a round trip.
func (m Metadata) MarshalJSON() ([]byte, error) {
	if m == nil {
		return []byte("null"), nil
	}
	return m.AppendJSON(nil)
}

// AppendJSON appends the canonical JSON encoding of m to dst: keys
// sorted, strings escaped as json.Marshal escapes them (content digests
// hash this encoding, so it must never change). As json.Marshal, it
// writes U+FFFD for bytes that are not valid UTF-8.
func (m Metadata) AppendJSON(dst []byte) ([]byte, error) { return m.appendJSON(dst, false) }

// ErrInvalidUTF8 is a string that JSON cannot hold as it is: encoding it
// would replace its bad bytes with U+FFFD.
var ErrInvalidUTF8 = errors.New("not valid UTF-8")

// AppendJSONStrict is AppendJSON that fails with ErrInvalidUTF8 on a key
// or string value that is not valid UTF-8, instead of altering it.
func (m Metadata) AppendJSONStrict(dst []byte) ([]byte, error) { return m.appendJSON(dst, true) }

func (m Metadata) appendJSON(dst []byte, strict bool) ([]byte, error) {
	if m == nil {
		return append(dst, "null"...), nil
	}
	var small [8]string
	keys := small[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	dst = append(dst, '{')
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		var valid bool
		if dst, valid = jsonx.AppendStringValid(dst, k, true); !valid && strict {
			return nil, fmt.Errorf("metadata key %q: %w", k, ErrInvalidUTF8)
		}
		dst = append(dst, ':')
		var err error
		dst, err = appendValue(dst, k, m[k], strict)
		if err != nil {
			return nil, err
		}
	}
	return append(dst, '}'), nil
}

func appendValue(dst []byte, key string, v any, strict bool) ([]byte, error) {
	switch x := v.(type) {
	case string:
		dst, valid := jsonx.AppendStringValid(dst, x, true)
		if !valid && strict {
			return nil, fmt.Errorf("metadata key %q: value %w", key, ErrInvalidUTF8)
		}
		return dst, nil
	case bool:
		return strconv.AppendBool(dst, x), nil
	case int64:
		return strconv.AppendInt(dst, x, 10), nil
	case int:
		return strconv.AppendInt(dst, int64(x), 10), nil
	case float64:
		return AppendFloat(dst, key, x)
	case nil:
		return append(dst, "null"...), nil
	default:
		return nil, fmt.Errorf("metadata key %q: unsupported value type %T (want string, int64, float64 or bool)", key, v)
	}
}

// AppendFloat appends f so that it decodes back as a float: integral values
// get a ".0" suffix. NaN and infinities cannot be represented in JSON.
func AppendFloat(dst []byte, key string, f float64) ([]byte, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil, fmt.Errorf("metadata key %q: %v cannot be stored as JSON", key, f)
	}
	start := len(dst)
	dst = strconv.AppendFloat(dst, f, 'g', -1, 64)
	if !bytes.ContainsAny(dst[start:], ".eEn") {
		dst = append(dst, ".0"...)
	}
	return dst, nil
}

// UnmarshalJSON decodes a JSON object, keeping integers as int64 and
// numbers with a fraction or exponent as float64.
func (m *Metadata) UnmarshalJSON(data []byte) error {
	s := jsonx.Scanner{Data: data, What: "metadata"}
	s.Space()
	v, err := s.ScalarObject()
	if err != nil {
		return err
	}
	if err := s.End(); err != nil {
		return err
	}
	*m = v
	return nil
}
