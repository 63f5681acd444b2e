package archive

import (
	"errors"
	"io"
)

// Report is what Verify found in a valid archive.
type Report struct {
	Collections  []CollectionReport
	TotalRecords int64
	// Entries counts every tar entry, metadata.json and manifest.json
	// included.
	Entries int
	// RawBytes is the uncompressed size of all entries.
	RawBytes int64
}

// CollectionReport is one collection of a Report.
type CollectionReport struct {
	Name          string
	ID            string
	Count         int64
	Batches       int
	ContentDigest string
}

// Verify reads the whole archive from r, checking everything Reader checks,
// while holding one batch at a time. It returns a report only if the archive
// is valid.
func Verify(r io.Reader) (*Report, error) {
	return VerifyWithLimits(r, Limits{})
}

// VerifyWithLimits is Verify with explicit reader limits.
func VerifyWithLimits(r io.Reader, lim Limits) (*Report, error) {
	ar, err := NewReaderWithLimits(r, lim)
	if err != nil {
		return nil, err
	}
	ar.digestOnly = true
	for {
		_, err := ar.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	m := ar.Manifest()
	rep := &Report{
		Collections:  make([]CollectionReport, len(m.Collections)),
		TotalRecords: m.TotalRecords,
		Entries:      len(ar.entries),
		RawBytes:     ar.raw,
	}
	for i, c := range m.Collections {
		rep.Collections[i] = CollectionReport{Name: c.Name, ID: c.ID, Count: c.Count, Batches: len(c.Batches), ContentDigest: c.ContentDigest}
	}
	return rep, nil
}
