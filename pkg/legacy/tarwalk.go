package legacy

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"path"
	"slices"
	"strings"
)

const (
	collectionsEntry = "collections.json"
	metadataEntry    = "metadata.json"
	// maxMetadataEntries bounds the metadata.json candidates kept in memory.
	maxMetadataEntries = 8
	// maxTrailing bounds the zero padding accepted after the tar end marker
	// (tar pads to 10 KiB records; Python's tarfile too).
	maxTrailing = 1 << 20
)

// walkResult is what one pass over the .tar.gz found.
type walkResult struct {
	sha256 string
	size   int64
	// collPath and collIndex locate collections.json; metadata are the
	// metadata.json entries by path, with their bytes.
	collPath  string
	collIndex int
	metadata  map[string][]byte
	ignored   []string
	entries   int
}

// walk reads a .tar.gz from r to its end: every tar entry's name is checked,
// collections.json is handed to parse as a stream, metadata.json entries are
// kept, everything else is skipped, and the gzip stream is read to its end
// so that its CRC is checked. The SHA-256 of r's bytes is computed on the way.
// When hashAll is set and the archive fails to parse, the rest of r is
// still read into the hash (the caller compares it with a manifest).
func walk(r io.Reader, lim Limits, parse func(io.Reader) error, hashAll bool) (*walkResult, error) {
	src := &sourceReader{r: r, h: sha256.New(), max: lim.MaxInputBytes}
	res, err := walkGzip(src, lim, parse)
	if err != nil {
		if src.err != nil {
			return nil, fmt.Errorf("legacy: reading the archive: %w", src.err)
		}
		if hashAll && !errors.Is(err, ErrTooLarge) && src.drain() == nil {
			return &walkResult{sha256: hex.EncodeToString(src.h.Sum(nil)), size: src.n}, err
		}
		return nil, err
	}
	res.sha256 = hex.EncodeToString(src.h.Sum(nil))
	res.size = src.n
	return res, nil
}

func walkGzip(src *sourceReader, lim Limits, parse func(io.Reader) error) (*walkResult, error) {
	br := bufio.NewReaderSize(src, 64<<10)
	head, err := br.Peek(SniffLen)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if f, err := Sniff(head); err != nil {
		return nil, err
	} else if f != FormatSeed {
		return nil, fmt.Errorf("%w: the file is a native archive (zstd); it is imported as it is, not converted", ErrNotSeed)
	}
	zr, err := gzip.NewReader(br)
	if err != nil {
		return nil, fmt.Errorf("%w: gzip header: %v", ErrNotSeed, err)
	}
	bound := &boundReader{r: zr, src: src, lim: lim}
	// gzipErr classifies an error from below the tar layer.
	gzipErr := func(what string, err error) error {
		switch {
		case errors.Is(err, ErrTooLarge) || errors.Is(err, ErrInvalid):
			return err
		case src.err != nil:
			return err
		case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
			return fmt.Errorf("%w: %s: the archive ends early (truncated file?)", ErrInvalid, what)
		case errors.Is(err, gzip.ErrChecksum):
			return fmt.Errorf("%w: %s: gzip checksum mismatch (the file is damaged)", ErrInvalid, what)
		case errors.Is(err, gzip.ErrHeader):
			return fmt.Errorf("%w: %s: data after the gzip stream, or a damaged one: %v", ErrInvalid, what, err)
		case errors.Is(err, tar.ErrHeader):
			return fmt.Errorf("%w: %s: not a valid tar stream inside the gzip: %v", ErrInvalid, what, err)
		}
		return fmt.Errorf("%w: %s: %v", ErrInvalid, what, err)
	}

	tr := tar.NewReader(bound)
	res := &walkResult{metadata: map[string][]byte{}, collIndex: -1}
	seen := map[string]bool{}
	for idx := 0; ; idx++ {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) && src.err == nil && bound.limit == nil {
			break
		}
		if err != nil {
			if idx == 0 && errors.Is(err, tar.ErrHeader) {
				return nil, fmt.Errorf("%w: the gzip stream does not hold a tar archive", ErrNotSeed)
			}
			return nil, gzipErr("reading tar entry "+fmt.Sprint(idx), err)
		}
		if idx >= lim.MaxEntries {
			return nil, fmt.Errorf("%w: more than %d entries in the tar", ErrTooLarge, lim.MaxEntries)
		}
		res.entries++
		name, err := cleanName(hdr.Name)
		if err != nil {
			return nil, err
		}
		if hdr.Typeflag == tar.TypeSymlink || hdr.Typeflag == tar.TypeLink {
			if why := nameTrick(hdr.Linkname); why != "" {
				return nil, fmt.Errorf("%w: entry %q links to %q: %s", ErrInvalid, hdr.Name, hdr.Linkname, why)
			}
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader || hdr.Typeflag == tar.TypeDir {
			continue
		}
		base := path.Base(name)
		isTarget := base == collectionsEntry || base == metadataEntry
		if isTarget {
			if hdr.Typeflag != tar.TypeReg && hdr.Typeflag != '\x00' {
				return nil, fmt.Errorf("%w: entry %q is not a regular file (type %q)", ErrInvalid, hdr.Name, hdr.Typeflag)
			}
			if seen[name] {
				return nil, fmt.Errorf("%w: entry %q appears twice in the tar", ErrInvalid, name)
			}
			seen[name] = true
		}
		switch {
		case base == collectionsEntry:
			if res.collIndex >= 0 {
				return nil, fmt.Errorf("%w: two collections.json entries (%q and %q): which is the snapshot?", ErrInvalid, res.collPath, name)
			}
			if hdr.Size > lim.MaxUncompressedBytes {
				return nil, fmt.Errorf("%w: entry %q is %d bytes; the limit is %d", ErrTooLarge, name, hdr.Size, lim.MaxUncompressedBytes)
			}
			res.collPath, res.collIndex = name, idx
			if err := parse(tr); err != nil {
				return nil, gzipErr("reading "+name, err)
			}
		case base == metadataEntry:
			if hdr.Size > lim.MaxMetadataBytes {
				return nil, fmt.Errorf("%w: entry %q is %d bytes; the limit is %d", ErrTooLarge, name, hdr.Size, lim.MaxMetadataBytes)
			}
			if len(res.metadata) >= maxMetadataEntries {
				return nil, fmt.Errorf("%w: more than %d metadata.json entries", ErrInvalid, maxMetadataEntries)
			}
			data, err := io.ReadAll(io.LimitReader(tr, lim.MaxMetadataBytes))
			if err != nil {
				return nil, gzipErr("reading "+name, err)
			}
			res.metadata[name] = data
		default:
			if len(res.ignored) < 1000 {
				res.ignored = append(res.ignored, name)
			}
		}
	}
	// After the end marker only zero padding may follow; reading to EOF
	// also checks the gzip CRC and size.
	var buf [32 << 10]byte
	var trailing int
	for {
		n, err := bound.Read(buf[:])
		trailing += n
		if trailing > maxTrailing || slices.ContainsFunc(buf[:n], func(b byte) bool { return b != 0 }) {
			return nil, fmt.Errorf("%w: data after the end of the tar archive", ErrInvalid)
		}
		if errors.Is(err, io.EOF) && src.err == nil {
			break
		}
		if errors.Is(err, io.ErrUnexpectedEOF) && src.err == nil {
			return nil, fmt.Errorf("%w: data after the gzip stream, or a truncated gzip member", ErrInvalid)
		}
		if err != nil {
			return nil, gzipErr("reading past the end of the tar", err)
		}
	}
	if res.collIndex < 0 {
		var names []string
		if len(res.metadata) > 0 {
			names = append(names, slices.Sorted(maps.Keys(res.metadata))...)
		}
		names = append(names, res.ignored...)
		return nil, fmt.Errorf("%w: no collections.json in the archive (entries: %s)", ErrInvalid, listNames(names))
	}
	return res, nil
}

// cleanName checks a tar entry name (or link target) for tricks: absolute
// paths, "..", NUL; it returns the name cleaned ("./a/b" is "a/b").
func cleanName(name string) (string, error) {
	if why := nameTrick(name); why != "" {
		return "", fmt.Errorf("%w: entry name %q: %s", ErrInvalid, name, why)
	}
	return path.Clean(name), nil
}

func nameTrick(name string) string {
	switch {
	case name == "":
		return "empty"
	case strings.ContainsRune(name, 0):
		return "contains NUL"
	case strings.HasPrefix(name, "/") || strings.HasPrefix(name, `\`):
		return "absolute path"
	case len(name) >= 2 && name[1] == ':' && (name[0]|0x20 >= 'a' && name[0]|0x20 <= 'z'):
		return "absolute Windows path"
	}
	for _, part := range strings.FieldsFunc(name, func(r rune) bool { return r == '/' || r == '\\' }) {
		if part == ".." {
			return `contains ".."`
		}
	}
	return ""
}

func listNames(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	if len(names) > 8 {
		return fmt.Sprintf("%q and %d more", names[:8], len(names)-8)
	}
	return fmt.Sprintf("%q", names)
}
