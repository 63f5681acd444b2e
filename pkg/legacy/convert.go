package legacy

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/archive"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
)

// Chroma's defaults, used when Options names no tenant or database.
const (
	DefaultTenant   = "default_tenant"
	DefaultDatabase = "default_database"
)

// Opener opens the seed archive from its first byte. Convert calls it
// twice and closes what it returns.
type Opener func() (io.ReadCloser, error)

// Options configure a conversion.
type Options struct {
	// SnapshotID and Name are written into the native metadata.json.
	SnapshotID string
	Name       string
	// Tenant and Database are where the snapshot says it came from, and so
	// where a restore puts it by default (default_tenant, default_database).
	Tenant, Database string
	// Manifest is the seed manifest JSON kept beside the archive, if any: its
	// checksum and counts must then agree with the archive.
	Manifest []byte
	// CreatedAt is used when neither metadata.json nor the manifest gives a
	// readable timestamp (default: now).
	CreatedAt time.Time
	Limits    Limits
	// Progress, if set, is called after each batch written.
	Progress func(doneRecords, totalRecords int64)
}

// Result describes a conversion that succeeded.
type Result struct {
	// Metadata and Manifest are the native archive's metadata.json and
	// manifest.json as written; RawBytes its uncompressed size.
	Metadata *archive.Metadata
	Manifest *archive.Manifest
	RawBytes int64
	// Size and SHA256 are those of the seed .tar.gz.
	Size   int64
	SHA256 string
	// Seed is metadata.json (nil when the archive has none); SeedManifest
	// the manifest given in Options (nil when none).
	Seed         *SeedMetadata
	SeedManifest *SeedManifest
	// SourceCreatedAt is the seed snapshot's timestamp, when readable.
	SourceCreatedAt *time.Time
	// CollectionsEntry and MetadataEntry are the tar paths used.
	CollectionsEntry, MetadataEntry string
	// Warnings are what was accepted but is worth telling.
	Warnings []string
}

// collInfo is what the first pass learnt of one collection.
type collInfo struct {
	name        string
	count       int64
	dim         *int
	seedBatches []string // every seed batch, empty ones included, in order
	native      int      // native batches (non-empty seed batches)
	renamed     bool     // a non-empty batch's seed name differs from its native name
	empty       int      // empty seed batches, skipped
}

// ConvertFile converts the seed archive at path; see Convert.
func ConvertFile(file string, w io.Writer, opt Options) (*Result, error) {
	return Convert(func() (io.ReadCloser, error) { return os.Open(file) }, w, opt)
}

// Convert reads a seed archive (the old tool's .tar.gz) and writes it to w
// as a native archive with archive.Writer.
//
// It reads the input twice, streaming both times. The first pass checks
// everything (layout, JSON types, ids, dimensions, limits, metadata.json's
// counts, the manifest's checksum and counts) and learns the collections,
// which native metadata.json lists before any record. Nothing is written
// to w unless the first pass succeeded. The second pass writes one batch at
// a time and must see the same bytes (same SHA-256) as the first.
//
// On error, what was written to w is not a valid archive (it never ends
// with manifest.json) and must be discarded.
func Convert(open Opener, w io.Writer, opt Options) (*Result, error) {
	lim := opt.Limits.withDefaults()
	if opt.Tenant == "" {
		opt.Tenant = DefaultTenant
	}
	if opt.Database == "" {
		opt.Database = DefaultDatabase
	}
	res := &Result{}
	if len(opt.Manifest) > 0 {
		m, err := ParseManifest(opt.Manifest)
		if err != nil {
			return nil, err
		}
		res.SeedManifest = m
		res.Warnings = append(res.Warnings, m.Warnings...)
	}

	// Pass 1: check and learn.
	scan := &scanSink{}
	wr, err := runPass(open, lim, func(r io.Reader) error { return parseCollections(r, lim, true, scan) }, res.SeedManifest != nil)
	if err != nil {
		if wr != nil && res.SeedManifest != nil && wr.sha256 != res.SeedManifest.SHA256 {
			return nil, fmt.Errorf("%w: checksum mismatch: the file's sha256 is %s, the manifest says %s (the archive is damaged, or it is not the archive this manifest describes); reading it failed too: %w",
				ErrManifest, wr.sha256, res.SeedManifest.SHA256, err)
		}
		return nil, err
	}
	res.Size, res.SHA256, res.CollectionsEntry = wr.size, wr.sha256, wr.collPath
	colls := scan.colls
	var total int64
	for _, c := range colls {
		total += c.count
	}
	if err := res.readSeedMetadata(wr, colls, total); err != nil {
		return nil, err
	}
	if m := res.SeedManifest; m != nil {
		if err := m.check(res.SHA256, colls, total, res.Seed); err != nil {
			return nil, err
		}
	}
	res.Warnings = append(res.Warnings, layoutWarnings(wr, colls)...)

	md := &archive.Metadata{
		Format: archive.FormatV1, SnapshotID: opt.SnapshotID, Name: opt.Name,
		Tenant: opt.Tenant, Database: opt.Database,
	}
	if res.Seed != nil {
		md.ChromaVersion = res.Seed.ChromaVersion
	}
	if md.ChromaVersion == "" && res.SeedManifest != nil {
		md.ChromaVersion = res.SeedManifest.ChromaVersion
	}
	md.CreatedAt = opt.CreatedAt
	if res.SourceCreatedAt != nil {
		md.CreatedAt = *res.SourceCreatedAt
	}
	if md.CreatedAt.IsZero() {
		md.CreatedAt = time.Now().UTC()
	}
	for i, c := range colls {
		md.Collections = append(md.Collections, archive.CollectionInfo{
			Index: i, ID: SyntheticCollectionID(res.SHA256, c.name), Name: c.name,
			Dimension: c.dim, ExpectedCount: c.count,
		})
	}

	// Pass 2: write.
	pw := &poisonWriter{w: w}
	aw, err := archive.NewWriter(pw, md)
	if err != nil {
		return nil, fmt.Errorf("legacy: start native archive: %w", err)
	}
	ws := &writeSink{aw: aw, colls: colls, total: total, progress: opt.Progress, coll: -1}
	wr2, err := runPass(open, lim, func(r io.Reader) error { return parseCollections(r, lim, false, ws) }, false)
	if err == nil && wr2.sha256 != res.SHA256 {
		err = fmt.Errorf("legacy: the archive changed between the two passes over it (sha256 %s, then %s)", res.SHA256, wr2.sha256)
	}
	if err == nil && (ws.coll != len(colls)-1 || ws.done != total) {
		err = fmt.Errorf("legacy: the second pass read %d records in %d collections, the first %d in %d", ws.done, ws.coll+1, total, len(colls))
	}
	if err != nil {
		pw.poison() // Close must not complete the archive: release it only
		_, _ = aw.Close()
		return nil, err
	}
	man, err := aw.Close()
	if err != nil {
		return nil, fmt.Errorf("legacy: finish native archive: %w", err)
	}
	res.Manifest = man
	_, res.RawBytes = aw.Stats()
	md.Collections = slices.Clone(md.Collections)
	res.Metadata = md
	return res, nil
}

func runPass(open Opener, lim Limits, parse func(io.Reader) error, hashAll bool) (*walkResult, error) {
	rc, err := open()
	if err != nil {
		return nil, fmt.Errorf("legacy: open the archive: %w", err)
	}
	defer rc.Close()
	return walk(rc, lim, parse, hashAll)
}

// readSeedMetadata picks metadata.json (beside collections.json, or the only
// one), parses it and checks its counts against collections.json.
func (res *Result) readSeedMetadata(wr *walkResult, colls []collInfo, total int64) error {
	dir := path.Dir(wr.collPath)
	var pick string
	if _, ok := wr.metadata[path.Join(dir, metadataEntry)]; ok {
		pick = path.Join(dir, metadataEntry)
	} else if len(wr.metadata) == 1 {
		for k := range wr.metadata {
			pick = k
		}
		res.Warnings = append(res.Warnings, fmt.Sprintf("metadata.json is at %q, not beside %q", pick, wr.collPath))
	} else if len(wr.metadata) > 1 {
		return fmt.Errorf("%w: several metadata.json entries and none beside %q: %s", ErrInvalid, wr.collPath, listNames(slices.Sorted(maps.Keys(wr.metadata))))
	}
	if pick == "" {
		res.Warnings = append(res.Warnings, "the archive has no metadata.json: Chroma version, timestamp and counts could not be checked")
		if res.SeedManifest != nil && res.SeedManifest.Timestamp != "" {
			if t, ok := ParseTimestamp(res.SeedManifest.Timestamp); ok {
				res.SourceCreatedAt = &t
			}
		}
		return nil
	}
	res.MetadataEntry = pick
	md, err := parseSeedMetadata(wr.metadata[pick])
	if err != nil {
		return fmt.Errorf("%w: %v (entry %q)", ErrInvalid, err, pick)
	}
	res.Seed = md
	if md.CollectionsCount != nil && *md.CollectionsCount != int64(len(colls)) {
		return fmt.Errorf("%w: metadata.json says collections_count %d, collections.json holds %d collections", ErrInvalid, *md.CollectionsCount, len(colls))
	}
	if md.TotalChunks != nil && *md.TotalChunks != total {
		return fmt.Errorf("%w: metadata.json says total_chunks %d, collections.json holds %d records", ErrInvalid, *md.TotalChunks, total)
	}
	ts := md.Timestamp
	if ts == "" && res.SeedManifest != nil {
		ts = res.SeedManifest.Timestamp
	}
	if ts != "" {
		if t, ok := ParseTimestamp(ts); ok {
			res.SourceCreatedAt = &t
		} else {
			res.Warnings = append(res.Warnings, fmt.Sprintf("snapshot timestamp %q not understood; the import time is used", ts))
		}
	}
	return nil
}

func layoutWarnings(wr *walkResult, colls []collInfo) []string {
	var out []string
	if len(wr.ignored) > 0 {
		out = append(out, fmt.Sprintf("ignored %d other tar entries: %s", len(wr.ignored), listNames(wr.ignored)))
	}
	for _, c := range colls {
		if c.renamed {
			out = append(out, fmt.Sprintf("collection %q: seed batches %s are numbered batch_000000.. in the snapshot, in the same order", c.name, summarize(c.seedBatches)))
		}
		if c.empty > 0 {
			out = append(out, fmt.Sprintf("collection %q: %d empty seed batches skipped", c.name, c.empty))
		}
	}
	return out
}

// SyntheticCollectionID is the collection id an imported seed collection
// gets: the seed format has none. It is a UUID (version 8) derived from the
// archive's SHA-256 and the collection name, so the same archive always
// gets the same ids; it names no collection in any Chroma.
func SyntheticCollectionID(archiveSHA256, name string) string {
	h := sha256.Sum256([]byte("chromadb-rollback seed import\x00" + archiveSHA256 + "\x00" + name))
	u := h[:16]
	u[6] = u[6]&0x0f | 0x80 // version 8
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// scanSink records the collections of the first pass.
type scanSink struct {
	colls []collInfo
}

func (s *scanSink) startCollection(name string) error {
	s.colls = append(s.colls, collInfo{name: name})
	return nil
}

func (s *scanSink) batch(name string, b *record.Batch) error {
	c := &s.colls[len(s.colls)-1]
	c.seedBatches = append(c.seedBatches, name)
	if b.Len() == 0 {
		c.empty++
		return nil
	}
	if name != nativeBatchName(c.native) {
		c.renamed = true
	}
	c.native++
	c.count += int64(b.Len())
	return nil
}

func (s *scanSink) endCollection(dim *int) error {
	s.colls[len(s.colls)-1].dim = dim
	return nil
}

func nativeBatchName(k int) string { return fmt.Sprintf("batch_%06d", k) }

// writeSink writes the second pass into the native archive.
type writeSink struct {
	aw       *archive.Writer
	colls    []collInfo
	coll     int
	done     int64
	total    int64
	progress func(done, total int64)
}

func (s *writeSink) startCollection(name string) error {
	s.coll++
	if s.coll >= len(s.colls) || s.colls[s.coll].name != name {
		return fmt.Errorf("legacy: the archive changed between the two passes over it (collection %d is %q)", s.coll, name)
	}
	return nil
}

func (s *writeSink) batch(name string, b *record.Batch) error {
	if b.Len() == 0 {
		return nil
	}
	if err := s.aw.WriteBatch(s.coll, b); err != nil {
		c := s.colls[s.coll].name
		if strings.Contains(err.Error(), "UTF-8") {
			return fmt.Errorf("%w: collection %q, batch %q: %v", ErrInvalid, c, name, err)
		}
		return fmt.Errorf("legacy: write collection %q, batch %q: %w", c, name, err)
	}
	s.done += int64(b.Len())
	if s.progress != nil {
		s.progress(s.done, s.total)
	}
	return nil
}

func (s *writeSink) endCollection(*int) error { return nil }

// poisonWriter lets a failed conversion release its archive.Writer without
// the manifest ever reaching the output.
type poisonWriter struct {
	w        io.Writer
	poisoned bool
}

var errPoisoned = errors.New("legacy: conversion failed; output closed")

func (p *poisonWriter) poison() { p.poisoned = true }

func (p *poisonWriter) Write(b []byte) (int, error) {
	if p.poisoned {
		return 0, errPoisoned
	}
	return p.w.Write(b)
}
