package jsonx

import (
	"fmt"
	"unicode/utf8"
)

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string, byte for byte as encoding/json
// writes it: json.Marshal with escapeHTML, an Encoder after
// SetEscapeHTML(false) without. Invalid UTF-8 becomes U+FFFD, and U+2028
// and U+2029 are escaped either way.
func AppendString(dst []byte, s string, escapeHTML bool) []byte {
	dst, _ = AppendStringValid(dst, s, escapeHTML)
	return dst
}

// AppendStringValid is AppendString that also says whether s was valid
// UTF-8 (when not, what it appended has U+FFFD in place of the bad
// bytes): a writer that must refuse such strings learns it in the same
// pass, where a separate utf8.ValidString would read every non-ASCII
// rune a second time.
func AppendStringValid(dst []byte, s string, escapeHTML bool) ([]byte, bool) {
	valid := true
	dst = append(dst, '"')
	start := 0
	for i := plainRun(s, escapeHTML); i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && (!escapeHTML || (c != '<' && c != '>' && c != '&')) {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '\\', '"':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			valid = false
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"'), valid
}

// AppendArray appends xs as a JSON array, each element by elem, or null
// for a nil slice (as encoding/json writes one).
func AppendArray[T any](dst []byte, xs []T, elem func([]byte, T) ([]byte, error)) ([]byte, error) {
	if xs == nil {
		return append(dst, "null"...), nil
	}
	dst = append(dst, '[')
	for i, x := range xs {
		if i > 0 {
			dst = append(dst, ',')
		}
		var err error
		if dst, err = elem(dst, x); err != nil {
			return nil, fmt.Errorf("element %d: %w", i, err)
		}
	}
	return append(dst, ']'), nil
}
