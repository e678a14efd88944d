package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/internal/natlab"
	"github.com/swarmdb/swarmdb/internal/testnet"
	"github.com/swarmdb/swarmdb/node"
)

// TestNodesNATLab is issue 7's lab case: three nodes behind three different
// NAT types, one of them symmetric, join one topic; a put on one reaches
// the other two through their subscriptions. Root only.
func TestNodesNATLab(t *testing.T) {
	lab := natlab.New(t)
	boot := testnet.LabDHT(t, lab, 3, nil)
	types := []natlab.NATType{natlab.Symmetric, natlab.PortRestricted, natlab.FullCone}
	var nodes []*node.Node
	for _, typ := range types {
		h := lab.AddRouter(natlab.RouterConfig{Type: typ}).AddHost("n")
		nd, err := node.New(node.Config{
			Topic: "natlab-nodes", DataDir: t.TempDir(), Net: h.Net(), ListenAddr: h.IP().String() + ":0",
			Bootstrap: boot, DisableLAN: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = nd.Start(ctx)
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		defer nd.Close()
		nodes = append(nodes, nd)
	}
	for i, nd := range nodes {
		waitPeers(t, nd, 2)
		t.Logf("%s node: connections by path %v", types[i], nd.Stats().Swarm.ByPath)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got := make(chan string, 2)
	for i, nd := range nodes[1:] {
		w, err := nd.Subscribe("lab-key")
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		go func() {
			if ev, err := w.Next(ctx); err == nil {
				got <- fmt.Sprintf("%s:%s", types[i+1], ev.Record.Value)
			}
		}()
	}
	start := time.Now()
	if _, err := nodes[0].Put(ctx, "lab-key", []byte(`"from behind a symmetric NAT"`)); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		select {
		case s := <-got:
			t.Logf("delivered to %s after %v", s, time.Since(start).Round(time.Microsecond))
		case <-ctx.Done():
			t.Fatal("a subscriber never got the put")
		}
	}
}
