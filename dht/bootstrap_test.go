package dht_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/dht"
)

// TestVerifyNode: a persistent node passes; an ephemeral node (it answers,
// but with no id of its address) and an address where nothing answers
// fail, as a candidate found under the mainline bootstrap name must.
func TestVerifyNode(t *testing.T) {
	nw := startNet(t, 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	asker := addEphemeral(t, nw, dht.Config{RequestTimeout: 200 * time.Millisecond})
	if err := asker.VerifyNode(ctx, nw.Bootstrap[0]); err != nil {
		t.Fatalf("persistent node: %v", err)
	}
	eph := addEphemeral(t, nw, dht.Config{})
	if err := asker.VerifyNode(ctx, eph.LocalAddr()); !errors.Is(err, dht.ErrNotPersistent) {
		t.Fatalf("ephemeral node: %v, want ErrNotPersistent", err)
	}
	silent, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	if err := asker.VerifyNode(ctx, silent.LocalAddr().(*net.UDPAddr).AddrPort()); !errors.Is(err, dht.ErrTimeout) {
		t.Fatalf("silent address: %v, want ErrTimeout", err)
	}
}

// TestAddBootstrapJoinsLater: a node started with no bootstrap nodes joins
// the network once one is added, and lists it; its own address and
// duplicates are not added.
func TestAddBootstrapJoinsLater(t *testing.T) {
	nw := startNet(t, 5, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n := dht.New(dht.Config{ListenAddr: "127.0.0.1:0", Mode: dht.ModeEphemeral})
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if _, err := n.FindNode(ctx, dht.ID{}); !errors.Is(err, dht.ErrNoNodes) {
		t.Fatalf("FindNode with no nodes: %v", err)
	}
	n.AddBootstrap(nw.Bootstrap[0], nw.Bootstrap[0], n.LocalAddr(), netip.AddrPort{})
	if got := n.BootstrapNodes(); len(got) != 1 || got[0] != nw.Bootstrap[0] {
		t.Fatalf("BootstrapNodes = %v, want [%v]", got, nw.Bootstrap[0])
	}
	if err := n.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	found, err := n.FindNode(ctx, dht.ID{})
	if err != nil || len(found) < 5 {
		t.Fatalf("FindNode after AddBootstrap: %d nodes, %v", len(found), err)
	}
}
