package dht

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"testing"
)

func TestMessageGolden(t *testing.T) {
	id := ID{0xaa}
	tok := ID{0xbb}
	m := &Message{
		Response: true,
		Command:  CmdLookup,
		TID:      0x01020304,
		Addr:     netip.MustParseAddrPort("203.0.113.7:49737"),
		ID:       &id,
		Token:    &tok,
		Closer:   []netip.AddrPort{netip.MustParseAddrPort("198.51.100.1:1")},
		Value:    []byte{0},
	}
	got := hex.EncodeToString(AppendMessage(nil, m))
	want := "5b" + "01" + "04" + "1b" + "01020304" + // tag, version, lookup, flags id|token|value|closer, tid
		"04cb007107c249" + // 203.0.113.7:49737
		"aa" + "00000000000000000000000000000000000000000000000000000000000000" +
		"bb" + "00000000000000000000000000000000000000000000000000000000000000" +
		"01" + "04c633640100" + "01" + // closer: one node 198.51.100.1:1
		"0001" + "00" // value: one byte, zero records
	if got != want {
		t.Fatalf("encoding changed:\n got %s\nwant %s", got, want)
	}
	back, err := ParseMessage(AppendMessage(nil, m))
	if err != nil {
		t.Fatal(err)
	}
	if back.TID != m.TID || back.Addr != m.Addr || *back.ID != id || *back.Token != tok || back.Closer[0] != m.Closer[0] {
		t.Fatalf("round trip: %+v", back)
	}
}

func TestPeerRecordGolden(t *testing.T) {
	r := PeerRecord{PublicKey: bytes.Repeat([]byte{7}, 32), Relays: []netip.AddrPort{netip.MustParseAddrPort("203.0.113.1:49737")}}
	got := hex.EncodeToString(AppendPeerRecord(nil, r))
	want := hex.EncodeToString(bytes.Repeat([]byte{7}, 32)) + "01" + "04cb007101c249"
	if got != want {
		t.Fatalf("got %s want %s", got, want)
	}
}

func FuzzParseMessage(f *testing.F) {
	id := ID{1}
	f.Add(AppendMessage(nil, &Message{Command: CmdPing, Addr: netip.MustParseAddrPort("127.0.0.1:1")}))
	f.Add(AppendMessage(nil, &Message{Response: true, Command: CmdFindNode, ID: &id, Token: &id, Target: &id,
		Closer: []netip.AddrPort{netip.MustParseAddrPort("[2001:db8::1]:2")}, Value: []byte("x"), Error: CodeBadToken, Pad: 3}))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseMessage(b)
		if err != nil {
			return
		}
		again, err := ParseMessage(AppendMessage(nil, m))
		if err != nil {
			t.Fatalf("re-encoding of a parsed message does not parse: %v", err)
		}
		if !bytes.Equal(AppendMessage(nil, again), AppendMessage(nil, m)) {
			t.Fatal("round trip changed the message")
		}
	})
}

func FuzzParseRecords(f *testing.F) {
	f.Add(AppendRecords(nil, []PeerRecord{{PublicKey: make([]byte, 32), Relays: []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:5")}}}))
	f.Add(AppendRecords(nil, []PeerRecord{{PublicKey: make([]byte, 32), WebSocketURL: "wss://h:1", unknown: []byte{9, 1, 0}},
		{PublicKey: make([]byte, 32), Relays: []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:5")}}}))
	f.Add(AppendRecords(nil, []PeerRecord{{PublicKey: make([]byte, 32), Relays6: []netip.AddrPort{netip.MustParseAddrPort("[2001:db8::1]:5")},
		WebSocketURL: "ws://h:1", unknown: []byte{0, 0, 9, 1, 0}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := ParseRecords(b)
		if err != nil {
			return
		}
		if !bytes.Equal(AppendRecords(nil, recs), b) {
			t.Fatal("records do not round-trip")
		}
	})
}

func FuzzVerifyAnnounce(f *testing.F) {
	f.Add(make([]byte, 100))
	f.Fuzz(func(t *testing.T, b []byte) {
		// Must never panic, and random bytes must never verify.
		if _, err := verifyAnnounce(b, ID{}, ID{}, ID{}); err == nil {
			t.Fatal("random announce verified")
		}
		_, _ = verifyUnannounce(b, ID{}, ID{}, ID{})
	})
}

// An IPv4 address has one encoding, its 4-byte form. The 16-byte
// IPv4-mapped spelling is refused (found by FuzzParseTURNOffer: it decoded
// but re-encoded to different bytes).
func TestAddrOneEncoding(t *testing.T) {
	v4 := netip.MustParseAddrPort("203.0.113.7:4000")
	if got := AppendAddr(nil, netip.AddrPortFrom(netip.AddrFrom16(v4.Addr().As16()), 4000)); !bytes.Equal(got, AppendAddr(nil, v4)) {
		t.Fatalf("mapped address encoded as %x", got)
	}
	mapped := append([]byte{16}, netip.AddrFrom16(v4.Addr().As16()).AsSlice()...)
	mapped = append(mapped, 0x0f, 0xa0)
	r := reader{b: mapped}
	if a := r.addr(); !errors.Is(r.err, ErrBadAddress) {
		t.Fatalf("mapped form decoded as %v, err %v", a, r.err)
	}
	for _, a := range []string{"203.0.113.7:4000", "[2001:db8::1]:3478"} {
		want := netip.MustParseAddrPort(a)
		r := reader{b: AppendAddr(nil, want)}
		if got := r.addr(); r.err != nil || got != want || len(r.b) != 0 {
			t.Fatalf("%s round trip: %v %v", a, got, r.err)
		}
	}
}
