package jsonx

import (
	"bytes"
	"fmt"
	"unicode/utf8"
	"unsafe"
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
// bytes): a writer that must refuse such strings learns it from the
// check the encoding makes anyway.
func AppendStringValid(dst []byte, s string, escapeHTML bool) ([]byte, bool) {
	b := unsafe.Slice(unsafe.StringData(s), len(s))
	dst = append(dst, '"')
	// The usual string, valid UTF-8 without U+2028 or U+2029: its text
	// between the characters to escape is copied as it is, the checks
	// each over the whole string at once rather than a rune at a time.
	if !escapeHTML && utf8.Valid(b) && !hasLineSeparator(b) {
		for {
			n := textRun(b)
			dst = append(dst, b[:n]...)
			if n == len(b) {
				return append(dst, '"'), true
			}
			dst = appendEscaped(dst, b[n])
			b = b[n+1:]
		}
	}
	valid := true
	start := 0
	for i := plainRun(b, escapeHTML); i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && (!escapeHTML || (c != '<' && c != '>' && c != '&')) {
				i++
				continue
			}
			dst = appendEscaped(append(dst, s[start:i]...), c)
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

// appendEscaped appends the escape of the ASCII character c: a quote,
// backslash, control character or (for HTML) one of <, > and &.
func appendEscaped(dst []byte, c byte) []byte {
	switch c {
	case '\\', '"':
		return append(dst, '\\', c)
	case '\b':
		return append(dst, '\\', 'b')
	case '\f':
		return append(dst, '\\', 'f')
	case '\n':
		return append(dst, '\\', 'n')
	case '\r':
		return append(dst, '\\', 'r')
	case '\t':
		return append(dst, '\\', 't')
	}
	return append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
}

// hasLineSeparator reports whether b holds U+2028 or U+2029 (E2 80 A8,
// E2 80 A9), which JSON strings hold escaped for JavaScript's sake.
func hasLineSeparator(b []byte) bool {
	for {
		k := bytes.IndexByte(b, 0xE2)
		if k < 0 || k+2 >= len(b) {
			return false
		}
		if b[k+1] == 0x80 && (b[k+2] == 0xA8 || b[k+2] == 0xA9) {
			return true
		}
		b = b[k+1:]
	}
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
