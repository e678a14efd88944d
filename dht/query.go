package dht

import (
	"bytes"
	"context"
	"crypto/ed25519"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
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

// query runs an iterative lookup toward target in the overlay of family
// fam, sending cmd to each node on the way (FIND_NODE or LOOKUP): the
// lookup state machine decides whom to ask, this loop does the I/O. Nodes
// of other families that replies carry (asked for while that family's
// routing table is short) are handed to learnCross.
func (n *Node) query(ctx context.Context, fam Family, target ID, cmd Command) (*queryResult, error) {
	n.mu.Lock()
	st := n.stacks[fam]
	seeds := make([]netip.AddrPort, 0, n.cfg.K+len(n.bootstrap))
	for _, c := range st.table.closest(target, n.cfg.K) {
		seeds = append(seeds, c.addr)
	}
	st.table.touch(target, time.Now())
	if len(seeds) < n.cfg.K {
		for _, b := range n.bootstrap {
			if FamilyOf(b) == fam {
				seeds = append(seeds, b)
			}
		}
	}
	want := n.wantLocked(fam)
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
				reply, err := n.requestTries(ctx, addr, n.queryMessage(cmd, target, addr, want), 2)
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
			var cross []netip.AddrPort
			r.reply.Closer, cross = splitFamily(n.withoutSelf(r.reply.Closer), fam)
			n.learnCross(cross)
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

// wantLocked is the want mask of a request over family fam: the family
// itself, plus each other family the node has a socket for whose routing
// table is short of k nodes (RequestOptions), so a dual-stack node fills
// both overlays from whichever it reaches first. Zero (nothing asked
// beyond fam) keeps the request what it was before IPv6.
func (n *Node) wantLocked(fam Family) byte {
	if n.cfg.legacyRecords {
		return 0
	}
	want := byte(0)
	for _, st := range n.stacks {
		if st.fam != fam && st.conn != nil && st.table.len() < n.cfg.K {
			want |= st.fam.bit()
		}
	}
	if want != 0 {
		want |= fam.bit()
	}
	return want
}

// splitFamily splits addrs into those of family fam and the rest.
func splitFamily(addrs []netip.AddrPort, fam Family) (same, other []netip.AddrPort) {
	same = addrs[:0:0]
	for _, a := range addrs {
		if FamilyOf(a) == fam {
			same = append(same, a)
		} else {
			other = append(other, a)
		}
	}
	return same, other
}

// learnCross takes nodes of another family a reply named: each is pinged
// from the socket of its family and enters that family's routing table if
// it answers with the id its address implies (maybeAdd), and it becomes a
// bootstrap node of its family, where lookups start while the table is
// short.
func (n *Node) learnCross(addrs []netip.AddrPort) {
	for _, a := range addrs {
		if n.stackFor(a).conn == nil {
			continue
		}
		n.AddBootstrap(a)
		n.maybeAdd(NodeID(a), a)
	}
}

// queryMessage builds a query request; without a token from addr it pads
// itself so the answer may be as large as it needs (see sendReply).
func (n *Node) queryMessage(cmd Command, target ID, addr netip.AddrPort, want byte) *Message {
	m := &Message{Command: cmd, Target: &target}
	m.Value = n.requestValue(cmd, want)
	if tok := n.cachedTokenFor(addr); tok != nil {
		m.Token = tok
		return m
	}
	m.Pad = requestPadTo - len(AppendMessage(nil, m)) - 2
	return m
}

// requestValue is the value of a cmd request (RequestOptions): a LOOKUP
// asks for records with their extensions, and any query may ask for nodes
// of other families.
func (n *Node) requestValue(cmd Command, want byte) []byte {
	if n.cfg.legacyRecords {
		return nil
	}
	v := AppendRequestOptions(nil, RequestOptions{Ext: cmd == CmdLookup, Want: want})
	if len(v) == 0 {
		return nil
	}
	return v
}

// withoutSelf drops the node's own addresses from addrs.
func (n *Node) withoutSelf(addrs []netip.AddrPort) []netip.AddrPort {
	var self []netip.AddrPort
	n.mu.Lock()
	for _, st := range n.stacks {
		self = append(self, st.local, n.publicAddrLocked(st))
	}
	n.mu.Unlock()
	out := addrs[:0:0]
	for _, a := range addrs {
		if !slices.Contains(self, a) {
			out = append(out, a)
		}
	}
	return out
}

// activeFamilies returns the families whose overlays the node has joined,
// or the primary family alone when it has joined none (yet), so that
// operations fail as they always did on a node that has not bootstrapped.
func (n *Node) activeFamilies() []Family {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []Family
	for _, st := range n.stacks {
		if st.joinedLocked() {
			out = append(out, st.fam)
		}
	}
	if len(out) == 0 {
		out = []Family{n.primary}
	}
	return out
}

// Bootstrap joins the network through the bootstrap nodes (the configured
// ones and those AddBootstrap added): it pings them, looks up its own
// neighbourhood, and in adaptive mode checks whether it can be persistent.
// It does so in each family it has a socket for: the pings ask for nodes
// of the node's other families too, so IPv4 bootstrap nodes lead a
// dual-stack node into the IPv6 overlay and the reverse. With no
// bootstrap nodes it returns at once (the first node of a network). It
// fails only when no family could be joined.
func (n *Node) Bootstrap(ctx context.Context) error {
	if n.stacks[IPv4].conn == nil && n.stacks[IPv6].conn == nil {
		return ErrNotStarted
	}
	boot := n.BootstrapNodes()
	if len(boot) == 0 {
		return nil
	}
	// A family's join starts beside the pings, from the bootstrap nodes
	// themselves (its lookup of our own id needs nothing the pings learn):
	// one round trip less before the node has joined. A persistent node
	// waits for the pings, which tell it its public address, the source of
	// its id. A family that only the pings name joins once they answer.
	var wg sync.WaitGroup
	var started [numFamilies]bool
	var found [numFamilies]atomic.Bool // the join's own-id lookup found nodes
	startJoin := func(f Family) {
		started[f] = true
		wg.Go(func() { found[f].Store(n.join(ctx, f)) })
	}
	if n.cfg.Mode != ModePersistent {
		for _, f := range Families {
			if n.stacks[f].conn != nil && slices.ContainsFunc(boot, func(a netip.AddrPort) bool { return FamilyOf(a) == f }) {
				startJoin(f)
			}
		}
	}
	answered := n.pingBootstrap(ctx, boot)
	if more := newOf(n.BootstrapNodes(), boot); len(more) > 0 {
		// Nodes of another family the first pings named.
		for f, c := range n.pingBootstrap(ctx, more) {
			answered[f] += c
		}
	}
	for _, f := range Families {
		if answered[f] > 0 && !started[f] {
			startJoin(f)
		}
	}
	wg.Wait()
	joined := 0
	for _, f := range Families {
		if answered[f] > 0 || found[f].Load() {
			joined++
		}
	}
	if joined == 0 {
		return fmt.Errorf("dht: bootstrap via %v: %w", boot, ErrNoNodes)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("dht: bootstrap: %w", ctx.Err())
	}
	n.mu.Lock()
	select {
	case <-n.joined:
	default:
		close(n.joined)
	}
	n.mu.Unlock()
	return nil
}

// Bootstrapped reports whether a Bootstrap has succeeded, so that a caller
// whose NAT measurement already joined (dhtprobe.Measure does) need not pay
// the round trips again.
func (n *Node) Bootstrapped() bool {
	select {
	case <-n.joined:
		return true
	default:
		return false
	}
}

// Joined is closed once a Bootstrap has succeeded: a caller can wait for
// the join that a NAT measurement makes on its way instead of contacting
// the nodes beside it.
func (n *Node) Joined() <-chan struct{} { return n.joined }

// pingBootstrap pings addrs (those of families the node has a socket for)
// at once and returns how many answered in each family. Each ping asks
// for the nodes of the node's other families; those the replies name are
// added to the bootstrap nodes (learnCross).
func (n *Node) pingBootstrap(ctx context.Context, addrs []netip.AddrPort) [numFamilies]int {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var answered [numFamilies]int
	for _, b := range addrs {
		fam := FamilyOf(b)
		if n.stacks[fam].conn == nil {
			continue
		}
		n.mu.Lock()
		want := n.wantLocked(fam)
		n.mu.Unlock()
		m := &Message{Command: CmdPing, Pad: 64}
		if want != 0 {
			// The answer names up to maxCrossCloser nodes: pad for them.
			m.Value = AppendRequestOptions(nil, RequestOptions{Want: want})
			m.Pad = requestPadTo - len(AppendMessage(nil, m)) - 2
		}
		wg.Go(func() {
			reply, err := n.request(ctx, b, m)
			if err != nil {
				return
			}
			_, cross := splitFamily(n.withoutSelf(reply.Closer), fam)
			n.learnCross(cross)
			mu.Lock()
			answered[fam]++
			mu.Unlock()
		})
	}
	wg.Wait()
	return answered
}

// newOf returns the addresses of list that are not in old.
func newOf(list, old []netip.AddrPort) []netip.AddrPort {
	var out []netip.AddrPort
	for _, a := range list {
		if !slices.Contains(old, a) {
			out = append(out, a)
		}
	}
	return out
}

// join enters family fam's overlay: a forced persistent node settles its
// public address, every node looks up its own neighbourhood, an adaptive
// node checks whether it is reachable, and the far buckets are filled; a
// join that found too little looks again in the background (lookAgain).
// It reports whether the lookup of its own neighbourhood had an answer; a
// family counts as joined when that lookup or a bootstrap ping had one (a
// loaded bootstrap node may answer one and not the other).
func (n *Node) join(ctx context.Context, fam Family) bool {
	began := time.Now()
	st := n.stacks[fam]
	if n.cfg.Mode == ModePersistent {
		n.mu.Lock()
		if a, c := majority(st.samples); c > 0 && !st.persistent {
			n.becomePersistentLocked(a)
		}
		n.mu.Unlock()
	}
	n.mu.Lock()
	self := st.id
	n.mu.Unlock()
	if _, err := n.query(ctx, fam, self, CmdFindNode); err != nil {
		n.log.Debug("dht join lookup failed; looking again later", "family", fam.String(), "err", err)
		n.lookAgain(fam)
		return false
	}
	if n.cfg.Mode == ModeAdaptive {
		// Before the far-bucket refresh: the unsolicited probe must come
		// from a node we never sent to, and the refresh contacts many.
		n.checkPersistence(ctx, fam, began)
	}
	n.refreshFarBuckets(ctx, fam)
	// After the reachability check, whose probe must come from a node we
	// never sent to.
	if n.joinFoundTooLittle(fam) {
		n.log.Debug("dht join found too little; looking again later", "family", fam.String())
		n.lookAgain(fam)
	}
	return true
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

// refreshFarBuckets looks up a random id in each of the farthest buckets
// of fam's overlay, in parallel, so the routing table knows every region of
// the id space.
func (n *Node) refreshFarBuckets(ctx context.Context, fam Family) {
	n.mu.Lock()
	self := n.stacks[fam].id
	n.mu.Unlock()
	var wg sync.WaitGroup
	for prefix := range joinRefreshBuckets {
		var random ID
		_, _ = crand.Read(random[:])
		target := idInBucket(self, prefix, random)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = n.query(ctx, fam, target, CmdFindNode)
		}()
	}
	wg.Wait()
}

// checkPersistence makes an adaptive node persistent in fam when several
// of that family's nodes agree on its public address and a packet from a
// node it never sent to reaches it (it is reachable unsolicited, as
// HyperDHT's firewall check). Behind an IPv6 firewall that drops
// unsolicited packets, as behind a NAT, the node stays ephemeral.
//
// The node's isolated other-node probes (reach.go) decide first: a NAT
// measurement runs one before the join, and behind a NAT its wait ends
// during the join, so the check need not probe and wait persistenceWait
// again (a swarm behind a port-restricted NAT was ready 0.5 s after an
// ephemeral one). Only outcomes decided since the join began count (its
// start, began): a probe still waiting then or started later describes the
// network the node joins through now. An older one may not: the node may
// have moved, or a port mapping appeared since (node's portmap loop joins
// again for that very check, right after a measurement that may have
// failed). The evidence is also about one address: it counts only when it
// is the public address the check would make the node persistent at. With
// no such evidence the check probes the close nodes of that address
// itself, as before; their probes are records too.
func (n *Node) checkPersistence(ctx context.Context, fam Family, began time.Time) {
	n.mu.Lock()
	pub, seenBy := majority(n.stacks[fam].samples)
	n.mu.Unlock()
	if seenBy < 2 {
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	var probing sync.WaitGroup
	defer probing.Wait()
	defer cancel()
	var (
		own          chan struct{} // closed when the check's own probes end; nil until they start
		ownDone      bool
		ownReachable atomic.Bool
	)
	for {
		now := time.Now()
		n.mu.Lock()
		st := n.stacks[fam]
		v, next := reachVerdict(st.probes, pub, began, now)
		changed := st.probesChanged
		if v == reachReachable || (ownDone && ownReachable.Load()) {
			n.becomePersistentLocked(pub)
			v = reachReachable
		}
		n.mu.Unlock()
		switch {
		case v == reachReachable || v == reachUnreachable:
			n.log.Debug("dht reachability checked", "family", fam.String(), "addr", pub, "reachable", v == reachReachable, "probed", own != nil)
			return
		case v == reachUnknown && own == nil:
			own = make(chan struct{})
			probing.Go(func() {
				defer close(own)
				ownReachable.Store(n.probeForPersistence(ctx, fam, pub))
			})
		case v == reachUnknown && ownDone:
			return
		}
		var wake <-chan time.Time
		var timer *time.Timer
		if !next.IsZero() {
			timer = time.NewTimer(next.Sub(now))
			wake = timer.C
		}
		var ownEnd <-chan struct{}
		if !ownDone {
			ownEnd = own // nil until they start: never ready
		}
		select {
		case <-changed:
		case <-wake:
		case <-ownEnd:
			ownDone = true
		case <-ctx.Done():
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// probeForPersistence asks the nodes closest to pub's id for an other-node
// NAT probe, all at once, and reports whether one's packet came from a node
// we never sent to. Isolated probes also leave records (reach.go) that
// checkPersistence watches; a probe whose server names no helper (an older
// server) counts here alone.
func (n *Node) probeForPersistence(ctx context.Context, fam Family, pub netip.AddrPort) bool {
	res, err := n.query(ctx, fam, NodeID(pub), CmdFindNode)
	if err != nil {
		return false
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
		wg.Go(func() {
			p, err := n.NATProbe(probeCtx, c.addr, ProbeOtherNode, func(rtt time.Duration, _ bool) time.Duration { return persistenceWait(rtt, n.cfg.RequestTimeout) })
			if err == nil && p.Unsolicited {
				reachable.Store(true)
				cancel()
			}
		})
	}
	wg.Wait()
	return reachable.Load()
}

// persistenceWait is how long checkPersistence waits for a probe's
// unsolicited packet, given the probe request's round trip: three of them
// and 100 ms (natcheck's filtering probes wait the same), at least
// minPersistenceWait and at most two request timeouts. Behind a NAT the
// packet never comes, and the check is in every adaptive node's join (a
// swarm's default): waiting two request timeouts made every swarm behind a
// home router ready 2.2 s after its start instead of 0.2 s (NAT lab,
// 80 ms RTT). A reachable node's packet follows the probe's answer within
// about a round trip.
func persistenceWait(rtt, requestTimeout time.Duration) time.Duration {
	return min(max(3*rtt+100*time.Millisecond, minPersistenceWait), 2*requestTimeout)
}

// minPersistenceWait bounds persistenceWait below: on a loaded machine a
// helper's packet comes late, and a node that misses it stays ephemeral.
const minPersistenceWait = 500 * time.Millisecond

// FindNode returns the addresses of the nodes closest to target in every
// overlay the node has joined, its primary family's first.
func (n *Node) FindNode(ctx context.Context, target ID) ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	var firstErr error
	for _, f := range n.primaryFirst(n.activeFamilies()) {
		addrs, err := n.FindNodeIn(ctx, f, target)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		out = append(out, addrs...)
	}
	if len(out) == 0 {
		return nil, firstErr
	}
	return out, nil
}

// FindNodeIn returns the addresses of the nodes closest to target in the
// overlay of family fam.
func (n *Node) FindNodeIn(ctx context.Context, fam Family, target ID) ([]netip.AddrPort, error) {
	if fam >= numFamilies || n.stacks[fam].conn == nil {
		return nil, fmt.Errorf("dht: find node in %s: %w", fam, ErrNoFamily)
	}
	res, err := n.query(ctx, fam, target, CmdFindNode)
	if err != nil {
		return nil, err
	}
	out := make([]netip.AddrPort, len(res.closest))
	for i, c := range res.closest {
		out[i] = c.addr
	}
	return out, nil
}

// primaryFirst orders fams with the node's primary family first.
func (n *Node) primaryFirst(fams []Family) []Family {
	slices.SortStableFunc(fams, func(a, b Family) int {
		switch {
		case a == b:
			return 0
		case a == n.primary:
			return -1
		case b == n.primary:
			return 1
		}
		return 0
	})
	return fams
}

// LookupResult is what a topic lookup found.
type LookupResult struct {
	Peers   []PeerRecord
	Hops    int // sequential request rounds to the closest node (the most of any family)
	Queried int // requests sent
}

// Lookup finds the peers announced on topic, in every overlay the node has
// joined (at once); a record found in several is merged.
func (n *Node) Lookup(ctx context.Context, topic ID) (*LookupResult, error) {
	fams := n.activeFamilies()
	results := make([]*LookupResult, len(fams))
	errs := make([]error, len(fams))
	var wg sync.WaitGroup
	for i, f := range fams {
		wg.Go(func() { results[i], errs[i] = n.lookupIn(ctx, f, topic) })
	}
	wg.Wait()
	out := &LookupResult{}
	seen := make(map[[ed25519.PublicKeySize]byte]int) // index in out.Peers
	var firstErr error
	ok := false
	for i, r := range results {
		if errs[i] != nil {
			if firstErr == nil {
				firstErr = errs[i]
			}
			continue
		}
		ok = true
		out.Hops = max(out.Hops, r.Hops)
		out.Queried += r.Queried
		for _, rec := range r.Peers {
			mergeRecord(out, seen, rec)
		}
	}
	if !ok {
		return nil, fmt.Errorf("dht: lookup %s: %w", topic.Short(), firstErr)
	}
	return out, nil
}

// mergeRecord adds rec to out.Peers, or merges it into the record of the
// same key found before: a record with extensions replaces the
// version-1 form of the same record (a node from before record extensions
// answered first).
func mergeRecord(out *LookupResult, seen map[[ed25519.PublicKeySize]byte]int, rec PeerRecord) {
	k := keyOf(rec.PublicKey)
	i, ok := seen[k]
	switch {
	case !ok:
		seen[k] = len(out.Peers)
		out.Peers = append(out.Peers, rec)
	case !out.Peers[i].hasExt() && rec.hasExt():
		out.Peers[i] = rec
	}
}

// lookupIn is Lookup in the overlay of family fam.
func (n *Node) lookupIn(ctx context.Context, fam Family, topic ID) (*LookupResult, error) {
	res, err := n.query(ctx, fam, topic, CmdLookup)
	if err != nil {
		return nil, err
	}
	out := &LookupResult{Hops: res.hops, Queried: res.queried}
	seen := make(map[[ed25519.PublicKeySize]byte]int) // index in out.Peers
	add := func(m *Message) {
		recs, err := ParseRecords(m.Value)
		if err != nil {
			return
		}
		for _, r := range recs {
			mergeRecord(out, seen, r)
		}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex // guards out and seen: the re-asks below add from goroutines of their own
	for _, c := range res.closest {
		if !c.reply.Truncated || c.reply.Token == nil {
			mu.Lock()
			add(c.reply)
			mu.Unlock()
			continue
		}
		// The first answer was trimmed for an unverified source; ask again
		// with the token it gave us for the full record list.
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := n.request(ctx, c.addr, &Message{Command: CmdLookup, Target: &topic, Token: c.reply.Token, Value: n.requestValue(CmdLookup, 0)})
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
	Relays []netip.AddrPort // relays named in the record (IPv4 first)
}

// Announce stores a signed record for the key of priv on topic at the k
// nodes closest to it, in every overlay the node has joined. Records
// expire after RecordTTL: callers re-announce about every half of it.
// Announce makes sure the key has relays (see Relays) and names them in
// the record. The relays and the topic's closest nodes are looked up at
// once, since neither lookup needs the other: only the store waits for
// both (at 80 ms RTT this took the lookups' 3-4 round trips off start-up).
func (n *Node) Announce(ctx context.Context, topic ID, priv ed25519.PrivateKey) (*AnnounceResult, error) {
	// A OnceValues call blocks until the first one has returned.
	relays := sync.OnceValues(func() ([]netip.AddrPort, error) { return n.ensureRelays(ctx, priv) })
	go relays()
	ready := func() error {
		_, err := relays()
		return err
	}
	stored, err := n.storeEverywhere(ctx, topic, ready, func(storing, token ID, v1 bool) *Message {
		rs, _ := relays() // after ready: at once
		r := recordOf(priv.Public().(ed25519.PublicKey), rs)
		r.WebSocketURL = n.cfg.WebSocketURL
		if v1 {
			r = r.WithoutExt()
		}
		return &Message{Command: CmdAnnounce, Target: &topic, Token: &token, Value: signAnnounce(priv, topic, storing, token, r)}
	})
	rs, rerr := relays()
	if rerr != nil {
		return nil, rerr
	}
	if err != nil {
		return nil, fmt.Errorf("dht: announce %s: %w", topic.Short(), err)
	}
	return &AnnounceResult{Stored: stored, Relays: rs}, nil
}

// recordOf builds the record of pub with relays: IPv4 relays in the
// version-1 part, IPv6 ones in the extension.
func recordOf(pub ed25519.PublicKey, relays []netip.AddrPort) PeerRecord {
	rec := PeerRecord{PublicKey: pub}
	for _, r := range relays {
		if FamilyOf(r) == IPv4 {
			rec.Relays = append(rec.Relays, r)
		} else {
			rec.Relays6 = append(rec.Relays6, r)
		}
	}
	return rec
}

// Unannounce removes the record of priv's key on topic from the nodes
// closest to topic.
func (n *Node) Unannounce(ctx context.Context, topic ID, priv ed25519.PrivateKey) error {
	_, err := n.storeEverywhere(ctx, topic, nil, func(storing, token ID, _ bool) *Message {
		return &Message{Command: CmdUnannounce, Target: &topic, Token: &token, Value: signUnannounce(priv, topic, storing, token)}
	})
	if err != nil {
		return fmt.Errorf("dht: unannounce %s: %w", topic.Short(), err)
	}
	return nil
}

// storeEverywhere runs storeAtClosest in every overlay the node has joined,
// at once, and returns how many nodes accepted in all; it fails only when
// none did.
func (n *Node) storeEverywhere(ctx context.Context, target ID, ready func() error, build func(storing, token ID, v1 bool) *Message) (int, error) {
	fams := n.activeFamilies()
	stored := make([]int, len(fams))
	errs := make([]error, len(fams))
	var wg sync.WaitGroup
	for i, f := range fams {
		wg.Go(func() { stored[i], errs[i] = n.storeAtClosest(ctx, f, target, ready, build, n.cfg.K) })
	}
	wg.Wait()
	total := 0
	for _, s := range stored {
		total += s
	}
	if total == 0 {
		return 0, errors.Join(errs...)
	}
	return total, nil
}

// storeAtClosest looks up target in fam's overlay and sends the message
// build makes to each of the closest limit persistent nodes, with the
// token each handed out. It returns how many accepted.
//
// build makes the request for one storing node; v1 asks for a record
// without extensions, sent when the node refused the first one as a bad
// request (a node from before record extensions: see recordExtFlag).
// ready, when not nil, runs between the lookup and the first build: what
// build needs may still be on its way, and an error ends the store.
func (n *Node) storeAtClosest(ctx context.Context, fam Family, target ID, ready func() error, build func(storing, token ID, v1 bool) *Message, limit int) (int, error) {
	res, err := n.query(ctx, fam, target, CmdLookup)
	if err != nil {
		return 0, err
	}
	if ready != nil {
		if err := ready(); err != nil {
			return 0, err
		}
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
		wg.Add(1)
		go func() {
			defer wg.Done()
			reply, err := n.requestAnnounce(ctx, c.addr, func(v1 bool) *Message { return build(*c.reply.ID, *c.reply.Token, v1) })
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
// was never announced), IPv4 first.
func (n *Node) Relays(pub ed25519.PublicKey) []netip.AddrPort {
	n.mu.Lock()
	defer n.mu.Unlock()
	if s := n.announced[keyOf(pub)]; s != nil {
		return append([]netip.AddrPort(nil), s.relays...)
	}
	return nil
}

// ensureRelays picks (once) and registers (every call) the relays of the
// key, in every overlay the node has joined: the MaxRelays persistent nodes
// of each family closest to KeyTarget(key), or this node itself first when
// it is persistent there. Registering is an announce on KeyTarget(key),
// which stores the record there (so a peer that knows only the key finds
// the relays) and makes each relay remember the address our packets come
// from. The record names every relay, so a relay of one family can
// forward to us over the other. The maintenance loop pings the relays so
// the NAT (or firewall) pinhole to each stays open.
//
// Calls for one key that overlap share one registration: a swarm's start
// both listens (Register) and announces, and each did the whole lookup and
// registration round. A call that waits for a round which began before the
// set last lost a relay (keepRelays) runs one of its own after it, so that
// two relays dying at once are both replaced.
func (n *Node) ensureRelays(ctx context.Context, priv ed25519.PrivateKey) ([]netip.AddrPort, error) {
	pub := priv.Public().(ed25519.PublicKey)
	for {
		n.mu.Lock()
		set := n.announced[keyOf(pub)]
		if set == nil {
			set = &relaySet{priv: priv}
			n.announced[keyOf(pub)] = set
		}
		f := set.flight
		if f == nil {
			f = &relayFlight{done: make(chan struct{}), droppedAtStart: set.dropped}
			set.flight = f
			n.mu.Unlock()
			f.relays, f.err = n.registerRelays(ctx, priv, set)
			n.mu.Lock()
			set.flight = nil
			n.mu.Unlock()
			close(f.done)
			return f.relays, f.err
		}
		n.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		n.mu.Lock()
		stale := set.dropped != f.droppedAtStart
		n.mu.Unlock()
		if !stale {
			return slices.Clone(f.relays), f.err
		}
	}
}

// registerRelays is one round of ensureRelays for set, the key's relay set.
func (n *Node) registerRelays(ctx context.Context, priv ed25519.PrivateKey, set *relaySet) ([]netip.AddrPort, error) {
	pub := priv.Public().(ed25519.PublicKey)
	target := KeyTarget(pub)
	n.mu.Lock()
	relays := append([]netip.AddrPort(nil), set.relays...)
	n.mu.Unlock()

	var firstErr error
	var self []netip.AddrPort // our own public addresses where we relay for ourselves
	for _, f := range n.activeFamilies() {
		n.mu.Lock()
		st := n.stacks[f]
		persistent, pubAddr := st.persistent, n.publicAddrLocked(st)
		n.mu.Unlock()
		if persistent && pubAddr.IsValid() {
			self = append(self, pubAddr)
		}
		fam, _ := splitFamily(relays, f)
		if len(fam) >= MaxRelays {
			continue
		}
		// Pick relays, or top up a set that lost some.
		res, err := n.query(ctx, f, target, CmdLookup)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		if persistent && pubAddr.IsValid() && !slices.Contains(fam, pubAddr) {
			fam = append([]netip.AddrPort{pubAddr}, fam...)
		}
		for _, c := range closestOf(res) {
			if len(fam) == MaxRelays {
				break
			}
			if c.reply.ID != nil && !slices.Contains(fam, c.addr) {
				fam = append(fam, c.addr)
			}
		}
		others := relays[:0:0]
		for _, r := range relays {
			if FamilyOf(r) != f {
				others = append(others, r)
			}
		}
		relays = append(others, fam...)
	}
	if len(relays) == 0 {
		if firstErr == nil {
			firstErr = ErrNoNodes
		}
		return nil, fmt.Errorf("dht: find relays: %w", firstErr)
	}
	relays = sortFamilies(relays)
	rec := recordOf(pub, relays)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var live []netip.AddrPort
	seen := make(map[netip.AddrPort]netip.AddrPort)
	for _, r := range relays {
		if slices.Contains(self, r) {
			mu.Lock()
			live = append(live, r)
			mu.Unlock()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			from, err := n.registerAt(ctx, r, target, priv, rec)
			if err != nil {
				n.log.Debug("relay registration failed", "addr", r, "err", err)
				return
			}
			mu.Lock()
			live = append(live, r)
			seen[r] = from
			mu.Unlock()
		}()
	}
	wg.Wait()
	if len(live) == 0 {
		return nil, fmt.Errorf("dht: no relay accepted the registration: %w", ErrNoNodes)
	}
	live = orderLike(live, relays)
	n.mu.Lock()
	set.relays, set.seen = live, seen
	n.mu.Unlock()
	return live, nil
}

// sortFamilies orders addrs IPv4 first, keeping the order within a family.
func sortFamilies(addrs []netip.AddrPort) []netip.AddrPort {
	slices.SortStableFunc(addrs, func(a, b netip.AddrPort) int { return int(FamilyOf(a)) - int(FamilyOf(b)) })
	return addrs
}

// registerAt announces rec on target at the relay at addr.
// It returns our address as the relay saw the registration come from.
func (n *Node) registerAt(ctx context.Context, addr netip.AddrPort, target ID, priv ed25519.PrivateKey, rec PeerRecord) (netip.AddrPort, error) {
	tok := n.cachedTokenFor(addr)
	if tok == nil {
		reply, err := n.request(ctx, addr, &Message{Command: CmdPing, Pad: 64})
		if err != nil {
			return netip.AddrPort{}, err
		}
		if reply.Token == nil {
			return netip.AddrPort{}, ErrBadToken
		}
		tok = reply.Token
	}
	reply, err := n.requestAnnounce(ctx, addr, func(v1 bool) *Message {
		r := rec
		if v1 {
			r = rec.WithoutExt()
		}
		return &Message{Command: CmdAnnounce, Target: &target, Token: tok, Value: signAnnounce(priv, target, NodeID(addr), *tok, r)}
	})
	if err != nil {
		return netip.AddrPort{}, err
	}
	return unmapAddrPort(reply.Addr), reply.Error.asError()
}

// requestAnnounce sends addr the announce build makes. A node from before
// record extensions refuses a record with them as a bad request (see
// recordExtFlag); it then gets the version-1 form, build(true), when that
// differs. Topic announces and relay registrations both go through here:
// registrations had no fallback, so a dual-stack key whose IPv4 relays
// were all old nodes got no IPv4 relay, and old lookers could not reach it.
func (n *Node) requestAnnounce(ctx context.Context, addr netip.AddrPort, build func(v1 bool) *Message) (*Message, error) {
	m := build(false)
	reply, err := n.request(ctx, addr, m)
	if err == nil && reply.Error == CodeBadRequest {
		if m1 := build(true); !bytes.Equal(m1.Value, m.Value) {
			reply, err = n.request(ctx, addr, m1)
		}
	}
	return reply, err
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
// come from, and the answer back. A relay of a family whose overlay the
// node has not joined fails at once with ErrNoFamily, so a caller trying a
// record's relays in turn moves on to one it can reach.
func (n *Node) Signal(ctx context.Context, relay netip.AddrPort, peer ed25519.PublicKey, payload []byte) ([]byte, error) {
	if len(peer) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("dht: signal: bad public key length %d", len(peer))
	}
	if len(payload)+ed25519.PublicKeySize > maxValueSize {
		return nil, fmt.Errorf("dht: signal: %w: payload %d bytes", ErrTooLarge, len(payload))
	}
	relay = unmapAddrPort(relay)
	if !n.Speaks(FamilyOf(relay)) && n.Speaks(otherFamily(FamilyOf(relay))) {
		return nil, fmt.Errorf("dht: signal via %s: %w", relay, ErrNoFamily)
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
// and, once the node has answered, waits up to wait(rtt, isolated) for it,
// rtt being the request's round trip (from the first send: an upper bound
// when it was retransmitted). Isolated means that the packet's sender is
// known and the node sends nothing to its IP (ErrHeldForProbe) until
// NATProbe returns: the other-port packet comes from addr's IP, which we
// just sent to anyway; the other-node packet from a helper the reply names
// (a server from before that field names none). The caller may then
// contact other nodes during the wait. Err is set only when the request
// itself failed; a packet that never came is Arrived == false.
func (n *Node) NATProbe(ctx context.Context, addr netip.AddrPort, mode ProbeMode, wait func(rtt time.Duration, isolated bool) time.Duration) (ProbeResult, error) {
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
	if mode == ProbeOtherNode {
		value = n.appendContacted(value, FamilyOf(unmapAddrPort(addr)))
	}
	// The wait is timed from the answered try: a lost first request must not
	// make the probe wait its whole second again (3 RTT + 100 ms of an RTT
	// that held a 1 s timeout): at 5 % loss that cost every second client
	// two seconds. Each try makes the helper send its packet again, so the
	// last one's round trip is the one the packet follows.
	reply, sent, err := n.requestLastSent(ctx, addr, &Message{Command: CmdNATProbe, Value: value}, n.cfg.Retries+1)
	if err != nil {
		return ProbeResult{}, err
	}
	rtt := time.Since(sent)
	if reply.Error == CodeUnknownPeer && mode == ProbeOtherNode {
		return ProbeResult{}, fmt.Errorf("dht: nat probe %s: %w", addr, ErrNoStranger)
	}
	if reply.Error != CodeOK {
		return ProbeResult{}, fmt.Errorf("dht: nat probe %s: %w (%s)", addr, reply.Error.asError(), reply.Error)
	}
	isolated := mode == ProbeOtherPort
	if mode == ProbeOtherNode {
		r := reader{b: reply.Value}
		if helper := r.addr(); r.err == nil && helper.IsValid() {
			defer n.hold(helper)()
			isolated = true
		}
	}
	d := wait(rtt, isolated)
	st := n.stackFor(unmapAddrPort(addr))
	record := mode == ProbeOtherNode && isolated && reply.Addr.IsValid()
	if record {
		// Evidence for an adaptive node's reachability check (reach.go).
		until := time.Now().Add(max(d, persistenceWait(rtt, n.cfg.RequestTimeout)))
		n.mu.Lock()
		st.openProbeLocked(nonce, reply.Addr, until)
		n.mu.Unlock()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case from := <-ch:
		n.mu.Lock()
		contacted := n.contactedLocked(from.Addr())
		// The packet may have come before the record was opened.
		st.probeArrivedLocked(nonce, !contacted, time.Now())
		n.mu.Unlock()
		return ProbeResult{Arrived: true, From: from, Unsolicited: !contacted}, nil
	case <-timer.C:
		// The record stays open until its own window ends.
		return ProbeResult{}, nil
	case <-ctx.Done():
		if record {
			n.mu.Lock()
			st.dropProbeLocked(nonce)
			n.mu.Unlock()
		}
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
