package reliable

import (
	"encoding/binary"
	"fmt"
)

// Variable-length integers (RFC 9000 §16). The two most significant bits of
// the first byte give the length; the rest of the bytes, big-endian, the value:
//
//	prefix  bytes  value bits  largest value
//	0b00    1       6          63
//	0b01    2      14          16383
//	0b10    4      30          1073741823
//	0b11    8      62          4611686018427387903 (2^62-1)
//
//	+--------+------------------+---------------------------------+
//	| prefix | value, high bits | value, 0, 1, 3 or 7 more bytes  |
//	| 2 bits | 6 bits           | big-endian                      |
//	+--------+------------------+---------------------------------+
//
// Every packet number, stream ID, offset, limit and error code on the wire is
// one; frame.go's layouts mark them (i), as RFC 9000 does. AppendVarint always
// writes the shortest encoding; ParseVarint accepts any (RFC 9000 §16: "values
// do not need to be encoded on the minimum number of bytes"), so 0x4025 and
// 0x25 both read as 37.

// maxVarint is the largest value a varint can carry, 2^62-1.
const maxVarint = 1<<62 - 1

// errVarintShort is the error for a varint cut off by the end of its buffer;
// it is a value so that the hot path never formats one.
var errVarintShort = fmt.Errorf("%w: varint truncated", ErrFrame)

// VarintLen returns how many bytes AppendVarint writes for v: 1, 2, 4 or 8.
// It panics if v > maxVarint, like AppendVarint.
func VarintLen(v uint64) int {
	switch {
	case v <= 63:
		return 1
	case v <= 16383:
		return 2
	case v <= 1073741823:
		return 4
	case v <= maxVarint:
		return 8
	}
	panic(fmt.Sprintf("reliable: varint %d out of range", v))
}

// AppendVarint appends v to b in the shortest encoding (RFC 9000 §16). A
// value above maxVarint cannot be encoded, and passing one is a programming
// error: AppendVarint panics.
func AppendVarint(b []byte, v uint64) []byte {
	switch {
	case v <= 63:
		return append(b, byte(v))
	case v <= 16383:
		return binary.BigEndian.AppendUint16(b, uint16(v)|0x4000)
	case v <= 1073741823:
		return binary.BigEndian.AppendUint32(b, uint32(v)|0x8000_0000)
	case v <= maxVarint:
		return binary.BigEndian.AppendUint64(b, v|0xc000_0000_0000_0000)
	}
	panic(fmt.Sprintf("reliable: varint %d out of range", v))
}

// ParseVarint reads the varint at the start of b and returns it and its
// length in bytes. The error wraps ErrFrame if b ends before the varint does.
func ParseVarint(b []byte) (v uint64, n int, err error) {
	if len(b) == 0 {
		return 0, 0, errVarintShort
	}
	switch b[0] >> 6 {
	case 0:
		return uint64(b[0]), 1, nil
	case 1:
		if len(b) < 2 {
			return 0, 0, errVarintShort
		}
		return uint64(binary.BigEndian.Uint16(b) & 0x3fff), 2, nil
	case 2:
		if len(b) < 4 {
			return 0, 0, errVarintShort
		}
		return uint64(binary.BigEndian.Uint32(b) & 0x3fff_ffff), 4, nil
	default:
		if len(b) < 8 {
			return 0, 0, errVarintShort
		}
		return binary.BigEndian.Uint64(b) & maxVarint, 8, nil
	}
}
