package chroma

import (
	"errors"
	"strconv"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/internal/jsonx"
)

// rows parses an array of embeddings, or null, at p.i and leaves p.i
// after it.
func (p *rowParser) rows() ([][]float32, error) {
	if p.Literal("null") {
		return nil, nil
	}
	if !p.Consume('[') {
		return nil, p.Fail("an array of embeddings")
	}
	rows := make([][]float32, 0, 64)
	p.Space()
	if p.Consume(']') {
		return rows, nil
	}
	for {
		p.Space()
		row, err := p.row()
		if err != nil {
			return nil, err
		}
		rows = append(rows, row)
		p.Space()
		if p.Consume(']') {
			return rows, nil
		}
		if !p.Consume(',') {
			return nil, p.Fail("',' or ']' between embeddings")
		}
	}
}

// rowParser parses embeddings, arrays of float arrays (or nulls), without
// reflection: the get path spends most of its client time here, and
// encoding/json's per-number reflection costs about twice this loop.
// Numbers must follow JSON's grammar and are parsed with 32-bit rounding,
// exactly as encoding/json does for float32, so values are bit-exact.
type rowParser struct {
	jsonx.Scanner
	dim int // length of the last row, to size the next
}

var errFloatRange = errors.New("embeddings: value out of float32 range")

func (p *rowParser) row() ([]float32, error) {
	if p.Literal("null") {
		return nil, nil
	}
	if !p.Consume('[') {
		return nil, p.Fail("an embedding array or null")
	}
	row := make([]float32, 0, max(p.dim, 8))
	p.Space()
	if p.Consume(']') {
		p.dim = 0
		return row, nil
	}
	for {
		p.Space()
		start := p.I
		if !p.Number() {
			return nil, p.Fail("a JSON number")
		}
		f, err := strconv.ParseFloat(string(p.Data[start:p.I]), 32)
		if err != nil {
			var ne *strconv.NumError
			if errors.As(err, &ne) && ne.Err == strconv.ErrRange {
				return nil, errFloatRange
			}
			return nil, p.Fail("a number")
		}
		row = append(row, float32(f))
		p.Space()
		if p.Consume(']') {
			p.dim = len(row)
			return row, nil
		}
		if !p.Consume(',') {
			return nil, p.Fail("',' or ']' in an embedding")
		}
	}
}
