package record

import (
	"encoding/binary"
	"math"
	"unsafe"
)

// littleEndian says whether float32s are stored little-endian in memory,
// as on amd64 and arm64.
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// AppendFloat32s appends e as little-endian float32 bits: how archives
// store embeddings, digests hash them and Chroma takes them in base64. On
// a little-endian machine that is e's memory, copied at once rather than
// a value at a time.
func AppendFloat32s(dst []byte, e []float32) []byte {
	if littleEndian && len(e) > 0 {
		return append(dst, unsafe.Slice((*byte)(unsafe.Pointer(&e[0])), 4*len(e))...)
	}
	for _, f := range e {
		dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(f))
	}
	return dst
}

// DecodeFloat32s fills dst with the little-endian float32s of src (4 bytes
// each; len(src) is 4*len(dst)) and returns it.
func DecodeFloat32s(dst []float32, src []byte) []float32 {
	if littleEndian && len(dst) > 0 {
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&dst[0])), 4*len(dst)), src)
		return dst
	}
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
	return dst
}
