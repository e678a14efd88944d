package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/swarmdb/swarmdb/dht"
)

// LocalDHTConfig configures StartLocalDHT. The zero value works.
type LocalDHTConfig struct {
	// Nodes is the number of persistent DHT nodes. Zero means 6.
	Nodes int
	// Logger receives the nodes' logs. Zero means discard.
	Logger *slog.Logger
}

// LocalDHT is a whole DHT on this host's loopback, with real UDP sockets:
// persistent nodes, each on its own 127.x.y.z address (Linux routes all of
// 127.0.0.0/8 to the loopback interface), so that per-IP rules (rate
// limits, tokens) and the NAT measurement, which wants nodes on several
// IPs, behave as between hosts. Nothing leaves the host. `swarmdb demo`
// runs its nodes against one (Config.Bootstrap = Bootstrap, KeepLoopback).
type LocalDHT struct {
	// Immutable after StartLocalDHT.
	bootstrap netip.AddrPort

	mu    sync.Mutex
	nodes []*dht.Node // guarded by mu
}

// localDHTNext hands out loopback addresses 127.210.0.1, 127.210.0.2, ...
// so that the nodes of every LocalDHT in one process differ, and differ
// from internal/testnet's 127.1.x.y.
var localDHTNext atomic.Uint32

func localDHTAddr() string {
	v := localDHTNext.Add(1) - 1
	return fmt.Sprintf("127.210.%d.%d:0", v/250%250, 1+v%250)
}

// StartLocalDHT starts the nodes and joins them into one network: the
// first joins nothing, the others join through it, all at once.
func StartLocalDHT(ctx context.Context, cfg LocalDHTConfig) (*LocalDHT, error) {
	if cfg.Nodes <= 0 {
		cfg.Nodes = 6
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	l := &LocalDHT{}
	first, err := l.start(ctx, cfg, nil)
	if err != nil {
		l.Close()
		return nil, err
	}
	l.bootstrap = first.LocalAddr()
	errs := make([]error, cfg.Nodes-1)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = l.start(ctx, cfg, []netip.AddrPort{l.bootstrap})
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// start starts one persistent node and joins boot.
func (l *LocalDHT) start(ctx context.Context, cfg LocalDHTConfig, boot []netip.AddrPort) (*dht.Node, error) {
	dn := dht.New(dht.Config{ListenAddr: localDHTAddr(), Mode: dht.ModePersistent, Bootstrap: boot, Logger: cfg.Logger})
	if err := dn.Start(); err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.nodes = append(l.nodes, dn)
	l.mu.Unlock()
	if err := dn.Bootstrap(ctx); err != nil {
		return nil, fmt.Errorf("node: local dht %s: %w", dn.LocalAddr(), err)
	}
	return dn, nil
}

// Bootstrap is the address the other nodes joined through: what nodes of
// this network take as Config.Bootstrap.
func (l *LocalDHT) Bootstrap() []netip.AddrPort { return []netip.AddrPort{l.bootstrap} }

// Close closes every node. Idempotent.
func (l *LocalDHT) Close() error {
	l.mu.Lock()
	nodes := l.nodes
	l.nodes = nil
	l.mu.Unlock()
	var errs []error
	for _, dn := range nodes {
		errs = append(errs, dn.Close())
	}
	return errors.Join(errs...)
}
