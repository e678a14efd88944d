package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/swarmdb/swarmdb/db"
)

// Connection kinds, for stats and logs.
const (
	KindSwarm     = "swarm"
	KindWebSocket = "websocket"
	KindPipe      = "pipe"
)

// AttachOptions describe a connection being attached.
type AttachOptions struct {
	// Initiator: we opened the connection, so we send the first ping (ToolDb's dialer pings;
	// the listener only answers). On a swarm connection let the side that dialled be the
	// initiator; if both ping, both answer and nothing breaks.
	Initiator bool
	// Kind names the transport (KindSwarm, KindWebSocket, ...). Zero means KindPipe.
	Kind string
}

// PeerStatus is a snapshot of one connection.
type PeerStatus struct {
	RemoteID   string // Conn.RemoteID
	Kind       string
	Initiator  bool
	Identified bool   // sent a verified ping or pong
	ClientID   string // its ToolDb client id (last 20 characters of Address)
	Address    string // its verified peer address
	IsServer   bool
	Swarmdb    bool // a swarmdb node (anti-entropy capable)

	MessagesIn, MessagesOut, BytesIn, BytesOut uint64
	Subscriptions                              int
}

// Peer is one attached connection. Its read loop parses and dispatches messages; its write
// loop drains a bounded queue into the Conn; a third goroutine feeds anti-entropy records
// into the queue without ever filling it.
type Peer struct {
	// Immutable after Attach.
	b         *Bridge
	conn      Conn
	kind      string
	initiator bool
	ctx       context.Context
	cancel    context.CancelFunc
	out       *outQueue
	done      chan struct{} // closed when every goroutine of the peer has ended
	writerEnd chan struct{}
	identCh   chan struct{} // closed on identification
	inflight  chan struct{} // semaphore for async handlers
	wg        sync.WaitGroup
	// catchupSig wakes the catch-up sender (capacity 1).
	catchupSig chan struct{}

	isServer                           atomic.Bool
	swarmdb                            atomic.Bool
	proto                              atomic.Int32 // its swarmdb protocol version (0: ToolDb)
	identified                         atomic.Bool
	crossedLost                        atomic.Bool // lost a crossed-connection tie (see Bridge.claim)
	msgsIn, msgsOut, bytesIn, bytesOut atomic.Uint64

	// mu guards the fields below. It is a leaf: nothing else is locked while it is held, and
	// it is never taken under Bridge.mu (see Bridge).
	mu sync.Mutex
	// clientID and address are written once, by the read loop when the peer identifies
	// itself; the read loop, and the handlers it starts after that, read them without mu.
	clientID    string
	address     string
	err         error
	pingID      string
	syncStarted bool
	catchup     []syncOut           // anti-entropy traffic still to send
	lagged      map[string]struct{} // keys of puts not relayed while the peer was behind (see lag)
	lagLost     bool                // lagged overflowed: only a comparison can tell what it lacks
	syncTimer   *time.Timer         // next comparison from the root (see scheduleSync)
	syncDue     time.Time           // when syncTimer fires; zero while it is not armed
	ihaves      []SyncItem          // puts to announce on the lazy link (see announceLazily)

	// Owned by the read loop.
	rate           bucket
	lastRateStrike time.Time // when going over the rate last cost a strike

	// Guarded by strikeMu: puts are verified on goroutines of their own
	// (goAsync), and a bad one strikes from there.
	strikeMu sync.Mutex
	strikes  bucket
}

// Attach makes c a peer of the message layer and returns at once; the peer runs until the
// connection fails, it misbehaves, Peer.Close or Bridge.Close.
func (b *Bridge) Attach(c Conn, opts AttachOptions) (*Peer, error) {
	if opts.Kind == "" {
		opts.Kind = KindPipe
	}
	now := b.cfg.Now()
	lim := &b.cfg.Limits
	p := &Peer{
		b: b, conn: c, kind: opts.Kind, initiator: opts.Initiator,
		out:        newOutQueue(lim.OutboundQueue, lim.OutboundBytes, behindBytes),
		done:       make(chan struct{}),
		writerEnd:  make(chan struct{}),
		identCh:    make(chan struct{}),
		inflight:   make(chan struct{}, lim.MaxInflight),
		catchupSig: make(chan struct{}, 1),
		rate:       newBucket(lim.MessagesPerSecond, lim.Burst, now),
		strikes:    newBucket(1/lim.StrikeDecay.Seconds(), lim.MaxStrikes, now),
	}
	b.mu.Lock()
	if !b.started || b.closed {
		b.mu.Unlock()
		if b.closed {
			return nil, ErrClosed
		}
		return nil, ErrNotStarted
	}
	p.ctx, p.cancel = context.WithCancel(b.ctx)
	b.peers[p] = struct{}{}
	b.wg.Add(3)
	b.mu.Unlock()
	go p.writeLoop()
	go p.catchupLoop()
	go p.run()
	idle := time.AfterFunc(lim.IdentifyTimeout, func() {
		if !p.identified.Load() {
			p.close(fmt.Errorf("%w within %v", ErrNotIdentified, lim.IdentifyTimeout))
		}
	})
	context.AfterFunc(p.ctx, func() { idle.Stop() })
	if opts.Initiator {
		p.sendPing()
	}
	return p, nil
}

// Done is closed when the peer has ended and every goroutine of it has returned.
func (p *Peer) Done() <-chan struct{} { return p.done }

// Err says why the peer ended (nil while it runs).
func (p *Peer) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Close ends the peer and closes its connection; it does not wait (see Done).
func (p *Peer) Close() { p.close(ErrClosed) }

// WaitIdentified waits until the peer has sent a verified ping or pong.
func (p *Peer) WaitIdentified(ctx context.Context) error {
	select {
	case <-p.identCh:
		return nil
	case <-p.done:
		if err := p.Err(); err != nil {
			return err
		}
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Status returns a snapshot of the peer.
func (p *Peer) Status() PeerStatus {
	s := PeerStatus{RemoteID: p.conn.RemoteID(), Kind: p.kind, Initiator: p.initiator}
	p.mu.Lock()
	s.ClientID, s.Address = p.clientID, p.address
	p.mu.Unlock()
	s.Subscriptions = p.b.subs.count(p)
	s.Identified = p.identified.Load()
	s.IsServer = p.isServer.Load()
	s.Swarmdb = p.swarmdb.Load()
	s.MessagesIn, s.MessagesOut = p.msgsIn.Load(), p.msgsOut.Load()
	s.BytesIn, s.BytesOut = p.bytesIn.Load(), p.bytesOut.Load()
	return s
}

func (p *Peer) close(err error) {
	p.mu.Lock()
	if p.err != nil {
		p.mu.Unlock()
		return
	}
	p.err = err
	p.mu.Unlock()
	// A client closed for abuse hears why when its connection can say it; the reason goes
	// out before the cancel below, which would otherwise reset the connection first.
	if c, ok := p.conn.(interface{ CloseFor(error) }); ok && errors.Is(err, ErrAbuse) {
		c.CloseFor(err)
		p.cancel()
		return
	}
	p.cancel()
	// Closing can block (a secure stream's close waits behind a write stuck
	// on a full send buffer, which is exactly the slow consumer's state),
	// and close runs on whoever noticed: the writer of a put broadcasting
	// to every peer. Close in the background so no caller ever waits on it.
	go func() { _ = p.conn.Close() }()
}

// run is the read loop; when it ends it waits for the peer's other goroutines, removes the peer
// from the bridge and reports it gone.
func (p *Peer) run() {
	defer p.b.wg.Done()
	err := p.readLoop()
	p.close(err)
	<-p.writerEnd
	p.wg.Wait()
	p.b.removePeer(p)
	if p.swarmdb.Load() {
		p.b.compareSoon()
	}
	st := p.Status()
	p.b.log.Debug("peer ended", "peer", st.ClientID, "remote", st.RemoteID, "err", p.Err())
	if st.Identified && p.b.cfg.OnPeer != nil {
		p.b.cfg.OnPeer(PeerEvent{Up: false, Peer: st, Err: p.Err()})
	}
	close(p.done)
}

func (p *Peer) readLoop() error {
	for {
		raw, err := p.conn.ReadMessage(p.ctx)
		if err != nil {
			if goOn, end := p.readFailed(err); !goOn {
				return end
			}
			continue
		}
		if !p.onRaw(raw) {
			return p.Err()
		}
	}
}

// readFailed handles a failed read: a message too large or malformed costs a strike and the
// loop goes on while strikes remain; anything else ends it, with end the error to report.
func (p *Peer) readFailed(err error) (goOn bool, end error) {
	switch {
	case errors.Is(err, ErrMessageTooLarge) || errors.Is(err, ErrBadMessage):
		p.msgsIn.Add(1)
		if p.bad("", err) {
			return true, nil
		}
		return false, p.Err()
	case p.ctx.Err() != nil:
		return false, p.Err()
	default:
		return false, fmt.Errorf("bridge: read: %w", err)
	}
}

// onRaw takes one message off the wire: it counts it, bounds its size and the peer's rate,
// drops a copy of one seen, and parses and handles the rest. It reports false when the peer
// must stop.
func (p *Peer) onRaw(raw []byte) bool {
	b := p.b
	p.msgsIn.Add(1)
	p.bytesIn.Add(uint64(len(raw)))
	b.stats.msgsIn.Add(1)
	b.stats.bytesIn.Add(uint64(len(raw)))
	if len(raw) > b.cfg.Limits.MaxMessageSize {
		// The Conn should have refused it already; not every Conn can.
		return p.bad(peekID(raw), fmt.Errorf("%w: %d bytes", ErrMessageTooLarge, len(raw)))
	}
	now := b.cfg.Now()
	if p.swarmdb.Load() {
		if !p.throttle(now) {
			return false
		}
	} else if !p.rate.take(now) {
		b.stats.rejected.Add(1)
		b.stats.rateLimited.Add(1)
		return p.rateLimited(raw, now)
	}
	if p.seenCopy(raw) {
		return true
	}
	m, err := ParseMessage(raw, b.cfg.Limits.MaxDepth)
	if err != nil {
		return p.bad(peekID(raw), err)
	}
	return p.handle(&m)
}

// throttle keeps a swarmdb node to its rate by reading it late. It is slowed down, never
// dropped: it relays what its own clients wrote, and a dropped put would only come back by
// anti-entropy. While we do not read, its transport holds back (the stream's flow control), so what it
// costs us stays bounded. It reports false when the peer ended during the wait.
func (p *Peer) throttle(now time.Time) bool {
	d := p.rate.borrow(now)
	if d <= 0 {
		return true
	}
	p.b.stats.throttled.Add(1)
	return sleepCtx(p.ctx, d)
}

// seenCopy reports whether raw is a copy of a message seen before, and counts it. Most
// messages in a mesh are (every neighbour relays each put); our own encoding starts with
// type and id, so a copy is recognised before the costly full parse.
func (p *Peer) seenCopy(raw []byte) bool {
	b := p.b
	typ, id, ok := peekTypeID(raw)
	if !ok || !b.seenIDs.has(typ+"\x00"+id) {
		return false
	}
	b.stats.dups.Add(1)
	if typ == TypePut || typ == TypeCRDTPut {
		p.putArrived("", id, false)
	}
	return true
}

// rateLimited answers a message over the rate with RATE_LIMITED, its id in ref, so the
// client knows which requests to send again; the connection stays. A burst is not abuse:
// going over the rate costs at most one strike per rateStrikeInterval, so only a peer that
// keeps exceeding its rate for about MaxStrikes of those is closed. While the peer's queue is
// behind, the answer waits for room (sendPatient) and the read loop with it, so a client that
// reads slowly is read slowly: sending at once would make it a slow consumer, and leaving
// the answer out (as before) left a request with neither a reply nor an error, seen under
// load as a burst of 5,000 gets 67 answers short. It reports whether the connection goes on.
func (p *Peer) rateLimited(raw []byte, now time.Time) bool {
	if !p.sendPatient(AppendMessage(nil, p.errorMessage(peekRef(raw), ErrRateLimited))) {
		return false
	}
	if now.Sub(p.lastRateStrike) < rateStrikeInterval {
		return true
	}
	p.lastRateStrike = now
	return p.strike(ErrRateLimited)
}

// peekRef is the id of a message we did not parse, for an error's ref: cheaply from our
// own encoding, by a parse for other small messages, else none.
func peekRef(raw []byte) string {
	if _, id, ok := peekTypeID(raw); ok {
		return id
	}
	if len(raw) <= maxPeekRef {
		return peekID(raw)
	}
	return ""
}

// sleepCtx waits d or until ctx ends; it reports whether the wait was complete.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// bad answers a bad message with an error, counts it, and strikes. It reports whether the
// connection goes on.
func (p *Peer) bad(ref string, err error) bool {
	p.b.stats.rejected.Add(1)
	p.b.log.Debug("bad message", "peer", p.conn.RemoteID(), "err", err)
	p.sendError(ref, err)
	return p.strike(err)
}

// identifyFailed handles a ping or pong that could not identify the peer: the loser of two
// crossed connections that we dialled is closed (it is no fault, and our dialer learns at once
// that the other connection carries the link); anything else is a bad message.
func (p *Peer) identifyFailed(ref string, err error) bool {
	if errors.Is(err, ErrCrossedLink) {
		p.b.log.Debug("crossed connection closed", "remote", p.conn.RemoteID(), "err", err)
		p.close(err)
		return false
	}
	return p.bad(ref, err)
}

// endCrossed ends p, which lost to a crossed connection after it had identified. We dialled
// it: close it now, so our dialer learns. Its remote dialled it: that remote closes it once it
// sees the kept connection, and closing it here could drop the pong it still needs to tell
// (queued answers die with the connection); so it gets crossedGrace, then is closed anyway
// (a ToolDb dialler keeps both).
func (p *Peer) endCrossed(err error) {
	if p.initiator {
		p.close(err)
		return
	}
	t := time.AfterFunc(crossedGrace, func() { p.close(err) })
	context.AfterFunc(p.ctx, func() { t.Stop() })
}

// crossedAccepted reports whether err says p lost to a crossed connection that p's remote
// dialled: p stays, unidentified and with no strike, and its ping is answered, so that its
// dialler sees the kept connection and closes this one (see Bridge.claim); if it has not
// within crossedGrace, we do (endCrossed).
func (p *Peer) crossedAccepted(err error) bool {
	if p.initiator || !errors.Is(err, ErrCrossedLink) {
		return false
	}
	if p.crossedLost.CompareAndSwap(false, true) {
		p.endCrossed(err)
	}
	return true
}

// strike uses one of the peer's strikes; with none left the peer is closed for abuse.
func (p *Peer) strike(err error) bool {
	p.strikeMu.Lock()
	ok := p.strikes.take(p.b.cfg.Now())
	p.strikeMu.Unlock()
	if ok {
		return true
	}
	p.b.stats.abuse.Add(1)
	p.b.log.Info("peer disconnected for abuse", "peer", p.conn.RemoteID(), "err", err)
	p.close(fmt.Errorf("%w: last: %w", ErrAbuse, err))
	return false
}

// errorCode names an error for the "code" of an error message.
func errorCode(err error) string {
	for _, c := range []struct {
		err  error
		code string
	}{
		{ErrMessageTooLarge, "TOO_LARGE"}, {ErrTooDeep, "TOO_DEEP"}, {ErrUnknownType, "UNKNOWN_TYPE"},
		{ErrNotIdentified, "NOT_IDENTIFIED"}, {ErrBadPeer, "BAD_PEER"}, {ErrIDClaimed, "ID_CLAIMED"},
		{ErrRateLimited, "RATE_LIMITED"}, {ErrTooManySubscriptions, "TOO_MANY_SUBSCRIPTIONS"},
		{ErrBadMessage, "BAD_MESSAGE"}, {db.ErrNotFound, "NOT_FOUND"},
	} {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return "REJECTED"
}

// sendError sends {"type":"error"} with a fresh id (a ToolDb client waiting on ref must not
// take it for an answer) and the offending message's id in ref.
func (p *Peer) sendError(ref string, err error) { p.send(p.errorMessage(ref, err)) }

// errorMessage is the error message that answers the request ref with err.
func (p *Peer) errorMessage(ref string, err error) *Message {
	return &Message{Type: TypeError, ID: newID(), To: []string{p.b.clientID}, Code: errorCode(err),
		Error: truncate(err.Error(), 512), Ref: ref}
}

// peekTypeID reads type and id from a message that begins as AppendMessage writes it,
// {"type":"…","id":"…", with no escapes in either. Other messages report false.
func peekTypeID(raw []byte) (typ, id string, ok bool) {
	rest, ok := bytes.CutPrefix(raw, []byte(`{"type":"`))
	if !ok {
		return "", "", false
	}
	t, rest, ok := cutPlain(rest)
	if !ok {
		return "", "", false
	}
	rest, ok = bytes.CutPrefix(rest, []byte(`,"id":"`))
	if !ok {
		return "", "", false
	}
	i, _, ok := cutPlain(rest)
	if !ok || len(i) > maxIDLen {
		return "", "", false
	}
	return string(t), string(i), true
}

// cutPlain splits b at its first quote, if no backslash comes before it.
func cutPlain(b []byte) (before, after []byte, ok bool) {
	q := bytes.IndexByte(b, '"')
	if q < 0 || bytes.IndexByte(b[:q], '\\') >= 0 {
		return nil, nil, false
	}
	return b[:q], b[q+1:], true
}

// peekID digs the id out of a message that failed to parse, best effort, for the error's ref.
func peekID(raw []byte) string {
	var m struct {
		ID string `json:"id"`
	}
	if len(raw) > 1<<16 || json.Unmarshal(raw, &m) != nil || len(m.ID) > maxIDLen {
		return ""
	}
	return m.ID
}

// send encodes m and queues it.
func (p *Peer) send(m *Message) { p.sendRaw(AppendMessage(nil, m)) }

// sendRaw queues msg without blocking. A peer whose queue is full is a slow consumer and is
// disconnected: buffering without bound would let one stalled reader exhaust our memory.
func (p *Peer) sendRaw(msg []byte) {
	if len(msg) > p.b.cfg.Limits.MaxMessageSize {
		p.b.log.Warn("outgoing message over size limit dropped", "peer", p.conn.RemoteID(), "size", len(msg))
		return
	}
	if p.ctx.Err() != nil {
		return
	}
	if !p.out.push(msg) {
		p.b.stats.slow.Add(1)
		n, size := p.out.size()
		p.b.log.Info("slow consumer disconnected", "peer", p.conn.RemoteID(), "queued", n, "bytes", size)
		p.close(ErrSlowConsumer)
	}
}

// sendPatient queues msg, waiting while the queue is behind (see behindBytes), so bulk traffic
// (anti-entropy) leaves room for everything else and never makes us look slow to ourselves.
func (p *Peer) sendPatient(msg []byte) bool {
	if len(msg) > p.b.cfg.Limits.MaxMessageSize {
		return true
	}
	return p.out.pushPatient(p.ctx, msg)
}

func (p *Peer) writeLoop() {
	defer p.b.wg.Done()
	defer close(p.writerEnd)
	for {
		msg, ok := p.out.pop(p.ctx)
		if !ok {
			return
		}
		ctx, cancel := context.WithTimeout(p.ctx, p.b.cfg.Limits.WriteTimeout)
		err := p.conn.WriteMessage(ctx, msg)
		cancel()
		if err != nil {
			if p.ctx.Err() == nil {
				p.b.log.Debug("write failed", "peer", p.conn.RemoteID(), "err", err)
			}
			p.close(fmt.Errorf("bridge: write: %w", err))
			return
		}
		p.msgsOut.Add(1)
		p.bytesOut.Add(uint64(len(msg)))
		p.b.stats.msgsOut.Add(1)
		p.b.stats.bytesOut.Add(uint64(len(msg)))
	}
}

// goAsync runs fn on its own goroutine, at most Limits.MaxInflight at once per peer. The read
// loop blocks while all are busy: they wait only on verification and the disk, never on the
// network, so this cannot deadlock two peers.
func (p *Peer) goAsync(fn func()) bool {
	select {
	case p.inflight <- struct{}{}:
	case <-p.ctx.Done():
		return false
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer func() { <-p.inflight }()
		fn()
	}()
	return true
}

// removePeer forgets p: its client id, its subscriptions, gets it asked for.
func (b *Bridge) removePeer(p *Peer) {
	b.treeDown(p)
	b.subs.drop(p)
	p.mu.Lock()
	cid := p.clientID
	p.mu.Unlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.peers, p)
	if cid != "" && b.byClient[cid] == p {
		delete(b.byClient, cid)
	}
	for id, pg := range b.pending {
		if pg.asker == p {
			delete(b.pending, id)
		}
	}
}
