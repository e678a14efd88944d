package holepunch

import (
	"context"
	"crypto/ed25519"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// This file holds the Endpoint's mutable state, one struct and one lock per
// concern (admission has its own, in admission.go; the NAT measurement's
// is natMu in endpoint.go). Every one of these locks is a leaf: no code
// holds two of them at once, so there is no lock order to keep, and none is
// held while application code runs (Firewall, OnConnection) or while a
// connection or ICE agent closes.

// connTable holds the live connection to each remote key: the endpoint
// keeps at most one per key (see Endpoint.Connect). mu guards every field
// below it; Endpoint.spawn also holds it to start a goroutine only while
// closed is false.
type connTable struct {
	mu     sync.Mutex
	closed bool             // set by Endpoint.Close; nothing is added after
	byKey  map[string]*Conn // live connections by remote key
	byPath map[Path]uint64  // connections opened, by path (Stats)
}

func newConnTable() connTable {
	return connTable{byKey: map[string]*Conn{}, byPath: map[Path]uint64{}}
}

// add makes c the connection to key and returns the one it replaces, which
// the caller retires. After close it adds nothing and returns ErrClosed.
func (t *connTable) add(key string, c *Conn) (old *Conn, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrClosed
	}
	old = t.byKey[key]
	t.byKey[key] = c
	t.byPath[c.Path()]++
	return old, nil
}

// moved counts a connection that opened on path from under path to
// instead (Conn.Settled).
func (t *connTable) moved(from, to Path) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byPath[from]--; t.byPath[from] == 0 {
		delete(t.byPath, from)
	}
	t.byPath[to]++
}

// remove forgets c if it is still the connection to key.
func (t *connTable) remove(key string, c *Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byKey[key] == c {
		delete(t.byKey, key)
	}
}

// take removes and returns the connection to key, if any.
func (t *connTable) take(key string) *Conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.byKey[key]
	delete(t.byKey, key)
	return c
}

// has reports whether there is a connection to key.
func (t *connTable) has(key string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byKey[key] != nil
}

// dialledSince reports whether the live connection to key is one we
// dialled that opened after ts (see answer: a message 1 stamped ts is then
// older than that connection).
func (t *connTable) dialledSince(key string, ts time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.byKey[key]
	return c != nil && c.Initiator && ts.Before(c.opened.Add(-stampPrecision))
}

// isClosed reports whether close ran.
func (t *connTable) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

// close marks the table closed and returns its connections; first is
// false when it was closed already.
func (t *connTable) close() (conns []*Conn, first bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, false
	}
	t.closed = true
	for _, c := range t.byKey {
		conns = append(conns, c)
	}
	return conns, true
}

// stats returns the number of live connections and a copy of byPath.
func (t *connTable) stats() (live int, byPath map[Path]uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	byPath = make(map[Path]uint64, len(t.byPath))
	for k, v := range t.byPath {
		byPath[k] = v
	}
	return len(t.byKey), byPath
}

// pendingHandshakes holds the handshakes in progress by remote key, ours
// (dialing) and the peers' (incoming): glare and supersession look at both
// at once. mu guards both maps.
type pendingHandshakes struct {
	mu       sync.Mutex
	dialing  map[string]*dialState // our dials in progress
	incoming map[string]*inbound   // incoming handshakes in progress
}

func newPendingHandshakes() pendingHandshakes {
	return pendingHandshakes{dialing: map[string]*dialState{}, incoming: map[string]*inbound{}}
}

// dialState is a dial of ours in progress.
type dialState struct {
	cancel context.CancelCauseFunc
}

// incomingFrom returns the incoming handshake from key in progress, if any.
func (p *pendingHandshakes) incomingFrom(key string) *inbound {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.incoming[key]
}

// dialingTo reports whether a dial of ours to key is in progress.
func (p *pendingHandshakes) dialingTo(key string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dialing[key] != nil
}

// startDial records ds as our dial to key and returns the incoming
// handshake from key in progress, if any; ErrDialInProgress when we dial
// key already.
func (p *pendingHandshakes) startDial(key string, ds *dialState) (*inbound, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dialing[key] != nil {
		return nil, ErrDialInProgress
	}
	p.dialing[key] = ds
	return p.incoming[key], nil
}

// endDial forgets ds if it is still our dial to key.
func (p *pendingHandshakes) endDial(key string, ds *dialState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dialing[key] == ds {
		delete(p.dialing, key)
	}
}

// settle applies admission's verdict on a message 1 from remote (local is
// our key) to our dial to remote, if any: a dial that loses the glare is
// cancelled here, under the same lock that saw it.
func (p *pendingHandshakes) settle(local, remote ed25519.PublicKey, firewallErr error) Code {
	key := string(remote)
	p.mu.Lock()
	defer p.mu.Unlock()
	ds := p.dialing[key]
	code, cancelDial := verdict(local, remote, firewallErr, ds != nil)
	if cancelDial {
		ds.cancel(ErrSimultaneous)
		delete(p.dialing, key)
	}
	return code
}

// replaceIncoming records h as the incoming handshake from key and
// returns the one it supersedes, if any.
func (p *pendingHandshakes) replaceIncoming(key string, h *inbound) *inbound {
	p.mu.Lock()
	defer p.mu.Unlock()
	prev := p.incoming[key]
	p.incoming[key] = h
	return prev
}

// endIncoming forgets h if it is still the incoming handshake from key.
func (p *pendingHandshakes) endIncoming(key string, h *inbound) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.incoming[key] == h {
		delete(p.incoming, key)
	}
}

// punchedPaths holds the paths that the endpoint's packet handlers
// (handleBirthday, routeBySource) feed. mu guards both maps.
type punchedPaths struct {
	mu        sync.Mutex
	routes    map[netip.AddrPort]*routedConn             // easy-side birthday paths and ICE pairs by remote address
	birthdays map[[BirthdaySecretSize]byte]chan Datagram // easy-side punches in progress by secret
}

func newPunchedPaths() punchedPaths {
	return punchedPaths{routes: map[netip.AddrPort]*routedConn{}, birthdays: map[[BirthdaySecretSize]byte]chan Datagram{}}
}

// counters are the EndpointStats counted outside admission and the
// connection table; atomic, so they need no lock.
type counters struct {
	dials, dialFailures atomic.Uint64
	accepted, refused   atomic.Uint64
	badHandshakes       atomic.Uint64
	routed, earlyPaths  atomic.Uint64
	agentsRetired       atomic.Uint64
}
