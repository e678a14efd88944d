package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/swarmdb/swarmdb/db"
)

const (
	// functionTimeout is ToolDb's doFunction default wait; a server function running longer
	// has no one left to answer.
	functionTimeout = 10 * time.Second
	// maxPending bounds the relayed gets we remember answers for.
	maxPending = 4096
	// maxKnownServers bounds the descriptors kept from pong.servers.
	maxKnownServers = 256
)

// handle dispatches one parsed message. It reports false when the peer must stop.
func (p *Peer) handle(m *Message) bool {
	b := p.b
	if !b.seenIDs.add(m.Type + "\x00" + m.ID) {
		b.stats.dups.Add(1)
		if (m.Type == TypePut || m.Type == TypeCRDTPut) && !m.Catchup {
			p.putArrived(m.Data.Key, m.ID, false)
		}
		return true
	}
	if !p.identified.Load() && m.Type != TypePing && m.Type != TypePong && m.Type != TypeError {
		return p.bad(m.ID, fmt.Errorf("%w: %s", ErrNotIdentified, m.Type))
	}
	switch m.Type {
	case TypePing:
		return p.onPing(m)
	case TypePong:
		return p.onPong(m)
	case TypePut, TypeCRDTPut:
		return p.goAsync(func() { p.onPut(m) })
	case TypeGet, TypeCRDTGet:
		p.onGet(m)
	case TypeSubscribe:
		return p.onSubscribe(m)
	case TypeQuery:
		p.onQuery(m)
	case TypeFunction:
		return p.goAsync(func() { p.onFunction(m) })
	case TypeQueryAck, TypeFunctionReturn:
		// Answers to requests we never send (ToolDb handles them only by id-listeners).
	case TypeError:
		b.log.Debug("peer reported an error", "peer", p.conn.RemoteID(), "code", m.Code, "error", m.Error, "ref", m.Ref)
	case TypeSync:
		if !p.swarmdb.Load() {
			return p.bad(m.ID, fmt.Errorf("%w: %s from a peer that is not swarmdb", ErrUnknownType, m.Type))
		}
		switch m.Sync.Op {
		case syncOpIHave:
			p.onIHave(m.Sync.Items)
			return true
		case syncOpGraft:
			p.onGraft(m.Sync.Items)
			return true
		case syncOpPrune:
			p.onPrune()
			return true
		}
		if b.cfg.DisableSync && m.Sync.Op != syncOpHave && m.Sync.Op != syncOpWant {
			return true
		}
		return p.onSync(m)
	}
	return true
}

// protocolVersion is the swarmdb version we speak: without the broadcast
// tree, the one before it, so peers send us every put in full.
func (b *Bridge) protocolVersion() int {
	if b.cfg.DisablePlumtree {
		return treeVersion - 1
	}
	return ProtocolVersion
}

// sendPing sends our ping (we opened the connection).
func (p *Peer) sendPing() {
	b := p.b
	m := &Message{Type: TypePing, ID: newID(), To: []string{b.clientID}, IsServer: b.cfg.Server,
		ClientID: b.clientID, Peer: &b.desc, Swarmdb: b.protocolVersion()}
	p.mu.Lock()
	p.pingID = m.ID
	p.mu.Unlock()
	b.seenIDs.add(TypePing + "\x00" + m.ID)
	p.send(m)
}

func (p *Peer) onPing(m *Message) bool {
	b := p.b
	if err := VerifyPeerDesc(m.Peer, b.cfg.Topic, b.cfg.Now()); err != nil {
		return p.bad(m.ID, err)
	}
	if err := p.identify(m.ClientID, m.Peer, m.IsServer, m.Swarmdb); err != nil && !p.crossedAccepted(err) {
		return p.identifyFailed(m.ID, err)
	}
	p.send(&Message{Type: TypePong, ID: m.ID, To: []string{b.clientID}, IsServer: b.cfg.Server,
		ClientID: b.clientID, Servers: b.serverList(), Peer: &b.desc, Swarmdb: b.protocolVersion()})
	return true
}

func (p *Peer) onPong(m *Message) bool {
	b := p.b
	p.mu.Lock()
	solicited := p.pingID != "" && p.pingID == m.ID
	p.mu.Unlock()
	if !solicited {
		return p.bad(m.ID, fmt.Errorf("%w: pong to no ping of ours", ErrBadMessage))
	}
	d := m.Peer
	if d == nil {
		// A ToolDb server lists itself in servers.
		for i := range m.Servers {
			if ClientID(m.Servers[i].Address) == m.ClientID {
				d = &m.Servers[i]
				break
			}
		}
	}
	if d == nil {
		return p.bad(m.ID, fmt.Errorf("%w: pong carries no descriptor of its sender", ErrBadPeer))
	}
	if err := VerifyPeerDesc(d, b.cfg.Topic, b.cfg.Now()); err != nil {
		return p.bad(m.ID, err)
	}
	if err := p.identify(m.ClientID, d, m.IsServer, m.Swarmdb); err != nil {
		if p.crossedAccepted(err) {
			return true
		}
		return p.identifyFailed(m.ID, err)
	}
	now := b.cfg.Now()
	for i := range m.Servers {
		s := m.Servers[i]
		b.mu.Lock()
		known, ok := b.servers[s.Address]
		b.mu.Unlock()
		if ok && known == s {
			continue // verified before: an ECDSA check saved, for each of up to 32 per pong
		}
		if s.Address == b.desc.Address || VerifyPeerDesc(&s, b.cfg.Topic, now) != nil {
			continue
		}
		b.mu.Lock()
		if _, ok := b.servers[s.Address]; ok || len(b.servers) < maxKnownServers {
			b.servers[s.Address] = s
		}
		b.mu.Unlock()
	}
	if m.Swarmdb > 0 {
		p.startSync()
	}
	return true
}

// identify binds the connection to a verified descriptor. The client id must be the one ToolDb
// derives from the address (so a peer cannot take another's id without its key), must not be
// ours, must not change on a connection, and must not be held by another live connection.
// It runs on the read loop, the only writer of p.clientID, which reads it without p.mu.
func (p *Peer) identify(clientID string, d *PeerDesc, isServer bool, version int) error {
	b := p.b
	switch {
	case clientID != ClientID(d.Address):
		return fmt.Errorf("%w: %q is not the id of address %q", ErrIDClaimed, truncate(clientID, 32), truncate(d.Address, 100))
	case clientID == b.clientID:
		return fmt.Errorf("%w: %q is our own id", ErrIDClaimed, clientID)
	case p.clientID != "" && p.clientID != clientID:
		return fmt.Errorf("%w: connection already identified as %q", ErrIDClaimed, p.clientID)
	}
	displaced, err := b.claim(p, clientID, d, isServer, version)
	switch {
	case displaced != nil && sameSwarmPeer(displaced, p):
		displaced.close(fmt.Errorf("%w (%s)", ErrReplaced, clientID))
	case displaced != nil:
		displaced.endCrossed(fmt.Errorf("%w (%s)", ErrCrossedLink, clientID))
	}
	if err != nil {
		return err
	}
	if p.clientID != "" {
		return nil // identified before, under the same id
	}
	p.mu.Lock()
	p.clientID, p.address = clientID, d.Address
	p.mu.Unlock()
	p.identified.Store(true)
	close(p.identCh)
	if b.inTree(p) {
		b.treeMu.Lock()
		b.tree.up(p)
		b.treeMu.Unlock()
	}
	b.log.Debug("peer identified", "peer", clientID, "remote", p.conn.RemoteID(), "server", isServer, "swarmdb", version > 0)
	if b.cfg.OnPeer != nil {
		b.cfg.OnPeer(PeerEvent{Up: true, Peer: p.Status()})
	}
	return nil
}

// claim makes p the holder of clientID, unless another live connection holds it, and notes
// what p said it is. Its flags are set under b.mu with the claim, so whoever finds p among
// b.byClient sees them.
//
// Two nodes that find each other (both servers of a topic) may dial each other's WebSocket at
// once. Keeping whichever identified first, as for any other second connection, let each side
// keep a different one and wait out the other dial's timeout, then drop both (seen: 11 s
// instead of 0.1 s to link). So for two WebSocket connections of opposite directions both
// sides keep the one the smaller client id dialled: p may displace the holder, which the
// caller closes. The losing connection is closed by its dialler, which so learns that the link
// is up over the other (ErrCrossedLink); its acceptor answers its ping as usual, which is how
// the dialler can tell, and leaves it unidentified until then (Peer.crossedAccepted). A
// replayed descriptor can do no more than before (hold the id first).
//
// A swarm connection from the same swarm peer (the same authenticated key) displaces the
// holder: the swarm keeps one connection per peer and has replaced the old one, whose peer
// here ends a moment later, when its stream does. Refusing the new one for it left the
// replacement unidentified, and nothing replicated over it (a writer whose NAT mapping
// changed, TestConntrackFlushNATLab).
func (b *Bridge) claim(p *Peer, clientID string, d *PeerDesc, isServer bool, version int) (displaced *Peer, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if q := b.byClient[clientID]; q != nil && q != p {
		switch keeper := crossedKeeper(b.clientID, clientID, q, p); {
		case keeper == q:
			return nil, fmt.Errorf("%w (%s)", ErrCrossedLink, clientID)
		case keeper == p, sameSwarmPeer(q, p):
			displaced = q
		default:
			return nil, fmt.Errorf("%w: %q is held by another connection", ErrIDClaimed, clientID)
		}
	}
	b.byClient[clientID] = p
	p.isServer.Store(isServer)
	p.swarmdb.Store(version > 0)
	p.proto.Store(int32(min(version, 1<<20)))
	if isServer && d.Address != b.desc.Address && len(b.servers) < maxKnownServers {
		b.servers[d.Address] = *d
	}
	return displaced, nil
}

// sameSwarmPeer reports whether two connections are both swarm connections of one swarm
// peer: their remote ids are its authenticated public key.
func sameSwarmPeer(a, b *Peer) bool {
	return a.kind == KindSwarm && b.kind == KindSwarm && a.conn.RemoteID() == b.conn.RemoteID()
}

// crossedKeeper says which of two WebSocket connections to the same remote both ends keep:
// the one dialled by the smaller of the two client ids. It returns nil unless held and
// arrived are WebSocket connections of opposite directions.
func crossedKeeper(self, remote string, held, arrived *Peer) *Peer {
	if held.kind != KindWebSocket || arrived.kind != KindWebSocket || held.initiator == arrived.initiator {
		return nil
	}
	weDial := self < remote
	if held.initiator == weDial {
		return held
	}
	return arrived
}

// serverList is pong.servers: ourselves when we are a server (ToolDb's serverPeers includes the
// node itself), then the verified servers we know.
func (b *Bridge) serverList() []PeerDesc {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]PeerDesc, 0, min(len(b.servers)+1, 32))
	if b.cfg.Server {
		out = append(out, b.desc)
	}
	for _, d := range b.servers {
		if len(out) >= 32 {
			break
		}
		out = append(out, d)
	}
	return out
}

// onPut verifies and stores a record, relays it to the other server peers if it changed the
// store (never back to its origin nor to anyone in its "to" list), and hands it to whoever
// asked for it with a get we relayed.
func (p *Peer) onPut(m *Message) {
	b := p.b
	rec := *m.Data
	hk := recordID(&rec)
	if b.seenHashes.has(hk) {
		// The same record under another id (brought by anti-entropy, or
		// written twice): no word on the tree.
		b.stats.dups.Add(1)
		b.answerPending(m.ID, &rec)
		return
	}
	if !m.Catchup {
		p.putArrived(rec.Key, m.ID, true)
	}
	out, err := b.store.Put(b.ctx, rec)
	if err != nil {
		if b.ctx.Err() != nil || errors.Is(err, db.ErrClosed) {
			return
		}
		b.stats.rejected.Add(1)
		p.sendError(m.ID, err)
		if benignRejection(&rec, err) {
			return
		}
		p.strike(err)
		return
	}
	b.seenHashes.add(hk)
	b.answerPending(m.ID, &rec)
	if out.Changed() && m.Catchup {
		// A repair is news to our other peers too; rather than relay every
		// record of a large catch-up, tell them which keys we now hold.
		b.announce(rec.Key, p)
	}
	if out.Changed() && !m.Catchup {
		relay := *m
		relay.To = appendUnique(m.To, p.clientID)
		if n := b.broadcast(&relay, p, false); n > 0 {
			b.stats.relayed.Add(uint64(n))
		}
	}
}

// recordID names one signed version of a record, for seenHashes.
func recordID(rec *db.Record) string { return rec.Hash + "\x00" + rec.Sig }

// benignRejection: refusals an honest peer can run into (a name already taken, a key of
// another CRDT kind, an application hook, and a ToolDb server's merged CRDT record, whose h and
// s are the newest writer's over a v that is the merge — reference §1.8) are answered but not
// held against it.
func benignRejection(rec *db.Record, err error) bool {
	return errors.Is(err, db.ErrFrozenKey) || errors.Is(err, db.ErrCRDTKindConflict) ||
		errors.Is(err, db.ErrRejectedByHook) || rec.CRDT != "" && errors.Is(err, db.ErrHashMismatch)
}

// answerPending delivers a verified record to the get that message id answers, if we relayed
// one: to a local Get's waiter or, with the same id, to the peer that asked (ToolDb keeps such
// answers for itself and the asker times out).
func (b *Bridge) answerPending(id string, rec *db.Record) {
	b.mu.Lock()
	pg := b.pending[id]
	if pg != nil && pg.key == rec.Key {
		delete(b.pending, id)
	} else {
		pg = nil // not an answer to that get: a record of another key under its id
	}
	b.mu.Unlock()
	if pg == nil {
		return
	}
	if pg.waiter != nil {
		select {
		case pg.waiter <- *rec:
		default:
		}
		return
	}
	b.reply(pg.asker, id, pg.typ, rec.Key, rec)
}

// reply answers a get/crdtGet/subscribe with what we hold for key: the first message takes id,
// any further one (CRDT sources for a swarmdb peer) a fresh id.
func (b *Bridge) reply(p *Peer, id, reqType, key string, rec *db.Record) {
	msgs := b.recordMessages(p, key, rec, rec != nil && rec.CRDT != "")
	for i := range msgs {
		m := &msgs[i]
		if !p.swarmdb.Load() {
			m.Type = toolDBAnswerType(reqType, m.Type)
		}
		m.ID = id
		if i > 0 {
			m.ID = newID()
		}
		m.To = []string{b.clientID}
		p.send(m)
	}
}

// toolDBAnswerType is the type a ToolDb peer expects in the answer of type typ to a request
// of type reqType: ToolDb answers get with put and crdtGet with crdtPut.
func toolDBAnswerType(reqType, typ string) string {
	switch reqType {
	case TypeGet:
		return TypePut
	case TypeCRDTGet:
		return TypeCRDTPut
	}
	return typ
}

func (p *Peer) onGet(m *Message) {
	b := p.b
	rec, err := b.store.Get(m.Key)
	if err == nil {
		b.reply(p, m.ID, m.Type, m.Key, &rec)
		return
	}
	if !errors.Is(err, db.ErrNotFound) {
		p.sendError(m.ID, err)
		return
	}
	// A miss: ask everyone else (ToolDb relays gets to all peers) and remember who asked.
	b.mu.Lock()
	if len(b.pending) >= maxPending {
		b.mu.Unlock()
		return
	}
	b.pending[m.ID] = &pendingGet{key: m.Key, asker: p, typ: m.Type, expires: b.cfg.Now().Add(pendingGetTTL)}
	b.mu.Unlock()
	relay := *m
	relay.To = appendUnique(m.To, p.clientID)
	if b.broadcast(&relay, p, true) == 0 {
		b.mu.Lock()
		delete(b.pending, m.ID)
		b.mu.Unlock()
		p.notFound(m)
		return
	}
	if p.swarmdb.Load() {
		return // a relayed get: the node that asked answers its own client
	}
	// A client hears back either way: the record if a peer has it, else NOT_FOUND once
	// GetTimeout passed without an answer.
	t := time.AfterFunc(b.cfg.GetTimeout, func() {
		b.mu.Lock()
		pg := b.pending[m.ID]
		mine := pg != nil && pg.asker == p
		if mine {
			delete(b.pending, m.ID)
		}
		b.mu.Unlock()
		if mine {
			p.notFound(m)
		}
	})
	context.AfterFunc(p.ctx, func() { t.Stop() })
}

// notFound tells a client that asked for a key nobody holds. ToolDb has no such answer (its
// getData waits out a timeout); this is our error message, which ToolDb clients ignore
// (they dispatch by type and it has a fresh id), with the get's id in ref.
func (p *Peer) notFound(get *Message) {
	if p.swarmdb.Load() {
		return
	}
	p.sendError(get.ID, fmt.Errorf("%w: %q", db.ErrNotFound, get.Key))
}

func (p *Peer) onQuery(m *Message) {
	b := p.b
	keys, err := b.store.Query(m.Key)
	if err != nil {
		p.sendError(m.ID, err)
		return
	}
	if len(keys) > b.cfg.Limits.MaxQueryKeys {
		keys = keys[:b.cfg.Limits.MaxQueryKeys]
	}
	ack := &Message{Type: TypeQueryAck, ID: m.ID, To: []string{b.clientID}, Keys: keys}
	msg := AppendMessage(nil, ack)
	for len(msg) > b.cfg.Limits.MaxMessageSize && len(ack.Keys) > 0 {
		// Too many keys for one message: keep the first part (ToolDb takes only one ack).
		ack.Keys = ack.Keys[:len(ack.Keys)*3/4]
		msg = AppendMessage(msg[:0], ack)
	}
	p.sendRaw(msg)
}

func (p *Peer) onFunction(m *Message) {
	b := p.b
	reply := &Message{Type: TypeFunctionReturn, ID: m.ID, To: []string{b.clientID}}
	fn := b.cfg.Functions[m.Function]
	if fn == nil {
		reply.Code, reply.Return = CodeNotFound, json.RawMessage(`"Function not found"`)
		p.send(reply)
		return
	}
	ctx, cancel := context.WithTimeout(p.ctx, functionTimeout)
	defer cancel()
	res, err := fn(ctx, m.Args)
	if err == nil {
		var raw []byte
		if raw, err = json.Marshal(res); err == nil {
			reply.Code, reply.Return = CodeOK, raw
		}
	}
	if err != nil {
		reply.Code = CodeErr
		reply.Return = appendString(nil, err.Error())
	}
	p.send(reply)
}
