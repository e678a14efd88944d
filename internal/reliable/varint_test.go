package reliable

import (
	"encoding/hex"
	"errors"
	"testing"
)

func TestVarintGolden(t *testing.T) {
	tests := []struct {
		v   uint64
		hex string
	}{
		// RFC 9000 §A.1's examples.
		{151288809941952652, "c2197c5eff14e88c"},
		{494878333, "9d7f3e7d"},
		{15293, "7bbd"},
		{37, "25"},
		// Each length's first and last value.
		{0, "00"},
		{63, "3f"},
		{64, "4040"},
		{16383, "7fff"},
		{16384, "80004000"},
		{1<<30 - 1, "bfffffff"},
		{1 << 30, "c000000040000000"},
		{maxVarint, "ffffffffffffffff"},
	}
	for _, tc := range tests {
		got := AppendVarint([]byte{0xaa}, tc.v)
		if h := hex.EncodeToString(got[1:]); h != tc.hex || got[0] != 0xaa {
			t.Errorf("AppendVarint(%d) = %x, want aa%s", tc.v, got, tc.hex)
		}
		if n := VarintLen(tc.v); n != len(tc.hex)/2 {
			t.Errorf("VarintLen(%d) = %d, want %d", tc.v, n, len(tc.hex)/2)
		}
		b := mustHex(t, tc.hex+"ee") // a following byte is not read
		v, n, err := ParseVarint(b)
		if err != nil || v != tc.v || n != len(b)-1 {
			t.Errorf("ParseVarint(%x) = %d, %d, %v; want %d, %d, nil", b, v, n, err, tc.v, len(b)-1)
		}
	}
}

// TestVarintNonMinimal: RFC 9000 §16 lets a value take more bytes than it
// needs, and §A.1 gives 0x4025 for 37.
func TestVarintNonMinimal(t *testing.T) {
	for _, h := range []string{"4025", "80000025", "c000000000000025"} {
		v, n, err := ParseVarint(mustHex(t, h))
		if err != nil || v != 37 || n != len(h)/2 {
			t.Errorf("ParseVarint(%s) = %d, %d, %v; want 37, %d, nil", h, v, n, err, len(h)/2)
		}
	}
}

func TestVarintTruncated(t *testing.T) {
	for _, h := range []string{"", "40", "80", "800000", "c0", "c00000000000"} {
		_, n, err := ParseVarint(mustHex(t, h))
		if !errors.Is(err, ErrFrame) || n != 0 {
			t.Errorf("ParseVarint(%q) = n %d, err %v; want 0, ErrFrame", h, n, err)
		}
	}
}

func TestVarintOutOfRangePanics(t *testing.T) {
	for _, v := range []uint64{1 << 62, 1<<64 - 1} {
		mustPanic(t, "AppendVarint", func() { AppendVarint(nil, v) })
		mustPanic(t, "VarintLen", func() { VarintLen(v) })
	}
}

// FuzzVarint: every value up to 2^62-1 survives a round trip in VarintLen
// bytes, and any bytes either parse to a value that round-trips or fail with
// ErrFrame, never reading past the varint.
func FuzzVarint(f *testing.F) {
	f.Add(uint64(0), []byte{0x25})
	f.Add(uint64(16383), []byte{0x40, 0x25})
	f.Add(uint64(1<<30), []byte{0x9d, 0x7f, 0x3e, 0x7d})
	f.Add(uint64(maxVarint), []byte{0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c})
	f.Add(uint64(1<<64-1), []byte{0xc0})
	f.Fuzz(func(t *testing.T, v uint64, b []byte) {
		v &= maxVarint
		enc := AppendVarint(nil, v)
		if len(enc) != VarintLen(v) {
			t.Fatalf("AppendVarint(%d) is %d bytes, VarintLen says %d", v, len(enc), VarintLen(v))
		}
		got, n, err := ParseVarint(enc)
		if err != nil || got != v || n != len(enc) {
			t.Fatalf("ParseVarint(%x) = %d, %d, %v; want %d", enc, got, n, err, v)
		}

		got, n, err = ParseVarint(b)
		if err != nil {
			if !errors.Is(err, ErrFrame) || n != 0 {
				t.Fatalf("ParseVarint(%x): n %d, err %v", b, n, err)
			}
			return
		}
		if n > len(b) || n != 1<<(b[0]>>6) || got > maxVarint {
			t.Fatalf("ParseVarint(%x) = %d, %d", b, got, n)
		}
		if n == VarintLen(got) {
			// Minimal encodings are canonical: re-encoding gives the input.
			if enc := AppendVarint(nil, got); string(enc) != string(b[:n]) {
				t.Fatalf("ParseVarint(%x) = %d, re-encoded %x", b[:n], got, enc)
			}
		}
	})
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

func mustPanic(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Errorf("%s did not panic", what)
		}
	}()
	f()
}
