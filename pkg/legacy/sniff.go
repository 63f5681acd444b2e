package legacy

import (
	"bytes"
	"fmt"
)

// Formats Sniff tells apart.
const (
	FormatSeed   = "seed"   // gzip: the seed tool's .tar.gz
	FormatNative = "native" // zstd: this project's archive
)

// SniffLen is how many leading bytes Sniff wants (fewer are accepted).
const SniffLen = 512

// Sniff tells from the first bytes of a file whether it is a seed archive
// (gzip) or a native archive (zstd). For anything else it returns an error
// wrapping ErrNotSeed that says what the file looks like instead.
func Sniff(head []byte) (string, error) {
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return FormatSeed, nil
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return FormatNative, nil
	}
	what := "neither gzip (a seed .tar.gz archive) nor zstd (a native .tar.zst archive)"
	trimmed := bytes.TrimLeft(head, " \t\r\n\xef\xbb\xbf")
	switch {
	case len(head) == 0:
		what = "empty"
	case len(head) >= 262 && string(head[257:262]) == "ustar":
		what = "an uncompressed tar; the seed format is gzip-compressed (.tar.gz): compress it with gzip first"
	case bytes.HasPrefix(head, []byte("PK\x03\x04")):
		what = "a zip file, not a .tar.gz"
	case bytes.HasPrefix(head, []byte("BZh")):
		what = "bzip2-compressed, not gzip"
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		what = "xz-compressed, not gzip"
	case len(trimmed) > 0 && (trimmed[0] == '{' || trimmed[0] == '['):
		what = "a JSON file: pass the .tar.gz archive, and its manifest with --manifest"
	}
	return "", fmt.Errorf("%w: the file is %s", ErrNotSeed, what)
}
