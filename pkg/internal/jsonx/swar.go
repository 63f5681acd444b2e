package jsonx

import "encoding/binary"

const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// hasZero reports whether a byte of x is 0 (exact as a boolean).
func hasZero(x uint64) bool { return (x-ones)&^x&highs != 0 }

// plainRun returns how many bytes from the start of b, in whole words of
// 8, are plain ASCII that a JSON string holds as it is: no control
// character, quote or backslash, nothing from 0x80 up, and with html none
// of <, > and &. Strings are mostly such text; the callers go byte by byte
// from there.
func plainRun(b []byte, html bool) int {
	n := 0
	for ; n+8 <= len(b); n += 8 {
		x := binary.LittleEndian.Uint64(b[n:]) // one load, where a generic function's shifts were eight
		// With no byte from 0x80 up, x-0x20 borrows exactly at bytes below 0x20.
		if x&highs != 0 || (x-0x20*ones)&highs != 0 ||
			hasZero(x^('"'*ones)) || hasZero(x^('\\'*ones)) {
			break
		}
		if html && (hasZero(x^('<'*ones)) || hasZero(x^('>'*ones)) || hasZero(x^('&'*ones))) {
			break
		}
	}
	return n
}

// textRun returns how many bytes from the start of b are not a control
// character, quote or backslash: bytes a JSON string holds as they are
// when they are valid UTF-8, which is checked over the whole run at once
// (utf8.Valid), not a rune at a time.
func textRun(b []byte) int {
	n := 0
	for ; n+8 <= len(b); n += 8 {
		x := binary.LittleEndian.Uint64(b[n:])
		// (x-0x20)&^x borrows at a byte below 0x20 and, from 0x80 up,
		// never: those bytes have their high bit masked off.
		if (x-0x20*ones)&^x&highs != 0 || hasZero(x^('"'*ones)) || hasZero(x^('\\'*ones)) {
			break
		}
	}
	for ; n < len(b); n++ {
		if c := b[n]; c < 0x20 || c == '"' || c == '\\' {
			break
		}
	}
	return n
}

// hasControl reports whether b holds a byte below 0x20, which a JSON
// string may not hold as it is.
func hasControl(b []byte) bool {
	n := 0
	for ; n+16 <= len(b); n += 16 {
		x, y := binary.LittleEndian.Uint64(b[n:]), binary.LittleEndian.Uint64(b[n+8:])
		if ((x-0x20*ones)&^x|(y-0x20*ones)&^y)&highs != 0 {
			return true
		}
	}
	for ; n < len(b); n++ {
		if b[n] < 0x20 {
			return true
		}
	}
	return false
}
