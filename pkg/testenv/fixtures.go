package testenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"strings"
	"sync"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
)

// Fixture lists what SeedFixture created.
type Fixture struct {
	Databases []FixtureDB
}

// FixtureDB is one seeded database.
type FixtureDB struct {
	Tenant, Database string
	// Collections are the collection names, in creation order.
	Collections []string
	// Records is the record count of each collection, by name.
	Records map[string]int
}

// fixtureCollection describes one seeded collection.
type fixtureCollection struct {
	name    string
	config  string // JSON; "" means the server default
	meta    record.Metadata
	onMeta  bool // send metadata on create (hnsw:* keys drive the config)
	dim     int
	records int
	gen     func(r *rand.Rand, i, dim int) fixtureRecord
}

type fixtureRecord struct {
	id   string
	emb  []float32
	doc  *string
	uri  *string
	meta record.Metadata
}

// SeedFixture writes the full fixture, deterministically, into a server
// that does not hold these databases yet:
//
//	acme/prod:    corpus.v1 (l2, non-default HNSW, 384-d, 400 records: ids
//	              with dots, Unicode and NUL; null and "" documents; URIs on
//	              some; metadata of every type incl. int64 beyond 2^53 and
//	              integral floats; some nil metadata), personality (ip, 16-d,
//	              200), cosine_768 (cosine, 768-d, 150), empty (no records,
//	              with metadata), hnsw_meta (created the way Chroma's own
//	              clients do, with hnsw:* metadata deriving its config, 32-d, 50)
//	acme/staging: corpus.v1 (same name, other data, 64-d, 60)
//	beta/main:    notes (16-d, 40)
func SeedFixture(ctx context.Context, c *chroma.Client) (*Fixture, error) {
	plan := []struct {
		tenant, db string
		cols       []fixtureCollection
	}{
		{"acme", "prod", []fixtureCollection{
			{name: "corpus.v1", config: `{"hnsw":{"space":"l2","ef_construction":150,"max_neighbors":24,"ef_search":80}}`,
				meta: record.Metadata{"description": "main corpus", "schema": int64(2), "owner": "search-team", "weight": 1.0},
				dim:  384, records: 400, gen: corpusRecord},
			{name: "personality", config: `{"hnsw":{"space":"ip"}}`,
				meta: record.Metadata{"kind": "traits"}, dim: 16, records: 200, gen: plainRecord("trait")},
			{name: "cosine_768", config: `{"hnsw":{"space":"cosine"}}`,
				dim: 768, records: 150, gen: plainRecord("cos")},
			{name: "empty", meta: record.Metadata{"purpose": "left empty on purpose", "version": int64(3)}},
			{name: "hnsw_meta", meta: record.Metadata{"hnsw:space": "ip", "hnsw:M": int64(32), "owner": "legacy-app", "ratio": 0.5},
				onMeta: true, dim: 32, records: 50, gen: plainRecord("legacy")},
		}},
		{"acme", "staging", []fixtureCollection{
			{name: "corpus.v1", config: `{"hnsw":{"space":"l2"}}`, meta: record.Metadata{"description": "staging corpus"},
				dim: 64, records: 60, gen: plainRecord("stage")},
		}},
		{"beta", "main", []fixtureCollection{
			{name: "notes", meta: record.Metadata{"team": "beta"}, dim: 16, records: 40, gen: plainRecord("note")},
		}},
	}
	fx := &Fixture{}
	for _, p := range plan {
		if err := ensureDatabase(ctx, c, p.tenant, p.db); err != nil {
			return nil, err
		}
		fdb := FixtureDB{Tenant: p.tenant, Database: p.db, Records: map[string]int{}}
		for _, fc := range p.cols {
			if err := seedCollection(ctx, c, p.tenant, p.db, fc); err != nil {
				return nil, fmt.Errorf("seed %s/%s/%s: %w", p.tenant, p.db, fc.name, err)
			}
			fdb.Collections = append(fdb.Collections, fc.name)
			fdb.Records[fc.name] = fc.records
		}
		fx.Databases = append(fx.Databases, fdb)
	}
	return fx, nil
}

// ensureDatabase creates a tenant and database unless they exist.
func ensureDatabase(ctx context.Context, c *chroma.Client, tenant, db string) error {
	if err := c.CreateTenant(ctx, tenant); err != nil && !errors.Is(err, chroma.ErrAlreadyExists) {
		return err
	}
	if err := c.CreateDatabase(ctx, tenant, db); err != nil && !errors.Is(err, chroma.ErrAlreadyExists) {
		return err
	}
	return nil
}

func seedCollection(ctx context.Context, c *chroma.Client, tenant, db string, fc fixtureCollection) error {
	req := chroma.CreateCollection{Name: fc.name, Metadata: fc.meta, MetadataOnCreate: fc.onMeta}
	if fc.config != "" {
		req.Configuration = json.RawMessage(fc.config)
	}
	col, err := c.CreateCollection(ctx, tenant, db, req)
	if err != nil {
		return err
	}
	if fc.records == 0 {
		return nil
	}
	r := rand.New(rand.NewPCG(seedOf(tenant, db, fc.name), 1))
	b := &record.Batch{}
	for i := range fc.records {
		rec := fc.gen(r, i, fc.dim)
		b.IDs = append(b.IDs, rec.id)
		b.Embeddings = append(b.Embeddings, rec.emb)
		b.Documents = append(b.Documents, rec.doc)
		b.URIs = append(b.URIs, rec.uri)
		b.Metadatas = append(b.Metadatas, rec.meta)
	}
	return c.Add(ctx, tenant, db, col.ID, b)
}

func seedOf(parts ...string) uint64 {
	h := fnv.New64a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return h.Sum64()
}

// corpusRecord makes the records that exercise every field's edge cases.
func corpusRecord(r *rand.Rand, i, dim int) fixtureRecord {
	rec := fixtureRecord{id: fmt.Sprintf("doc.%d.a", i)}
	switch i {
	case 7:
		rec.id = "日本語-7"
	case 8:
		rec.id = "emoji-🚀"
	case 9:
		rec.id = "nul\x00id"
	case 10:
		rec.id = "spaces and/slash?#%"
	}
	rec.emb = randomVector(r, dim)
	if i == 3 {
		// Values that a lossy decoder would change: -0, the smallest
		// subnormal, the largest finite float32, a float32 that float64
		// decimal text rounds differently.
		rec.emb[0] = float32(math.Copysign(0, -1))
		rec.emb[1] = math.SmallestNonzeroFloat32
		rec.emb[2] = math.MaxFloat32
		rec.emb[3] = math.Float32frombits(0x3dcccccd) // 0.1f
		rec.emb[4] = math.Float32frombits(0x00800000) // smallest normal
	}
	switch {
	case i%17 == 5:
		// null document
	case i%19 == 6:
		rec.doc = ptr("")
	default:
		rec.doc = ptr(document(r, 500))
	}
	if i%3 == 0 {
		rec.uri = ptr(fmt.Sprintf("s3://bucket/corpus/%d.txt", i))
	}
	if i%11 != 4 {
		rec.meta = record.Metadata{
			"chunk":    int64(i),
			"big":      int64(9007199254740993),
			"min":      int64(math.MinInt64),
			"max":      int64(math.MaxInt64),
			"one":      1.0,
			"tenth":    0.1,
			"score":    r.Float64(),
			"neg":      -1e-300,
			"flag":     i%2 == 0,
			"lang":     "日本語 ✓ émoji 🚀",
			"source":   fmt.Sprintf("crawl-%d", i%5),
			"negative": int64(-i),
		}
	}
	return rec
}

// plainRecord makes ordinary records with a prefix in ids and text.
func plainRecord(prefix string) func(r *rand.Rand, i, dim int) fixtureRecord {
	return func(r *rand.Rand, i, dim int) fixtureRecord {
		rec := fixtureRecord{
			id:  fmt.Sprintf("%s-%04d", prefix, i),
			emb: randomVector(r, dim),
			doc: ptr(document(r, 120)),
			meta: record.Metadata{
				"n":     int64(i),
				"score": r.Float64(),
				"tag":   prefix,
				"even":  i%2 == 0,
			},
		}
		if i%4 == 0 {
			rec.uri = ptr(fmt.Sprintf("https://example.com/%s/%d", prefix, i))
		}
		return rec
	}
}

func randomVector(r *rand.Rand, dim int) []float32 {
	v := make([]float32, dim)
	for j := range v {
		v[j] = r.Float32()*2 - 1
	}
	return v
}

var words = []string{
	"chroma", "vector", "snapshot", "rollback", "migration", "東京", "データ", "naïve",
	"café", "Ω", "ünïcödé", "🚀", "the", "of", "and", "embedding", "\"quoted\"", "back\\slash",
	"tab\there", "new\nline", "<html>", "&amp;",
}

// document makes text of about n runes from words.
func document(r *rand.Rand, n int) string {
	var b strings.Builder
	runes := 0
	for runes < n {
		if runes > 0 {
			b.WriteByte(' ')
			runes++
		}
		w := words[r.IntN(len(words))]
		b.WriteString(w)
		runes += len([]rune(w))
	}
	return b.String()
}

func ptr[T any](v T) *T { return &v }

// ReadAll reads every record of a collection in get order (insertion
// order), page records at a time, with all columns.
func ReadAll(ctx context.Context, c *chroma.Client, tenant, db, collectionID string, page int) (*record.Batch, error) {
	if page <= 0 {
		return nil, fmt.Errorf("read all: page size %d must be positive", page)
	}
	out := &record.Batch{
		IDs:        []string{},
		Embeddings: [][]float32{},
		Documents:  []*string{},
		Metadatas:  []record.Metadata{},
		URIs:       []*string{},
	}
	for offset := 0; ; offset += page {
		b, err := c.Get(ctx, tenant, db, collectionID, chroma.GetRequest{Limit: page, Offset: offset})
		if err != nil {
			return nil, err
		}
		out.IDs = append(out.IDs, b.IDs...)
		if b.Len() > 0 {
			out.Embeddings = append(out.Embeddings, b.Embeddings...)
			out.Documents = append(out.Documents, b.Documents...)
			out.Metadatas = append(out.Metadatas, b.Metadatas...)
			out.URIs = append(out.URIs, b.URIs...)
		}
		if b.Len() < page {
			return out, nil
		}
	}
}

// SeedWorkload fills tenant/db (created if missing) with collections named
// workload_00, workload_01, ... (l2) holding records in total, split
// evenly, each with a dim-sized embedding, a document of docChars runes and
// four metadata keys (string, int, float, bool). Two workers add in
// parallel, as the measured add rate is bound by the server. Content is
// deterministic.
func SeedWorkload(ctx context.Context, c *chroma.Client, tenant, db string, collections, records, dim, docChars int) error {
	if collections < 1 || records < 0 || dim < 1 || docChars < 0 {
		return fmt.Errorf("seed workload: bad sizes (collections %d, records %d, dim %d, docChars %d)", collections, records, dim, docChars)
	}
	if err := ensureDatabase(ctx, c, tenant, db); err != nil {
		return err
	}
	type job struct {
		colID, name string
		start, n    int
	}
	const batch = 500
	var jobs []job
	for k := range collections {
		name := fmt.Sprintf("workload_%02d", k)
		col, err := c.CreateCollection(ctx, tenant, db, chroma.CreateCollection{
			Name:          name,
			Configuration: json.RawMessage(`{"hnsw":{"space":"l2"}}`),
			Metadata:      record.Metadata{"workload": true, "index": int64(k)},
		})
		if err != nil {
			return fmt.Errorf("seed workload: %w", err)
		}
		n := records / collections
		if k < records%collections {
			n++
		}
		for s := 0; s < n; s += batch {
			jobs = append(jobs, job{col.ID, name, s, min(batch, n-s)})
		}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	ch := make(chan job)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for j := range ch {
				r := rand.New(rand.NewPCG(seedOf(tenant, db, j.name), uint64(j.start)))
				b := &record.Batch{
					IDs:        make([]string, j.n),
					Embeddings: make([][]float32, j.n),
					Documents:  make([]*string, j.n),
					Metadatas:  make([]record.Metadata, j.n),
				}
				for i := range j.n {
					n := j.start + i
					b.IDs[i] = fmt.Sprintf("%s-%07d", j.name, n)
					b.Embeddings[i] = randomVector(r, dim)
					b.Documents[i] = ptr(document(r, docChars))
					b.Metadatas[i] = record.Metadata{
						"source": fmt.Sprintf("src-%d", n%7),
						"chunk":  int64(n),
						"score":  r.Float64(),
						"fresh":  n%2 == 0,
					}
				}
				if err := c.Add(ctx, tenant, db, j.colID, b); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
feed:
	for _, j := range jobs {
		select {
		case ch <- j:
		case <-ctx.Done():
			break feed
		}
	}
	close(ch)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return fmt.Errorf("seed workload: %w", err)
	}
	return nil
}
