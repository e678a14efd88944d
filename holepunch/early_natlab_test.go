package holepunch_test

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/holepunch"
	"github.com/swarmdb/swarmdb/internal/natlab"
)

// TestEarlyPathNATLab: over two port-restricted NATs whose uplinks add 10 ms
// each way (40 ms between the hosts), the dialler's session starts on the
// first answered ICE check instead of waiting for ICE's nomination
// (ice_early.go), the answerer finds the QUIC Initial that arrived before
// its ICE connected, and 1 MiB echoes byte-exact, on routed paths at both
// ends. Root only.
func TestEarlyPathNATLab(t *testing.T) {
	lab := natlab.New(t)
	boot := labDHT(t, lab, 3, nil)
	link := &natlab.LinkConfig{Delay: 10 * time.Millisecond}
	rs := lab.AddRouter(natlab.RouterConfig{Type: natlab.PortRestricted, Link: link})
	rc := lab.AddRouter(natlab.RouterConfig{Type: natlab.PortRestricted, Link: link})
	server := labPeer(t, rs.AddHost("s"), boot)
	client := labPeer(t, rc.AddHost("c"), boot)
	server.listen(t)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := client.ep.Connect(ctx, server.pub, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	s := server.accept(t)
	defer s.Close()
	if conn.Path() != holepunch.PathDirect {
		t.Errorf("path %s, want direct", conn.Path())
	}
	if n := client.ep.Stats().EarlyPaths; n != 1 {
		t.Errorf("%d dials started on the first answered check, want 1", n)
	}
	msg := make([]byte, 1<<20)
	if _, err := rand.Read(msg); err != nil {
		t.Fatal(err)
	}
	echo(t, conn, s, msg)
	for name, p := range map[string]*peer{"client": client, "server": server} {
		if p.ep.Stats().Routed == 0 {
			t.Errorf("%s: no datagram took the routed path", name)
		}
	}
	t.Logf("connected over %s in %v (40 ms RTT)", conn.Path(), conn.ConnectTime.Round(time.Millisecond))
}
