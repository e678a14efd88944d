package holepunch_test

import (
	"context"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/holepunch"
	"github.com/swarmdb/swarmdb/internal/natlab"
	"github.com/swarmdb/swarmdb/natcheck"
)

// TestDialBeforeMappingNATLab: a client behind a symmetric NAT dials a
// port-restricted server while its NAT measurement still runs, past the
// dial's wait for it (natWait, 3 s). Its signal names no mapping, so
// birthday punching cannot be chosen, and ICE fails between those NATs.
// By then the mapping is known, and the dial tries the direct path again,
// with birthday punching, before it settles for a relay. Root only.
func TestDialBeforeMappingNATLab(t *testing.T) {
	lab := natlab.New(t)
	boot := labDHT(t, lab, 3, nil)
	server := labPeer(t, lab.AddRouter(natlab.RouterConfig{Type: natlab.PortRestricted}).AddHost("s"), boot)
	server.listen(t)

	node, link, tn := labNode(t, lab.AddRouter(natlab.RouterConfig{Type: natlab.Symmetric}).AddHost("c"), boot, nil)
	release := make(chan struct{})
	client := newPeer(t, node, link, boot, tn, func(c *holepunch.EndpointConfig) {
		measure := c.MeasureNAT
		c.MeasureNAT = func(ctx context.Context, early func(natcheck.Report)) (natcheck.Report, error) {
			select { // a measurement slower than the dial's wait for it
			case <-release:
			case <-ctx.Done():
				return natcheck.Report{}, ctx.Err()
			}
			return measure(ctx, early)
		}
	})
	time.AfterFunc(4*time.Second, func() { close(release) })

	start := time.Now()
	conn, _, err := dial(t, client, server, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("connected over %s in %v; the client's NAT: %s", conn.Path(), time.Since(start).Round(time.Millisecond), client.ep.NAT().Class)
	if conn.Path() != holepunch.PathDirect {
		t.Errorf("path %s, want direct (birthday punching once the mapping was known)", conn.Path())
	}
}
