package dht

import (
	"bytes"
	"context"
	"crypto/ed25519"
	crand "crypto/rand"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// queryResult is the outcome of one iterative query.
type queryResult struct {
	closest []*candidate // replied, nearest first, at most k
	hops    int
	queried int
}

// query runs an iterative lookup toward target, sending cmd to each node
// on the way (FIND_NODE or LOOKUP): the lookup state machine decides whom
// to ask, this loop does the I/O.
func (n *Node) query(ctx context.Context, target ID, cmd Command) (*queryResult, error) {
	n.mu.Lock()
	seeds := make([]netip.AddrPort, 0, n.cfg.K+len(n.bootstrap))
	for _, c := range n.table.closest(target, n.cfg.K) {
		seeds = append(seeds, c.addr)
	}
	n.table.touch(target, time.Now())
	if len(seeds) < n.cfg.K {
		seeds = append(seeds, n.bootstrap...)
	}
	n.mu.Unlock()
	seeds = n.withoutSelf(seeds)
	if len(seeds) == 0 {
		return nil, ErrNoNodes
	}
	l := newLookup(target, n.cfg.K, n.cfg.Concurrency, seeds)
	type result struct {
		addr  netip.AddrPort
		reply *Message
		err   error
	}
	results := make(chan result, n.cfg.Concurrency)
	inflight, queried := 0, 0
	for {
		for _, c := range l.next() {
			inflight++
			queried++
			addr := c.addr
			go func() {
				reply, err := n.requestTries(ctx, addr, n.queryMessage(cmd, target, addr), 2)
				results <- result{addr, reply, err}
			}()
		}
		if l.done() {
			break
		}
		select {
		case r := <-results:
			inflight--
			if r.err != nil {
				l.fail(r.addr)
				continue
			}
			r.reply.Closer = n.withoutSelf(r.reply.Closer)
			l.reply(r.addr, r.reply)
		case <-ctx.Done():
			for ; inflight > 0; inflight-- {
				<-results
			}
			return nil, ctx.Err()
		}
	}
	res := &queryResult{closest: l.closest(), hops: l.hops(), queried: queried}
	if len(res.closest) == 0 {
		return nil, fmt.Errorf("dht: query %s: %w", target.Short(), ErrNoNodes)
	}
	return res, nil
}

// queryMessage builds a query request; without a token from addr it pads
// itself so the answer may be as large as it needs (see sendReply).
func (n *Node) queryMessage(cmd Command, target ID, addr netip.AddrPort) *Message {
	m := &Message{Command: cmd, Target: &target}
	m.Value = n.lookupValue(cmd)
	if tok := n.cachedTokenFor(addr); tok != nil {
		m.Token = tok
		return m
	}
	m.Pad = requestPadTo - len(AppendMessage(nil, m)) - 2
	return m
}

// lookupValue is the value of a cmd request: a LOOKUP asks for records
// with their extensions.
func (n *Node) lookupValue(cmd Command) []byte {
	if cmd != CmdLookup || n.cfg.legacyRecords {
		return nil
	}
	return []byte{LookupExtVersion}
}

// withoutSelf drops the node's own addresses from addrs.
func (n *Node) withoutSelf(addrs []netip.AddrPort) []netip.AddrPort {
	pub := n.PublicAddr()
	out := addrs[:0:0]
	for _, a := range addrs {
		if a != n.local && a != pub {
			out = append(out, a)
		}
	}
	return out
}

// Bootstrap joins the network through the bootstrap nodes (the configured
// ones and those AddBootstrap added): it pings them, looks up its own
// neighbourhood, and in adaptive mode checks whether it can be persistent.
// With no bootstrap nodes it returns at once (the first node of a network).
func (n *Node) Bootstrap(ctx context.Context) error {
	if n.conn == nil {
		return ErrNotStarted
	}
	boot := n.BootstrapNodes()
	if len(boot) == 0 {
		return nil
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	answered := 0
	for _, b := range boot {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := n.request(ctx, b, &Message{Command: CmdPing, Pad: 64}); err == nil {
				mu.Lock()
				answered++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if answered == 0 {
		return fmt.Errorf("dht: bootstrap via %v: %w", boot, ErrNoNodes)
	}
	if n.cfg.Mode == ModePersistent && !n.Persistent() {
		n.mu.Lock()
		if a, c := majority(n.samples); c > 0 {
			n.becomePersistentLocked(a)
		}
		n.mu.Unlock()
	}
	if _, err := n.query(ctx, n.ID(), CmdFindNode); err != nil {
		return fmt.Errorf("dht: bootstrap: %w", err)
	}
	if n.cfg.Mode == ModeAdaptive {
		// Before the far-bucket refresh: the unsolicited probe must come
		// from a node we never sent to, and the refresh contacts many.
		n.checkPersistence(ctx)
	}
	n.refreshFarBuckets(ctx)
	n.mu.Lock()
	n.bootstrapped = true
	n.mu.Unlock()
	return nil
}

// joinRefreshBuckets is how many of the farthest buckets a joining node
// fills with a lookup each. The lookup of its own id only finds nodes near
// it; without this, nodes whose contacts all share their first bits answer
// every query for the far half of the id space with nodes of their own
// half, and lookups converge in the wrong place (found by the 1,000-node
// benchmark: 5-10% of topics unreachable). Kademlia refreshes the buckets
// beyond its closest neighbour after joining for the same reason; 2^8
// regions cover networks far larger than ours per bucket.
const joinRefreshBuckets = 8

// refreshFarBuckets looks up a random id in each of the farthest buckets,
// in parallel, so the routing table knows every region of the id space.
func (n *Node) refreshFarBuckets(ctx context.Context) {
	self := n.ID()
	var wg sync.WaitGroup
	for prefix := range joinRefreshBuckets {
		var random ID
		_, _ = crand.Read(random[:])
		target := idInBucket(self, prefix, random)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = n.query(ctx, target, CmdFindNode)
		}()
	}
	wg.Wait()
}

// checkPersistence makes an adaptive node persistent when several nodes
// agree on its public address and a packet from a node it never sent to
// reaches it (it is reachable unsolicited, as HyperDHT's firewall check).
func (n *Node) checkPersistence(ctx context.Context) {
	n.mu.Lock()
	pub, seenBy := majority(n.samples)
	n.mu.Unlock()
	if seenBy < 2 {
		return
	}
	res, err := n.query(ctx, NodeID(pub), CmdFindNode)
	if err != nil {
		return
	}
	// Each probe's packet comes from a node the probed one picks; the join
	// lookups may have contacted it already, which proves nothing. Five
	// probes one after another still said "not reachable" in 6 runs of 20
	// of a 120-node loopback network (go test -race -count 20 -run
	// TestAdaptiveBecomesPersistent ./dht/), so every close node is probed
	// at once: the check waits for one probe, not five.
	probeCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var reachable atomic.Bool
	var wg sync.WaitGroup
	for _, c := range res.closest {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := n.NATProbe(probeCtx, c.addr, ProbeOtherNode, 2*n.cfg.RequestTimeout)
			if err == nil && p.Unsolicited {
				reachable.Store(true)
				cancel()
			}
		}()
	}
	wg.Wait()
	if reachable.Load() {
		n.mu.Lock()
		n.becomePersistentLocked(pub)
		n.mu.Unlock()
	}
}

// FindNode returns the addresses of the nodes closest to target.
func (n *Node) FindNode(ctx context.Context, target ID) ([]netip.AddrPort, error) {
	res, err := n.query(ctx, target, CmdFindNode)
	if err != nil {
		return nil, err
	}
	out := make([]netip.AddrPort, len(res.closest))
	for i, c := range res.closest {
		out[i] = c.addr
	}
	return out, nil
}

// LookupResult is what a topic lookup found.
type LookupResult struct {
	Peers   []PeerRecord
	Hops    int // sequential request rounds to the closest node
	Queried int // requests sent
}

// Lookup finds the peers announced on topic.
func (n *Node) Lookup(ctx context.Context, topic ID) (*LookupResult, error) {
	res, err := n.query(ctx, topic, CmdLookup)
	if err != nil {
		return nil, fmt.Errorf("dht: lookup %s: %w", topic.Short(), err)
	}
	out := &LookupResult{Hops: res.hops, Queried: res.queried}
	seen := make(map[[ed25519.PublicKeySize]byte]int) // index in out.Peers
	add := func(m *Message) {
		recs, err := ParseRecords(m.Value)
		if err != nil {
			return
		}
		for _, r := range recs {
			k := keyOf(r.PublicKey)
			i, ok := seen[k]
			switch {
			case !ok:
				seen[k] = len(out.Peers)
				out.Peers = append(out.Peers, r)
			case !out.Peers[i].hasExt() && r.hasExt():
				// A node from before record extensions answered first
				// with the version-1 form of the same record.
				out.Peers[i] = r
			}
		}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, c := range res.closest {
		if !c.reply.Truncated || c.reply.Token == nil {
			add(c.reply)
			continue
		}
		// The first answer was trimmed for an unverified source; ask again
		// with the token it gave us for the full record list.
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := n.request(ctx, c.addr, &Message{Command: CmdLookup, Target: &topic, Token: c.reply.Token, Value: n.lookupValue(CmdLookup)})
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				add(m)
			} else {
				add(c.reply)
			}
		}()
	}
	wg.Wait()
	return out, nil
}

// AnnounceResult says where an announce was stored.
type AnnounceResult struct {
	Stored int              // nodes that accepted the record
	Relays []netip.AddrPort // relays named in the record
}

// Announce stores a signed record for the key of priv on topic at the k
// nodes closest to it. Records expire after RecordTTL: callers re-announce
// about every half of it. Announce first makes sure the key has relays
// (see Relays) and names them in the record.
func (n *Node) Announce(ctx context.Context, topic ID, priv ed25519.PrivateKey) (*AnnounceResult, error) {
	relays, err := n.ensureRelays(ctx, priv)
	if err != nil {
		return nil, err
	}
	rec := PeerRecord{PublicKey: priv.Public().(ed25519.PublicKey), Relays: relays, WebSocketURL: n.cfg.WebSocketURL}
	stored, err := n.storeAtClosest(ctx, topic, func(storing, token ID, v1 bool) *Message {
		r := rec
		if v1 {
			r = rec.WithoutExt()
		}
		return &Message{Command: CmdAnnounce, Target: &topic, Token: &token, Value: signAnnounce(priv, topic, storing, token, r)}
	}, n.cfg.K)
	if err != nil {
		return nil, fmt.Errorf("dht: announce %s: %w", topic.Short(), err)
	}
	return &AnnounceResult{Stored: stored, Relays: relays}, nil
}

// Unannounce removes the record of priv's key on topic from the nodes
// closest to topic.
func (n *Node) Unannounce(ctx context.Context, topic ID, priv ed25519.PrivateKey) error {
	_, err := n.storeAtClosest(ctx, topic, func(storing, token ID, _ bool) *Message {
		return &Message{Command: CmdUnannounce, Target: &topic, Token: &token, Value: signUnannounce(priv, topic, storing, token)}
	}, n.cfg.K)
	if err != nil {
		return fmt.Errorf("dht: unannounce %s: %w", topic.Short(), err)
	}
	return nil
}

// storeAtClosest looks up target and sends the message build makes to each
// of the closest limit persistent nodes, with the token each handed out.
// It returns how many accepted.
//
// build makes the request for one storing node; v1 asks for a record
// without extensions, sent when the node refused the first one as a bad
// request (a node from before record extensions: see recordExtFlag).
func (n *Node) storeAtClosest(ctx context.Context, target ID, build func(storing, token ID, v1 bool) *Message, limit int) (int, error) {
	res, err := n.query(ctx, target, CmdLookup)
	if err != nil {
		return 0, err
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	stored, tried := 0, 0
	var lastErr error
	for _, c := range res.closest {
		if c.reply.ID == nil || c.reply.Token == nil || tried == limit {
			continue // ephemeral nodes store nothing
		}
		tried++
		m := build(*c.reply.ID, *c.reply.Token, false)
		wg.Add(1)
		go func() {
			defer wg.Done()
			reply, err := n.request(ctx, c.addr, m)
			if err == nil && reply.Error == CodeBadRequest {
				if m1 := build(*c.reply.ID, *c.reply.Token, true); !bytes.Equal(m1.Value, m.Value) {
					reply, err = n.request(ctx, c.addr, m1)
				}
			}
			if err == nil && reply.Error != CodeOK {
				err = fmt.Errorf("%w: %s from %s", reply.Error.asError(), reply.Error, c.addr)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				lastErr = err
				return
			}
			stored++
		}()
	}
	wg.Wait()
	if stored == 0 {
		if lastErr == nil {
			lastErr = ErrNoNodes
		}
		return 0, lastErr
	}
	return stored, nil
}

// Relays returns the relays currently serving priv's key (nil if the key
// was never announced).
func (n *Node) Relays(pub ed25519.PublicKey) []netip.AddrPort {
	n.mu.Lock()
	defer n.mu.Unlock()
	if s := n.announced[keyOf(pub)]; s != nil {
		return append([]netip.AddrPort(nil), s.relays...)
	}
	return nil
}

// ensureRelays picks (once) and registers (every call) the relays of the
// key: the MaxRelays persistent nodes closest to KeyTarget(key), or this
// node itself first when it is persistent. Registering is an announce on
// KeyTarget(key), which stores the record there (so a peer that knows only
// the key finds the relays) and makes each relay remember the address our
// packets come from. The maintenance loop pings the relays so the NAT
// pinhole to each stays open.
func (n *Node) ensureRelays(ctx context.Context, priv ed25519.PrivateKey) ([]netip.AddrPort, error) {
	pub := priv.Public().(ed25519.PublicKey)
	target := KeyTarget(pub)
	n.mu.Lock()
	set := n.announced[keyOf(pub)]
	if set == nil {
		set = &relaySet{priv: priv}
		n.announced[keyOf(pub)] = set
	}
	relays := append([]netip.AddrPort(nil), set.relays...)
	self := n.persistent
	pubAddr := n.publicAddrLocked()
	n.mu.Unlock()

	if len(relays) < MaxRelays {
		// Pick relays, or top up a set that lost some.
		res, err := n.query(ctx, target, CmdLookup)
		if err != nil && len(relays) == 0 {
			return nil, fmt.Errorf("dht: find relays: %w", err)
		}
		if self && pubAddr.IsValid() && !slices.Contains(relays, pubAddr) {
			relays = append([]netip.AddrPort{pubAddr}, relays...)
		}
		for _, c := range closestOf(res) {
			if len(relays) == MaxRelays {
				break
			}
			if c.reply.ID != nil && !slices.Contains(relays, c.addr) {
				relays = append(relays, c.addr)
			}
		}
		if len(relays) == 0 {
			return nil, fmt.Errorf("dht: find relays: %w", ErrNoNodes)
		}
	}
	rec := PeerRecord{PublicKey: pub, Relays: relays}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var live []netip.AddrPort
	for _, r := range relays {
		if r == pubAddr && self {
			mu.Lock()
			live = append(live, r)
			mu.Unlock()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := n.registerAt(ctx, r, target, priv, rec); err != nil {
				n.log.Debug("relay registration failed", "addr", r, "err", err)
				return
			}
			mu.Lock()
			live = append(live, r)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if len(live) == 0 {
		return nil, fmt.Errorf("dht: no relay accepted the registration: %w", ErrNoNodes)
	}
	live = orderLike(live, relays)
	n.mu.Lock()
	set.relays = live
	n.mu.Unlock()
	return live, nil
}

// registerAt announces rec on target at the relay at addr.
func (n *Node) registerAt(ctx context.Context, addr netip.AddrPort, target ID, priv ed25519.PrivateKey, rec PeerRecord) error {
	tok := n.cachedTokenFor(addr)
	if tok == nil {
		reply, err := n.request(ctx, addr, &Message{Command: CmdPing, Pad: 64})
		if err != nil {
			return err
		}
		if reply.Token == nil {
			return ErrBadToken
		}
		tok = reply.Token
	}
	value := signAnnounce(priv, target, NodeID(addr), *tok, rec)
	reply, err := n.request(ctx, addr, &Message{Command: CmdAnnounce, Target: &target, Token: tok, Value: value})
	if err != nil {
		return err
	}
	return reply.Error.asError()
}

// orderLike returns the elements of subset in the order they have in all.
func orderLike(subset, all []netip.AddrPort) []netip.AddrPort {
	out := make([]netip.AddrPort, 0, len(subset))
	for _, a := range all {
		for _, s := range subset {
			if a == s {
				out = append(out, a)
				break
			}
		}
	}
	return out
}

// Signal sends payload for the peer with public key peer through relay and
// returns the peer's answer. This is how a client reaches a server behind a
// NAT: the relay forwards the payload to the address the server's pings
// come from, and the answer back.
func (n *Node) Signal(ctx context.Context, relay netip.AddrPort, peer ed25519.PublicKey, payload []byte) ([]byte, error) {
	if len(peer) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("dht: signal: bad public key length %d", len(peer))
	}
	if len(payload)+ed25519.PublicKeySize > maxValueSize {
		return nil, fmt.Errorf("dht: signal: %w: payload %d bytes", ErrTooLarge, len(payload))
	}
	tok := n.cachedTokenFor(relay)
	if tok == nil {
		reply, err := n.request(ctx, relay, &Message{Command: CmdPing, Pad: 64})
		if err != nil {
			return nil, fmt.Errorf("dht: signal via %s: %w", relay, err)
		}
		tok = reply.Token
	}
	target := KeyTarget(peer)
	value := append(append([]byte(nil), peer...), payload...)
	reply, err := n.request(ctx, relay, &Message{Command: CmdRelay, Target: &target, Token: tok, Value: value})
	if err != nil {
		return nil, fmt.Errorf("dht: signal via %s: %w", relay, err)
	}
	if reply.Error != CodeOK {
		return nil, fmt.Errorf("dht: signal via %s: %w (%s)", relay, reply.Error.asError(), reply.Error)
	}
	return reply.Value, nil
}

// ProbeMode selects where the unsolicited packet of a NAT probe comes from.
type ProbeMode byte

const (
	// ProbeOtherPort: the probed node answers from a fresh port on its own
	// IP. It arrives through address-dependent filtering but not through
	// address-and-port-dependent filtering.
	ProbeOtherPort = ProbeMode(probeOtherPort)
	// ProbeOtherNode: another node, on another IP, sends the packet. It
	// arrives only through endpoint-independent filtering (or no NAT).
	ProbeOtherNode = ProbeMode(probeOtherNode)
)

// ProbeResult is the outcome of a NAT probe.
type ProbeResult struct {
	Arrived     bool
	From        netip.AddrPort
	Unsolicited bool // it came from an IP this node never sent to
}

// NATProbe asks the node at addr for an unsolicited packet (see ProbeMode)
// and waits up to wait for it. Err is set only when the request itself
// failed; a packet that never came is Arrived == false.
func (n *Node) NATProbe(ctx context.Context, addr netip.AddrPort, mode ProbeMode, wait time.Duration) (ProbeResult, error) {
	nonce := rand.Uint64()
	ch := make(chan netip.AddrPort, 1)
	n.mu.Lock()
	n.probeWaits[nonce] = ch
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		delete(n.probeWaits, nonce)
		n.mu.Unlock()
	}()
	value := binary.BigEndian.AppendUint64([]byte{byte(mode)}, nonce)
	reply, err := n.request(ctx, addr, &Message{Command: CmdNATProbe, Value: value})
	if err != nil {
		return ProbeResult{}, err
	}
	if reply.Error != CodeOK {
		return ProbeResult{}, fmt.Errorf("dht: nat probe %s: %w (%s)", addr, reply.Error.asError(), reply.Error)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case from := <-ch:
		n.mu.Lock()
		contacted := n.contactedLocked(from.Addr())
		n.mu.Unlock()
		return ProbeResult{Arrived: true, From: from, Unsolicited: !contacted}, nil
	case <-timer.C:
		return ProbeResult{}, nil
	case <-ctx.Done():
		return ProbeResult{}, ctx.Err()
	}
}

// closestOf returns the closest replies of res, or none when res is nil.
func closestOf(res *queryResult) []*candidate {
	if res == nil {
		return nil
	}
	return res.closest
}
