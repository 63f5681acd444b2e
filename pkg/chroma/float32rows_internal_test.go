package chroma

import (
	"errors"
	"math"
	"math/rand/v2"
	"regexp"
	"strconv"
	"testing"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/internal/jsonx"
)

// jsonNumber is JSON's number grammar.
var jsonNumber = regexp.MustCompile(`^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$`)

// checkFloat32 parses s with rowParser.float32 and compares the value
// and the error with strconv.ParseFloat(s, 32) for a number in JSON's
// grammar, and otherwise expects a refusal. It reports whether s took
// the float64 path, which is what a midpoint must not.
func checkFloat32(t *testing.T, s string) {
	t.Helper()
	p := rowParser{Scanner: jsonx.Scanner{Data: []byte(s), What: "embeddings"}}
	got, err := p.float32()
	if !jsonNumber.MatchString(s) {
		if err == nil && p.I == len(s) {
			t.Fatalf("%q: took %v, not a JSON number", s, got)
		}
		return
	}
	want, werr := strconv.ParseFloat(s, 32)
	if werr != nil {
		if !errors.Is(err, errFloatRange) {
			t.Fatalf("%q: err %v, strconv says %v", s, err, werr)
		}
		return
	}
	if err != nil || p.I != len(s) {
		t.Fatalf("%q: err %v, read %d of %d bytes", s, err, p.I, len(s))
	}
	if math.Float32bits(got) != math.Float32bits(float32(want)) {
		t.Fatalf("%q: %v (%#08x), strconv %v (%#08x)", s, got, math.Float32bits(got), float32(want), math.Float32bits(float32(want)))
	}
	// Inside an array, where the digits are read 8 bytes at a time past
	// the number's end: the same value, and it stops at the number's end.
	for _, after := range []string{",0.5]", "]", " ,12345678901]", "e"} {
		p := rowParser{Scanner: jsonx.Scanner{Data: []byte(s + after), What: "embeddings"}}
		in, err := p.float32()
		if after == "e" {
			if err == nil && p.I == len(s)+1 {
				t.Fatalf("%q: took %v", s+after, in)
			}
			continue
		}
		if err != nil || p.I != len(s) || math.Float32bits(in) != math.Float32bits(got) {
			t.Fatalf("%q: %v ending at %d (%v), alone %v", s+after, in, p.I, err, got)
		}
	}
}

// TestFloat32MatchesStrconv checks the parser of embedding values against
// strconv, bit for bit: random float32s in the forms Chroma and others
// write them, random decimals of up to 25 digits, the decimals closest to
// the points halfway between two float32s (where rounding through float64
// would go wrong), and the edges of float32's range.
func TestFloat32MatchesStrconv(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		f := math.Float32frombits(r.Uint32())
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			continue
		}
		checkFloat32(t, strconv.FormatFloat(float64(f), 'g', -1, 32))
		checkFloat32(t, strconv.FormatFloat(float64(f), 'e', r.IntN(12), 32))
		checkFloat32(t, strconv.FormatFloat(float64(f), 'g', -1, 64))
	}
	// Embedding-like values: small, in [-1, 1].
	for range 200000 {
		f := float32(r.NormFloat64() * 0.1)
		checkFloat32(t, strconv.FormatFloat(float64(f), 'g', -1, 32))
		checkFloat32(t, strconv.FormatFloat(float64(f), 'f', -1, 32))
	}
	digits := []byte("0123456789")
	for range 200000 {
		n := 1 + r.IntN(25)
		b := make([]byte, 0, n+8)
		if r.IntN(2) == 0 {
			b = append(b, '-')
		}
		b = append(b, digits[1+r.IntN(9)])
		for range n - 1 {
			b = append(b, digits[r.IntN(10)])
		}
		s := string(b)
		if k := r.IntN(n + 1); k < n && k > 0 {
			s = s[:len(s)-k] + "." + s[len(s)-k:]
		}
		if r.IntN(2) == 0 {
			s += "e" + strconv.Itoa(r.IntN(100)-50)
		}
		checkFloat32(t, s)
	}
	// Halfway between a float32 and the next: the shortest float64 forms
	// of the midpoint and of its neighbours, which round to it in float64.
	midpoints := 0
	for range 100000 {
		f := math.Float32frombits(r.Uint32() &^ (1 << 31))
		next := math.Nextafter32(f, float32(math.Inf(1)))
		if math.IsInf(float64(next), 0) || f < 0x1p-126 {
			continue
		}
		mid := (float64(f) + float64(next)) / 2
		for _, m := range []float64{mid, math.Nextafter(mid, 0), math.Nextafter(mid, math.Inf(1))} {
			s := strconv.FormatFloat(m, 'g', -1, 64)
			checkFloat32(t, s)
			checkFloat32(t, strconv.FormatFloat(m, 'g', 15, 64))
			if m == mid {
				midpoints++
			}
		}
	}
	if midpoints == 0 {
		t.Fatal("no midpoint tried")
	}
	for _, s := range []string{
		"0", "-0", "0.0", "-0.0e-0", "0e99", "1", "-1", "16777216", "16777217", "16777218", "16777219",
		"0.1", "1e-22", "1e22", "9007199254740993", "9007199254740992e-22", "3.4028235e38", "3.4028236e38",
		"3.40282356779733661637539395458142568448e38", "1e39", "-1e39", "1.17549435e-38", "1.1754942e-38",
		"1e-45", "1.401298464324817e-45", "7e-46", "1e-46", "1e-400", "1e400", "0.000000000000000000000000001",
		"1234567890123456789012345678901234567890", "0.12345678901234567890123",
		"1.000000059604644775390625", "1.0000000596046448", "1.00000005960464477539062500001",
		"01", "+1", ".5", "1.", "1e", "1e+", "-", "", "--1", "1.5e5.5", "0x10", "Infinity", "NaN",
	} {
		checkFloat32(t, s)
	}
}

func FuzzFloat32(f *testing.F) {
	for _, s := range []string{"0.1", "-1.5e-7", "16777217", "1.000000059604644775390625", "1e39", "1e-46", "01", "1.", "-0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { checkFloat32(t, s) })
}

// BenchmarkRows parses 100 embeddings of 384 values in [-1, 1) written as
// Chroma writes them (shortest float32 form, no exponent).
func BenchmarkRows(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	buf := []byte{'['}
	for i := range 100 {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, '[')
		for j := range 384 {
			if j > 0 {
				buf = append(buf, ',')
			}
			buf = strconv.AppendFloat(buf, float64(r.Float32()*2-1), 'f', -1, 32)
		}
		buf = append(buf, ']')
	}
	buf = append(buf, ']')
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		p := rowParser{Scanner: jsonx.Scanner{Data: buf, What: "embeddings"}}
		rows, err := p.rows()
		if err != nil || len(rows) != 100 {
			b.Fatalf("%d rows, %v", len(rows), err)
		}
	}
}

// TestRowsWithNulls: Chroma gives a cosine vector it normalized to NaNs
// (its norm overflowed float32) back as [null, ...]; such a row is a null
// embedding, and the rows around it are read as they are.
func TestRowsWithNulls(t *testing.T) {
	p := rowParser{Scanner: jsonx.Scanner{Data: []byte(`[[null,null,null],[1,2, 3],[0.5, null ,1],null,[]]`), What: "embeddings"}}
	rows, err := p.rows()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 5 || rows[0] != nil || len(rows[1]) != 3 || rows[1][2] != 3 || rows[2] != nil || rows[3] != nil || rows[4] == nil || len(rows[4]) != 0 {
		t.Errorf("rows %#v", rows)
	}
	for _, bad := range []string{`[[nul]]`, `[[null,]]`, `[[1,nulls]]`} {
		p := rowParser{Scanner: jsonx.Scanner{Data: []byte(bad), What: "embeddings"}}
		if rows, err := p.rows(); err == nil {
			t.Errorf("%s: %#v, want an error", bad, rows)
		}
	}
}
