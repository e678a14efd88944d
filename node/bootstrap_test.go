package node_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/internal/testnet"
	"github.com/swarmdb/swarmdb/node"
	"github.com/swarmdb/swarmdb/turnserver"
)

// TestBootstrapTURNOverDHT walks the bootstrap node's whole relay path on
// loopback: two clients get credentials from it over the DHT, allocate on
// its relay and exchange datagrams through it; a bootstrap node without
// the relay declines.
func TestBootstrapTURNOverDHT(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b := node.NewBootstrap(node.BootstrapConfig{ListenAddr: "127.0.0.1:0", TURNAddr: "127.0.0.1:0", TURNPrivate: true})
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	plain := node.NewBootstrap(node.BootstrapConfig{ListenAddr: "127.0.0.1:0"})
	if err := plain.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	srv := b.TURN()
	if srv == nil || plain.TURN() != nil {
		t.Fatalf("relays: %v with TURNAddr, %v without", srv, plain.TURN())
	}
	clients := make([]*dht.Node, 2)
	for i, ip := range []string{"127.0.0.2", "127.0.0.3"} {
		clients[i] = dht.New(dht.Config{ListenAddr: ip + ":0", Mode: dht.ModeEphemeral})
		if err := clients[i].Start(); err != nil {
			t.Fatal(err)
		}
		defer clients[i].Close()
	}
	if _, err := clients[0].TURNOffer(ctx, plain.DHT().LocalAddr()); !errors.Is(err, dht.ErrNoTURN) {
		t.Fatalf("offer from a node without a relay: %v", err)
	}
	var relays []net.PacketConn
	for _, c := range clients {
		o, err := c.TURNOffer(ctx, b.DHT().LocalAddr())
		if err != nil {
			t.Fatal(err)
		}
		_, tag, err := turnserver.ParseUsername(o.Username)
		if o.Server != srv.Addr() || tag != c.LocalAddr().Addr().String() || time.Until(o.Expires) <= 0 {
			t.Fatalf("offer %+v (tag %q) from relay %s", o, tag, srv.Addr())
		}
		relays = append(relays, testnet.AllocateTURN(t, o))
	}
	for i, r := range relays {
		if _, err := r.WriteTo([]byte("open"), relays[1-i].LocalAddr()); err != nil { // creates the permission
			t.Fatal(err)
		}
	}
	testnet.RelayedTURN(t, relays[0], relays[1])
	testnet.RelayedTURN(t, relays[1], relays[0])
	if st := srv.Stats(); st.Allocations != 2 {
		t.Fatalf("relay stats %+v", st)
	}
}
