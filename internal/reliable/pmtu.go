package reliable

// Path MTU discovery: DPLPMTUD (RFC 8899) as RFC 9000 §14.3 applies it to
// QUIC, which the secure package had from quic-go before. Packets start at
// Config.PacketSize, which every path carries (the IPv6 minimum MTU,
// conn.go); once the connection has an RTT sample, it sends probes, packets
// of exactly a candidate size made of PING and PADDING (§14.4), one at a
// time, and moves its packet size up to each one acknowledged. The search
// is binary between the size known to pass and the smallest known to fail,
// starting at the ceiling (Config.MaxPacketSize), which most paths carry,
// so that usually one probe settles it.
//
// A probe is ack-eliciting, so loss detection (recovery.go) finds it
// acknowledged or lost like any packet. But it is not in flight and the
// congestion controller never hears of it: a lost probe says the packet was
// too large, not that the path is congested, and must not trigger a
// congestion response (RFC 9000 §14.4, RFC 8899 §3 item 7). RFC 9000 §14.4
// does say probes consume congestion window; here a probe waits for room in
// the window and the pacer like data, but does not hold that room until it
// is acknowledged or lost: one packet per RTT at most.

const (
	// pmtuSearchGap ends the search: once the largest size known to pass
	// and the smallest known to fail (or the ceiling) are closer than this,
	// another probe would gain less than a STREAM frame header's worth per
	// packet. RFC 8899 §5.3.2 leaves the choice of probe sizes to the
	// implementation.
	pmtuSearchGap = 16
	// pmtuBlackHolePTOs: after this many probe timeouts in a row without an
	// ACK, packets larger than Config.PacketSize are assumed to have
	// stopped passing (a route change, a tunnel: RFC 8899 §4.3's black
	// hole, RFC 9000 §14.3). The size falls back and the search starts
	// again; a path that is simply down loses nothing by it. Two is about
	// three PTO periods of silence, four probes lost in a row: more than
	// random loss explains.
	pmtuBlackHolePTOs = 2
	// pmtuMaxProbes is how many probes of one size must be lost in a row
	// before the size counts as too large (RFC 8899 §5.1.2, MAX_PROBES, its
	// default). With one, random loss ended the search low: at 2 % loss each
	// way a step's probe or its ACK is lost one time in 25, and a loaded CI
	// machine settled at 1412 of 1447 (TestWANThroughputNATLab).
	pmtuMaxProbes = 3
)

// pmtuSearch is the state of the search (RFC 8899 §5.2, SEARCHING, then
// SEARCH_COMPLETE). The size in use, the largest known to pass, is the
// Conn's packetSize.
type pmtuSearch struct {
	ceiling  int   // Config.MaxPacketSize: the largest size tried; 0: no search
	fail     int   // the smallest size known to fail; ceiling+1 before any did
	probing  bool  // a probe is in flight
	lastSent int64 // when the last probe went out
	tried    int   // the size of the last probe lost...
	losses   int   // ...and how many of that size were lost in a row
}

// next returns the size to probe after current, which is known to pass, or
// 0 when the search is over. The first candidate is the ceiling itself.
func (m *pmtuSearch) next(current int) int {
	if m.fail-current < pmtuSearchGap {
		return 0
	}
	if m.fail > m.ceiling {
		return m.ceiling
	}
	return (current + m.fail) / 2
}

// restart searches again from the ceiling.
func (m *pmtuSearch) restart() {
	m.fail = m.ceiling + 1
}

// mtuProbeDue returns the size of the probe to send now, or 0. A probe goes
// once the connection has an RTT sample (to time it against), when none is
// in flight and the last went out at least an RTT ago (RFC 8899 §5.1.1:
// probes are paced by the PROBE_TIMER; an RTT is how long its answer
// takes), and only while the connection is busy: it has something to send,
// or sent data within the last RTT. An idle connection sends nothing for
// the search (a probe would be a keepalive nobody asked for).
func (c *Conn) mtuProbeDue(now int64) int {
	m := &c.pmtu
	size := m.next(c.packetSize)
	rtt := c.rec.rtt()
	if size == 0 || m.probing || !rtt.hasSample || now-m.lastSent < int64(rtt.Smoothed()) {
		return 0
	}
	if !c.hasData() && now-c.dataSentAt >= int64(rtt.Smoothed()) {
		return 0
	}
	return size
}

// appendMTUProbe builds a probe of exactly size bytes into buf[:0]: a PING
// to elicit the ACK, padded (RFC 9000 §14.4). The sent packet is
// ack-eliciting and not in flight (see the file comment); its one chunk
// records the size.
func (c *Conn) appendMTUProbe(now int64, buf []byte, size int) []byte {
	p := sentPacket{pn: c.nextPN, sentTime: now, size: size, ackEliciting: true}
	c.nextPN++
	pkt := AppendPing(AppendVarint(buf[:0], p.pn))
	pkt = AppendPadding(pkt, size-len(pkt))
	p.addChunk(chunk{kind: chunkMTUProbe, length: uint32(size)})
	c.rec.onSent(&p)
	c.pmtu.probing, c.pmtu.lastSent = true, now
	c.stats.MTUProbes++
	c.countSent(pkt)
	return pkt
}

// mtuProbeSize returns the size a packet probed if it was an MTU probe,
// else 0.
func mtuProbeSize(p *sentPacket) int {
	if p.nchunks == 1 && p.chunks[0].kind == chunkMTUProbe {
		return int(p.chunks[0].length)
	}
	return 0
}

// onMTUProbeAcked: size passes. Packets grow to it at once, the congestion
// controller counts in it, and the search goes on above it.
func (c *Conn) onMTUProbeAcked(size int) {
	c.pmtu.probing = false
	c.pmtu.losses = 0
	if size > c.packetSize {
		c.setPacketSize(size)
	}
}

// onMTUProbeLost: size may not pass, or the probe met random loss. Once
// pmtuMaxProbes probes of that size are lost in a row, it does not pass,
// and the search goes on below it; until then the next probe tries it
// again.
func (c *Conn) onMTUProbeLost(size int) {
	m := &c.pmtu
	m.probing = false
	c.stats.MTUProbesLost++
	if size != m.tried {
		m.tried, m.losses = size, 0
	}
	m.losses++
	if m.losses < pmtuMaxProbes {
		return
	}
	m.losses = 0
	if size < m.fail {
		m.fail = size
	}
}

// onBlackHole falls back to Config.PacketSize after pmtuBlackHolePTOs probe
// timeouts in a row while the packet size is above it, and searches again.
// The PTO's probes, sent next, are then small enough to pass, and what the
// large packets carried is cut to the small size when it is sent again
// (stream data is resent by range, not by packet).
func (c *Conn) onBlackHole() {
	if c.rec.ptoCount() < pmtuBlackHolePTOs || c.packetSize <= c.cfg.PacketSize {
		return
	}
	c.stats.MTUBlackHoles++
	c.setPacketSize(c.cfg.PacketSize)
	c.pmtu.restart()
}

func (c *Conn) setPacketSize(size int) {
	c.packetSize = size
	c.cc.SetPacketSize(size)
}
