package chroma

import (
	"encoding/binary"
	"errors"
	"math"
	"math/bits"
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
	// nulls: Chroma wrote NaN values as null. In a cosine space it stores
	// a vector whose norm overflows float32 normalized to NaNs, and gives
	// it back as [null, ...]: nothing of the vector is left, and no JSON
	// add could write it again, so it is a null embedding, as Chroma's
	// own null vectors are.
	nulls := false
	for {
		p.Space()
		if p.Literal("null") {
			nulls = true
			row = append(row, 0)
		} else {
			f, err := p.float32()
			if err != nil {
				return nil, err
			}
			row = append(row, f)
		}
		p.Space()
		if p.Consume(']') {
			p.dim = len(row)
			if nulls {
				return nil, nil
			}
			return row, nil
		}
		if !p.Consume(',') {
			return nil, p.Fail("',' or ']' in an embedding")
		}
	}
}

// pow10 holds the powers of ten that float64 represents exactly.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
	1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// float32 parses a number in JSON's grammar at p.I and leaves p.I after
// it. The value is what strconv.ParseFloat(s, 32) gives, bit for bit;
// out of float32's range is errFloatRange.
//
// The digits are read once, eight at a time where they run that long,
// into a decimal mantissa and exponent. When both are small, as Chroma's
// shortest forms of float32 values (at most 9 significant digits) nearly
// always are, the value is one correctly rounded float64 operation on
// exact operands, then rounded to float32. That second rounding can
// differ from rounding the decimal straight to float32 only when the
// float64 falls exactly halfway between two float32s; those, and anything
// longer, larger or smaller, go to strconv.
func (p *rowParser) float32() (float32, error) {
	d, i := p.Data, p.I
	start := i
	neg := i < len(d) && d[i] == '-'
	if neg {
		i++
	}
	var (
		mant uint64 // the digits, but for an integer part of 0; exact while nd <= 19
		nd   int    // how many digits mant took, zeros after the point included
		exp  int    // the value is mant * 10^exp
	)
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case i < len(d) && d[i] >= '1' && d[i] <= '9':
		for ; i < len(d) && d[i]-'0' <= 9; i++ {
			mant = mant*10 + uint64(d[i]-'0')
			nd++
		}
	default:
		p.I = i
		return 0, p.Fail("a JSON number")
	}
	if i < len(d) && d[i] == '.' {
		i++
		frac := i
		for i+8 <= len(d) {
			x := binary.LittleEndian.Uint64(d[i:])
			n := leadingDigits(x)
			// Past 19 digits mant wraps; nd says so.
			if n == 8 {
				mant = mant*1e8 + parseEightDigits(x)
				nd += 8
				i += 8
				continue
			}
			if n > 0 {
				// The n digits moved up to the most significant end,
				// below them '0's.
				mant = mant*pow10u[n] + parseEightDigits(x<<(64-8*n)|0x3030303030303030>>(8*n))
				nd += n
				i += n
			}
			break
		}
		for ; i < len(d) && d[i]-'0' <= 9; i++ {
			mant = mant*10 + uint64(d[i]-'0')
			nd++
		}
		if i == frac {
			p.I = i
			return 0, p.Fail("a digit after the decimal point")
		}
		exp = frac - i
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		esign := 1
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			if d[i] == '-' {
				esign = -1
			}
			i++
		}
		e, digits := 0, 0
		for ; i < len(d) && d[i]-'0' <= 9; i++ {
			if e < 100000 {
				e = e*10 + int(d[i]-'0')
			}
			digits++
		}
		if digits == 0 {
			p.I = i
			return 0, p.Fail("a digit in the exponent")
		}
		exp += esign * e
	}
	p.I = i
	if nd <= 19 && mant == 0 {
		var z float32
		if neg {
			z = -z
		}
		return z, nil
	}
	// mant < 2^53 and |exp| <= 22: both operands exact, and the result
	// lies between 1e-22 and 9e37, inside float32's normal range.
	if nd <= 19 && mant < 1<<53 && exp >= -22 && exp <= 22 {
		f := float64(mant)
		if exp < 0 {
			f /= pow10[-exp]
		} else {
			f *= pow10[exp]
		}
		// float64 keeps 29 bits more than float32: halfway is 1 and 28 zeros.
		if math.Float64bits(f)&(1<<29-1) != 1<<28 {
			r := float32(f)
			if neg {
				r = -r
			}
			return r, nil
		}
	}
	f, err := strconv.ParseFloat(string(d[start:i]), 32)
	if err != nil {
		var ne *strconv.NumError
		if errors.As(err, &ne) && ne.Err == strconv.ErrRange {
			return 0, errFloatRange
		}
		p.I = start
		return 0, p.Fail("a number")
	}
	return float32(f), nil
}

// leadingDigits is how many of the 8 bytes of x, from the first (the low
// byte) on, are ASCII digits before one that is not. A byte below 0x30
// borrows, and one above 0x39 carries, only into the bytes after it.
func leadingDigits(x uint64) int {
	return bits.TrailingZeros64(((x+0x4646464646464646)|(x-0x3030303030303030))&0x8080808080808080) >> 3
}

// pow10u holds 10^n for the n of leadingDigits.
var pow10u = [...]uint64{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8}

// parseEightDigits is the number the 8 ASCII digits of x spell, the first
// in the low byte, most significant: pairs, then quads, then the eight.
func parseEightDigits(x uint64) uint64 {
	x -= 0x3030303030303030
	x = x*10 + x>>8
	return ((x&0x000000FF000000FF)*(100+1000000<<32) + (x>>16&0x000000FF000000FF)*(1+10000<<32)) >> 32
}
