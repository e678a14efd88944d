package node

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/swarmdb/swarmdb/bridge"
)

// serverDialer connects to the ToolDb servers the mainline part finds (and
// dns-discovery's multicast DNS), as a ToolDb client's
// channel.on("peer") → connectTo(host, port) does: one connection per
// address, a redial with backoff when a dial fails or the link drops, and
// none to itself or to a node it already replicates with over the swarm.
type serverDialer struct {
	// Immutable after newServerDialer.
	connect func(ctx context.Context, host string, port int) (*bridge.Peer, error)
	peers   func() []bridge.PeerStatus
	self    string // our ToolDb address
	log     *slog.Logger
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	sem     chan struct{} // bounds dials in flight

	// Guarded by mu.
	mu      sync.Mutex
	entries map[netip.AddrPort]*serverEntry
	closed  bool
}

// serverEntry is one found server address.
type serverEntry struct {
	peer    *bridge.Peer // the live link, or nil
	dialing bool
	fails   int       // consecutive failed dials or dropped links
	next    time.Time // no dial before this
	source  string
	// dropped: the link was closed as redundant; its end is no failure
	// and gets no redial.
	dropped bool
}

const (
	// dialParallel bounds server dials in flight: addresses found on a
	// public topic are untrusted and may be many.
	dialParallel = 4
	// serverDialTimeout bounds one dial and the wait for the server's pong.
	serverDialTimeout = 10 * time.Second
	// maxServers bounds the addresses remembered.
	maxServers = 256
	// redials: after a failure the dialer tries the address again itself
	// this many times (with serverBackoff); after that only a new find
	// (the next lookup round) tries it again, once its wait is over.
	redials = 5
	// avoidSelf and avoidDuplicate: how long an address that turned out to
	// be this node, or a node already linked over the swarm, is left alone.
	avoidSelf      = time.Hour
	avoidDuplicate = 15 * time.Minute
	// avoidCrossed: how long an address whose server dialled us at the same time is left to
	// that server's connection (see serverDialer.gaveWay).
	avoidCrossed = time.Minute
)

// serverBackoff is the wait after the n-th consecutive failure (n >= 1).
func serverBackoff(n int) time.Duration {
	steps := []time.Duration{time.Second, 5 * time.Second, 15 * time.Second, time.Minute, 5 * time.Minute, 15 * time.Minute}
	return steps[min(n, len(steps))-1]
}

func newServerDialer(connect func(context.Context, string, int) (*bridge.Peer, error), peers func() []bridge.PeerStatus, self string, log *slog.Logger) *serverDialer {
	ctx, cancel := context.WithCancel(context.Background())
	return &serverDialer{connect: connect, peers: peers, self: self, log: log, ctx: ctx, cancel: cancel,
		sem: make(chan struct{}, dialParallel), entries: make(map[netip.AddrPort]*serverEntry)}
}

// found is called for every server address found; it dials the address
// unless it is linked, being dialled or waiting out a backoff.
func (d *serverDialer) found(addr netip.AddrPort, source string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	e := d.entries[addr]
	if e == nil {
		if len(d.entries) >= maxServers {
			return
		}
		e = &serverEntry{source: source}
		d.entries[addr] = e
	}
	if e.peer != nil {
		// A node linked here first and over the swarm since (a swarmdb
		// node announces its WebSocket under the topic too) needs only
		// the swarm link: checked again at every find.
		if avoid, why := d.redundant(e.peer); avoid > 0 {
			d.log.Debug("tooldb server link dropped", "addr", addr, "why", why)
			e.dropped, e.next = true, time.Now().Add(avoid)
			e.peer.Close()
		}
		return
	}
	if e.dialing || time.Now().Before(e.next) {
		return
	}
	d.dialLocked(addr, e)
}

func (d *serverDialer) dialLocked(addr netip.AddrPort, e *serverEntry) {
	e.dialing = true
	d.wg.Add(1)
	go d.dial(addr, e)
}

// dial connects to addr, checks who answered, and watches the link.
func (d *serverDialer) dial(addr netip.AddrPort, e *serverEntry) {
	defer d.wg.Done()
	select {
	case d.sem <- struct{}{}:
	case <-d.ctx.Done():
		return
	}
	ctx, cancel := context.WithTimeout(d.ctx, serverDialTimeout)
	p, err := d.connect(ctx, addr.Addr().String(), int(addr.Port()))
	if err == nil {
		err = p.WaitIdentified(ctx)
	}
	cancel()
	<-d.sem
	if errors.Is(err, bridge.ErrCrossedLink) {
		d.gaveWay(addr, e)
		return
	}
	if err != nil {
		if p != nil {
			p.Close()
		}
		d.log.Debug("tooldb server dial failed", "addr", addr, "err", err)
		d.failed(addr, e)
		return
	}
	if avoid, why := d.redundant(p); avoid > 0 {
		p.Close()
		d.log.Debug("tooldb server link not kept", "addr", addr, "why", why)
		d.mu.Lock()
		e.dialing, e.next = false, time.Now().Add(avoid)
		d.mu.Unlock()
		return
	}
	d.log.Info("connected to a tooldb server found by discovery", "addr", addr, "source", e.source)
	d.mu.Lock()
	e.peer, e.dialing, e.fails = p, false, 0
	d.mu.Unlock()
	select {
	case <-p.Done():
		d.mu.Lock()
		e.peer = nil
		dropped := e.dropped
		e.dropped = false
		d.mu.Unlock()
		if errors.Is(p.Err(), bridge.ErrCrossedLink) {
			d.gaveWay(addr, e)
			return
		}
		if !dropped {
			d.log.Info("tooldb server link closed", "addr", addr, "err", p.Err())
			d.failed(addr, e)
		}
	case <-d.ctx.Done():
	}
}

// redundant says whether the server that answered is this node, or a node
// this one also has a swarm link to (a swarmdb node is found both over the
// swarm and under the topic), and for how long to leave the address alone.
// (The bridge itself lets one connection per remote identify; a second one
// never carries anything.)
func (d *serverDialer) redundant(p *bridge.Peer) (time.Duration, string) {
	st := p.Status()
	if st.Address == d.self {
		return avoidSelf, "this node"
	}
	for _, o := range d.peers() {
		if o.RemoteID != st.RemoteID && o.Address == st.Address && o.Kind == bridge.KindSwarm {
			return avoidDuplicate, "already linked over the swarm"
		}
	}
	return 0, ""
}

// gaveWay handles a dial that crossed the server's dial to us: both ends keep the connection
// the smaller client id dialled (bridge.ErrCrossedLink), so the link is up, over the other
// connection, and that side owns it. No failure, no redial; the next find after avoidCrossed
// dials again, in case that side cannot.
func (d *serverDialer) gaveWay(addr netip.AddrPort, e *serverEntry) {
	d.log.Debug("tooldb server dial gave way to its dial to us", "addr", addr)
	d.mu.Lock()
	defer d.mu.Unlock()
	e.dialing, e.fails, e.next = false, 0, time.Now().Add(avoidCrossed)
}

// failed counts a failure and schedules a redial, or leaves the address
// to the next find.
func (d *serverDialer) failed(addr netip.AddrPort, e *serverEntry) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e.dialing = false
	e.fails++
	wait := serverBackoff(e.fails)
	e.next = time.Now().Add(wait)
	if d.closed || e.fails > redials {
		return
	}
	e.dialing = true // the redial below owns the entry until it runs
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.closed {
			return
		}
		d.wg.Add(1)
		go d.dial(addr, e)
	}()
}

// linked counts the live links.
func (d *serverDialer) linked() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, e := range d.entries {
		if e.peer != nil {
			n++
		}
	}
	return n
}

// close stops dialling and waits. The links themselves belong to the
// bridge, which closes them.
func (d *serverDialer) close() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.cancel()
	d.wg.Wait()
}
