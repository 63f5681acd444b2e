package legacy

import (
	"fmt"
	"strconv"
	"unsafe"
)

// float32List decodes a JSON list of numbers (or null) into float32 without
// reflection, parsing each number with 32-bit rounding as encoding/json does
// for float32: decimal text written for a float32 value gives that value
// back bit for bit. json.Decoder has already checked the value is valid JSON.
type float32List []float32

func (l *float32List) UnmarshalJSON(data []byte) error {
	i := skipSpace(data, 0)
	if len(data)-i >= 4 && string(data[i:i+4]) == "null" {
		*l = nil
		return nil
	}
	if i >= len(data) || data[i] != '[' {
		return listError(fmt.Sprintf("want a list of numbers or null, got %.40s", data[i:]))
	}
	out := make([]float32, 0, max(len(data)/12, 1))
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == ']' {
		*l = out
		return nil
	}
	for {
		i = skipSpace(data, i)
		start := i
		for i < len(data) {
			c := data[i]
			if (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E' {
				i++
				continue
			}
			break
		}
		if start == i {
			return listError(fmt.Sprintf("item %d: want a number, got %.20s", len(out), data[start:]))
		}
		num := data[start:i]
		f, err := strconv.ParseFloat(unsafe.String(&num[0], len(num)), 32)
		if err != nil {
			return listError(fmt.Sprintf("item %d: %s is beyond float32 range (±3.4e38)", len(out), num))
		}
		out = append(out, float32(f))
		i = skipSpace(data, i)
		if i < len(data) && data[i] == ']' {
			*l = out
			return nil
		}
		if i >= len(data) || data[i] != ',' {
			return listError(fmt.Sprintf("item %d: want ',' or ']', got %.20s", len(out), data[i:]))
		}
		i++
	}
}

func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

// listError is a float32List decoding error: the JSON was valid, the value
// was not a list of float32.
type listError string

func (e listError) Error() string { return string(e) }
