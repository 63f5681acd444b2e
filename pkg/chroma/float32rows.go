package chroma

import (
	"errors"
	"fmt"
	"strconv"
)

// rows parses an array of embeddings, or null, at p.i and leaves p.i
// after it.
func (p *rowParser) rows() ([][]float32, error) {
	if p.literal("null") {
		return nil, nil
	}
	if !p.consume('[') {
		return nil, p.fail("an array of embeddings")
	}
	rows := make([][]float32, 0, 64)
	p.space()
	if p.consume(']') {
		return rows, nil
	}
	for {
		p.space()
		row, err := p.row()
		if err != nil {
			return nil, err
		}
		rows = append(rows, row)
		p.space()
		if p.consume(']') {
			return rows, nil
		}
		if !p.consume(',') {
			return nil, p.fail("',' or ']' between embeddings")
		}
	}
}

// rowParser parses embeddings, arrays of float arrays (or nulls), without
// reflection: the get path spends most of its client time here, and
// encoding/json's per-number reflection costs about twice this loop.
// Numbers must follow JSON's grammar and are parsed with 32-bit rounding,
// exactly as encoding/json does for float32, so values are bit-exact.
type rowParser struct {
	data []byte
	i    int
	dim  int // length of the last row, to size the next
}

func (p *rowParser) space() {
	for p.i < len(p.data) {
		switch p.data[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *rowParser) consume(c byte) bool {
	if p.i < len(p.data) && p.data[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *rowParser) literal(s string) bool {
	if len(p.data)-p.i >= len(s) && string(p.data[p.i:p.i+len(s)]) == s {
		p.i += len(s)
		return true
	}
	return false
}

func (p *rowParser) end() error {
	p.space()
	if p.i != len(p.data) {
		return p.fail("end of embeddings")
	}
	return nil
}

func (p *rowParser) fail(want string) error {
	return fmt.Errorf("embeddings: want %s at byte %d", want, p.i)
}

var errFloatRange = errors.New("embeddings: value out of float32 range")

func (p *rowParser) row() ([]float32, error) {
	if p.literal("null") {
		return nil, nil
	}
	if !p.consume('[') {
		return nil, p.fail("an embedding array or null")
	}
	row := make([]float32, 0, max(p.dim, 8))
	p.space()
	if p.consume(']') {
		p.dim = 0
		return row, nil
	}
	for {
		p.space()
		start := p.i
		if !p.number() {
			return nil, p.fail("a JSON number")
		}
		f, err := strconv.ParseFloat(string(p.data[start:p.i]), 32)
		if err != nil {
			var ne *strconv.NumError
			if errors.As(err, &ne) && ne.Err == strconv.ErrRange {
				return nil, errFloatRange
			}
			return nil, p.fail("a number")
		}
		row = append(row, float32(f))
		p.space()
		if p.consume(']') {
			p.dim = len(row)
			return row, nil
		}
		if !p.consume(',') {
			return nil, p.fail("',' or ']' in an embedding")
		}
	}
}

// number consumes a number in JSON's grammar,
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, and reports whether
// there was one (strconv.ParseFloat alone would take "+1", ".5", "01").
func (p *rowParser) number() bool {
	p.consume('-')
	switch {
	case p.consume('0'):
	case p.digits() == 0:
		return false
	}
	if p.consume('.') && p.digits() == 0 {
		return false
	}
	if p.consume('e') || p.consume('E') {
		if !p.consume('+') {
			p.consume('-')
		}
		if p.digits() == 0 {
			return false
		}
	}
	return true
}

func (p *rowParser) digits() int {
	start := p.i
	for p.i < len(p.data) && p.data[p.i] >= '0' && p.data[p.i] <= '9' {
		p.i++
	}
	return p.i - start
}
