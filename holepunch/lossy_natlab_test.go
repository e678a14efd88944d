package holepunch_test

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/holepunch"
	"github.com/swarmdb/swarmdb/internal/natlab"
)

// lossRate is issue 9's lossy link: each router drops this share of the
// packets it forwards on its WAN side, in each direction, so a packet
// between the two hosts crosses two lossy hops (about 4 % end to end).
const lossRate = 0.02

// TestLossyLinkNATLab is issue 9's lossy-link fault: two hosts behind
// port-restricted NATs whose routers drop 2 % of packets both ways. A
// client connects to the server by key (signaling, punching and the
// handshake all cross the lossy links) and echoes 1 MiB of random bytes,
// which must come back byte-exact. Logs connect time and throughput. Root
// only.
func TestLossyLinkNATLab(t *testing.T) {
	lab := natlab.New(t)
	boot := labDHT(t, lab, 3, nil)
	rs := lab.AddRouter(natlab.RouterConfig{Type: natlab.PortRestricted})
	rc := lab.AddRouter(natlab.RouterConfig{Type: natlab.PortRestricted})
	server := labPeer(t, rs.AddHost("s"), boot)
	client := labPeer(t, rc.AddHost("c"), boot)
	for _, r := range []*natlab.Router{rs, rc} {
		if err := r.SetLoss(lossRate); err != nil {
			t.Fatal(err)
		}
	}
	server.listen(t)

	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	start := time.Now()
	conn, err := client.ep.Connect(ctx, server.pub, nil)
	if err != nil {
		t.Fatalf("connect over %.0f %% loss: %v", lossRate*100, err)
	}
	connectWall := time.Since(start)
	defer conn.Close()
	s := server.accept(t)
	defer s.Close()
	if conn.Path() != holepunch.PathDirect {
		t.Errorf("path %s, want direct (two port-restricted NATs punch)", conn.Path())
	}

	msg := make([]byte, 1<<20)
	if _, err := rand.Read(msg); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	echo(t, conn, s, msg) // fails unless the echo is byte-exact
	rtt := time.Since(start)
	t.Logf("%.0f %% loss per router both ways: connected %s in %v (reported %v); 1 MiB echoed byte-exact in %v (%.2f MiB/s each way)",
		lossRate*100, conn.Path(), connectWall.Round(time.Millisecond), conn.ConnectTime.Round(time.Millisecond),
		rtt.Round(time.Millisecond), 1/rtt.Seconds())
}
