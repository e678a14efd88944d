package holepunch

import (
	"encoding/hex"
	"errors"
	"net/netip"
	"reflect"
	"testing"

	"github.com/swarmdb/swarmdb/natcheck"
)

func sampleSignal() *signal {
	s := &signal{
		Code: CodeOK, Mode: ModeRelay, Mapping: natcheck.MappingEndpointIndependent, Filtering: natcheck.FilteringAddressAndPortDependent,
		Ufrag: "abcd", Pwd: "0123456789abcdefghijkl",
		Cands: []candidate{
			{Kind: candHost, Addr: netip.MustParseAddrPort("10.0.0.2:4000")},
			{Kind: candSrflx, Addr: netip.MustParseAddrPort("203.0.113.5:4001")},
			{Kind: candRelay, Addr: netip.MustParseAddrPort("[2001:db8::1]:3478")},
		},
	}
	for i := range s.Secret {
		s.Secret[i] = byte(i)
	}
	return s
}

// TestSignalGolden pins the byte layout drawn in signal.go.
func TestSignalGolden(t *testing.T) {
	want := "01" + "00" + "01" + "02" + "03" +
		"000102030405060708090a0b0c0d0e0f" +
		"04" + hex.EncodeToString([]byte("abcd")) +
		"16" + hex.EncodeToString([]byte("0123456789abcdefghijkl")) +
		"03" +
		"01" + "04" + "0a000002" + "0fa0" +
		"02" + "04" + "cb007105" + "0fa1" +
		"03" + "10" + "20010db8000000000000000000000001" + "0d96"
	b := appendSignal(nil, sampleSignal())
	if got := hex.EncodeToString(b); got != want {
		t.Fatalf("encoding\n got %s\nwant %s", got, want)
	}
	s, err := parseSignal(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s, sampleSignal()) {
		t.Fatalf("round trip: %+v", s)
	}
}

// TestSignalHelloGolden: a payload with a hello is version 2 and ends with
// the hello; without one it stays version 1 (TestSignalGolden).
func TestSignalHelloGolden(t *testing.T) {
	s := &signal{Ufrag: "abcd", Pwd: "0123456789abcdefghijkl", Hello: []byte{0x01, 0x02, 0x03}}
	want := "02" + "00" + "00" + "00" + "00" +
		"00000000000000000000000000000000" +
		"04" + hex.EncodeToString([]byte("abcd")) +
		"16" + hex.EncodeToString([]byte("0123456789abcdefghijkl")) +
		"00" +
		"03" + "010203"
	b := appendSignal(nil, s)
	if got := hex.EncodeToString(b); got != want {
		t.Fatalf("encoding\n got %s\nwant %s", got, want)
	}
	got, err := parseSignal(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, s) {
		t.Fatalf("round trip: %+v", got)
	}
}

func TestParseSignalRejects(t *testing.T) {
	good := appendSignal(nil, sampleSignal())
	cases := map[string][]byte{
		"empty":                   {},
		"version 2 without hello": append([]byte{2}, good[1:]...),
		"version 3":               append([]byte{3}, good[1:]...),
		"empty hello":             append(append([]byte{2}, good[1:]...), 0),
		"long hello":              append(append(append([]byte{2}, good[1:]...), MaxHello+1), make([]byte, MaxHello+1)...),
		"truncated":               good[:len(good)-1],
		"trailing":                append(append([]byte(nil), good...), 0),
		"bad code":                append([]byte{1, byte(codeMax)}, good[2:]...),
		"bad mode":                append([]byte{1, 0, byte(modeMax)}, good[3:]...),
		"bad nat":                 append([]byte{1, 0, 0, 9}, good[4:]...),
		"short ufrag":             appendSignal(nil, &signal{Ufrag: "ab", Pwd: "0123456789abcdefghijkl"}),
		"zero port cand":          appendSignal(nil, &signal{Ufrag: "abcd", Pwd: "0123456789abcdefghijkl", Cands: []candidate{{Kind: candHost, Addr: netip.MustParseAddrPort("10.0.0.1:0")}}}),
	}
	mapped := appendSignal(nil, &signal{Ufrag: "abcd", Pwd: "0123456789abcdefghijkl"})
	mapped[len(mapped)-1] = 1 // one candidate: host ::ffff:10.0.0.1 port 1
	mapped = append(mapped, 1, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1, 0, 1)
	cases["mapped ipv4"] = mapped
	for name, b := range cases {
		if _, err := parseSignal(b); !errors.Is(err, ErrBadSignal) {
			t.Errorf("%s: err = %v, want ErrBadSignal", name, err)
		}
	}
	// A refusal carries no ICE credentials and is valid.
	if _, err := parseSignal(appendSignal(nil, &signal{Code: CodeRefused})); err != nil {
		t.Errorf("refusal: %v", err)
	}
}

// FuzzParseSignal: no input panics, and whatever parses encodes back to the
// same bytes (the encoding is canonical).
func FuzzParseSignal(f *testing.F) {
	f.Add(appendSignal(nil, sampleSignal()))
	f.Add(appendSignal(nil, &signal{Code: CodeUseRelay}))
	hello := sampleSignal()
	hello.Hello = []byte{1, 2}
	f.Add(appendSignal(nil, hello))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := parseSignal(b)
		if err != nil {
			if !errors.Is(err, ErrBadSignal) {
				t.Fatalf("error %v is not ErrBadSignal", err)
			}
			return
		}
		if got := appendSignal(nil, s); string(got) != string(b) {
			t.Fatalf("re-encoding differs:\n in  %x\n out %x", b, got)
		}
	})
}
