package restorer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"reflect"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
)

// maxListedDiffs caps the differences listed per collection.
const maxListedDiffs = 20

// cosineTolerance is the largest difference accepted between a cosine
// embedding value and its archived value, relative to the largest absolute
// value of the archived vector: Chroma normalizes what it stores in cosine
// spaces, so a re-added vector comes back about one ULP off (measured: at
// most 1.2e-7 on vectors with values in [-1, 1]); 1e-6 is eight ULPs of the
// vector's scale.
const cosineTolerance = 1e-6

// maxMetadataULPs is the largest distance, in units in the last place,
// accepted between a float metadata value Chroma holds and its archived
// value. Chroma 1.0 parses JSON numbers with a float parser that is not
// correctly rounded (serde_json without float_roundtrip), and parses what it
// stores twice, so some float64 values cannot be stored at all, whatever
// their decimal text: 632/7 = 90.28571428571429 comes back as
// 90.28571428571428. Measured over the whole float64 range: about one value
// in six is changed, by at most 3 ULPs. What Chroma returned is stored
// unchanged, so snapshots of this Chroma restore bit-exactly; archives of
// other origins (the seed tool's, another Chroma's) can hold such values.
const maxMetadataULPs = 4

// batchCheck compares what Chroma holds for an archive batch's ids with the
// archive: the same ids, and for each the same document (null and ""
// distinct), URI, metadata (values and their types) and embedding (bit for
// bit, or within cosineTolerance when cosine is set).
type batchCheck struct {
	cosine  bool
	diffs   []string
	total   int     // differences found, listed or not
	maxDiff float64 // largest embedding difference seen (cosine)
	// floatsOff counts metadata float values Chroma changed within
	// maxMetadataULPs.
	floatsOff int
}

func (c *batchCheck) add(format string, args ...any) {
	c.total++
	if len(c.diffs) < maxListedDiffs {
		c.diffs = append(c.diffs, fmt.Sprintf(format, args...))
	}
}

func (c *batchCheck) compare(want, got *record.Batch) {
	idx := make(map[string]int, got.Len())
	for i, id := range got.IDs {
		idx[id] = i
	}
	for i, id := range want.IDs {
		g, ok := idx[id]
		if !ok {
			c.add("record %q is missing", id)
			continue
		}
		if d := strDiff(column(want.Documents, i), column(got.Documents, g)); d != "" {
			c.add("record %q: document %s", id, d)
		}
		if d := strDiff(column(want.URIs, i), column(got.URIs, g)); d != "" {
			c.add("record %q: uri %s", id, d)
		}
		if ok, off := metadataClose(metaAt(want, i), metaAt(got, g)); ok {
			c.floatsOff += off
		} else {
			c.add("record %q: metadata %s, want %s", id, metaJSON(metaAt(got, g)), metaJSON(metaAt(want, i)))
		}
		var we, ge []float32
		if want.Embeddings != nil {
			we = want.Embeddings[i]
		}
		if got.Embeddings != nil {
			ge = got.Embeddings[g]
		}
		c.embedding(id, we, ge)
	}
}

func (c *batchCheck) embedding(id string, want, got []float32) {
	if want == nil {
		// A null embedding (a zero vector in a cosine space) is re-added
		// as zeros, which Chroma stores as null again.
		if got != nil && !allZero(got) {
			c.add("record %q: embedding present, want null", id)
		}
		return
	}
	if got == nil {
		c.add("record %q: embedding null, want %d values", id, len(want))
		return
	}
	if len(got) != len(want) {
		c.add("record %q: embedding has %d values, want %d", id, len(got), len(want))
		return
	}
	if !c.cosine {
		for k := range want {
			if math.Float32bits(want[k]) != math.Float32bits(got[k]) {
				c.add("record %q: embedding value %d is %v (bits %08x), want %v (bits %08x)", id, k, got[k], math.Float32bits(got[k]), want[k], math.Float32bits(want[k]))
				return
			}
		}
		return
	}
	scale := 0.0
	for _, v := range want {
		scale = max(scale, math.Abs(float64(v)))
	}
	tol := cosineTolerance * max(scale, math.SmallestNonzeroFloat32)
	for k := range want {
		d := math.Abs(float64(want[k]) - float64(got[k]))
		if !(d <= tol) { // a NaN is a difference too
			c.add("record %q: embedding value %d is %v, want %v (difference %.3g over the cosine tolerance %.3g)", id, k, got[k], want[k], d, tol)
			return
		}
		c.maxDiff = max(c.maxDiff, d)
	}
}

func allZero(v []float32) bool {
	for _, f := range v {
		if f != 0 {
			return false
		}
	}
	return true
}

func column(c []*string, i int) *string {
	if c == nil {
		return nil
	}
	return c[i]
}

func metaAt(b *record.Batch, i int) record.Metadata {
	if b.Metadatas == nil {
		return nil
	}
	return b.Metadatas[i]
}

func strDiff(want, got *string) string {
	switch {
	case want == nil && got == nil:
		return ""
	case want == nil:
		return fmt.Sprintf("is %.60q, want null", *got)
	case got == nil:
		return fmt.Sprintf("is null, want %.60q", *want)
	case *want != *got:
		return fmt.Sprintf("is %.60q, want %.60q", *got, *want)
	}
	return ""
}

// metadataEqual compares values and their types (int64 1 is not float64 1),
// floats within maxMetadataULPs; nil and empty are the same, as Chroma
// cannot keep them apart.
func metadataEqual(a, b record.Metadata) bool {
	ok, _ := metadataClose(a, b)
	return ok
}

// metadataClose is metadataEqual that also counts the float values that
// differ within maxMetadataULPs.
func metadataClose(want, got record.Metadata) (ok bool, floatsOff int) {
	if len(want) == 0 && len(got) == 0 {
		return true, 0
	}
	if reflect.DeepEqual(want, got) {
		return true, 0
	}
	if len(want) != len(got) {
		return false, 0
	}
	for k, w := range want {
		g, present := got[k]
		if !present {
			return false, 0
		}
		wf, wok := w.(float64)
		gf, gok := g.(float64)
		switch {
		case wok && gok:
			if wf != gf {
				if ulps(wf, gf) > maxMetadataULPs {
					return false, 0
				}
				floatsOff++
			}
		case !reflect.DeepEqual(w, g):
			return false, 0
		}
	}
	return true, floatsOff
}

// ulps is the distance between two finite float64s in units in the last
// place; values of opposite signs are far apart unless both are zero.
func ulps(a, b float64) uint64 {
	if a == b {
		return 0
	}
	if math.Signbit(a) != math.Signbit(b) {
		return math.MaxUint64
	}
	x, y := math.Float64bits(math.Abs(a)), math.Float64bits(math.Abs(b))
	if x > y {
		return x - y
	}
	return y - x
}

func metaJSON(m record.Metadata) string {
	b, err := m.AppendJSON(nil)
	if err != nil {
		return fmt.Sprintf("%v", map[string]any(m))
	}
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}

// jsonEqual compares two JSON documents by value.
func jsonEqual(a, b json.RawMessage) bool {
	if bytes.Equal(a, b) {
		return true
	}
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}
