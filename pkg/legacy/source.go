package legacy

import (
	"errors"
	"fmt"
	"hash"
	"io"
	"unicode/utf8"
)

// sourceReader reads the compressed input: it hashes and counts every byte,
// bounds the total, and remembers the source's own error so that I/O
// failures are not mistaken for a bad archive.
type sourceReader struct {
	r   io.Reader
	h   hash.Hash
	n   int64
	max int64
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	tooLarge := fmt.Errorf("%w: the file is larger than %d bytes", ErrTooLarge, s.max)
	if s.n > s.max {
		return 0, tooLarge
	}
	// Read at most one byte past the limit, to tell a file of exactly max
	// bytes from a larger one.
	if int64(len(p)) > s.max-s.n+1 {
		p = p[:s.max-s.n+1]
	}
	n, err := s.r.Read(p)
	s.h.Write(p[:n])
	s.n += int64(n)
	if s.n > s.max {
		return 0, tooLarge
	}
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

// drain reads the rest of the source into the hash, so that a checksum can
// still be compared after the archive failed to parse.
func (s *sourceReader) drain() error {
	if s.err != nil {
		return s.err
	}
	_, err := io.Copy(io.Discard, s)
	return err
}

// boundReader bounds the decompressed stream: a total and, past a floor, a
// ratio to the compressed bytes read so far.
type boundReader struct {
	r     io.Reader
	src   *sourceReader
	n     int64
	lim   Limits
	limit error
}

func (b *boundReader) Read(p []byte) (int, error) {
	if b.limit != nil {
		return 0, b.limit
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	switch {
	case b.n > b.lim.MaxUncompressedBytes:
		b.limit = fmt.Errorf("%w: more than %d bytes decompressed (the limit; a decompression bomb?)", ErrTooLarge, b.lim.MaxUncompressedBytes)
	case b.n > b.lim.RatioAfter && b.n > b.lim.MaxRatio*max(b.src.n, 1):
		b.limit = fmt.Errorf("%w: %d bytes decompressed from %d, more than %dx (a decompression bomb?)", ErrTooLarge, b.n, b.src.n, b.lim.MaxRatio)
	}
	if b.limit != nil {
		return n, b.limit
	}
	return n, err
}

// budgetReader bounds how far the JSON decoder may read ahead of the start
// of the current batch, which bounds its buffer: one record is buffered
// whole while it is decoded.
type budgetReader struct {
	r     io.Reader
	n     int64
	limit int64
	what  func() string
}

func (b *budgetReader) Read(p []byte) (int, error) {
	if b.n >= b.limit {
		return 0, fmt.Errorf("%w: %s", ErrTooLarge, b.what())
	}
	if int64(len(p)) > b.limit-b.n {
		p = p[:b.limit-b.n]
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	return n, err
}

var errBadUTF8 = errors.New("collections.json is not valid UTF-8")

// utf8Reader fails on invalid UTF-8, which encoding/json would otherwise
// replace silently with U+FFFD, changing ids and documents.
type utf8Reader struct {
	r     io.Reader
	carry []byte
	buf   []byte
	off   int64
}

func (u *utf8Reader) Read(p []byte) (int, error) {
	n, err := u.r.Read(p)
	if n > 0 {
		u.buf = append(append(u.buf[:0], u.carry...), p[:n]...)
		cut := len(u.buf)
		// Hold back a rune split across reads.
		for i := len(u.buf) - 1; i >= 0 && i >= len(u.buf)-utf8.UTFMax+1; i-- {
			if utf8.RuneStart(u.buf[i]) {
				if !utf8.FullRune(u.buf[i:]) {
					cut = i
				}
				break
			}
		}
		if !utf8.Valid(u.buf[:cut]) {
			return 0, fmt.Errorf("%w: %w (near byte %d)", ErrInvalid, errBadUTF8, u.off)
		}
		u.off += int64(cut)
		u.carry = append(u.carry[:0], u.buf[cut:]...)
	}
	if err == io.EOF && len(u.carry) > 0 {
		return n, fmt.Errorf("%w: %w (at the end)", ErrInvalid, errBadUTF8)
	}
	return n, err
}

// squeezeReader collapses runs of JSON whitespace outside strings to one
// byte. encoding/json's Decoder rescans buffered whitespace on every refill
// while it looks for the next token, which is quadratic in the length of a
// run: a hostile file of megabytes of spaces would take minutes.
type squeezeReader struct {
	r                 io.Reader
	inStr, esc, space bool
}

func (s *squeezeReader) Read(p []byte) (int, error) {
	for {
		n, err := s.r.Read(p)
		w := 0
		for i := range n {
			c := p[i]
			switch {
			case s.inStr:
				switch {
				case s.esc:
					s.esc = false
				case c == '\\':
					s.esc = true
				case c == '"':
					s.inStr = false
				}
			case c == ' ' || c == '\t' || c == '\n' || c == '\r':
				if s.space {
					continue
				}
				s.space = true
			default:
				s.space = false
				s.inStr = c == '"'
			}
			p[w] = c
			w++
		}
		if w > 0 || err != nil || n == 0 {
			return w, err
		}
	}
}
