package portmap

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var testNonce = [12]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}

// The golden vectors follow RFC 6887's figures byte by byte (§7.1 and §11.1
// for the request, §7.2 and §11.1 for the response).
const (
	goldenMapRequest = `
		02 01 0000  00001c20                               version 2, MAP, lifetime 7200 s
		00000000 00000000 0000ffff 0a01000a               client IP ::ffff:10.1.0.10
		0102030405060708090a0b0c                          mapping nonce
		11 000000  0fa0 0fa0                              UDP, internal 4000, suggested 4000
		00000000 00000000 0000ffff 00000000               suggested IP ::ffff:0.0.0.0 (IPv4, none)`
	goldenMapResponse = `
		02 81 00 00  00000078  00000007  000000000000000000000000   MAP response, SUCCESS, 120 s, epoch 7
		0102030405060708090a0b0c
		11 000000  0fa0 9c40                                        internal 4000, assigned 40000
		00000000 00000000 0000ffff cb007114                         assigned ::ffff:203.0.113.20`
)

func TestPCPRequestGolden(t *testing.T) {
	req := &PCPRequest{Opcode: OpMap, Lifetime: 7200, ClientIP: netip.MustParseAddr("10.1.0.10"),
		Map: &MapPayload{Nonce: testNonce, Protocol: ProtoUDP, InternalPort: 4000, ExternalPort: 4000, ExternalIP: netip.IPv4Unspecified()}}
	got := AppendPCPRequest(nil, req)
	want := unhex(t, stripComments(goldenMapRequest))
	if !bytes.Equal(got, want) {
		t.Fatalf("AppendPCPRequest:\n got %x\nwant %x", got, want)
	}
	back, err := ParsePCPRequest(got)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, req) {
		t.Fatalf("ParsePCPRequest = %+v %+v, want %+v %+v", back, back.Map, req, req.Map)
	}
	ann := AppendPCPRequest(nil, &PCPRequest{Opcode: OpAnnounce, ClientIP: netip.MustParseAddr("10.1.0.10")})
	if want := unhex(t, "02000000 00000000 00000000 00000000 0000ffff 0a01000a"); !bytes.Equal(ann, want) {
		t.Fatalf("ANNOUNCE request %x, want %x", ann, want)
	}
}

func TestPCPResponseGolden(t *testing.T) {
	b := unhex(t, stripComments(goldenMapResponse))
	got, err := ParsePCPResponse(b)
	if err != nil {
		t.Fatal(err)
	}
	want := &PCPResponse{Opcode: OpMap, Result: ResultSuccess, Lifetime: 120, Epoch: 7,
		Map: &MapPayload{Nonce: testNonce, Protocol: ProtoUDP, InternalPort: 4000, ExternalPort: 40000, ExternalIP: netip.MustParseAddr("203.0.113.20")}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ParsePCPResponse = %+v %+v, want %+v %+v", got, got.Map, want, want.Map)
	}
	if again := AppendPCPResponse(nil, got); !bytes.Equal(again, b) {
		t.Fatalf("AppendPCPResponse:\n got %x\nwant %x", again, b)
	}
}

// stripComments drops everything after the hex columns of each line.
func stripComments(s string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		var keep []string
		for _, f := range strings.Fields(line) {
			if _, err := hex.DecodeString(f); err != nil {
				break
			}
			keep = append(keep, f)
		}
		out = append(out, strings.Join(keep, ""))
	}
	return strings.Join(out, "")
}

func TestParsePCPResponseErrors(t *testing.T) {
	good := unhex(t, stripComments(goldenMapResponse))
	withOption := append(append([]byte(nil), good...), 0x80, 0, 0, 3, 1, 2, 3, 0) // one option, 3 bytes + padding
	if r, err := ParsePCPResponse(withOption); err != nil || r.OptionCount != 1 {
		t.Fatalf("response with an option: %+v, %v", r, err)
	}
	set := func(i int, v byte) []byte {
		b := append([]byte(nil), good...)
		b[i] = v
		return b
	}
	for name, tc := range map[string]struct {
		b    []byte
		want error
	}{
		"nat-pmp answer":      {unhex(t, "00 81 0001 00000007"), ErrNATPMPServer},
		"short":               {good[:20], ErrMalformed},
		"not a multiple of 4": {append(append([]byte(nil), good...), 0), ErrMalformed},
		"version 3":           {set(0, 3), ErrMalformed},
		"request bit":         {set(1, 0x01), ErrMalformed},
		"truncated payload":   {good[:40], ErrMalformed},
		"option overrun":      {append(append([]byte(nil), good...), 0x80, 0, 0, 9, 1, 2, 3, 4), ErrMalformed},
		"success no payload":  {good[:24], ErrMalformed},
		"success unknown op":  {set(1, 0x85), ErrMalformed},
		"empty option":        {append(append([]byte(nil), good...), 0x80, 0, 0, 0), nil},
	} {
		_, err := ParsePCPResponse(tc.b)
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: err %v, want %v", name, err, tc.want)
		}
	}
	// An error answer to MAP may come without the payload.
	r, err := ParsePCPResponse(unhex(t, "02 81 00 02 00000000 00000009 000000000000000000000000"))
	if err != nil || r.Result != ResultNotAuthorized || r.Map != nil {
		t.Fatalf("payload-less NOT_AUTHORIZED: %+v, %v", r, err)
	}
}

func FuzzParsePCPResponse(f *testing.F) {
	f.Add(unhex(f, stripComments(goldenMapResponse)))
	f.Add(unhex(f, "02 80 00 00 00000000 00000009 000000000000000000000000"))
	f.Add(unhex(f, "02 81 00 02 00000000 00000009 000000000000000000000000 80000003 01020300"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParsePCPResponse(b)
		if err != nil {
			return
		}
		// Re-encoding drops options and reserved bits; what is left must
		// parse to the same response.
		again, err := ParsePCPResponse(AppendPCPResponse(nil, r))
		if err != nil {
			t.Fatalf("re-encoded response does not parse: %v", err)
		}
		r.OptionCount = 0
		if !reflect.DeepEqual(again, r) {
			t.Fatalf("round trip: %+v, want %+v", again, r)
		}
	})
}

func FuzzParsePCPRequest(f *testing.F) {
	f.Add(unhex(f, stripComments(goldenMapRequest)))
	f.Add(unhex(f, "02000000 00000000 00000000 00000000 0000ffff 0a01000a"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParsePCPRequest(b)
		if err != nil {
			return
		}
		again, err := ParsePCPRequest(AppendPCPRequest(nil, r))
		if err != nil || !reflect.DeepEqual(again, r) {
			t.Fatalf("round trip: %+v (%v), want %+v", again, err, r)
		}
	})
}
