package dht_test

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v2"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/internal/demux"
	"github.com/swarmdb/swarmdb/internal/testutil"
)

// TestHandle: each class reaches the handler registered for it and is
// counted as handed off (KRPCPackets, OtherPackets); the node answers a
// plain STUN Binding request itself and hands the STUN handler only the
// rest; a class without a handler, and one whose handler was removed, is
// dropped (DroppedMalformed).
func TestHandle(t *testing.T) {
	n := dht.New(dht.Config{ListenAddr: "127.0.0.1:0", ListenAddr6: dht.ListenOff, Mode: dht.ModeEphemeral})
	type got struct {
		class demux.Class
		b     []byte
		from  netip.AddrPort
	}
	ch := make(chan got, 8)
	for _, c := range []demux.Class{demux.STUN, demux.KRPC, demux.Birthday} {
		n.Handle(c, func(b []byte, from netip.AddrPort) {
			ch <- got{c, append([]byte(nil), b...), from}
		})
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	me := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	send := func(b []byte) {
		t.Helper()
		if _, err := conn.WriteToUDPAddrPort(b, n.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(c demux.Class, b []byte) {
		t.Helper()
		select {
		case g := <-ch:
			if g.class != c || string(g.b) != string(b) || g.from != me {
				t.Fatalf("%s handler got %x from %s, want %s %x from %s", g.class, g.b, g.from, c, b, me)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s datagram not handed to its handler", c)
		}
	}
	stats := func(want func(dht.Stats) bool) {
		t.Helper()
		if !testutil.Poll(5*time.Second, 10*time.Millisecond, func() bool { return want(n.Stats()) }) {
			t.Fatalf("stats: %+v", n.Stats())
		}
	}

	// Sent in order on loopback: when the last one is seen, the earlier
	// ones were read, so a datagram the STUN handler did not get, it will
	// not get.
	send(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw)
	success := stun.MustBuild(stun.TransactionID, stun.BindingSuccess).Raw
	send(success)
	expect(demux.STUN, success)
	stats(func(s dht.Stats) bool { return s.STUNAnswered == 1 && s.OtherPackets == 1 })

	krpc := []byte("d1:y1:qe")
	send(krpc)
	expect(demux.KRPC, krpc)
	birthday := []byte{demux.TagBirthday, 1, 2, 3}
	send(birthday)
	expect(demux.Birthday, birthday)
	stats(func(s dht.Stats) bool { return s.KRPCPackets == 1 && s.OtherPackets == 2 })

	send([]byte{demux.TagSealed, 0, 0, 0})
	stats(func(s dht.Stats) bool { return s.DroppedMalformed == 1 })
	n.Handle(demux.KRPC, nil)
	send(krpc)
	stats(func(s dht.Stats) bool { return s.DroppedMalformed == 2 && s.KRPCPackets == 1 })
	select {
	case g := <-ch:
		t.Fatalf("%s handler got %x after the drops", g.class, g.b)
	default:
	}
}

// TestHandleDHTPanics: the DHT class is the node's own.
func TestHandleDHTPanics(t *testing.T) {
	n := dht.New(dht.Config{})
	defer func() {
		if recover() == nil {
			t.Fatal("Handle(DHT) did not panic")
		}
	}()
	n.Handle(demux.DHT, func([]byte, netip.AddrPort) {})
}
