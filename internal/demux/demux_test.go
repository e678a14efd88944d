package demux

import (
	"net/netip"
	"testing"
)

// TestTableDisjoint: no first byte belongs to two classes, and every row
// is well formed.
func TestTableDisjoint(t *testing.T) {
	var owner [256]Class
	for _, s := range table {
		if s.lo > s.hi {
			t.Fatalf("row %#x-%#x %s: lo > hi", s.lo, s.hi, s.c)
		}
		if s.c == Unknown {
			t.Fatalf("row %#x-%#x maps to Unknown", s.lo, s.hi)
		}
		for b := int(s.lo); b <= int(s.hi); b++ {
			if owner[b] != Unknown {
				t.Fatalf("byte %#x is both %s and %s", b, owner[b], s.c)
			}
			owner[b] = s.c
		}
	}
}

// TestClassifyKnownPackets checks real first bytes of each protocol.
func TestClassifyKnownPackets(t *testing.T) {
	cases := []struct {
		name string
		b    []byte
		want Class
	}{
		{"empty", nil, Unknown},
		{"stun binding request", []byte{0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42}, STUN},
		{"stun binding success", []byte{0x01, 0x01}, STUN},
		{"dht request", []byte{TagDHTRequest, 1}, DHT},
		{"dht response", []byte{TagDHTResponse, 1}, DHT},
		{"krpc ping", []byte("d1:ad2:id20:aaaaaaaaaaaaaaaaaaaae1:q4:ping1:hs:aa1:y1:qe"), KRPC},
		{"birthday", []byte{TagBirthday, 0, 0}, Birthday},
		{"sealed", []byte{TagSealed, 0, 0, 0, 0, 0, 0, 0, 1}, Sealed},
		{"turn channel data", []byte{0x40, 0x00, 0x00, 0x04}, Unknown},
		{"reserved", []byte{0xFF}, Unknown},
	}
	for _, c := range cases {
		if got := Classify(c.b); got != c.want {
			t.Errorf("%s: Classify = %s, want %s", c.name, got, c.want)
		}
	}
}

// FuzzClassify: Classify never panics and agrees with the table.
func FuzzClassify(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("d1:y1:qe"))
	f.Add([]byte{TagSealed})
	f.Fuzz(func(t *testing.T, b []byte) {
		c := Classify(b)
		if len(b) == 0 {
			if c != Unknown {
				t.Fatalf("empty datagram classified %s", c)
			}
			return
		}
		want := Unknown
		for _, s := range table {
			if b[0] >= s.lo && b[0] <= s.hi {
				want = s.c
			}
		}
		if c != want {
			t.Fatalf("first byte %#x: %s, table says %s", b[0], c, want)
		}
	})
}

// TestHandlersDispatch: a datagram reaches the handler of its class and no
// other; without one, or after it is removed, Dispatch says nobody took it.
func TestHandlersDispatch(t *testing.T) {
	var hs Handlers
	from := netip.MustParseAddrPort("192.0.2.1:6881")
	got := map[Class]int{}
	for _, c := range []Class{STUN, KRPC, Birthday, Sealed} {
		hs.Handle(c, func(b []byte, f netip.AddrPort) {
			if f != from {
				t.Errorf("%s handler: from %s, want %s", c, f, from)
			}
			got[c]++
		})
	}
	for _, b := range [][]byte{{0x01, 0x01}, []byte("d1:y1:qe"), {TagBirthday}, {TagSealed}} {
		if !hs.Dispatch(Classify(b), b, from) {
			t.Errorf("first byte %#x: not taken", b[0])
		}
	}
	for _, c := range []Class{STUN, KRPC, Birthday, Sealed} {
		if got[c] != 1 {
			t.Errorf("%s handler ran %d times, want 1", c, got[c])
		}
	}
	if hs.Dispatch(DHT, []byte{TagDHTRequest}, from) {
		t.Error("DHT taken with no handler registered")
	}
	if hs.Dispatch(Unknown, []byte{0xFF}, from) {
		t.Error("Unknown taken")
	}
	hs.Handle(KRPC, nil)
	if hs.Dispatch(KRPC, []byte("d1:y1:qe"), from) {
		t.Error("KRPC taken after its handler was removed")
	}
}

// TestHandlersUnknownPanics: nothing may register for Unknown.
func TestHandlersUnknownPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("Handle(Unknown) did not panic")
		}
	}()
	var hs Handlers
	hs.Handle(Unknown, func([]byte, netip.AddrPort) {})
}

// TestHandlersConcurrent: a layer may register while the read loop
// dispatches (run with -race).
func TestHandlersConcurrent(t *testing.T) {
	var hs Handlers
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 1000 {
			hs.Dispatch(Sealed, []byte{TagSealed}, netip.AddrPort{})
		}
	}()
	for range 1000 {
		hs.Handle(Sealed, func([]byte, netip.AddrPort) {})
		hs.Handle(Sealed, nil)
	}
	<-done
}
