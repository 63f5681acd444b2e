package record

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"testing"
)

// decodeMetadataReference is how metadata was decoded before the one-pass
// decoder, through encoding/json: FuzzMetadataUnmarshal holds the decoder
// to it.
func decodeMetadataReference(data []byte) (Metadata, error) {
	if bytes.Equal(bytes.TrimSpace(data), []byte("null")) {
		return nil, nil
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, err
	}
	out := make(Metadata, len(raw))
	for k, r := range raw {
		switch c := r[0]; {
		case c == '"':
			var s string
			if err := json.Unmarshal(r, &s); err != nil {
				return nil, err
			}
			out[k] = s
		case c == 't' || c == 'f':
			out[k] = c == 't'
		case c == 'n':
			out[k] = nil
		case c == '-' || (c >= '0' && c <= '9'):
			if !bytes.ContainsAny(r, ".eE") {
				i, err := strconv.ParseInt(string(r), 10, 64)
				if err != nil {
					return nil, err
				}
				out[k] = i
				continue
			}
			f, err := strconv.ParseFloat(string(r), 64)
			if err != nil {
				return nil, err
			}
			out[k] = f
		default:
			return nil, fmt.Errorf("unsupported value %s", r)
		}
	}
	return out, nil
}

// sameMetadata compares values by type and, for floats, by bits (-0 is not 0).
func sameMetadata(a, b Metadata) bool {
	if (a == nil) != (b == nil) || len(a) != len(b) {
		return false
	}
	for k, va := range a {
		vb, ok := b[k]
		if !ok {
			return false
		}
		fa, isFloat := va.(float64)
		if fb, ok := vb.(float64); isFloat && ok {
			if math.Float64bits(fa) != math.Float64bits(fb) {
				return false
			}
			continue
		}
		if va != vb {
			return false
		}
	}
	return true
}

func FuzzMetadataUnmarshal(f *testing.F) {
	for _, s := range []string{
		`null`, ` null `, `{}`, `{"a":1}`, `{"a":1.0,"b":-0.0,"c":-0,"d":1e5,"e":"x\u00e9\n","f":true,"g":false,"h":null}`,
		`{"a":1,"a":"2"}`, `{"a":[1]}`, `{"a":{}}`, `{"a":9223372036854775808}`, `{"a":1e400}`, `{"\u003c":"\ud83d\ude00"}`,
		`{"a":"\xff"}`, `{"a":01}`, `{"a":1,}`, `[1]`, `"s"`, `{"a":1} x`, ` {"k" : "v" } `, `{"a":"\x01"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var got Metadata
		err := got.UnmarshalJSON(data)
		want, werr := decodeMetadataReference(data)
		switch {
		case err == nil && werr != nil:
			t.Fatalf("UnmarshalJSON(%q) = %v, the reference refuses it: %v", data, got, werr)
		case err != nil && werr == nil:
			t.Fatalf("UnmarshalJSON(%q) refused (%v), the reference decodes %v", data, err, want)
		case err == nil && !sameMetadata(got, want):
			t.Fatalf("UnmarshalJSON(%q) = %#v, the reference %#v", data, got, want)
		}
		if err == nil {
			// Canonical JSON decodes back to the same values.
			enc, err := got.AppendJSON(nil)
			if err != nil {
				t.Fatal(err)
			}
			var back Metadata
			if err := json.Unmarshal(enc, &back); err != nil || !sameMetadata(back, got) {
				t.Fatalf("%s does not decode back to %#v: %#v, %v", enc, got, back, err)
			}
		}
	})
}
