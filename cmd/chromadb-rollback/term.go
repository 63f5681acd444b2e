package main

import (
	"bytes"
	"io"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// What the CLI prints holds what requests and events said (an actor, a
// reason, an error). A control character in it would otherwise reach the
// operator's terminal: an escape sequence can erase or rewrite what is on
// the screen, and a line break in an audit row prints a forged row.

// termWriter writes text with every control character other than a line
// break or a tab escaped (termEscape). JSON never holds a raw one.
type termWriter struct{ w io.Writer }

func (t termWriter) Write(p []byte) (int, error) {
	if !bytes.ContainsFunc(p, escaped) {
		return t.w.Write(p)
	}
	if _, err := io.WriteString(t.w, termEscape(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// escaped says whether termEscape escapes r: a control character (C0, DEL,
// C1) other than a line break or a tab, or a Unicode line or paragraph
// separator.
func escaped(r rune) bool {
	return r != '\n' && r != '\t' && (unicode.IsControl(r) || r == '\u2028' || r == '\u2029')
}

// termEscape is s with the characters escaped says escaped as Go quotes
// them (\x1b, \r, \u009b). Bytes that are not UTF-8 are kept as they are.
func termEscape(s string) string {
	if !strings.ContainsFunc(s, escaped) {
		return s
	}
	var b strings.Builder
	for len(s) > 0 {
		r, n := utf8.DecodeRuneInString(s)
		if escaped(r) {
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		} else {
			b.WriteString(s[:n])
		}
		s = s[n:]
	}
	return b.String()
}

// oneLine is termEscape for a row's field: line breaks and tabs become
// spaces first, so that the row stays one line.
func oneLine(s string) string {
	return termEscape(strings.Map(func(r rune) rune {
		switch r {
		case '\n', '\r', '\t', '\u2028', '\u2029':
			return ' '
		}
		return r
	}, s))
}
