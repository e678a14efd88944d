package node

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/transport/v2"
	"github.com/pion/transport/v2/stdnet"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/holepunch"
	"github.com/swarmdb/swarmdb/holepunch/dhtlink"
	"github.com/swarmdb/swarmdb/natcheck"
)

// A pipe is one encrypted connection between two peers of a topic, with
// no database: the server announces the topic and takes the first peer
// that connects, the client looks the topic up and dials the first peer
// that answers. `swarmdb pipe` carries stdin and stdout over it
// (PipeConn.Transfer, pipe_frame.go).
//
// It stands on a DHT node and a hole-punching endpoint of its own rather
// than on a swarm: what it reports (the announce's relays and stores, that
// nobody serves the topic, why the one connect failed) and its one-shot
// life (no retries, the record taken down once the connection is taken)
// are not what a swarm does. Putting it on a swarm was tried on paper
// (issue 16): the swarm would need single-use modes for each of these, and
// for a fatal bootstrap failure, the NAT measured before the join, a dial
// bound to the caller's deadline and no membership traffic, while the pipe
// kept most of its setup; see the README's design notes.

// Timeouts of a pipe.
const (
	// DefaultPipeTimeout is PipeConfig.Timeout's default: joining the DHT,
	// then the server's announce or the client's lookup and connect (one
	// direct attempt, holepunch.DefaultConnectTimeout, plus a relay
	// attempt).
	DefaultPipeTimeout = 30 * time.Second
	// pipeJoinTimeout bounds joining the DHT: the NAT measurement (about a
	// second per filtering probe) and the bootstrap round trips; and, on
	// its own, the announce.
	pipeJoinTimeout = 20 * time.Second
	// pipeAnnounceInterval re-announces the topic; dht records live 20 min.
	pipeAnnounceInterval = 10 * time.Minute
	// pipeUnannounceTimeout bounds the best-effort unannounce once the one
	// connection is taken or the server gives up.
	pipeUnannounceTimeout = 3 * time.Second
)

// PipeConfig configures a pipe. Topic and Bootstrap are required.
type PipeConfig struct {
	// Topic is the topic to serve or to look up (its key is SHA-256 of
	// the string). Required.
	Topic string
	// Server announces the topic and accepts one connection; false looks
	// the topic up and dials it.
	Server bool
	// Key is the pipe's identity. Zero means a random one.
	Key ed25519.PrivateKey
	// Bootstrap lists the DHT nodes to join through. Required.
	Bootstrap []netip.AddrPort
	// ListenAddr is the UDP address of the socket. Zero means "0.0.0.0:0".
	ListenAddr string
	// Adaptive makes the DHT node adaptive (it stores and routes for
	// others once reachable). Zero means ephemeral.
	Adaptive bool
	// Timeout bounds everything up to the connection: joining the DHT,
	// then the announce (server) or the lookup and connect (client). Zero
	// means DefaultPipeTimeout.
	Timeout time.Duration
	// Net opens the socket. Zero means the real network.
	Net transport.Net
	// OnConnect, when set, is called with the one connection as soon as
	// it is made, before Connect returns (a server takes its record down
	// in between).
	OnConnect func(*PipeConn)
	// Logger zero means discard.
	Logger *slog.Logger
}

// PipeInfo is a pipe that joined the DHT (and, for a server, announced).
type PipeInfo struct {
	Server     bool
	Topic      string
	PublicKey  ed25519.PublicKey
	LocalAddr  netip.AddrPort
	PublicAddr netip.AddrPort // zero when unknown
	// NAT is the NAT class known at the start. Both roles go on once the
	// mapping is known, before the filtering probes end, so it may read
	// unknown (a cone NAT's kind is its filtering); Pipe.WaitNAT gives the
	// whole measurement.
	NAT natcheck.Class
	// Relays are the DHT nodes that relay signaling to a server, and
	// Stored the nodes that took its record (servers only).
	Relays []netip.AddrPort
	Stored int
}

// Pipe is a started pipe: call Connect once, then Close.
type Pipe struct {
	// Immutable after StartPipe.
	cfg      PipeConfig
	topic    dht.ID
	deadline time.Time // cfg.Timeout from the start
	dn       *dht.Node
	ep       *holepunch.Endpoint
	info     PipeInfo

	taken     atomic.Bool          // the server's one connection is spoken for
	incoming  chan *holepunch.Conn // the server's one connection
	closeOnce sync.Once

	// A client's first lookup (lookupEarly), run as soon as the node has
	// joined the DHT; stopEarly ends it at Close.
	early     chan []dht.PeerRecord
	stopEarly context.CancelFunc
	earlyDone sync.WaitGroup
}

// StartPipe opens the socket, joins the DHT (measuring the NAT) and, for a
// server, announces the topic. A failure is a *PipeError.
func StartPipe(ctx context.Context, cfg PipeConfig) (*Pipe, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	p := &Pipe{cfg: cfg, topic: dht.TopicKey(cfg.Topic), deadline: time.Now().Add(cfg.Timeout),
		incoming: make(chan *holepunch.Conn, 1)}
	if err := p.start(ctx); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

func (c PipeConfig) withDefaults() (PipeConfig, error) {
	switch {
	case c.Topic == "":
		return c, fmt.Errorf("%w: pipe: Topic is required", ErrConfig)
	case len(c.Bootstrap) == 0:
		return c, fmt.Errorf("%w: pipe: Bootstrap is required", ErrConfig)
	}
	if c.Key == nil {
		_, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return c, pipeFailed(PipeFailed, "key", err)
		}
		c.Key = key
	}
	if c.Net == nil {
		n, err := stdnet.NewNet()
		if err != nil {
			return c, pipeFailed(PipeFailed, "network", err)
		}
		c.Net = n
	}
	if c.ListenAddr == "" {
		c.ListenAddr = "0.0.0.0:0"
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultPipeTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// start brings the pipe up to PipeInfo: the DHT node, then the endpoint,
// as in holepunch's lab tests: the endpoint measures the NAT before the
// node joins the DHT (its Discover step bootstraps), so the filtering
// probes come from nodes that never heard from us.
func (p *Pipe) start(ctx context.Context) error {
	link := dhtlink.New()
	mode := dht.ModeEphemeral
	if p.cfg.Adaptive {
		mode = dht.ModeAdaptive
	}
	p.dn = dht.New(dht.Config{
		Net: p.cfg.Net, ListenAddr: p.cfg.ListenAddr, Bootstrap: p.cfg.Bootstrap, Mode: mode,
		OnSignal: link.HandleSignal, Logger: p.cfg.Logger.With("component", "dht"),
	})
	if err := p.dn.Start(); err != nil {
		return pipeFailed(PipeFailed, "listen", err)
	}
	link.Attach(p.dn, p.cfg.Net)
	if err := p.startEndpoint(link); err != nil {
		return pipeFailed(PipeFailed, "endpoint", err)
	}
	// The timeout bounds everything up to the connection, the join included.
	tctx, cancel := context.WithDeadline(ctx, p.deadline)
	defer cancel()
	if !p.cfg.Server {
		ectx, stop := context.WithDeadline(context.Background(), p.deadline)
		p.early, p.stopEarly = make(chan []dht.PeerRecord, 1), stop
		p.earlyDone.Go(func() { p.lookupEarly(ectx) })
	}
	if err := p.join(ctx, tctx); err != nil {
		return err
	}
	if !p.cfg.Server {
		return nil
	}
	// The announce runs beside the filtering probes (the DHT node sends
	// nothing to a probe's helper meanwhile). The server is reachable once
	// announced, so start does not wait for them: WaitNAT does.
	if err := p.announce(tctx); err != nil {
		return err
	}
	// The mapping, and maybe the filtering probes, may have come meanwhile.
	p.info.NAT, p.info.PublicAddr = knownClass(p.ep.NAT()), p.dn.PublicAddr()
	return nil
}

// knownClass is r's class, or unknown before any measurement.
func knownClass(r natcheck.Report) natcheck.Class {
	if r.Class == "" {
		return natcheck.ClassUnknown
	}
	return r.Class
}

// WaitNAT waits until the NAT measurement that StartPipe began has ended,
// filtering probes included (up to 3 RTT + 100 ms after the mapping), or
// ctx ends, and returns it. PipeInfo.NAT is what was known at the start.
func (p *Pipe) WaitNAT(ctx context.Context) natcheck.Report {
	return p.ep.WaitNAT(ctx)
}

// startEndpoint starts the hole-punching endpoint; a server's takes one
// connection and refuses every later peer before any ICE work.
func (p *Pipe) startEndpoint(link *dhtlink.Link) error {
	cfg := holepunch.EndpointConfig{
		Key: p.cfg.Key, Link: link, Net: p.cfg.Net, MeasureNAT: link.MeasureNAT,
		KeepLoopback: keepLoopback(p.cfg.ListenAddr, p.cfg.Bootstrap),
		Logger:       p.cfg.Logger.With("component", "holepunch"),
	}
	if p.cfg.Server {
		cfg.Firewall = func(ed25519.PublicKey, []byte) error {
			if p.taken.Load() {
				return errors.New("already piping to a peer")
			}
			return nil
		}
		cfg.OnConnection = func(c *holepunch.Conn) {
			if !p.taken.CompareAndSwap(false, true) {
				_ = c.Close() // a second handshake that was already past the firewall
				return
			}
			p.incoming <- c
		}
	}
	ep, err := holepunch.NewEndpoint(cfg)
	if err != nil {
		return err
	}
	if err := ep.Start(); err != nil {
		return err
	}
	p.ep = ep
	return nil
}

// join measures the NAT and joins the DHT within pipeJoinTimeout and the
// pipe's deadline (tctx); ctx is the caller's. It waits for neither the
// filtering probes (3 RTT + 100 ms) nor, for a server, the mapping
// (waitJoin): a client's dial needs no more (holepunch's waitNAT), and a
// server announces meanwhile (WaitNAT waits for the rest).
func (p *Pipe) join(ctx, tctx context.Context) error {
	jctx, cancel := context.WithTimeout(tctx, pipeJoinTimeout)
	defer cancel()
	nat := p.waitJoin(jctx)
	// The measurement joined the DHT on its way (its Discover step); a
	// second bootstrap cost four round trips to the DHT for nothing. One is
	// needed only when the measurement could not join.
	if !p.dn.Bootstrapped() {
		if err := p.dn.Bootstrap(jctx); err != nil {
			return &PipeError{Kind: PipeFailed, Reason: "bootstrap-failed", Err: err, Timeout: tctx.Err() != nil && ctx.Err() == nil}
		}
	}
	p.info = PipeInfo{Server: p.cfg.Server, Topic: p.cfg.Topic, PublicKey: p.cfg.Key.Public().(ed25519.PublicKey),
		LocalAddr: p.dn.LocalAddr(), PublicAddr: p.dn.PublicAddr(), NAT: knownClass(nat)}
	return nil
}

// waitJoin waits for what join needs: a client the NAT's mapping, which its
// dial needs; a server only the DHT join that the measurement makes on its
// way, one round trip to the DHT before the Bindings show the mapping. Its
// record names its key and relays, nothing of its NAT, so it announces
// beside the Bindings as it does beside the filtering probes, and a peer
// that dials at once finds its endpoint waiting for the mapping (as any
// accept does while a measurement is in flight). It returns the mapping's
// report when that came first (or the wait ended without either).
func (p *Pipe) waitJoin(ctx context.Context) natcheck.Report {
	if !p.cfg.Server {
		return p.ep.WaitMapping(ctx)
	}
	mapped := make(chan natcheck.Report, 1)
	go func() { mapped <- p.ep.WaitMapping(ctx) }() // ends with ctx at the latest
	select {
	case <-p.dn.Joined():
		return natcheck.Report{}
	case r := <-mapped:
		return r
	}
}

// announce makes the server reachable and announces the topic: the
// announce registers the key at its relays as Endpoint.Listen would, so one
// call does both, and its two lookups run at once.
func (p *Pipe) announce(tctx context.Context) error {
	jctx, cancel := context.WithTimeout(tctx, pipeJoinTimeout)
	defer cancel()
	res, err := p.dn.Announce(jctx, p.topic, p.cfg.Key)
	if err != nil {
		return pipeFailed(PipeFailed, "announce-failed", err)
	}
	p.info.Relays, p.info.Stored = res.Relays, res.Stored
	return nil
}

// Info describes the started pipe.
func (p *Pipe) Info() PipeInfo { return p.info }

// Connect returns the pipe's one connection: a server waits for the first
// peer (until ctx ends), keeping its record alive and taking it down once
// the connection is taken; a client looks the topic up and connects to
// the first peer that answers, within the pipe's Timeout. A failure is a
// *PipeError, or ctx's error.
func (p *Pipe) Connect(ctx context.Context) (*PipeConn, error) {
	if p.cfg.Server {
		return p.accept(ctx)
	}
	cctx, cancel := context.WithDeadline(ctx, p.deadline)
	defer cancel()
	return p.dial(ctx, cctx)
}

// accept waits for the server's one connection.
func (p *Pipe) accept(ctx context.Context) (*PipeConn, error) {
	actx, stopAnnounce := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.reannounce(actx)
	}()
	// Later clients must not find a busy (or gone) server.
	defer p.unannounce()
	defer wg.Wait()
	defer stopAnnounce()
	select {
	case c := <-p.incoming:
		return p.connected(&PipeConn{conn: c, ConnectTime: c.ConnectTime}), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// connected tells OnConnect of c.
func (p *Pipe) connected(c *PipeConn) *PipeConn {
	if p.cfg.OnConnect != nil {
		p.cfg.OnConnect(c)
	}
	return c
}

// reannounce refreshes the topic record until ctx ends.
func (p *Pipe) reannounce(ctx context.Context) {
	t := time.NewTicker(pipeAnnounceInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := p.dn.Announce(ctx, p.topic, p.cfg.Key); err != nil && ctx.Err() == nil {
				p.cfg.Logger.Warn("re-announce failed", "err", err)
			}
		}
	}
}

// unannounce takes the record down, best effort.
func (p *Pipe) unannounce() {
	uctx, cancel := context.WithTimeout(context.Background(), pipeUnannounceTimeout)
	defer cancel()
	if err := p.dn.Unannounce(uctx, p.topic, p.cfg.Key); err != nil {
		p.cfg.Logger.Debug("unannounce failed", "topic", p.cfg.Topic, "err", err)
	}
}

// dial looks the topic up and connects to the first peer that answers, in
// the order the DHT returned them; cctx (the pipe's deadline) bounds both.
func (p *Pipe) dial(ctx, cctx context.Context) (*PipeConn, error) {
	start := time.Now()
	var peers []dht.PeerRecord
	select {
	case peers = <-p.early:
	case <-cctx.Done():
	}
	if len(peers) == 0 {
		var err error
		if peers, err = p.lookup(ctx, cctx); err != nil {
			return nil, err
		}
	}
	var lastErr error
	for _, peer := range peers {
		c, err := p.ep.Connect(cctx, peer.PublicKey, peer.AllRelays())
		if err == nil {
			return p.connected(&PipeConn{conn: c, ConnectTime: time.Since(start)}), nil
		}
		p.cfg.Logger.Debug("connect failed", "peer", hex.EncodeToString(peer.PublicKey[:4]), "err", err)
		lastErr = err
		if cctx.Err() != nil {
			break
		}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, pipeFailed(PipeConnectFailed, connectReason(lastErr, cctx.Err() != nil), lastErr)
}

// lookup returns the peers announced under the topic, ourselves left out.
func (p *Pipe) lookup(ctx, cctx context.Context) ([]dht.PeerRecord, error) {
	res, err := p.dn.Lookup(cctx, p.topic)
	if err != nil {
		if cctx.Err() != nil && ctx.Err() == nil {
			return nil, &PipeError{Kind: PipeConnectFailed, Reason: "timeout", Err: err, Timeout: true}
		}
		return nil, pipeFailed(PipeFailed, "lookup-failed", err)
	}
	peers := p.others(res.Peers)
	if len(peers) == 0 {
		return nil, pipeFailed(PipeNotFound, "no-peers", fmt.Errorf("nobody announced %q (%d DHT nodes asked)", p.cfg.Topic, res.Queried))
	}
	return peers, nil
}

// lookupEarly looks the topic up once the node has joined the DHT, which
// the NAT measurement does on its way, while the measurement's filtering
// probes still wait (up to 3 RTT + 100 ms): a client whose dial then found
// the peers at hand saved the lookup's round trips. It sends the peers
// found, or none (then dial looks up itself).
func (p *Pipe) lookupEarly(ctx context.Context) {
	var peers []dht.PeerRecord
	defer func() { p.early <- peers }()
	select {
	case <-p.dn.Joined():
	case <-ctx.Done():
		return
	}
	if res, err := p.dn.Lookup(ctx, p.topic); err == nil {
		peers = p.others(res.Peers)
	}
}

// others is peers without our own record.
func (p *Pipe) others(peers []dht.PeerRecord) []dht.PeerRecord {
	own := p.cfg.Key.Public().(ed25519.PublicKey)
	var out []dht.PeerRecord
	for _, peer := range peers {
		if !peer.PublicKey.Equal(own) {
			out = append(out, peer)
		}
	}
	return out
}

// Close closes the endpoint and the DHT node. Idempotent.
func (p *Pipe) Close() error {
	var errs []error
	p.closeOnce.Do(func() {
		if p.stopEarly != nil {
			p.stopEarly()
			p.earlyDone.Wait()
		}
		if p.ep != nil {
			errs = append(errs, p.ep.Close())
		}
		if p.dn != nil {
			errs = append(errs, p.dn.Close())
		}
	})
	return errors.Join(errs...)
}

// connectReason names why Connect failed, most specific cause first:
// a both-symmetric dial that then found no relay is "both-sides-symmetric"
// (the error says the relay part too).
func connectReason(err error, timedOut bool) string {
	switch {
	case errors.Is(err, holepunch.ErrRefused):
		return "refused"
	case errors.Is(err, holepunch.ErrBusy):
		return "busy"
	case errors.Is(err, holepunch.ErrBothSymmetric):
		return "both-sides-symmetric"
	case errors.Is(err, holepunch.ErrPunchFailed):
		return "punch-failed"
	case errors.Is(err, holepunch.ErrNoTURN):
		return "no-turn"
	case timedOut, errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, holepunch.ErrNoRelays):
		return "no-relays"
	case errors.Is(err, holepunch.ErrHandshake):
		return "handshake-failed"
	case errors.Is(err, holepunch.ErrSignal):
		return "signal-failed"
	case errors.Is(err, holepunch.ErrSimultaneous), errors.Is(err, holepunch.ErrDialInProgress):
		return "simultaneous"
	}
	return "connect-failed"
}

// keepLoopback says whether loopback ICE candidates matter: the pipe or
// its DHT lives on 127.0.0.0/8 (tests, a demo on one machine).
func keepLoopback(listen string, boot []netip.AddrPort) bool {
	if ap, err := netip.ParseAddrPort(listen); err == nil && ap.Addr().IsLoopback() {
		return true
	}
	for _, b := range boot {
		if b.Addr().Unmap().IsLoopback() {
			return true
		}
	}
	return false
}
