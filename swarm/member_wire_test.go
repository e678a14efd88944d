package swarm

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func testKey(b byte) ed25519.PublicKey { return bytes.Repeat([]byte{b}, ed25519.PublicKeySize) }

func testTag(b byte) topicTag {
	var t topicTag
	for i := range t {
		t[i] = b
	}
	return t
}

// TestHelloGolden pins the dial hello's layout drawn in member_wire.go.
func TestHelloGolden(t *testing.T) {
	h := dialHello{Kind: kindJoin, Degree: 3, Tag: testTag(0xaa)}
	b := appendHello(nil, h)
	if got, want := hex.EncodeToString(b), "01"+"01"+"03"+"aaaaaaaaaaaaaaaa"; got != want {
		t.Fatalf("hello %s, want %s", got, want)
	}
	got, err := parseHello(b)
	if err != nil || got != h {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	if got, err := parseHello(nil); err != nil || got.Kind != kindNeighbor {
		t.Fatalf("empty hello: %+v, %v; want a neighbour request", got, err)
	}
	if w := (dialHello{Kind: kindNeighbor, Degree: 3, Tag: testTag(1)}).wire(); w != nil {
		t.Fatalf("a neighbour request sends %x, want nothing (signal version 1)", w)
	}
	for name, b := range map[string][]byte{
		"short":     b[:5],
		"long":      append(append([]byte(nil), b...), 0),
		"version":   append([]byte{2}, b[1:]...),
		"bad kind":  append([]byte{1, byte(kindMax)}, b[2:]...),
		"one byte":  {1},
		"all zeros": make([]byte, helloSize+1),
	} {
		if _, err := parseHello(b); !errors.Is(err, ErrBadMember) {
			t.Errorf("%s: err = %v, want ErrBadMember", name, err)
		}
	}
}

func sampleMembers() []*memberMsg {
	relays := []netip.AddrPort{netip.MustParseAddrPort("203.0.113.7:4000"), netip.MustParseAddrPort("[2001:db8::2]:4001")}
	return []*memberMsg{
		{Type: msgHello, Degree: 4, Tags: []topicTag{testTag(1), testTag(2)}},
		{Type: msgPing, Degree: 2, Nonce: 0x0102030405060708},
		{Type: msgPong, Degree: 2, Nonce: 0x0102030405060708},
		{Type: msgDisconnect},
		{Type: msgForwardJoin, Tag: testTag(3), TTL: 6, Peer: peerEntry{Key: testKey(0x11), Relays: relays}},
		{Type: msgShuffle, Tag: testTag(4), TTL: 5, Path: []ed25519.PublicKey{testKey(0x21), testKey(0x22)},
			Entries: []peerEntry{{Key: testKey(0x21)}, {Key: testKey(0x23), Relays: relays[:1]}}},
		{Type: msgShuffleReply, Tag: testTag(4), Path: []ed25519.PublicKey{testKey(0x21)}, Entries: []peerEntry{{Key: testKey(0x24)}}},
	}
}

// TestMemberGolden pins the control messages' layout drawn in
// member_wire.go.
func TestMemberGolden(t *testing.T) {
	k := func(b byte) string { return strings.Repeat(hex.EncodeToString([]byte{b}), 32) }
	tag := func(b byte) string { return strings.Repeat(hex.EncodeToString([]byte{b}), 8) }
	relay4 := "04" + "cb007107" + "0fa0"
	relay6 := "10" + "20010db8000000000000000000000002" + "0fa1"
	want := []string{
		"01" + "04" + "02" + tag(1) + tag(2),
		"02" + "02" + "0102030405060708",
		"03" + "02" + "0102030405060708",
		"04",
		"05" + tag(3) + "06" + k(0x11) + "02" + relay4 + relay6,
		"06" + tag(4) + "05" + "02" + k(0x21) + k(0x22) + "02" + k(0x21) + "00" + k(0x23) + "01" + relay4,
		"07" + tag(4) + "01" + k(0x21) + "01" + k(0x24) + "00",
	}
	for i, m := range sampleMembers() {
		b := appendMember(nil, m)
		if got := hex.EncodeToString(b); got != want[i] {
			t.Errorf("type %d:\n got %s\nwant %s", m.Type, got, want[i])
			continue
		}
		got, err := parseMember(b)
		if err != nil {
			t.Errorf("type %d: %v", m.Type, err)
			continue
		}
		if !reflect.DeepEqual(got, m) {
			t.Errorf("type %d round trip:\n got %+v\nwant %+v", m.Type, got, m)
		}
	}
}

func TestParseMemberRejects(t *testing.T) {
	good := appendMember(nil, sampleMembers()[4])
	mapped := appendMember(nil, &memberMsg{Type: msgForwardJoin, Peer: peerEntry{Key: testKey(1)}})
	mapped[len(mapped)-1] = 1 // one relay: ::ffff:10.0.0.1 port 1
	mapped = append(mapped, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1, 0, 1)
	many := []byte{msgHello, 0, maxTags + 1}
	many = append(many, make([]byte, 8*(maxTags+1))...)
	for name, b := range map[string][]byte{
		"empty":        nil,
		"unknown type": {msgMax},
		"type zero":    {0},
		"truncated":    good[:len(good)-1],
		"trailing":     append(append([]byte(nil), good...), 0),
		"mapped ipv4":  mapped,
		"many tags":    many,
		"ping short":   {msgPing, 1, 2, 3},
	} {
		if _, err := parseMember(b); !errors.Is(err, ErrBadMember) {
			t.Errorf("%s: err = %v, want ErrBadMember", name, err)
		}
	}
}

// FuzzParseMember: no input panics, and whatever parses encodes back to the
// same bytes (the encoding is canonical).
func FuzzParseMember(f *testing.F) {
	for _, m := range sampleMembers() {
		f.Add(appendMember(nil, m))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseMember(b)
		if err != nil {
			if !errors.Is(err, ErrBadMember) {
				t.Fatalf("error %v is not ErrBadMember", err)
			}
			return
		}
		if got := appendMember(nil, m); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding differs:\n in  %x\n out %x", b, got)
		}
	})
}

// FuzzParseHello: no input panics; what parses re-encodes to itself.
func FuzzParseHello(f *testing.F) {
	f.Add(appendHello(nil, dialHello{Kind: kindForwardJoin, Degree: 7, Tag: testTag(9)}))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseHello(b)
		if err != nil {
			if !errors.Is(err, ErrBadMember) {
				t.Fatalf("error %v is not ErrBadMember", err)
			}
			return
		}
		if len(b) > 0 && !bytes.Equal(appendHello(nil, h), b) {
			t.Fatalf("re-encoding differs: %x", b)
		}
	})
}
