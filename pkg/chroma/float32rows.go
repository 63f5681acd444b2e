package chroma

import (
	"errors"
	"fmt"
	"strconv"
)

// float32Rows decodes a JSON array of float arrays (or nulls) without
// reflection: the get path spends most of its client time here, and
// encoding/json's per-number reflection costs about twice this loop.
// Numbers are parsed with 32-bit rounding, exactly as encoding/json does
// for float32, so values are bit-exact. The input has already been checked
// as JSON by the surrounding decoder.
type float32Rows [][]float32

func (r *float32Rows) UnmarshalJSON(data []byte) error {
	p := rowParser{data: data}
	p.space()
	if p.literal("null") {
		*r = nil
		return p.end()
	}
	if !p.consume('[') {
		return p.fail("an array of embeddings")
	}
	rows := make([][]float32, 0, 64)
	p.space()
	if p.consume(']') {
		*r = rows
		return p.end()
	}
	for {
		p.space()
		row, err := p.row()
		if err != nil {
			return err
		}
		rows = append(rows, row)
		p.space()
		if p.consume(']') {
			*r = rows
			return p.end()
		}
		if !p.consume(',') {
			return p.fail("',' or ']' between embeddings")
		}
	}
}

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
		for p.i < len(p.data) {
			c := p.data[p.i]
			if (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E' {
				p.i++
				continue
			}
			break
		}
		if start == p.i {
			return nil, p.fail("a number")
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
