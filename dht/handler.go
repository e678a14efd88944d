package dht

import (
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/swarmdb/swarmdb/internal/demux"
	"github.com/swarmdb/swarmdb/internal/udpopt"
)

// readLoop owns the read side of one family's socket. It classifies each
// datagram by its first byte (internal/demux): DHT packets are handled
// here and plain STUN binding requests answered here; every other class
// goes to the handler registered for it (Handle). Unknown first bytes, and
// classes nobody registered for, are dropped.
//
// Where the socket coalesces received runs (udpopt.SetGRO), one read may
// bring a burst of a session's datagrams; each is dispatched and counted
// on its own, exactly as if it had been read alone.
func (n *Node) readLoop(st *stack) {
	defer n.wg.Done()
	// 64 KiB holds any datagram and any run the kernel coalesces with its
	// default GRO limit (64 KiB); what a longer run loses past the whole
	// datagrams that fit is counted as one dropped datagram.
	buf := make([]byte, 64<<10)
	r := udpopt.NewSegmentReader(st.conn)
	for {
		segs, err := r.Read(buf)
		if err != nil {
			select {
			case <-n.closed:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			n.log.Warn("dht socket read failed", "err", err)
			return
		}
		if segs.Truncated {
			n.ctr.packetsIn.Add(1)
			n.ctr.droppedMalformed.Add(1)
		}
		for b, ok := segs.Next(); ok; b, ok = segs.Next() {
			n.dispatch(b, segs.From)
		}
	}
}

// dispatch handles one datagram the read loop got. b is a slice of the
// loop's buffer: whoever keeps it copies it (demux.Handler).
func (n *Node) dispatch(b []byte, src netip.AddrPort) {
	n.ctr.packetsIn.Add(1)
	switch class := demux.Classify(b); {
	case class == demux.DHT:
		n.handlePacket(b, src)
	case class == demux.STUN && n.answerSTUN(b, src):
		// a Binding request to this node as a STUN server
	case n.handlers.Dispatch(class, b, src):
		if class == demux.KRPC {
			n.ctr.krpcPackets.Add(1)
		} else {
			n.ctr.otherPackets.Add(1)
		}
	default:
		n.ctr.droppedMalformed.Add(1)
	}
}

func (n *Node) handlePacket(b []byte, src netip.AddrPort) {
	m, err := ParseMessage(b)
	switch {
	case errors.Is(err, ErrBadVersion):
		n.ctr.droppedBadVersion.Add(1)
		return
	case err != nil:
		n.ctr.droppedMalformed.Add(1)
		return
	}
	if m.Response {
		n.handleResponse(m, src)
		return
	}
	n.handleRequest(m, src, len(b))
}

func (n *Node) handleResponse(m *Message, src netip.AddrPort) {
	n.mu.Lock()
	pt, ok := n.pending[m.TID]
	if !ok || pt.req.to != src {
		n.mu.Unlock()
		n.ctr.droppedUnexpectedReply.Add(1)
		return
	}
	delete(n.pending, m.TID)
	a := answered{msg: m, sent: pt.sent, rtt: time.Since(pt.sent)}
	st := n.stackFor(src)
	if m.Addr.IsValid() && FamilyOf(m.Addr) == st.fam {
		st.samples = append(st.samples, addrSample{by: src.Addr(), addr: m.Addr})
		if len(st.samples) > maxSamples {
			st.samples = st.samples[1:]
		}
	}
	var pingOldest *contact
	if m.ID != nil {
		if *m.ID == NodeID(src) {
			if c := st.table.seen(*m.ID, src, time.Now()); c != nil {
				copied := *c // the table owns c; read it only under mu
				pingOldest = &copied
			}
		} else {
			n.ctr.ignoredBadID.Add(1)
			m.ID = nil
		}
	}
	n.mu.Unlock()
	n.ctr.repliesIn.Add(1)
	n.rememberToken(src, m.Token)
	select {
	case pt.req.ch <- a:
	default: // another try's reply came first
	}
	if pingOldest != nil {
		n.goTracked(func() { n.evictionPing(pingOldest) })
	}
}

// evictionPing decides a full bucket: the oldest contact stays if it
// answers, otherwise the pending newcomer replaces it.
func (n *Node) evictionPing(c *contact) {
	_, err := n.requestTries(n.closedCtx(), c.addr, &Message{Command: CmdPing}, 2)
	n.mu.Lock()
	defer n.mu.Unlock()
	table := n.stackFor(c.addr).table
	if err != nil {
		table.failed(c.id)
		return
	}
	table.alive(c.id, time.Now())
}

func (n *Node) handleRequest(m *Message, src netip.AddrPort, reqLen int) {
	now := time.Now()
	n.mu.Lock()
	allowed := n.limiter.allow(src.Addr(), now)
	verified := n.tokens.valid(m.Token, src.Addr(), now)
	token := n.tokens.issue(src.Addr(), now)
	st := n.stackFor(src)
	persistent, self := st.persistent, st.id
	if n.cfg.Mode == ModePersistent && !persistent && m.Addr.IsValid() && FamilyOf(m.Addr) == st.fam {
		// A forced-persistent node that cannot know its public address
		// (bound to 0.0.0.0, no --public-ip, no bootstrap) learns it from
		// the address requests were sent to.
		st.samples = append(st.samples, addrSample{by: src.Addr(), addr: m.Addr})
		if a, c := majority(st.samples); c >= 1 {
			n.becomePersistentLocked(a)
			persistent, self = true, st.id
		}
	}
	n.mu.Unlock()
	if !allowed {
		n.ctr.droppedRateLimited.Add(1)
		return
	}
	n.ctr.requestsIn.Add(1)
	if m.ID != nil {
		if *m.ID == NodeID(src) {
			n.maybeAdd(*m.ID, src)
		} else {
			n.ctr.ignoredBadID.Add(1)
		}
	}

	reply := &Message{Response: true, Command: m.Command, TID: m.TID, Addr: src, Token: &token}
	if persistent {
		reply.ID = &self
	}
	var records []PeerRecord
	switch m.Command {
	case CmdPing:
		reply.Closer = n.crossCloser(m, src, self)
	case CmdFindNode:
		if m.Target == nil {
			reply.Error = CodeBadRequest
			break
		}
		reply.Closer = append(n.closerNodes(st, *m.Target, src), n.crossCloser(m, src, *m.Target)...)
	case CmdLookup:
		if m.Target == nil {
			reply.Error = CodeBadRequest
			break
		}
		reply.Closer = append(n.closerNodes(st, *m.Target, src), n.crossCloser(m, src, *m.Target)...)
		if persistent {
			n.mu.Lock()
			records = n.store.get(*m.Target, n.cfg.LookupLimit, now)
			n.mu.Unlock()
			records = reachableRecords(records, requesterFamilies(m, src))
			if !ParseRequestOptions(m.Value).Ext || n.cfg.legacyRecords {
				records = withoutExt(records) // a requester from before record extensions
			}
		}
	case CmdAnnounce, CmdUnannounce:
		reply.Error = n.handleStore(m, src, verified, persistent, self, now)
	case CmdRelay:
		if n.handleRelay(m, src, verified, reply) {
			return // answered asynchronously
		}
	case CmdSignal:
		if n.handleSignal(m, src, reply) {
			return
		}
	case CmdNATProbe:
		reply.Error = n.handleNATProbe(m, src, reply)
	case CmdProbeReply:
		n.handleProbeReply(m, src)
		return // unsolicited by design: never answered
	case CmdTURN:
		n.handleTURN(m, src, verified, reply)
	default:
		reply.Error = CodeUnknownCommand
	}
	n.sendReply(reply, records, src, reqLen, verified)
}

// requesterFamilies is the family mask a requester can use: the families
// it asked for (RequestOptions.Want), or the one its request came over.
func requesterFamilies(m *Message, src netip.AddrPort) byte {
	if want := ParseRequestOptions(m.Value).Want; want != 0 {
		return want
	}
	return FamilyOf(src).bit()
}

// reachableRecords drops the records whose relays are all of families the
// requester cannot use (an IPv6-only announcer, asked about over IPv4 by a
// node that wants no IPv6): it could only fail to reach them, and a node
// from before IPv6 sees exactly the records it saw before. A record with no
// relays at all is kept.
func reachableRecords(recs []PeerRecord, fams byte) []PeerRecord {
	out := recs[:0:0]
	for _, r := range recs {
		all := r.AllRelays()
		ok := len(all) == 0
		for _, a := range all {
			ok = ok || fams&FamilyOf(a).bit() != 0
		}
		if ok {
			out = append(out, r)
		}
	}
	return out
}

// sendReply encodes reply (with records as its value for LOOKUP) and sends
// it. To a source that has not proven its address with a token, the reply
// is trimmed to the size of the request — records first, then closer
// nodes, then our token and id — so the DHT cannot amplify a spoofed
// flood. Requesters pad requests that expect large answers.
func (n *Node) sendReply(reply *Message, records []PeerRecord, dst netip.AddrPort, reqLen int, verified bool) {
	// An unverified source gets no more bytes than it sent (no
	// amplification); anyone gets at most one datagram, and no more value
	// bytes than ParseMessage accepts. Records beyond what
	// fits are left out; recordStore.get returns them in a random order each
	// time, so the k nodes storing a large topic each return a different
	// share of it.
	limit := reqLen
	if verified {
		limit = MaxPacketSize
	}
	var b []byte
	for {
		if reply.Command == CmdLookup && reply.Error == CodeOK {
			reply.Value = AppendRecords(nil, records)
		}
		b = AppendMessage(b[:0], reply)
		if len(b) <= limit && len(reply.Value) <= maxValueSize {
			break
		}
		reply.Truncated = true
		switch {
		case len(records) > 0:
			records = records[:len(records)-1]
		case len(reply.Closer) > 0:
			reply.Closer = reply.Closer[:len(reply.Closer)-1]
		case reply.Token != nil:
			reply.Token = nil
		case reply.ID != nil:
			reply.ID = nil
		case reply.Value != nil:
			reply.Value = nil
		default:
			n.ctr.repliesTruncated.Add(1)
			return // cannot be made small enough: stay silent
		}
	}
	if reply.Truncated {
		n.ctr.repliesTruncated.Add(1)
	}
	_ = n.writeTo(b, dst)
}

// closerNodes returns the k closest contacts of st's family to target,
// excluding the requester itself.
func (n *Node) closerNodes(st *stack, target ID, exclude netip.AddrPort) []netip.AddrPort {
	n.mu.Lock()
	cs := st.table.closest(target, n.cfg.K+1)
	n.mu.Unlock()
	out := make([]netip.AddrPort, 0, len(cs))
	for _, c := range cs {
		if c.addr != exclude && len(out) < n.cfg.K {
			out = append(out, c.addr)
		}
	}
	return out
}

// crossCloser returns the nodes of the other families a request asks for
// (RequestOptions.Want): this node's own address there first, when it is
// persistent there, then the contacts closest to target, maxCrossCloser in
// all. This is how a node that joined through one family finds the other
// family's overlay (a dual-stack node given only IPv4 bootstrap nodes
// learns IPv6 ones).
func (n *Node) crossCloser(m *Message, src netip.AddrPort, target ID) []netip.AddrPort {
	want := ParseRequestOptions(m.Value).Want
	if want == 0 || n.cfg.legacyRecords {
		return nil
	}
	var out []netip.AddrPort
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, st := range n.stacks {
		if want&st.fam.bit() == 0 || st.fam == FamilyOf(src) || st.conn == nil {
			continue
		}
		self := netip.AddrPort{}
		if st.persistent {
			// Where its id says it is; what others report may be unknown
			// yet (the first node of a network).
			self = st.at
			out = append(out, self)
		}
		for _, c := range st.table.closest(target, maxCrossCloser) {
			if len(out) < maxCrossCloser && c.addr != self {
				out = append(out, c.addr)
			}
		}
	}
	return out
}

// maybeAdd puts a node that sent us a request with a valid id into the
// routing table — after a ping proves the address is real, since a request
// source can be spoofed and a reply cannot. The ping is sent twice if need
// be: a newcomer may contact us only during its join, and one lost or late
// reply (a loaded machine, a lossy path) would otherwise leave it out of our
// table until a bucket refresh happens to find it.
func (n *Node) maybeAdd(id ID, addr netip.AddrPort) {
	n.mu.Lock()
	st := n.stackFor(addr)
	if st.conn == nil || st.table.has(id) || n.verifying[addr] || len(n.verifying) >= maxVerifying {
		n.mu.Unlock()
		return
	}
	n.verifying[addr] = true
	n.mu.Unlock()
	n.goTracked(func() {
		// The reply's id is checked and added by handleResponse.
		_, _ = n.requestTries(n.closedCtx(), addr, &Message{Command: CmdPing}, 2)
		n.mu.Lock()
		delete(n.verifying, addr)
		n.mu.Unlock()
	})
}

func (n *Node) handleStore(m *Message, src netip.AddrPort, verified, persistent bool, self ID, now time.Time) ErrorCode {
	if !persistent {
		return CodeNotStoring
	}
	if m.Target == nil || m.Value == nil {
		return CodeBadRequest
	}
	if !verified {
		n.ctr.refusedBadToken.Add(1)
		return CodeBadToken
	}
	if m.Command == CmdAnnounce {
		rec, err := verifyAnnounce(m.Value, *m.Target, self, *m.Token)
		if err == nil && n.cfg.legacyRecords && rec.hasExt() {
			err = ErrBadRecord // what the parser before extensions says
		}
		if code := n.refusal(err); code != CodeOK {
			return code
		}
		n.mu.Lock()
		stored := n.store.put(*m.Target, rec, src, now)
		n.mu.Unlock()
		if !stored {
			return CodeRateLimited
		}
		n.ctr.announcesStored.Add(1)
		return CodeOK
	}
	pub, err := verifyUnannounce(m.Value, *m.Target, self, *m.Token)
	if code := n.refusal(err); code != CodeOK {
		return code
	}
	n.mu.Lock()
	n.store.remove(*m.Target, pub)
	n.mu.Unlock()
	return CodeOK
}

// refusal counts and maps a record verification error.
func (n *Node) refusal(err error) ErrorCode {
	switch {
	case err == nil:
		return CodeOK
	case errors.Is(err, ErrBadSignature):
		n.ctr.refusedBadSignature.Add(1)
		return CodeBadSignature
	default:
		n.ctr.refusedBadRecord.Add(1)
		return CodeBadRequest
	}
}

// handleRelay forwards a client's signaling payload to the announcer of
// the key and the announcer's answer back. It reports whether the answer
// is sent asynchronously.
func (n *Node) handleRelay(m *Message, src netip.AddrPort, verified bool, reply *Message) bool {
	if m.Target == nil || len(m.Value) < ed25519.PublicKeySize {
		reply.Error = CodeBadRequest
		return false
	}
	pub := m.Value[:ed25519.PublicKeySize]
	if KeyTarget(pub) != *m.Target {
		reply.Error = CodeBadRequest
		return false
	}
	if !verified {
		// The answer can be larger than the request: only for sources
		// that proved their address.
		n.ctr.refusedBadToken.Add(1)
		reply.Error = CodeBadToken
		return false
	}
	if n.ownsKey(pub) {
		// We are the announcer: answer directly.
		return n.answerSignal(ed25519.PublicKey(pub), src, m.Value[ed25519.PublicKeySize:], reply)
	}
	forwardTo := func() (netip.AddrPort, bool) {
		n.mu.Lock()
		defer n.mu.Unlock()
		return n.store.forwardFor(pub, time.Now())
	}
	if _, ok := forwardTo(); !ok {
		reply.Error = CodeUnknownPeer
		reply.Closer = n.closerNodes(n.stackFor(src), *m.Target, src)
		return false
	}
	select {
	case n.relaySem <- struct{}{}:
	default:
		reply.Error = CodeRateLimited
		return false
	}
	fwd := AppendAddr(append([]byte(nil), pub...), src)
	fwd = append(fwd, m.Value[ed25519.PublicKeySize:]...)
	n.goTracked(func() {
		defer func() { <-n.relaySem }()
		// Two tries, each to the address registered at that moment: an
		// announcer whose NAT mapping changed registers again, and the
		// retry then finds it.
		var ans *Message
		err := ErrNoRelay // the registration expired meanwhile
		for range relayForwardTries {
			to, ok := forwardTo()
			if !ok {
				break
			}
			if ans, err = n.requestTries(n.closedCtx(), to, &Message{Command: CmdSignal, Value: fwd}, 1); err == nil {
				break
			}
		}
		switch {
		case err != nil:
			reply.Error = CodeRelayFailed
		case ans.Error != CodeOK:
			reply.Error = ans.Error
		default:
			reply.Value = ans.Value
			n.ctr.relaysForwarded.Add(1)
		}
		n.sendReply(reply, nil, src, 0, true)
	})
	return true
}

// relayForwardTries is how often a relay sends a forwarded signal to the
// announcer before it answers CodeRelayFailed.
const relayForwardTries = 2

// handleSignal runs on the announcer: a relay forwards a client's payload.
func (n *Node) handleSignal(m *Message, src netip.AddrPort, reply *Message) bool {
	r := reader{b: m.Value}
	pub := r.take(ed25519.PublicKeySize)
	client := r.addr()
	if r.err != nil || !client.IsValid() {
		reply.Error = CodeBadRequest
		return false
	}
	if !n.ownsKey(pub) {
		reply.Error = CodeUnknownPeer
		return false
	}
	return n.answerSignal(ed25519.PublicKey(append([]byte(nil), pub...)), client, r.b, reply)
}

// answerSignal calls OnSignal on its own goroutine and sends its answer.
func (n *Node) answerSignal(to ed25519.PublicKey, client netip.AddrPort, payload []byte, reply *Message) bool {
	if n.cfg.OnSignal == nil {
		reply.Error = CodeUnknownPeer
		return false
	}
	select {
	case n.relaySem <- struct{}{}:
	default:
		reply.Error = CodeRateLimited
		return false
	}
	payload = append([]byte(nil), payload...)
	dst := reply.Addr
	n.goTracked(func() {
		defer func() { <-n.relaySem }()
		ans := n.cfg.OnSignal(to, client, payload)
		if ans == nil {
			reply.Error = CodeRelayFailed
		} else {
			reply.Value = ans
			n.ctr.signalsAnswered.Add(1)
		}
		// Signal requests come from relays we chose and ping; relay
		// requests to us carried a valid token.
		n.sendReply(reply, nil, dst, 0, true)
	})
	return true
}

func (n *Node) ownsKey(pub []byte) bool {
	if len(pub) != ed25519.PublicKeySize {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	_, ok := n.announced[keyOf(pub)]
	return ok
}

// NAT probe modes, the first byte of a CmdNATProbe value.
const (
	probeOtherPort byte = 1 // answer from a fresh socket: same IP, new port
	probeOtherNode byte = 2 // ask another node (another IP) to send the packet
	probeForward   byte = 3 // node to node: send the packet to the address given
)

// handleNATProbe serves the filtering check of NAT classification (RFC
// 5780 §4.4 in spirit, without a second IP on this node): the requester
// learns whether packets from an address it never sent to reach it. An
// other-node probe's reply names the helper that sends the packet, so the
// requester can hold its own packets to it while it waits (older
// requesters ignore the value).
func (n *Node) handleNATProbe(m *Message, src netip.AddrPort, reply *Message) ErrorCode {
	if len(m.Value) < 9 {
		return CodeBadRequest
	}
	nonce := m.Value[1:9]
	switch m.Value[0] {
	case probeOtherPort:
		st := n.stackFor(src)
		pc, err := n.cfg.Net.ListenPacket(st.fam.network(), netip.AddrPortFrom(st.local.Addr(), 0).String())
		if err != nil {
			return CodeRelayFailed
		}
		pkt := AppendMessage(nil, &Message{Command: CmdProbeReply, Addr: src, Value: append([]byte(nil), nonce...)})
		_, _ = pc.WriteTo(pkt, net.UDPAddrFromAddrPort(src))
		_ = pc.Close()
		return CodeOK
	case probeOtherNode:
		helper, ok := n.strangerFor(src, readContacted(m.Value[9:]))
		if !ok {
			return CodeUnknownPeer
		}
		fwd := append([]byte{probeForward}, nonce...)
		fwd = AppendAddr(fwd, src)
		_ = n.send(helper, &Message{Command: CmdNATProbe, TID: rand.Uint32(), Addr: helper, Value: fwd})
		reply.Value = AppendAddr(nil, helper)
		return CodeOK
	case probeForward:
		// Only routing-table nodes may make us send to a third address.
		n.mu.Lock()
		known := n.stackFor(src).table.hasAddr(src)
		n.mu.Unlock()
		r := reader{b: m.Value[9:]}
		dst := r.addr()
		if !known || r.err != nil || !dst.IsValid() {
			return CodeBadRequest
		}
		_ = n.send(dst, &Message{Command: CmdProbeReply, Addr: dst, Value: append([]byte(nil), nonce...)})
		return CodeOK
	}
	return CodeBadRequest
}

// strangerFor picks the node that sends the unsolicited packet of a probe
// from src: a contact on another IP than ours and src's, among the K
// farthest from src's id. The requester's lookups went near its own id, so
// far nodes are the ones it most likely never sent to; but its own id is
// random until it is persistent, and when its lookups had gone that way
// the five farthest were often all contacted.
//
// The requester may list the IPs it has already sent to (appendContacted); none of them is
// picked. Without the list (older nodes), a requester that had to move on from a first
// server that failed often got that server as its "stranger", and filtering unknown.
func (n *Node) strangerFor(src netip.AddrPort, contacted []netip.Addr) (netip.AddrPort, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	// The point farthest from src's id is its bitwise complement.
	far := NodeID(src)
	for i := range far {
		far[i] = ^far[i]
	}
	st := n.stackFor(src)
	pub := n.publicAddrLocked(st).Addr()
	var picks []netip.AddrPort
	for _, c := range st.table.closest(far, 3*n.cfg.K) {
		if a := c.addr.Addr(); a != src.Addr() && a != pub && a != st.local.Addr() && !slices.Contains(contacted, a) {
			picks = append(picks, c.addr)
			if len(picks) == n.cfg.K {
				break
			}
		}
	}
	if len(picks) == 0 {
		return netip.AddrPort{}, false
	}
	return picks[rand.IntN(len(picks))], true
}

// maxProbeContacted bounds the contacted IPs a NAT probe request lists: enough for a
// measurement, which runs before the node joins and has sent to a few nodes at most. A node
// that has sent to more lists none; the requester's own check (ProbeResult.Unsolicited)
// still catches a helper it had contacted.
const maxProbeContacted = 16

// appendContacted appends to a NAT probe request the IPs of family fam this node has sent
// to, as a count byte and addresses (port 0), or a zero count when there are too many.
func (n *Node) appendContacted(b []byte, fam Family) []byte {
	n.mu.Lock()
	defer n.mu.Unlock()
	var ips []netip.Addr
	for ip := range n.sentIPs {
		if FamilyOf(netip.AddrPortFrom(ip, 0)) != fam {
			continue
		}
		if len(ips) == maxProbeContacted || n.sentOverflow {
			// Too many to list: stop here rather than walk up to maxSentIPs under n.mu.
			ips = nil
			break
		}
		ips = append(ips, ip)
	}
	b = append(b, byte(len(ips)))
	for _, ip := range ips {
		b = AppendAddr(b, netip.AddrPortFrom(ip, 0))
	}
	return b
}

// readContacted parses the list appendContacted wrote; a missing or malformed list is empty.
func readContacted(b []byte) []netip.Addr {
	if len(b) == 0 {
		return nil
	}
	r := reader{b: b[1:]}
	var ips []netip.Addr
	for range min(int(b[0]), maxProbeContacted) {
		a := r.addr()
		if r.err != nil {
			return nil
		}
		ips = append(ips, a.Addr())
	}
	return ips
}

func (n *Node) handleProbeReply(m *Message, src netip.AddrPort) {
	if len(m.Value) != 8 {
		return
	}
	nonce := binary.BigEndian.Uint64(m.Value)
	n.ctr.probeRepliesReceived.Add(1)
	n.mu.Lock()
	ch := n.probeWaits[nonce]
	contacted := n.contactedLocked(src.Addr())
	n.stackFor(src).probeArrivedLocked(nonce, !contacted, time.Now())
	n.mu.Unlock()
	if !contacted {
		n.ctr.probeRepliesUnsolicited.Add(1)
	}
	if ch != nil {
		select {
		case ch <- src:
		default:
		}
	}
}
