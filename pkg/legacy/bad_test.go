package legacy

import (
	"bytes"
	"compress/gzip"
	"errors"
	"strings"
	"testing"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/archive"
	"github.com/chromadb-rollback/chromadb-rollback/pkg/record"
)

const goodMD = `{"chromadb_version": "0.3.21", "snapshot_timestamp": "2025-11-30T14:30:22", "collections_count": 1, "total_chunks": 1}`

// coll wraps one collection's batches JSON into a seed archive.
func coll(t testing.TB, batches string) []byte {
	return tgz(t, tarEntry{name: "s/collections.json", body: `{"c": ` + batches + `}`})
}

// rec wraps one record JSON into a seed archive.
func rec(t testing.TB, record string) []byte {
	return coll(t, `{"batch_000000": [`+record+`]}`)
}

// TestBadInput: every kind of bad input gets its error class and a message
// that says what is wrong and where, and nothing is written.
func TestBadInput(t *testing.T) {
	good := build(t, sampleArchive())
	collJSON, _ := sampleArchive().CollectionsJSON()
	truncated := good[:len(good)*2/3]
	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 0x55
	var nativeBuf bytes.Buffer
	aw, _ := archive.NewWriter(&nativeBuf, &archive.Metadata{})
	_, _ = aw.Close()
	var plainTar bytes.Buffer
	zr, _ := gzip.NewReader(bytes.NewReader(tgz(t, tarEntry{name: "collections.json", body: "{}"})))
	_, _ = plainTar.ReadFrom(zr)
	// Bombs: 16 MiB of zeros in an ignored entry, and 16 MiB of spaces
	// inside collections.json; each about 16 KiB compressed. The ratio is
	// checked from 1 MiB on here (64 MiB by default).
	bomb := func(name string, fill byte, prefix string) []byte {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write(tgzHeader(t, name, 16<<20))
		zw.Write([]byte(prefix))
		chunk := bytes.Repeat([]byte{fill}, 1<<20)
		for range 16 {
			zw.Write(chunk)
		}
		zw.Close()
		return buf.Bytes()
	}
	zeroBomb := bomb("padding.bin", 0, "")
	spaceBomb := bomb("collections.json", ' ', "{")
	trailing := func() []byte {
		zr, _ := gzip.NewReader(bytes.NewReader(tgz(t, tarEntry{name: "collections.json", body: `{}`})))
		var raw bytes.Buffer
		raw.ReadFrom(zr)
		raw.WriteString("garbage after the end")
		return gz(t, raw.Bytes())
	}()

	cases := []struct {
		name string
		data []byte
		opt  Options
		is   error
		msg  string
	}{
		{"empty file", nil, Options{}, ErrNotSeed, "the file is empty"},
		{"not gzip", []byte("hello, this is not an archive at all"), Options{}, ErrNotSeed, "neither gzip"},
		{"plain tar", plainTar.Bytes(), Options{}, ErrNotSeed, "uncompressed tar"},
		{"json file", []byte(`  {"checksum": "x"}`), Options{}, ErrNotSeed, "a JSON file"},
		{"native archive", nativeBuf.Bytes(), Options{}, ErrNotSeed, "native archive"},
		{"gzip of non-tar", gz(t, []byte(strings.Repeat("not a tar ", 100))), Options{}, ErrNotSeed, "does not hold a tar"},
		{"truncated", truncated, Options{}, ErrInvalid, "ends early"},
		{"flipped byte", flipped, Options{}, ErrInvalid, "invalid seed archive"},
		{"data after the tar", trailing, Options{}, ErrInvalid, "data after the end of the tar"},
		{"data after the gzip", append(bytes.Clone(good), "junk after the end of the gzip stream"...), Options{}, ErrInvalid, "after the gzip stream"},

		{"missing collections.json", tgz(t, tarEntry{name: "s/metadata.json", body: goodMD}, tarEntry{name: "s/notes.txt", body: "x"}), Options{}, ErrInvalid, `no collections.json in the archive (entries: ["s/metadata.json" "s/notes.txt"])`},
		{"two collections.json", tgz(t, tarEntry{name: "a/collections.json", body: `{}`}, tarEntry{name: "b/collections.json", body: `{}`}), Options{}, ErrInvalid, "two collections.json entries"},
		{"entry twice", tgz(t, tarEntry{name: "collections.json", body: `{}`}, tarEntry{name: "./collections.json", body: `{}`}), Options{}, ErrInvalid, "appears twice in the tar"},
		{"dot-dot name", tgz(t, tarEntry{name: "../collections.json", body: `{}`}), Options{}, ErrInvalid, `contains ".."`},
		{"dot-dot in the middle", tgz(t, tarEntry{name: "a/../../etc/x", body: ""}, tarEntry{name: "collections.json", body: `{}`}), Options{}, ErrInvalid, `contains ".."`},
		{"absolute name", tgz(t, tarEntry{name: "/tmp/collections.json", body: `{}`}), Options{}, ErrInvalid, "absolute path"},
		{"windows absolute name", tgz(t, tarEntry{name: `C:\x\collections.json`, body: `{}`}), Options{}, ErrInvalid, "absolute Windows path"},
		{"symlink as collections.json", tgz(t, tarEntry{name: "collections.json", typ: '2', linkname: "x"}), Options{}, ErrInvalid, "not a regular file"},
		{"symlink out of the tree", tgz(t, tarEntry{name: "x", typ: '2', linkname: "../../etc/passwd"}, tarEntry{name: "collections.json", body: `{}`}), Options{}, ErrInvalid, "links to"},
		{"hard link to an absolute path", tgz(t, tarEntry{name: "x", typ: '1', linkname: "/etc/passwd"}, tarEntry{name: "collections.json", body: `{}`}), Options{}, ErrInvalid, "absolute path"},
		{"several metadata.json, none beside", tgz(t, tarEntry{name: "a/metadata.json", body: goodMD}, tarEntry{name: "b/metadata.json", body: goodMD}, tarEntry{name: "c/collections.json", body: `{"c": {}}`}), Options{}, ErrInvalid, "several metadata.json"},

		{"top level is a list", tgz(t, tarEntry{name: "collections.json", body: `[]`}), Options{}, ErrInvalid, "top level (an object of collections): want \"{\", got a list"},
		{"collection is a list", coll(t, `[]`), Options{}, ErrInvalid, `collection "c": value (an object of batches): want "{", got a list`},
		{"batch is an object", coll(t, `{"batch_000000": {}}`), Options{}, ErrInvalid, `collection "c", batch "batch_000000": value (a list of records): want "[", got an object`},
		{"record is a list", rec(t, `[1]`), Options{}, ErrInvalid, "record 0: want an object"},
		{"id is a number", rec(t, `{"id": 7}`), Options{}, ErrInvalid, "record 0: id must be a string, got the number 7"},
		{"missing id", rec(t, `{"text": "x"}`), Options{}, ErrInvalid, `record 0: no "id"`},
		{"unknown field", rec(t, `{"id": "a", "distance": 0.5}`), Options{}, ErrInvalid, `unknown field "distance"`},
		{"field twice", rec(t, `{"id": "a", "id": "b"}`), Options{}, ErrInvalid, `field "id" given twice`},
		{"text and document", rec(t, `{"id": "a", "text": "x", "document": "y"}`), Options{}, ErrInvalid, `field "document" given twice`},
		{"text is a number", rec(t, `{"id": "a", "text": 1}`), Options{}, ErrInvalid, `record 0 (id "a"): text must be a string or null, got the number 1`},
		{"embedding of strings", rec(t, `{"id": "a", "embedding": ["1"]}`), Options{}, ErrInvalid, `record 0 (id "a") field "embedding": item 0: want a number, got "1"`},
		{"embedding nested", rec(t, `{"id": "a", "embedding": [[1]]}`), Options{}, ErrInvalid, `field "embedding": item 0: want a number`},
		{"embedding is an object", rec(t, `{"id": "a", "embedding": {"x": 1}}`), Options{}, ErrInvalid, `field "embedding": want a list of numbers or null`},
		{"embedding beyond float32", rec(t, `{"id": "a", "embedding": [0.5, 1e39]}`), Options{}, ErrInvalid, `field "embedding": item 1: 1e39 is beyond float32 range`},
		{"embedding NaN", rec(t, `{"id": "a", "embedding": [NaN]}`), Options{}, ErrInvalid, "NaN and Infinity are not JSON"},
		{"empty embedding", rec(t, `{"id": "a", "embedding": []}`), Options{}, ErrInvalid, `record 0 (id "a"): empty embedding`},
		{"mixed dimensions", coll(t, `{"batch_000000": [{"id": "a", "embedding": [1, 2]}], "batch_000001": [{"id": "b", "embedding": [1, 2, 3]}]}`), Options{}, ErrInvalid, `batch "batch_000001": record 0 (id "b"): embedding has 3 dimensions, earlier records 2`},
		{"nested metadata", rec(t, `{"metadata": {"tags": {"a": 1}}, "id": "doc-9"}`), Options{}, ErrInvalid, `collection "c", batch "batch_000000": record 0 (id "doc-9"): metadata key "tags" holds an object`},
		{"list metadata", rec(t, `{"id": "doc-9", "metadata": {"tags": ["a"]}}`), Options{}, ErrInvalid, `record 0 (id "doc-9"): metadata key "tags" holds a list`},
		{"null metadata value", rec(t, `{"id": "a", "metadata": {"k": null}}`), Options{}, ErrInvalid, `metadata key "k" is null`},
		{"empty id", rec(t, `{"id": "", "text": "t"}`), Options{}, ErrInvalid, `record 0: id is empty (Chroma refuses empty ids`},
		{"reserved metadata key", rec(t, `{"id": "a", "metadata": {"b": 2, "chroma:document": "other"}}`), Options{}, ErrInvalid, `record 0 (id "a"): metadata key "chroma:document": keys starting with "chroma:" are reserved`},
		{"metadata not an object", rec(t, `{"id": "a", "metadata": "x"}`), Options{}, ErrInvalid, "metadata must be an object or null"},
		{"metadata int beyond int64", rec(t, `{"id": "a", "metadata": {"n": 9223372036854775808}}`), Options{}, ErrInvalid, "out of int64 range"},
		{"duplicate id across batches", coll(t, `{"b1": [{"id": "a"}], "b2": [{"id": "x"}, {"id": "a"}]}`), Options{}, ErrInvalid, `batch "b2": record 1: id "a" appears twice in the collection`},
		{"collection twice", tgz(t, tarEntry{name: "collections.json", body: `{"c": {}, "c": {}}`}), Options{}, ErrInvalid, `collection "c" appears twice`},
		{"batch twice", coll(t, `{"b": [], "b": []}`), Options{}, ErrInvalid, `batch "b" appears twice`},
		{"empty collection name", tgz(t, tarEntry{name: "collections.json", body: `{"": {}}`}), Options{}, ErrInvalid, "collection name is empty"},
		{"invalid UTF-8", rec(t, "{\"id\": \"a\xff\"}"), Options{}, ErrInvalid, "not valid UTF-8"},
		{"data after the object", tgz(t, tarEntry{name: "collections.json", body: `{} {}`}), Options{}, ErrInvalid, "data after the top-level object"},
		{"malformed JSON", rec(t, `{"id": "a",}`), Options{}, ErrInvalid, "malformed JSON"},
		{"truncated JSON", tgz(t, tarEntry{name: "collections.json", body: `{"c": {"b": [{"id": "a"}`}), Options{}, ErrInvalid, "ends early"},

		{"metadata.json total_chunks", tgz(t, tarEntry{name: "collections.json", body: `{"c": {"b": [{"id": "a"}, {"id": "b"}]}}`}, tarEntry{name: "metadata.json", body: goodMD}), Options{}, ErrInvalid, "metadata.json says total_chunks 1, collections.json holds 2 records"},
		{"metadata.json collections_count", tgz(t, tarEntry{name: "collections.json", body: `{"c": {}, "d": {}}`}, tarEntry{name: "metadata.json", body: `{"collections_count": 1}`}), Options{}, ErrInvalid, "collections_count 1, collections.json holds 2"},
		{"metadata.json wrong type", tgz(t, tarEntry{name: "collections.json", body: `{}`}, tarEntry{name: "metadata.json", body: `{"total_chunks": "many"}`}), Options{}, ErrInvalid, `field "total_chunks": want a non-negative integer`},
		{"metadata.json not an object", tgz(t, tarEntry{name: "collections.json", body: `{}`}, tarEntry{name: "metadata.json", body: `[1]`}), Options{}, ErrInvalid, "want a JSON object"},

		{"file too large", good, Options{Limits: Limits{MaxInputBytes: int64(len(good)) - 1}}, ErrTooLarge, "the file is larger than"},
		{"decompression bomb (total)", zeroBomb, Options{Limits: Limits{MaxUncompressedBytes: 4 << 20, MaxRatio: 1 << 20}}, ErrTooLarge, "more than 4194304 bytes decompressed"},
		{"decompression bomb (ratio)", zeroBomb, Options{Limits: Limits{RatioAfter: 1 << 20}}, ErrTooLarge, "more than 200x (a decompression bomb?)"},
		{"whitespace bomb in collections.json", spaceBomb, Options{Limits: Limits{RatioAfter: 1 << 20}}, ErrTooLarge, "a decompression bomb?"},
		{"whitespace bomb under the ratio", spaceBomb, Options{Limits: Limits{MaxRatio: 1 << 20}}, ErrInvalid, "ends early"},
		{"oversized collections.json header", tgz(t, tarEntry{name: "collections.json", body: string(collJSON)}), Options{Limits: Limits{MaxUncompressedBytes: 1000}}, ErrTooLarge, `entry "collections.json" is`},
		{"oversized metadata.json", tgz(t, tarEntry{name: "collections.json", body: `{}`}, tarEntry{name: "metadata.json", body: `{"x": "` + strings.Repeat("a", 2000) + `"}`}), Options{Limits: Limits{MaxMetadataBytes: 1000}}, ErrTooLarge, `entry "metadata.json" is 2009 bytes`},
		{"oversized batch", rec(t, `{"id": "a", "text": "`+strings.Repeat("x", 5000)+`"}`), Options{Limits: Limits{MaxBatchBytes: 1000}}, ErrTooLarge, `collection "c", batch "batch_000000": more than 1000 bytes`},
		{"too many entries", tgz(t, tarEntry{name: "a"}, tarEntry{name: "b"}, tarEntry{name: "c"}, tarEntry{name: "collections.json", body: "{}"}), Options{Limits: Limits{MaxEntries: 3}}, ErrTooLarge, "more than 3 entries"},
		{"too many collections", tgz(t, tarEntry{name: "collections.json", body: `{"aaa": {}, "bbb": {}, "ccc": {}}`}), Options{Limits: Limits{MaxCollections: 2}}, ErrTooLarge, "more than 2 collections"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			_, err := Convert(opener(tc.data), &out, tc.opt)
			if err == nil {
				t.Fatalf("converted; want an error wrapping %v saying %q", tc.is, tc.msg)
			}
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q\nwant one wrapping %q and saying %q", err, tc.is, tc.msg)
			}
			if out.Len() != 0 {
				t.Errorf("%d bytes written for a refused archive", out.Len())
			}
		})
	}
}

// tgzHeader returns a tar header block for a regular file of size bytes.
func tgzHeader(t testing.TB, name string, size int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	hdr := make([]byte, 512)
	copy(hdr, name)
	copy(hdr[100:], "0000644\x00")
	copy(hdr[108:], "0000000\x00")
	copy(hdr[116:], "0000000\x00")
	sz := []byte(strings.Repeat("0", 11) + "\x00")
	s := []byte(strings.TrimLeft("00000000000", "0"))
	_ = s
	oct := []byte(strings.Repeat("0", 11))
	v := size
	for i := 10; i >= 0; i-- {
		oct[i] = byte('0' + v%8)
		v /= 8
	}
	copy(sz, oct)
	copy(hdr[124:], sz)
	copy(hdr[136:], "00000000000\x00")
	hdr[156] = '0'
	copy(hdr[257:], "ustar\x0000")
	copy(hdr[148:], "        ")
	var sum int64
	for _, b := range hdr {
		sum += int64(b)
	}
	chk := []byte("000000\x00 ")
	for i := 5; i >= 0; i-- {
		chk[i] = byte('0' + sum%8)
		sum /= 8
	}
	copy(hdr[148:], chk)
	buf.Write(hdr)
	return buf.Bytes()
}

// TestUTF8Reader checks the streaming UTF-8 check across read boundaries.
func TestUTF8Reader(t *testing.T) {
	good := []byte("a\u00e9\U0001F680\u65e5b")
	for split := range len(good) {
		r := &utf8Reader{r: &splitReader{data: good, at: split}}
		var out bytes.Buffer
		if _, err := out.ReadFrom(r); err != nil || !bytes.Equal(out.Bytes(), good) {
			t.Errorf("split at %d: %v", split, err)
		}
	}
	for _, bad := range [][]byte{[]byte("a\xff"), []byte("a\xe6\x97"), []byte("\xc3(")} {
		r := &utf8Reader{r: bytes.NewReader(bad)}
		if _, err := new(bytes.Buffer).ReadFrom(r); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

type splitReader struct {
	data []byte
	at   int
	off  int
}

func (s *splitReader) Read(p []byte) (int, error) {
	if s.off >= len(s.data) {
		return 0, errEOF
	}
	end := len(s.data)
	if s.off < s.at {
		end = s.at
	}
	n := copy(p, s.data[s.off:end])
	s.off += n
	return n, nil
}

var errEOF = func() error { _, err := bytes.NewReader(nil).Read(nil); return err }()

func TestParseMetadataTypes(t *testing.T) {
	md, err := parseMetadata([]byte(`{"i": 1, "neg": -9223372036854775808, "f": 1.0, "e": 1e5, "b": true, "s": "x"}`))
	if err != nil {
		t.Fatal(err)
	}
	want := record.Metadata{"i": int64(1), "neg": int64(-9223372036854775808), "f": 1.0, "e": 1e5, "b": true, "s": "x"}
	for k, v := range want {
		if md[k] != v {
			t.Errorf("%s = %#v (%T), want %#v (%T)", k, md[k], md[k], v, v)
		}
	}
}
