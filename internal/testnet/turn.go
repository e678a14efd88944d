package testnet

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/pion/turn/v2"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/turnserver"
)

// turnTimeout bounds one TURN exchange on loopback.
const turnTimeout = 10 * time.Second

// AllocateTURN opens a TURN allocation on loopback with the credentials of
// an offer a DHT node made; it is released when the test ends.
func AllocateTURN(t testing.TB, o dht.TURNOffer) net.PacketConn {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c, err := turn.NewClient(&turn.ClientConfig{
		TURNServerAddr: o.Server.String(), STUNServerAddr: o.Server.String(), Conn: conn,
		Username: o.Username, Password: o.Password, Realm: turnserver.DefaultRealm,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	r, err := c.Allocate()
	if err != nil {
		t.Fatalf("allocate with the DHT's offer: %v", err)
	}
	t.Cleanup(func() {
		r.Close()
		c.Close()
		conn.Close()
	})
	return r
}

// RelayedTURN sends datagrams from one relayed address to the other until
// one arrives (the first may race the peer's permission), and checks it.
// Datagrams reading "open" (what opens a permission) are skipped.
func RelayedTURN(t testing.TB, from, to net.PacketConn) {
	t.Helper()
	msg := []byte("ciphertext only")
	buf := make([]byte, 1500)
	deadline := time.Now().Add(turnTimeout)
	for time.Now().Before(deadline) {
		if _, err := from.WriteTo(msg, to.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		_ = to.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, src, err := to.ReadFrom(buf)
		if err != nil || bytes.Equal(buf[:n], []byte("open")) {
			continue
		}
		if !bytes.Equal(buf[:n], msg) || src.String() != from.LocalAddr().String() {
			t.Fatalf("got %q from %s", buf[:n], src)
		}
		return
	}
	t.Fatal("nothing crossed the relay")
}
