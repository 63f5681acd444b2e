package jsonx

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

var stringSeeds = []string{
	"", "plain", `quote " and \ backslash`, "tab\tnew\nline\r\b\f", "\x00\x01\x1f\x7f",
	"<html> & </html>", "caf\u00e9 \u4e16\u754c \U0001F600", "sep\u2028\u2029",
	"bad \xff\xfe utf8", "\xed\xa0\x80 surrogate", "trunc \xe4\xb8", "\ufffd",
}

// encodingJSON is what encoding/json writes for s.
func encodingJSON(t *testing.T, s string, escapeHTML bool) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(escapeHTML)
	if err := enc.Encode(s); err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

func FuzzAppendString(f *testing.F) {
	for _, s := range stringSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, html := range []bool{true, false} {
			want := encodingJSON(t, s, html)
			if got := AppendString([]byte("x"), s, html); !bytes.Equal(got[1:], want) || got[0] != 'x' {
				t.Fatalf("AppendString(%q, html=%v) = %s, encoding/json writes %s", s, html, got, want)
			}
		}
		if m, _ := json.Marshal(s); !bytes.Equal(AppendString(nil, s, true), m) {
			t.Fatalf("AppendString(%q, true) differs from json.Marshal %s", s, m)
		}
		got, valid := AppendStringValid(nil, s, false)
		if want := AppendString(nil, s, false); !bytes.Equal(got, want) || valid != utf8.ValidString(s) {
			t.Fatalf("AppendStringValid(%q) = %s, %v; AppendString writes %s, utf8.ValidString says %v", s, got, valid, want, utf8.ValidString(s))
		}
	})
}

// FuzzString holds String to encoding/json: where it accepts, the same
// string and the same end; where encoding/json refuses, it refuses.
func FuzzString(f *testing.F) {
	for _, s := range stringSeeds {
		m, _ := json.Marshal(s)
		f.Add(string(m) + " ,")
		f.Add(`"` + s + `"`)
	}
	f.Add(`"\u00e9\ud83d\ude00\n"`)
	f.Add(`"\ud800x"`)
	f.Add(`"\ud800\u0041"`)
	f.Add(`"\udc00\ud800"`)
	f.Add(`"\uD83D\uDE00 \/ \b\f"`)
	f.Add(`"naïve café \"quoted\" back\\slash tab\there new\nline <html> &amp; 🚀 データ"`)
	f.Add(`"\x"`)
	f.Add(`"unterminated`)
	f.Fuzz(func(t *testing.T, in string) {
		sc := Scanner{Data: []byte(in), What: "test"}
		got, err := sc.String()
		end, ok := skipString([]byte(in), 0)
		var want string
		var werr error
		if ok {
			werr = json.Unmarshal([]byte(in[:end]), &want)
		}
		switch {
		case err == nil && (!ok || werr != nil):
			t.Fatalf("String(%q) = %q, encoding/json refuses it (%v)", in, got, werr)
		case err == nil && (got != want || sc.I != end):
			t.Fatalf("String(%q) = %q ending at %d, encoding/json %q ending at %d", in, got, sc.I, want, end)
		case err != nil && ok && werr == nil:
			t.Fatalf("String(%q) refused (%v), encoding/json takes it as %q", in, err, want)
		}
	})
}

// TestStringAllocatesOnce: a string with escapes is decoded into one
// allocation of the right size, which becomes the string; growing the
// buffer by steps, then copying it, cost a snapshot most of its string
// decoding.
func TestStringAllocatesOnce(t *testing.T) {
	for _, in := range []string{
		`"` + strings.Repeat(`naïve café \"quoted\" back\\slash tab\there new\nline`, 20) + `"`,
		`"ends in an escaped backslash \\"`,
		`"` + strings.Repeat(`\\\"`, 100) + `"`,
	} {
		data := []byte(in)
		var want string
		if err := json.Unmarshal(data, &want); err != nil {
			t.Fatalf("test input %q: %v", in, err)
		}
		allocs := testing.AllocsPerRun(20, func() {
			sc := Scanner{Data: data}
			if got, err := sc.String(); err != nil || got != want {
				t.Fatalf("String(%q) = %q, %v; want %q", in, got, err, want)
			}
		})
		if allocs != 1 {
			t.Errorf("String(%.40q...) made %v allocations, want 1", in, allocs)
		}
	}
}

func FuzzNumberAndInt(f *testing.F) {
	for _, s := range []string{"0", "-0", "12", "01", "-", "1.", ".5", "+1", "1e5", "1E+5", "1e", "-1.25e-3", "9223372036854775807", "9223372036854775808", "-9223372036854775808"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		if strings.TrimSpace(in) != in {
			t.Skip("the scanner's callers skip whitespace themselves")
		}
		sc := Scanner{Data: []byte(in), What: "test"}
		isNum := sc.Number() && sc.I == len(in)
		var n json.Number
		dec := json.NewDecoder(strings.NewReader(in))
		dec.UseNumber()
		var v any
		jsonNum := dec.Decode(&v) == nil && dec.InputOffset() == int64(len(in))
		if jsonNum {
			n, jsonNum = v.(json.Number)
		}
		if isNum != jsonNum {
			t.Fatalf("Number(%q) = %v, encoding/json says %v", in, isNum, jsonNum)
		}
		sc = Scanner{Data: []byte(in), What: "test"}
		i, err := sc.Int()
		var want int64
		werr := json.Unmarshal([]byte(in), &want)
		if err == nil && sc.I == len(in) && (werr != nil || i != want) {
			t.Fatalf("Int(%q) = %d, encoding/json: %d, %v", in, i, want, werr)
		}
		if werr == nil && (err != nil || sc.I != len(in)) && n != "" {
			t.Fatalf("Int(%q) refused (%v), encoding/json takes %d", in, err, want)
		}
	})
}

func TestArrayAndObject(t *testing.T) {
	sc := Scanner{Data: []byte(` [ 1 , 2,3 ] `), What: "test"}
	sc.Space()
	var got []int64
	null, err := sc.Array(func() error {
		n, err := sc.Int()
		got = append(got, n)
		return err
	})
	if err != nil || null || len(got) != 3 || got[2] != 3 || sc.End() != nil {
		t.Fatalf("array: %v %v %v", got, null, err)
	}
	for _, bad := range []string{`[1,]`, `[1 2]`, `[`, `[,1]`, `nul`} {
		sc := Scanner{Data: []byte(bad), What: "test"}
		if _, err := sc.Array(func() error { _, err := sc.Int(); return err }); err == nil {
			t.Errorf("Array(%q) accepted", bad)
		}
	}
	obj, err := (&Scanner{Data: []byte(`{"a":1,"b":1.5,"c":"x","d":true,"e":null,"a":-2}`), What: "metadata"}).ScalarObject()
	if err != nil || len(obj) != 5 || obj["a"] != int64(-2) || obj["b"] != 1.5 || obj["c"] != "x" || obj["d"] != true || obj["e"] != nil {
		t.Fatalf("ScalarObject = %v, %v", obj, err)
	}
	for _, bad := range []string{`{"a":[1]}`, `{"a":{}}`, `{"a":1,}`, `{a:1}`, `{"a" 1}`, `{"a":99999999999999999999}`, `{"a":1e999}`, `{"a":tru}`} {
		if _, err := (&Scanner{Data: []byte(bad), What: "metadata"}).ScalarObject(); err == nil {
			t.Errorf("ScalarObject(%q) accepted", bad)
		}
	}
}

// BenchmarkString reads and writes 500-byte documents: plain English, and
// the benchmark workloads' mix of Unicode and characters JSON escapes.
func BenchmarkString(b *testing.B) {
	docs := map[string]string{
		"plain": strings.Repeat("The quick brown fox jumps over the lazy dog. ", 11),
		"mixed": strings.Repeat(`naïve café "quoted" back\slash tab`+"\t"+`here new`+"\n"+`line <html> &amp; 🚀 データ `, 7),
	}
	for _, kind := range []string{"plain", "mixed"} {
		doc := docs[kind]
		quoted := AppendString(nil, doc, false)
		b.Run(kind+"/append", func(b *testing.B) {
			b.SetBytes(int64(len(doc)))
			buf := make([]byte, 0, 1024)
			for b.Loop() {
				buf = AppendString(buf[:0], doc, false)
			}
		})
		b.Run(kind+"/read", func(b *testing.B) {
			b.SetBytes(int64(len(doc)))
			for b.Loop() {
				sc := Scanner{Data: quoted}
				if _, err := sc.String(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
