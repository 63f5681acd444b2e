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

// batchCheck compares what Chroma holds for an archive batch's ids with the
// archive: the same ids, and for each the same document (null and ""
// distinct), URI, metadata (values and their types) and embedding (bit for
// bit, or within cosineTolerance when cosine is set).
type batchCheck struct {
	cosine  bool
	diffs   []string
	total   int     // differences found, listed or not
	maxDiff float64 // largest embedding difference seen (cosine)
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
		if !metadataEqual(metaAt(want, i), metaAt(got, g)) {
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

// metadataEqual compares values and their types (int64 1 is not float64 1);
// nil and empty are the same, as Chroma cannot keep them apart.
func metadataEqual(a, b record.Metadata) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return reflect.DeepEqual(a, b)
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
