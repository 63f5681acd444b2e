package record

import (
	"bytes"
	"encoding/binary"
	"math"
	"testing"
)

// TestFloat32sBitExact: every bit pattern (NaNs, infinities, -0,
// subnormals) goes to little-endian bytes and back unchanged, as the
// value-at-a-time encoding writes it.
func TestFloat32sBitExact(t *testing.T) {
	bits := []uint32{0, 0x80000000, 0x00000001, 0x007fffff, 0x00800000, 0x3dcccccd, 0x7f7fffff,
		0x7f800000, 0xff800000, 0x7fc00000, 0x7fa00001, 0xffffffff, 0xdeadbeef}
	e := make([]float32, len(bits))
	var want []byte
	for i, b := range bits {
		e[i] = math.Float32frombits(b)
		want = binary.LittleEndian.AppendUint32(want, b)
	}
	got := AppendFloat32s([]byte("x"), e)
	if !bytes.Equal(got[1:], want) || got[0] != 'x' {
		t.Fatalf("AppendFloat32s = %x, want %x", got[1:], want)
	}
	back := DecodeFloat32s(make([]float32, len(bits)), want)
	for i, f := range back {
		if math.Float32bits(f) != bits[i] {
			t.Errorf("DecodeFloat32s value %d = %08x, want %08x", i, math.Float32bits(f), bits[i])
		}
	}
	if got := AppendFloat32s(nil, nil); len(got) != 0 {
		t.Errorf("AppendFloat32s(nil, nil) = %x", got)
	}
}
