package node

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
)

// TestPipeFrameGolden pins the frame bytes.
func TestPipeFrameGolden(t *testing.T) {
	if got := hex.EncodeToString(appendPipeData(nil, []byte("hi"))); got != "646869" {
		t.Errorf("data frame %s", got)
	}
	if got := hex.EncodeToString(appendPipeEnd(nil, 0x0102030405)); got != "650000000102030405" {
		t.Errorf("end frame %s", got)
	}
	f, err := parsePipeFrame([]byte{'e', 0, 0, 0, 0, 0, 0, 1, 0})
	if err != nil || !f.end || f.total != 256 {
		t.Errorf("end frame parsed as %+v, %v", f, err)
	}
	for _, bad := range [][]byte{nil, {'d'}, {'e', 1}, {'x', 1, 2}, append([]byte{'d'}, make([]byte, pipeFrameMax)...)} {
		if _, err := parsePipeFrame(bad); !errors.Is(err, errPipeFrame) {
			t.Errorf("%x: %v, want errPipeFrame", bad[:min(len(bad), 4)], err)
		}
	}
}

// FuzzParsePipeFrame: every frame that parses appends back to the same bytes.
func FuzzParsePipeFrame(f *testing.F) {
	f.Add(appendPipeData(nil, []byte("data")))
	f.Add(appendPipeEnd(nil, 12345))
	f.Add([]byte{'z'})
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := parsePipeFrame(b)
		if err != nil {
			return
		}
		var again []byte
		if fr.end {
			again = appendPipeEnd(nil, fr.total)
		} else {
			again = appendPipeData(nil, fr.data)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("%x parsed as %+v, appends back as %x", b, fr, again)
		}
	})
}
