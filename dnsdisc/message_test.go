package dnsdisc

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
)

// TestNameAndAnswerMatchCapture: the name and the peers string of an
// answer are what dns-discovery 6.2.3 put on the wire for
// DC({dht:false}).join("swarmdb-M", 5555) (shared/reference/mainline.md
// §1.4): the question 7a0e5e52…c7a0.dns-discovery.local, peers=AAAAABWz.
func TestNameAndAnswerMatchCapture(t *testing.T) {
	name := Name("swarmdb-M")
	if len(name) != 40+len("."+Domain+".") || name[:8] != "7a0e5e52" || name[36:40] != "c7a0" {
		t.Fatalf("Name = %q", name)
	}
	b, err := AppendAnswer(nil, name, "tok", netip.MustParseAddrPort("0.0.0.0:5555"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte("peers=AAAAABWz")) {
		t.Fatalf("answer %x lacks peers=AAAAABWz", b)
	}
}

// TestRoundTrip: a query is a question; an answer names the sender for
// 0.0.0.0 and the given IP otherwise; other names are ErrNotOurs.
func TestRoundTrip(t *testing.T) {
	name := Name("topic")
	from := netip.MustParseAddr("10.0.0.7")
	q, err := AppendQuery(nil, name)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := Parse(q, name, from); err != nil || !m.Asked || m.Peers != nil {
		t.Fatalf("query parsed as %+v, %v", m, err)
	}
	if _, err := Parse(q, Name("other"), from); !errors.Is(err, ErrNotOurs) {
		t.Fatalf("query for another name: %v", err)
	}
	for _, tc := range []struct{ serve, want string }{
		{"0.0.0.0:9000", "10.0.0.7:9000"},
		{"127.0.0.1:9001", "127.0.0.1:9001"},
	} {
		a, err := AppendAnswer(nil, name, "t0k", netip.MustParseAddrPort(tc.serve))
		if err != nil {
			t.Fatal(err)
		}
		m, err := Parse(a, name, from)
		if err != nil || m.Asked || m.Token != "t0k" || len(m.Peers) != 1 || m.Peers[0] != netip.MustParseAddrPort(tc.want) {
			t.Fatalf("answer for %s parsed as %+v, %v; want peer %s", tc.serve, m, err, tc.want)
		}
	}
	if a, _ := AppendAnswer(nil, name, "t", netip.AddrPort{}); a != nil {
		if m, err := Parse(a, name, from); err != nil || len(m.Peers) != 0 || m.Token != "t" {
			t.Fatalf("answer without a peer: %+v %v", m, err)
		}
	}
}

// TestTokenIsDNSDiscoverys: base64(SHA-256(secret ‖ host text)).
func TestTokenIsDNSDiscoverys(t *testing.T) {
	// sha256("s" + "10.0.0.1") in base64, computed with node:crypto.
	const want = "egXLY31diaVDzMWc2dhxY0GVJvadBV2W+Z61zorejYQ="
	if got := Token([]byte("s"), netip.MustParseAddr("10.0.0.1")); got != want {
		t.Fatalf("Token = %s, want %s", got, want)
	}
}

// FuzzParse: no datagram makes Parse panic.
func FuzzParse(f *testing.F) {
	q, _ := AppendQuery(nil, Name("x"))
	a, _ := AppendAnswer(nil, Name("x"), "t", netip.MustParseAddrPort("0.0.0.0:1"))
	f.Add(q)
	f.Add(a)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b, Name("x"), netip.MustParseAddr("10.0.0.1"))
		if err == nil && len(m.Peers) > maxPeersPerAnswer {
			t.Fatalf("%d peers from one answer", len(m.Peers))
		}
	})
}
