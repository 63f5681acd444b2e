package main

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/mattn/go-runewidth"
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

// table lays out rows of cells in columns two spaces apart, as
// text/tabwriter would, but for a terminal: each cell is made one line
// (oneLine), so that what a request or event said can neither break a row
// nor print one of its own, and a cell's width is the columns a terminal
// gives it (a CJK character takes two), where tabwriter counts runes.
type table struct {
	indent string
	rows   []tableRow
}

// tableRow is a row of cells, or a line of its own between the rows.
type tableRow struct {
	cells []string
	line  string
}

// newTable starts a table whose every line begins with indent, with the
// header's cells as its first row (none: no header).
func newTable(indent string, header ...any) *table {
	t := &table{indent: indent}
	if len(header) > 0 {
		t.row(header...)
	}
	return t
}

// row adds a row of cells, each printed as fmt.Sprint prints it.
func (t *table) row(cells ...any) {
	r := tableRow{cells: make([]string, len(cells))}
	for i, c := range cells {
		r.cells[i] = oneLine(fmt.Sprint(c))
	}
	t.rows = append(t.rows, r)
}

// line adds a line between the rows, outside the columns (after the indent).
func (t *table) line(s string) { t.rows = append(t.rows, tableRow{line: s}) }

// print writes the table: every cell but a row's last is padded to its
// column's widest and two spaces, and no line ends in spaces.
func (t *table) print(w io.Writer) error {
	var widths []int
	for _, r := range t.rows {
		for i, c := range r.cells[:max(len(r.cells)-1, 0)] {
			if i == len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], runewidth.StringWidth(c))
		}
	}
	var b strings.Builder
	for _, r := range t.rows {
		var l strings.Builder
		l.WriteString(t.indent)
		if r.cells == nil {
			l.WriteString(r.line)
		}
		for i, c := range r.cells {
			l.WriteString(c)
			if i < len(r.cells)-1 {
				l.WriteString(strings.Repeat(" ", widths[i]-runewidth.StringWidth(c)+2))
			}
		}
		// No padding after the last cell that is not empty.
		b.WriteString(strings.TrimRight(l.String(), " "))
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}
