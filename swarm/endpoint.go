package swarm

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/pion/transport/v2"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/holepunch"
	"github.com/swarmdb/swarmdb/holepunch/dhtlink"
	"github.com/swarmdb/swarmdb/natcheck"
	"github.com/swarmdb/swarmdb/secure"
)

// listenRetry bounds the wait between attempts to register our key with
// DHT relays (Endpoint.Listen) while the DHT is unreachable.
const (
	listenRetryMin = time.Second
	listenRetryMax = time.Minute
)

// endpointFactory builds the production transport: a holepunch.Endpoint on
// the DHT node's socket, signaling through dhtlink.
type endpointFactory struct {
	net          transport.Net
	bootstrap    []netip.AddrPort
	session      secure.Config
	keepLoopback bool
	keepFreed    bool
	mapped       func() netip.AddrPort

	link *dhtlink.Link // set by configure
}

// defaultTransport returns the production transport factory for cfg.
func defaultTransport(cfg Config) transportFactory {
	return &endpointFactory{net: cfg.Net, bootstrap: cfg.Bootstrap, session: cfg.Session, keepLoopback: cfg.KeepLoopback, keepFreed: cfg.KeepFreedMemory, mapped: cfg.Mapped}
}

func (f *endpointFactory) configure(c *dht.Config) {
	f.link = dhtlink.New()
	c.OnSignal = f.link.HandleSignal
}

func (f *endpointFactory) start(ctx context.Context, node *dht.Node, h transportHooks) (connector, error) {
	if node == nil {
		return nil, errors.New("swarm: the hole-punching endpoint needs a dht node")
	}
	f.link.Attach(node, f.net)
	ep, err := holepunch.NewEndpoint(holepunch.EndpointConfig{
		Key:             h.key,
		Link:            f.link,
		Net:             f.net,
		Firewall:        h.firewall,
		OnConnection:    h.incoming,
		MeasureNAT:      measuredBy(f.link.MeasureNAT, h.measured),
		Session:         f.session,
		KeepLoopback:    f.keepLoopback,
		KeepFreedMemory: f.keepFreed,
		Mapped:          f.mapped,
		Logger:          h.log.With("component", "holepunch"),
	})
	if err != nil {
		return nil, err
	}
	if err := ep.Start(); err != nil {
		return nil, err
	}
	t := &endpointTransport{ep: ep, log: h.log, done: make(chan struct{})}
	lctx, cancel := context.WithCancel(context.Background())
	t.cancel = cancel
	t.wg.Add(1)
	go t.listen(lctx)
	return t, nil
}

// endpointTransport adapts *holepunch.Endpoint to transport.
type endpointTransport struct {
	ep     *holepunch.Endpoint
	log    interface{ Debug(string, ...any) }
	cancel context.CancelFunc
	wg     sync.WaitGroup
	done   chan struct{}
}

// listen makes our key reachable through DHT relays, retrying while the
// DHT cannot be reached. Even a failed Listen leaves the node answering
// signaling for our key when it is asked directly, which is what LAN
// discovery relies on (lan.go).
func (t *endpointTransport) listen(ctx context.Context) {
	defer t.wg.Done()
	wait := listenRetryMin
	for {
		_, err := t.ep.Listen(ctx)
		if err == nil {
			return
		}
		t.log.Debug("swarm: listen failed; retrying", "err", err, "wait", wait)
		tm := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			tm.Stop()
			return
		case <-tm.C:
		}
		wait = min(2*wait, listenRetryMax)
	}
}

// Connect dials remote. Addresses found on the LAN are the peer's own DHT
// socket, which answers signaling for its key itself, so they go first in
// the relay list: the dial then needs no DHT at all.
func (t *endpointTransport) Connect(ctx context.Context, remote ed25519.PublicKey, relays, direct []netip.AddrPort, hello []byte) (*holepunch.Conn, error) {
	hint := slices.Concat(direct, relays)
	c, err := t.ep.ConnectWith(ctx, remote, hint, holepunch.DialOptions{Hello: hello})
	if err != nil {
		return nil, classifyEndpointError(err)
	}
	return c, nil
}

func (t *endpointTransport) NAT() natcheck.Report { return t.ep.NAT() }

func (t *endpointTransport) WaitNAT(ctx context.Context) natcheck.Report { return t.ep.WaitNAT(ctx) }

func (t *endpointTransport) RemeasureNAT(ctx context.Context) (natcheck.Report, error) {
	return t.ep.Remeasure(ctx)
}

// measuredBy wraps a NAT measurement so that every successful one is also
// reported to measured.
func measuredBy(measure holepunch.MeasureNATFunc, measured func(natcheck.Report)) holepunch.MeasureNATFunc {
	return func(ctx context.Context, early func(natcheck.Report)) (natcheck.Report, error) {
		r, err := measure(ctx, early)
		if err == nil && measured != nil {
			measured(r)
		}
		return r, err
	}
}

func (t *endpointTransport) Close() error {
	t.cancel()
	t.wg.Wait()
	return t.ep.Close()
}

// classifyEndpointError wraps holepunch's errors in the swarm's failure
// classes.
func classifyEndpointError(err error) error {
	switch {
	case errors.Is(err, holepunch.ErrSimultaneous), errors.Is(err, holepunch.ErrDialInProgress):
		return fmt.Errorf("%w: %w", errSimultaneous, err)
	case errors.Is(err, holepunch.ErrRefused), errors.Is(err, holepunch.ErrBusy):
		return fmt.Errorf("%w: %w", errRefused, err)
	case errors.Is(err, holepunch.ErrPunchFailed), errors.Is(err, holepunch.ErrBothSymmetric), errors.Is(err, holepunch.ErrNoTURN):
		return fmt.Errorf("%w: %w", errUnreachable, err)
	}
	return err
}
