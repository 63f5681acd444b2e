package record

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
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

// AppendJSON appends the canonical JSON encoding of m to dst.
func (m Metadata) AppendJSON(dst []byte) ([]byte, error) {
	if m == nil {
		return append(dst, "null"...), nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	dst = append(dst, '{')
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		kb, err := json.Marshal(k)
		if err != nil {
			return nil, err
		}
		dst = append(dst, kb...)
		dst = append(dst, ':')
		dst, err = appendValue(dst, k, m[k])
		if err != nil {
			return nil, err
		}
	}
	return append(dst, '}'), nil
}

func appendValue(dst []byte, key string, v any) ([]byte, error) {
	switch x := v.(type) {
	case string:
		b, err := json.Marshal(x)
		if err != nil {
			return nil, err
		}
		return append(dst, b...), nil
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
	data = bytes.TrimSpace(data)
	if bytes.Equal(data, []byte("null")) {
		*m = nil
		return nil
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return fmt.Errorf("metadata: %w", err)
	}
	out := make(Metadata, len(raw))
	for k, r := range raw {
		v, err := decodeValue(k, r)
		if err != nil {
			return err
		}
		out[k] = v
	}
	*m = out
	return nil
}

func decodeValue(key string, r json.RawMessage) (any, error) {
	r = bytes.TrimSpace(r)
	if len(r) == 0 {
		return nil, fmt.Errorf("metadata key %q: empty value", key)
	}
	switch c := r[0]; {
	case c == '"':
		var s string
		err := json.Unmarshal(r, &s)
		return s, err
	case c == 't' || c == 'f':
		var b bool
		err := json.Unmarshal(r, &b)
		return b, err
	case c == 'n':
		return nil, nil
	case c == '-' || (c >= '0' && c <= '9'):
		s := string(r)
		if !bytes.ContainsAny(r, ".eE") {
			i, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("metadata key %q: integer %s out of int64 range", key, s)
			}
			return i, nil
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("metadata key %q: bad float %s", key, s)
		}
		return f, nil
	default:
		return nil, fmt.Errorf("metadata key %q: unsupported value %.40s (want string, number or bool)", key, r)
	}
}
