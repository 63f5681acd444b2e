package main

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"math"
	"sort"
	"strings"
)

// migratedByKey is the metadata key the migration adds to every record.
const migratedByKey = "migrated_by"

// transform is the migration itself: documents get their whitespace
// normalised (runs of spaces, tabs and newlines become one space; ends
// trimmed), metadata gets "migrated_by". Null documents stay null, "" stays
// "". Embeddings are not changed.
func transform(doc *string, meta map[string]any, migratedBy string) (*string, map[string]any) {
	var out *string
	if doc != nil {
		d := strings.Join(strings.Fields(*doc), " ")
		out = &d
	}
	m := make(map[string]any, len(meta)+1)
	for k, v := range meta {
		m[k] = v
	}
	m[migratedByKey] = migratedBy
	return out, m
}

// lost reports whether the --lose fault injection drops this record: a
// hash (SHA-256) of collection and id mapped to [0, 1) is under the share,
// so the same records are lost on every run, about share of every
// collection.
func lost(share float64, collection, id string) bool {
	if share <= 0 {
		return false
	}
	h := sha256.New()
	h.Write([]byte(collection))
	h.Write([]byte{0})
	h.Write([]byte(id))
	x := binary.BigEndian.Uint64(h.Sum(nil))
	return float64(x>>11)/float64(1<<53) < share
}

// fingerprint is what validation compares per record: a digest of the
// document and metadata (exact, types included) and the embedding's
// dimension and two norms. Chroma renormalises embeddings in cosine spaces
// when they are written (about 1 ULP per value), so embeddings are compared
// through their norms with a relative tolerance rather than bit by bit;
// a missing, truncated or swapped vector still shows.
type fingerprint struct {
	content  [16]byte
	dim      int
	l2, wl1  float64
	embedded bool
}

// embeddingTolerance is the relative difference of the norms taken as equal.
const embeddingTolerance = 1e-5

func fingerprintOf(doc *string, meta map[string]any, emb []float32) fingerprint {
	h := sha256.New()
	if doc == nil {
		h.Write([]byte{0})
	} else {
		h.Write([]byte{1})
		writeString(h, *doc)
	}
	keys := make([]string, 0, len(meta))
	for k := range meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		writeString(h, k)
		writeValue(h, meta[k])
	}
	var fp fingerprint
	copy(fp.content[:], h.Sum(nil))
	if emb != nil {
		fp.embedded, fp.dim = true, len(emb)
		for i, v := range emb {
			f := float64(v)
			fp.l2 += f * f
			fp.wl1 += float64(i+1) * math.Abs(f)
		}
		fp.l2 = math.Sqrt(fp.l2)
	}
	return fp
}

// matches reports whether got is the record want describes.
func (want fingerprint) matches(got fingerprint) bool {
	return want.content == got.content && want.embedded == got.embedded && want.dim == got.dim &&
		near(want.l2, got.l2) && near(want.wl1, got.wl1)
}

func near(a, b float64) bool {
	return math.Abs(a-b) <= embeddingTolerance*math.Max(math.Abs(a), math.Abs(b))+1e-30
}

func writeString(h hash.Hash, s string) {
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(s)))
	h.Write(n[:])
	h.Write([]byte(s))
}

// writeValue hashes a metadata value with its type, so 1 and 1.0 differ.
func writeValue(h hash.Hash, v any) {
	var b [8]byte
	switch x := v.(type) {
	case string:
		h.Write([]byte{'s'})
		writeString(h, x)
	case int64:
		h.Write([]byte{'i'})
		binary.LittleEndian.PutUint64(b[:], uint64(x))
		h.Write(b[:])
	case float64:
		h.Write([]byte{'f'})
		binary.LittleEndian.PutUint64(b[:], math.Float64bits(x))
		h.Write(b[:])
	case bool:
		h.Write([]byte{'b'})
		if x {
			h.Write([]byte{1})
		} else {
			h.Write([]byte{0})
		}
	default:
		// Arrays (Chroma 1.x): their JSON text is exact enough for a check.
		writeString(h, fmt.Sprintf("%T:%v", x, x))
	}
}
