package dht_test

import (
	"bytes"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/pion/stun/v2"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/internal/demux"
	"github.com/swarmdb/swarmdb/internal/testutil"
	"github.com/swarmdb/swarmdb/internal/udpopt"
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

// TestHandleSegments: a burst sent with segmentation offload, which a
// socket with receive offload reads in one go, is dispatched datagram by
// datagram: each reaches its class's handler (or the node's own STUN
// answer, or the drop count) and is counted, as if read alone.
func TestHandleSegments(t *testing.T) {
	n := dht.New(dht.Config{ListenAddr: "127.0.0.1:0", ListenAddr6: dht.ListenOff, Mode: dht.ModeEphemeral})
	type got struct {
		class demux.Class
		b     []byte
	}
	ch := make(chan got, 8)
	for _, c := range []demux.Class{demux.KRPC, demux.Birthday} {
		n.Handle(c, func(b []byte, _ netip.AddrPort) {
			ch <- got{c, append([]byte(nil), b...)}
		})
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if runtime.GOOS == "linux" && !dht.ReceiveOffload(n, dht.IPv4) {
		t.Fatal("no receive offload on the node's Linux socket")
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	// Five datagrams of one burst: all of the STUN request's 20 bytes but
	// the last.
	bindingRequest := stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw
	seg := len(bindingRequest)
	pad := func(b ...byte) []byte { return append(b, make([]byte, seg-len(b))...) }
	birthday1 := pad(demux.TagBirthday, 1)
	krpc := pad('d', '1', ':', 'y')
	unknown := pad(0xff)
	birthday2 := []byte{demux.TagBirthday, 2, 2}
	burst := slices.Concat(birthday1, bindingRequest, krpc, unknown, birthday2)
	w := udpopt.NewSegmentWriter(conn)
	if err := w.WriteSegments(burst, seg, n.LocalAddr()); err != nil {
		t.Fatal(err)
	}

	for _, want := range []got{{demux.Birthday, birthday1}, {demux.KRPC, krpc}, {demux.Birthday, birthday2}} {
		select {
		case g := <-ch:
			if g.class != want.class || !bytes.Equal(g.b, want.b) {
				t.Fatalf("%s handler got %x, want %s %x", g.class, g.b, want.class, want.b)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s datagram %x not handed to its handler", want.class, want.b)
		}
	}
	// The last datagram's count follows its handler: wait for it.
	if !testutil.Poll(5*time.Second, 10*time.Millisecond, func() bool { return n.Stats().OtherPackets == 2 }) {
		t.Fatalf("stats: %+v", n.Stats())
	}
	s := n.Stats()
	if s.PacketsIn != 5 || s.STUNAnswered != 1 || s.KRPCPackets != 1 || s.DroppedMalformed != 1 {
		t.Fatalf("after a burst of 5: in %d, STUN answered %d, KRPC %d, dropped %d; want 5, 1, 1, 1",
			s.PacketsIn, s.STUNAnswered, s.KRPCPackets, s.DroppedMalformed)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp := make([]byte, 1500)
	nr, err := conn.Read(resp)
	if err != nil {
		t.Fatalf("no answer to the burst's STUN request: %v", err)
	}
	if m := (&stun.Message{Raw: resp[:nr]}); m.Decode() != nil || m.Type != stun.BindingSuccess {
		t.Fatalf("answer to the burst's STUN request: %x", resp[:nr])
	}
}
