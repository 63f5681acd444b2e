package jsonx

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
func plainRun[T string | []byte](b T, html bool) int {
	n := 0
	for ; n+8 <= len(b); n += 8 {
		x := uint64(b[n]) | uint64(b[n+1])<<8 | uint64(b[n+2])<<16 | uint64(b[n+3])<<24 |
			uint64(b[n+4])<<32 | uint64(b[n+5])<<40 | uint64(b[n+6])<<48 | uint64(b[n+7])<<56
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
