// Package jsonx reads and writes the JSON of the data path in one pass and
// without reflection: Chroma's get answers and the archive's batch entries
// are most of what a snapshot or a restore spends CPU on, and
// encoding/json scans such a value several times (to validate it, to find
// its end, to decode it, then again inside each json.Unmarshaler).
//
// Everything here accepts a subset of what encoding/json accepts and,
// where it accepts, decodes to what encoding/json decodes; the fuzz tests
// of its callers and of this package hold it to that. Strings are read and
// written 8 bytes at a time while they are plain ASCII. AppendString writes
// exactly what encoding/json writes.
package jsonx

import (
	"bytes"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// Scanner reads JSON text from Data, starting at I. Methods that read a
// value leave I after it; on failure I is where the problem was found.
type Scanner struct {
	Data []byte
	I    int
	// What is being decoded, the prefix of errors ("embeddings").
	What string
}

// Space skips whitespace.
func (s *Scanner) Space() {
	for s.I < len(s.Data) {
		switch s.Data[s.I] {
		case ' ', '\t', '\n', '\r':
			s.I++
		default:
			return
		}
	}
}

// Consume skips c if it is next.
func (s *Scanner) Consume(c byte) bool {
	if s.I < len(s.Data) && s.Data[s.I] == c {
		s.I++
		return true
	}
	return false
}

// Literal skips lit if it is next.
func (s *Scanner) Literal(lit string) bool {
	if len(s.Data)-s.I >= len(lit) && string(s.Data[s.I:s.I+len(lit)]) == lit {
		s.I += len(lit)
		return true
	}
	return false
}

// End checks that only whitespace is left.
func (s *Scanner) End() error {
	s.Space()
	if s.I != len(s.Data) {
		return s.Fail("end of " + s.What)
	}
	return nil
}

// Fail is the error for wanting want at I.
func (s *Scanner) Fail(want string) error {
	return fmt.Errorf("%s: want %s at byte %d", s.What, want, s.I)
}

// Number skips a number in JSON's grammar,
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, and reports whether
// there was one (strconv alone would take "+1", ".5", "01").
func (s *Scanner) Number() bool {
	s.Consume('-')
	switch {
	case s.Consume('0'):
	case s.digits() == 0:
		return false
	}
	if s.Consume('.') && s.digits() == 0 {
		return false
	}
	if s.Consume('e') || s.Consume('E') {
		if !s.Consume('+') {
			s.Consume('-')
		}
		if s.digits() == 0 {
			return false
		}
	}
	return true
}

func (s *Scanner) digits() int {
	start := s.I
	for s.I < len(s.Data) && s.Data[s.I] >= '0' && s.Data[s.I] <= '9' {
		s.I++
	}
	return s.I - start
}

// Int reads an integer as encoding/json reads one into an int64: no
// fraction, no exponent, in range.
func (s *Scanner) Int() (int64, error) {
	start := s.I
	if !s.Number() {
		s.I = start
		return 0, s.Fail("an integer")
	}
	n, err := strconv.ParseInt(string(s.Data[start:s.I]), 10, 64)
	if err != nil {
		s.I = start
		return 0, s.Fail("an integer in int64 range")
	}
	return n, nil
}

// String reads a string as encoding/json decodes one: escapes resolved,
// a lone or broken surrogate and every byte of invalid UTF-8 as U+FFFD,
// control characters refused. One with nothing to resolve is taken as it
// is.
func (s *Scanner) String() (string, error) {
	start := s.I
	if !s.Consume('"') {
		return "", s.Fail("a string")
	}
	out, end, ok := unquote(s.Data, s.I)
	if !ok {
		s.I = start
		if s.SkipString() {
			return "", fmt.Errorf("%s: invalid string at byte %d", s.What, start)
		}
		return "", s.Fail("a string")
	}
	s.I = end
	if len(out) == 0 {
		return "", nil
	}
	// out is unquote's own and nothing else refers to it: it becomes the
	// string without a copy.
	return unsafe.String(unsafe.SliceData(out), len(out)), nil
}

// unquote decodes the string whose content starts at i (after its quote)
// and returns the decoded bytes, in a slice of its own, and the index
// after the closing quote. The slice is sized once, to the quoted text's
// length, which bounds what it decodes to unless invalid UTF-8 has to be
// replaced (a byte by three).
func unquote(data []byte, i int) ([]byte, int, bool) {
	end, ok := skipString(data, i-1)
	if !ok {
		return nil, 0, false
	}
	// The usual string: valid UTF-8 with no control character. Its text
	// between escapes is copied as it is; the checks each go over the
	// whole string at once, not a rune at a time.
	if text := data[i : end-1]; !hasControl(text) && utf8.Valid(text) {
		out := make([]byte, 0, len(text))
		for {
			k := bytes.IndexByte(text, '\\')
			if k < 0 {
				return append(out, text...), end, true
			}
			out = append(out, text[:k]...)
			var n int
			if out, n, ok = unescape(out, text[k:]); !ok {
				return nil, 0, false
			}
			text = text[k+n:]
		}
	}
	out := make([]byte, 0, end-1-i)
	for i < len(data) {
		// Text up to the next quote, backslash or control character,
		// with U+FFFD for each byte that is not valid UTF-8 (a multi-byte
		// rune has no byte below 0x80, so none is cut at such a byte).
		j := i + textRun(data[i:])
		out = appendReplacingInvalid(out, data[i:j])
		i = j
		if i == len(data) {
			break
		}
		switch c := data[i]; {
		case c == '"':
			return out, i + 1, true
		case c < 0x20:
			return nil, 0, false
		default: // a backslash
			var n int
			if out, n, ok = unescape(out, data[i:]); !ok {
				return nil, 0, false
			}
			i += n
		}
	}
	return nil, 0, false
}

// unescape appends what the escape at the start of esc (a backslash)
// stands for and returns how many bytes it took: 2, 6 for a \uXXXX, 12 for
// a surrogate pair. A lone surrogate becomes U+FFFD.
func unescape(out, esc []byte) ([]byte, int, bool) {
	if len(esc) < 2 {
		return nil, 0, false
	}
	switch e := esc[1]; e {
	case '"', '\\', '/':
		return append(out, e), 2, true
	case 'b':
		return append(out, '\b'), 2, true
	case 'f':
		return append(out, '\f'), 2, true
	case 'n':
		return append(out, '\n'), 2, true
	case 'r':
		return append(out, '\r'), 2, true
	case 't':
		return append(out, '\t'), 2, true
	case 'u':
		r := hex4(esc, 2)
		if r < 0 {
			return nil, 0, false
		}
		if utf16.IsSurrogate(r) {
			if len(esc) >= 8 && esc[6] == '\\' && esc[7] == 'u' {
				if r2 := hex4(esc, 8); r2 >= 0 {
					if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
						return utf8.AppendRune(out, d), 12, true
					}
				}
			}
			r = utf8.RuneError
		}
		return utf8.AppendRune(out, r), 6, true
	}
	return nil, 0, false
}

// appendReplacingInvalid appends text with U+FFFD in place of each byte
// that is not part of valid UTF-8, as encoding/json decodes it.
func appendReplacingInvalid(out, text []byte) []byte {
	for len(text) > 0 {
		r, size := utf8.DecodeRune(text)
		if r == utf8.RuneError && size == 1 {
			out = append(out, "\uFFFD"...)
		} else {
			out = append(out, text[:size]...)
		}
		text = text[size:]
	}
	return out
}

// hex4 is the value of the 4 hex digits at data[i:], or -1.
func hex4(data []byte, i int) rune {
	if i+4 > len(data) {
		return -1
	}
	var r rune
	for _, c := range data[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r*16 + rune(c)
	}
	return r
}

// SkipString skips a string without checking its content.
func (s *Scanner) SkipString() bool {
	end, ok := skipString(s.Data, s.I)
	if ok {
		s.I = end
	}
	return ok
}

// SkipValue skips a value without checking it: a string, an object or
// array (brackets counted outside strings), or a literal or number (up to a
// delimiter). Whoever decodes the value checks it.
func (s *Scanner) SkipValue() bool {
	end, ok := skipValue(s.Data, s.I)
	if ok {
		s.I = end
	}
	return ok
}

func skipString(data []byte, i int) (int, bool) {
	if i >= len(data) || data[i] != '"' {
		return 0, false
	}
	start := i + 1
	for j := start; j < len(data); j++ {
		k := bytes.IndexByte(data[j:], '"')
		if k < 0 {
			break
		}
		j += k
		esc := false // an odd run of backslashes before the quote escapes it
		for p := j - 1; p >= start && data[p] == '\\'; p-- {
			esc = !esc
		}
		if !esc {
			return j + 1, true
		}
	}
	return 0, false
}

func skipValue(data []byte, i int) (int, bool) {
	if i >= len(data) {
		return 0, false
	}
	switch data[i] {
	case '"':
		return skipString(data, i)
	case '{', '[':
		depth := 0
		for i < len(data) {
			switch data[i] {
			case '"':
				end, ok := skipString(data, i)
				if !ok {
					return 0, false
				}
				i = end
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, true
				}
			}
			i++
		}
		return 0, false
	}
	start := i
	for i < len(data) {
		switch data[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return i, i > start
		}
		i++
	}
	return i, i > start
}

// Array reads null (reporting null) or an array, calling elem with I at
// each element (whitespace skipped); elem must read the element.
func (s *Scanner) Array(elem func() error) (null bool, err error) {
	if s.Literal("null") {
		return true, nil
	}
	if !s.Consume('[') {
		return false, s.Fail("an array or null")
	}
	s.Space()
	if s.Consume(']') {
		return false, nil
	}
	for {
		s.Space()
		if err := elem(); err != nil {
			return false, err
		}
		s.Space()
		if s.Consume(']') {
			return false, nil
		}
		if !s.Consume(',') {
			return false, s.Fail("',' or ']' in an array")
		}
	}
}

// Object reads an object, calling member with each member's name and I at
// its value (whitespace skipped); member must read the value.
func (s *Scanner) Object(member func(name string) error) error {
	if !s.Consume('{') {
		return s.Fail("an object")
	}
	s.Space()
	if s.Consume('}') {
		return nil
	}
	for {
		s.Space()
		name, err := s.String()
		if err != nil {
			return err
		}
		s.Space()
		if !s.Consume(':') {
			return s.Fail("':' after a member name")
		}
		s.Space()
		if err := member(name); err != nil {
			return err
		}
		s.Space()
		if s.Consume('}') {
			return nil
		}
		if !s.Consume(',') {
			return s.Fail("',' or '}' between members")
		}
	}
}

// ScalarObject reads null (as a nil map) or an object whose values are
// strings, numbers, booleans or null: the shape of Chroma's metadata.
// Integers (numbers without fraction or exponent) become int64, other
// numbers float64; as with encoding/json, the last of duplicate names wins.
func (s *Scanner) ScalarObject() (map[string]any, error) {
	if s.Literal("null") {
		return nil, nil
	}
	out := make(map[string]any, 4)
	err := s.Object(func(name string) error {
		v, err := s.scalar(name)
		out[name] = v
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (s *Scanner) scalar(key string) (any, error) {
	if s.I >= len(s.Data) {
		return nil, s.Fail("a value")
	}
	switch c := s.Data[s.I]; {
	case c == '"':
		return s.String()
	case s.Literal("true"):
		return true, nil
	case s.Literal("false"):
		return false, nil
	case s.Literal("null"):
		return nil, nil
	case c == '-' || (c >= '0' && c <= '9'):
		start := s.I
		if !s.Number() {
			return nil, s.Fail("a number")
		}
		num := s.Data[start:s.I]
		if !bytes.ContainsAny(num, ".eE") {
			i, err := strconv.ParseInt(string(num), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%s key %q: integer %s out of int64 range", s.What, key, num)
			}
			return i, nil
		}
		f, err := strconv.ParseFloat(string(num), 64)
		if err != nil {
			return nil, fmt.Errorf("%s key %q: bad float %s", s.What, key, num)
		}
		return f, nil
	default:
		return nil, fmt.Errorf("%s key %q: unsupported value at byte %d (want string, number or bool)", s.What, key, s.I)
	}
}
