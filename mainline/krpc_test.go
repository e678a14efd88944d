package mainline

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/anacrolix/dht/v2/krpc"
	"github.com/anacrolix/torrent/bencode"
)

// TestParseKRPC: well-formed messages of each type pass, with the
// reflexive address of a response; junk is ErrNotKRPC.
func TestParseKRPC(t *testing.T) {
	var id krpc.ID
	ok := []krpc.Msg{
		{T: "aa", Y: "q", Q: "ping", A: &krpc.MsgArgs{ID: id}},
		{T: "aa", Y: "r", R: &krpc.Return{ID: id}, IP: krpc.NodeAddr{IP: []byte{203, 0, 113, 7}, Port: 4242}},
		{T: "aa", Y: "e", E: &krpc.Error{Code: 201, Msg: "generic"}},
	}
	for _, m := range ok {
		b, err := bencode.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := parseKRPC(b)
		if err != nil {
			t.Fatalf("%q: %v", b, err)
		}
		if a, has := reflexiveOf(&got); m.Y == "r" && (!has || a != netip.MustParseAddrPort("203.0.113.7:4242")) {
			t.Fatalf("reflexive address %v %v", a, has)
		}
	}
	for _, junk := range []string{"", "d", "de", "d1:t0:1:y1:qe", "d1:t2:aa1:y1:xe", "d1:t2:aa1:y1:q1:q4:pinge", "i1e", "l1:ae"} {
		if _, err := parseKRPC([]byte(junk)); !errors.Is(err, ErrNotKRPC) {
			t.Errorf("%q: err %v, want ErrNotKRPC", junk, err)
		}
	}
}

// FuzzParseKRPC: no input makes the parser panic, and what it accepts
// encodes again.
func FuzzParseKRPC(f *testing.F) {
	f.Add([]byte("d1:ad2:id20:aaaaaaaaaaaaaaaaaaaae1:q4:ping1:t2:aa1:y1:qe"))
	f.Add([]byte("d2:ip6:\xcb\x00\x71\x07\x10\x921:rd2:id20:aaaaaaaaaaaaaaaaaaaae1:t2:aa1:y1:re"))
	f.Add([]byte("d1:eli201e7:genericee1:t2:aa1:y1:ee"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseKRPC(b)
		if err != nil {
			return
		}
		if _, err := bencode.Marshal(m); err != nil {
			t.Fatalf("accepted %q but it does not encode: %v", b, err)
		}
		reflexiveOf(&m)
	})
}
