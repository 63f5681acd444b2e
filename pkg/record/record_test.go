package record

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
)

func TestMetadataRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   Metadata
		want string
	}{
		{"nil", nil, `null`},
		{"empty", Metadata{}, `{}`},
		{"int beyond 2^53", Metadata{"n": int64(9007199254740993)}, `{"n":9007199254740993}`},
		{"min int64", Metadata{"n": int64(math.MinInt64)}, `{"n":-9223372036854775808}`},
		{"integral float stays float", Metadata{"f": 1.0}, `{"f":1.0}`},
		{"float", Metadata{"f": 0.1}, `{"f":0.1}`},
		{"large float", Metadata{"f": 1e300}, `{"f":1e+300}`},
		{"bool and unicode", Metadata{"b": true, "s": "日本語 🚀"}, `{"b":true,"s":"日本語 🚀"}`},
		{"sorted keys", Metadata{"z": "1", "a": "2"}, `{"a":"2","z":"1"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := json.Marshal(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("marshal = %s, want %s", got, tc.want)
			}
			var back Metadata
			if err := json.Unmarshal(got, &back); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back, tc.in) {
				t.Errorf("round trip = %#v, want %#v", back, tc.in)
			}
		})
	}
}

func TestMetadataRejects(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"nested object", `{"a":{"b":1}}`, "unsupported value"},
		{"int overflow", `{"a":9223372036854775808}`, "out of int64 range"},
		{"not an object", `[1]`, "metadata"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m Metadata
			err := json.Unmarshal([]byte(tc.in), &m)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
	if _, err := json.Marshal(Metadata{"x": math.NaN()}); err == nil {
		t.Errorf("NaN encoded without error")
	}
	if _, err := json.Marshal(Metadata{"x": []int{1}}); err == nil {
		t.Errorf("slice value encoded without error")
	}
}

func sp(s string) *string { return &s }

// TestDigestGolden pins the content digest's encoding: archives carry
// digests, and every later version must compute the same ones (this sum
// was computed when metadata still went through json.Marshal).
func TestDigestGolden(t *testing.T) {
	b := &Batch{
		IDs:        []string{"a", "b.c", "日本\x00", "<&>"},
		Embeddings: [][]float32{{1, 2}, nil, {float32(math.Copysign(0, -1)), math.SmallestNonzeroFloat32}, {3, 4}},
		Documents:  []*string{nil, sp(""), sp("doc \u2028 <b>"), sp("\x01\t\"\\")},
		Metadatas: []Metadata{nil, {"k": int64(1)},
			{"k": 1.0, "<html>": "a&b>c \u2029 \x7f \x1f", "big": int64(math.MaxInt64), "f": 1e300, "neg": -0.5, "t": true, "ü": "日本語 🚀"},
			{"a": "", "b": false, "c": int64(-9007199254740993), "d": 1e-7}},
		URIs: []*string{sp("u"), nil, nil, sp("s3://x/<y>")},
	}
	d := NewDigest()
	if err := d.Add(b); err != nil {
		t.Fatal(err)
	}
	if got, want := d.Sum(), "350b7701e31e4ace5d4b062eacdeafb7d13aaa0c0d950028b294e39f356231c5"; got != want {
		t.Errorf("digest = %s, want %s: the encoding changed, and no archive written before would verify", got, want)
	}
	m, err := b.Metadatas[2].AppendJSON(nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"\u003chtml\u003e":"a\u0026b\u003ec \u2029 ` + "\x7f" + ` \u001f","big":9223372036854775807,"f":1e+300,"k":1.0,"neg":-0.5,"t":true,"ü":"日本語 🚀"}`; string(m) != want {
		t.Errorf("canonical JSON = %s, want %s", m, want)
	}
}

func sample() *Batch {
	return &Batch{
		IDs:        []string{"a", "b.c", "日本\x00"},
		Embeddings: [][]float32{{1, 2}, nil, {float32(math.Copysign(0, -1)), math.SmallestNonzeroFloat32}},
		Documents:  []*string{nil, sp(""), sp("doc")},
		Metadatas:  []Metadata{nil, {"k": int64(1)}, {"k": 1.0}},
		URIs:       []*string{sp("u"), nil, nil},
	}
}

func TestDigestIndependentOfBatching(t *testing.T) {
	b := sample()
	whole := NewDigest()
	if err := whole.Add(b); err != nil {
		t.Fatal(err)
	}
	split := NewDigest()
	for _, part := range []*Batch{b.Slice(0, 1), b.Slice(1, 3)} {
		if err := split.Add(part); err != nil {
			t.Fatal(err)
		}
	}
	if whole.Sum() != split.Sum() || whole.Count() != 3 || split.Count() != 3 {
		t.Errorf("digest depends on batching: %s (%d) vs %s (%d)", whole.Sum(), whole.Count(), split.Sum(), split.Count())
	}
}

// TestDigestAddEncoded: hashing embeddings as an archive stores them gives
// the sum hashing the vectors gives.
func TestDigestAddEncoded(t *testing.T) {
	emptyDim := &Batch{IDs: []string{"a", "b"}, Embeddings: [][]float32{{}, nil}}
	noEmbeddings := &Batch{IDs: []string{"a"}}
	for name, b := range map[string]*Batch{"sample": sample(), "dimension 0": emptyDim, "no embeddings": noEmbeddings} {
		t.Run(name, func(t *testing.T) {
			want := NewDigest()
			if err := want.Add(b); err != nil {
				t.Fatal(err)
			}
			var f32 []byte
			nulls := []int{}
			dim := 0
			for i, e := range b.Embeddings {
				if e == nil {
					nulls = append(nulls, i)
					continue
				}
				dim = len(e)
				for _, f := range e {
					f32 = binary.LittleEndian.AppendUint32(f32, math.Float32bits(f))
				}
			}
			if b.Embeddings == nil {
				nulls = nil
				for i := range b.IDs {
					nulls = append(nulls, i)
				}
			}
			cols := *b
			cols.Embeddings = nil
			got := NewDigest()
			if err := got.AddEncoded(&cols, dim, nulls, f32); err != nil {
				t.Fatal(err)
			}
			if got.Sum() != want.Sum() || got.Count() != want.Count() {
				t.Errorf("AddEncoded: %s (%d records), Add: %s (%d)", got.Sum(), got.Count(), want.Sum(), want.Count())
			}
		})
	}
}

func TestDigestSeesEveryField(t *testing.T) {
	base := NewDigest()
	_ = base.Add(sample())
	changes := map[string]func(b *Batch){
		"id":                    func(b *Batch) { b.IDs[0] = "x" },
		"null vs empty doc":     func(b *Batch) { b.Documents[0] = sp("") },
		"uri":                   func(b *Batch) { b.URIs[1] = sp("") },
		"int vs float metadata": func(b *Batch) { b.Metadatas[1] = Metadata{"k": 1.0} },
		"nil vs empty metadata": func(b *Batch) { b.Metadatas[0] = Metadata{} },
		"negative zero":         func(b *Batch) { b.Embeddings[2][0] = 0 },
		"null embedding":        func(b *Batch) { b.Embeddings[1] = []float32{} },
	}
	for name, change := range changes {
		t.Run(name, func(t *testing.T) {
			b := sample()
			change(b)
			d := NewDigest()
			_ = d.Add(b)
			if d.Sum() == base.Sum() {
				t.Errorf("digest did not change")
			}
		})
	}
}

func TestBatchValidate(t *testing.T) {
	b := sample()
	if err := b.Validate(); err != nil {
		t.Fatalf("valid batch: %v", err)
	}
	b.URIs = b.URIs[:2]
	if err := b.Validate(); err == nil || !strings.Contains(err.Error(), "3 ids but 2 uris") {
		t.Errorf("short column: %v", err)
	}
}

func FuzzMetadata(f *testing.F) {
	f.Add(`{"a":1,"b":1.0,"c":"x","d":true}`)
	f.Add(`{"n":9007199254740993}`)
	f.Fuzz(func(t *testing.T, in string) {
		var m Metadata
		if json.Unmarshal([]byte(in), &m) != nil {
			return
		}
		out, err := json.Marshal(m)
		if err != nil {
			return // e.g. a decoded value that cannot be re-encoded is reported, not panicked
		}
		var back Metadata
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("re-decode %s: %v", out, err)
		}
		if !reflect.DeepEqual(back, m) {
			t.Fatalf("round trip %s -> %#v -> %s -> %#v", in, m, out, back)
		}
	})
}
