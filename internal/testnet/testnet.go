// Package testnet starts whole DHT networks in one process on loopback,
// with real sockets: each node on its own 127.x.y.z address (Linux routes
// all of 127.0.0.0/8 to the loopback interface), so per-IP rules such as
// rate limits and tokens behave as between real hosts. VNet (vnet.go) is the
// same idea on pion's in-process vnet, with NAT routers, for fast NAT tests
// without root. Tests and benchmarks use it; it must not be imported by
// production packages (`swarmdb demo` runs on node.StartLocalDHT).
package testnet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/swarmdb/swarmdb/dht"
)

// Config describes a network.
type Config struct {
	// Persistent is the number of persistent nodes, the first Bootstraps
	// of which are the bootstrap nodes. Zero means 10.
	Persistent int
	// Bootstraps is the number of bootstrap nodes (at most Persistent).
	// Zero means 1.
	Bootstraps int
	// Tweak, when set, adjusts every node's config before it starts
	// (timers, limits). index is the node's position; -1 for nodes added
	// later with AddNode.
	Tweak func(index int, c *dht.Config)
	// Parallel bounds nodes bootstrapping at once. Zero means 16.
	Parallel int
}

// Network is a running set of DHT nodes.
type Network struct {
	cfg       Config
	Bootstrap []netip.AddrPort
	mu        sync.Mutex
	nodes     []*dht.Node
}

// nextIP hands out loopback addresses 127.1.0.1, 127.1.0.2, ... so nodes of
// all networks in one process differ.
var nextIP atomic.Uint32

// loopbackAddr returns a fresh 127.x.y.z:0 listen address.
func loopbackAddr() string {
	v := nextIP.Add(1) - 1
	return fmt.Sprintf("127.%d.%d.%d:0", 1+v/62500%126, v/250%250, 1+v%250)
}

// Start starts the bootstrap nodes and the other persistent nodes and joins
// them into one network.
func Start(ctx context.Context, cfg Config) (*Network, error) {
	if cfg.Persistent == 0 {
		cfg.Persistent = 10
	}
	if cfg.Parallel == 0 {
		cfg.Parallel = 16
	}
	cfg.Bootstraps = min(max(cfg.Bootstraps, 1), cfg.Persistent)
	n := &Network{cfg: cfg}
	// The first bootstrap node joins nothing; the others join through it,
	// one by one, so every bootstrap node knows the others.
	for i := range cfg.Bootstraps {
		boot, err := n.start(ctx, i, dht.Config{Mode: dht.ModePersistent, Bootstrap: n.Bootstrap})
		if err != nil {
			n.Close()
			return nil, err
		}
		n.Bootstrap = append(n.Bootstrap, boot.LocalAddr())
	}
	sem := make(chan struct{}, cfg.Parallel)
	errs := make(chan error, cfg.Persistent)
	var wg sync.WaitGroup
	for i := cfg.Bootstraps; i < cfg.Persistent; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := n.start(ctx, i, dht.Config{Mode: dht.ModePersistent, Bootstrap: n.Bootstrap}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := errors.Join(collect(errs)...); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

func collect(errs <-chan error) []error {
	var out []error
	for err := range errs {
		out = append(out, err)
	}
	return out
}

// AddNode starts one more node with cfg (its Bootstrap and ListenAddr are
// filled in) and bootstraps it. Mode zero is adaptive; tests that want an
// ephemeral node say so.
func (n *Network) AddNode(ctx context.Context, cfg dht.Config) (*dht.Node, error) {
	cfg.Bootstrap = n.Bootstrap
	return n.start(ctx, -1, cfg)
}

func (n *Network) start(ctx context.Context, index int, cfg dht.Config) (*dht.Node, error) {
	cfg.ListenAddr = loopbackAddr()
	if n.cfg.Tweak != nil {
		n.cfg.Tweak(index, &cfg)
	}
	node := dht.New(cfg)
	if err := node.Start(); err != nil {
		return nil, err
	}
	n.mu.Lock()
	n.nodes = append(n.nodes, node)
	n.mu.Unlock()
	if err := node.Bootstrap(ctx); err != nil {
		return nil, fmt.Errorf("testnet: node %d: %w", index, err)
	}
	return node, nil
}

// Nodes returns every node started so far, bootstrap first.
func (n *Network) Nodes() []*dht.Node {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]*dht.Node(nil), n.nodes...)
}

// Close closes every node.
func (n *Network) Close() {
	for _, node := range n.Nodes() {
		node.Close()
	}
}
