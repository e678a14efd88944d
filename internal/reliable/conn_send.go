package reliable

// Building packets: what goes into the next one, in what order, and what
// the sender remembers of it.

// maxControlFrame bounds the encoded size of one control frame (type and
// three 8-byte varints): the builder adds one only with this much room.
const maxControlFrame = 1 + 3*8

// streamFrameRoom is the overhead a STREAM frame may add around its data in
// the worst case (type, 8-byte ID and offset, 2-byte length), so data sized
// to fit the rest always fits.
const streamFrameRoom = 1 + 8 + 8 + 2

// Send builds the next packet into buf[:0] and returns it, or nil when
// nothing may go now. A packet is at most Stats().PacketSize bytes, which
// path MTU discovery raises up to Config.MaxPacketSize: a buf with that
// capacity is never outgrown. The caller seals and sends each packet and calls Send
// again until nil, after every Receive, OnTimer and stream call. What may go:
// an ACK when one is owed; ack-eliciting frames when the congestion window
// has room and the pacer allows, or as a probe after a probe timeout (RFC
// 9002 §6.2.4: probes ignore the window); a path MTU probe when one is due
// (pmtu.go), ahead of the rest; a CONNECTION_CLOSE once, after Close or a
// protocol error.
func (c *Conn) Send(now int64, buf []byte) []byte {
	if c.closed != nil {
		if !c.closing {
			return nil
		}
		c.closing = false
		pkt := AppendVarint(buf[:0], c.nextPN)
		c.nextPN++
		reason := c.closed.Reason
		if max := c.packetSize - len(pkt) - maxControlFrame; len(reason) > max {
			reason = reason[:max]
		}
		pkt = AppendConnectionClose(pkt, c.closed.Code, []byte(reason))
		c.countSent(pkt)
		return pkt
	}
	probe := c.probes > 0
	mayElicit := probe || (int64(c.rec.bytesInFlight()) < c.cc.Window() && c.cc.NextSend(now) <= now)
	if size := c.mtuProbeDue(now); size > 0 && mayElicit && !probe {
		return c.appendMTUProbe(now, buf, size)
	}
	ackAt := c.ack.deadline()
	ackDue := ackAt != 0 && ackAt <= now
	if !ackDue && !probe && !(mayElicit && c.hasData()) {
		return nil
	}

	p := sentPacket{pn: c.nextPN}
	pkt := AppendVarint(buf[:0], c.nextPN)
	if ackAt != 0 {
		// Owed now, or owed soon and riding along for free (RFC 9000 §13.2.1).
		pkt = AppendAck(pkt, c.ack.ranges(), c.ack.ackDelay(now))
		c.ack.onAckSent()
	}
	if mayElicit {
		pkt = c.appendControl(now, pkt, &p)
		pkt = c.appendStreams(now, pkt, &p)
		if probe && p.nchunks == 0 {
			// Nothing new to send: a probe carries what the oldest packet in
			// flight did, so that if it was the one lost, the probe repairs
			// it at once; else a PING, which makes the peer's ACK reveal the
			// lost tail to the time threshold (RFC 9002 §6.2.4).
			if old, ok := c.rec.oldestUnacked(); ok {
				for i := range old.chunks[:old.nchunks] {
					c.requeue(&old.chunks[i])
				}
				pkt = c.appendControl(now, pkt, &p)
				pkt = c.appendStreams(now, pkt, &p)
			}
			if p.nchunks == 0 {
				pkt = AppendPing(pkt)
				p.addChunk(chunk{kind: chunkPing})
			}
		}
	}
	if probe && p.nchunks > 0 {
		c.probes--
	}
	p.ackEliciting = p.nchunks > 0
	if !p.ackEliciting && ackAt == 0 {
		return nil // neither an ACK nor anything else after all
	}
	c.nextPN++
	p.sentTime, p.size, p.inFlight = now, len(pkt), p.ackEliciting
	c.rec.onSent(&p) // ACK-only packets too: the peer may acknowledge them
	if p.ackEliciting {
		c.cc.OnSent(now, p.pn, p.size, !c.waiting())
		if p.nchunks > 1 || p.chunks[0].kind != chunkPing {
			c.dataSentAt = now
		}
	}
	c.countSent(pkt)
	return pkt
}

// waiting reports whether any stream has data or a FIN it has not yet sent,
// flow control or not: if none has, the application is the limit (BBR's
// app-limited signal). Streams that flow control holds back have left the
// send queue, so when the queue has none the whole table is searched.
func (c *Conn) waiting() bool {
	for _, st := range c.active {
		if st.send.waiting() {
			return true
		}
	}
	for _, st := range c.streams {
		if st.send.waiting() {
			return true
		}
	}
	return false
}

func (c *Conn) countSent(pkt []byte) {
	c.stats.PacketsSent++
	c.stats.BytesSent += uint64(len(pkt))
}

// addChunk records what the packet carries; it reports false when the
// packet has no slot left.
func (p *sentPacket) addChunk(ch chunk) bool {
	if p.nchunks == maxChunks {
		return false
	}
	p.chunks[p.nchunks] = ch
	p.nchunks++
	return true
}

// tuneConnWindow grows the connection's window as a MAX_DATA goes out, as a
// stream's (window.go), and raises the limit with it.
func (c *Conn) tuneConnWindow(now int64) {
	c.connWindow = c.connTuner.grow(now, c.rec.rttStats.sample(), c.consumedData, c.connWindow, c.cfg.MaxConnWindow)
	c.maxData = max(c.maxData, c.consumedData+c.connWindow)
}

// appendControl adds the connection's owed limits (MAX_DATA, MAX_STREAMS).
func (c *Conn) appendControl(now int64, pkt []byte, p *sentPacket) []byte {
	if c.maxDataOwed && c.room(pkt, p) >= maxControlFrame {
		c.tuneConnWindow(now)
		pkt = AppendMaxData(pkt, c.maxData)
		p.addChunk(chunk{kind: chunkMaxData})
		c.maxDataOwed = false
	}
	if c.maxStreamsOwed && c.room(pkt, p) >= maxControlFrame {
		pkt = AppendMaxStreams(pkt, c.maxStreams)
		p.addChunk(chunk{kind: chunkMaxStreams})
		c.maxStreamsOwed = false
	}
	return pkt
}

// room is how many bytes the packet can still take, zero when it has no
// chunk slot left.
func (c *Conn) room(pkt []byte, p *sentPacket) int {
	if p.nchunks == maxChunks {
		return 0
	}
	return c.packetSize - len(pkt)
}

// appendStreams fills the packet from the streams in the send queue, round
// robin: each stream's owed control frames, then its data. A stream that
// still has something to send after its turn goes to the back of the queue;
// one that has nothing leaves it.
func (c *Conn) appendStreams(now int64, pkt []byte, p *sentPacket) []byte {
	for turns := len(c.active); turns > 0 && len(c.active) > 0; turns-- {
		st := c.active[0]
		pkt = c.appendStream(now, pkt, p, st)
		more := c.streamHasData(st)
		copy(c.active, c.active[1:])
		c.active = c.active[:len(c.active)-1]
		if more {
			c.active = append(c.active, st)
		} else {
			st.active = false
		}
		if c.room(pkt, p) < streamFrameRoom+1 {
			break
		}
	}
	if len(c.active) == 0 {
		c.active = nil // an idle connection keeps no array
	}
	return pkt
}

// appendStream adds what stream st owes: RESET_STREAM, STOP_SENDING,
// MAX_STREAM_DATA, then STREAM frames while they fit.
func (c *Conn) appendStream(now int64, pkt []byte, p *sentPacket, st *stream) []byte {
	if code, final, owed := st.send.resetOwed(); owed && c.room(pkt, p) >= maxControlFrame {
		pkt = AppendResetStream(pkt, st.id, code, final)
		p.addChunk(chunk{kind: chunkResetStream, id: st.id})
		st.send.onResetSent()
	}
	if code, owed := st.recv.stopOwed(); owed && c.room(pkt, p) >= maxControlFrame {
		pkt = AppendStopSending(pkt, st.id, code)
		p.addChunk(chunk{kind: chunkStopSending, id: st.id})
		st.recv.onStopSent()
	}
	if _, owed := st.recv.maxDataOwed(); owed && c.room(pkt, p) >= maxControlFrame {
		if st.recv.tuneWindow(now, c.rec.rttStats.sample()) {
			// The connection's window stays at least twice the stream's,
			// so that it does not bind in the stream's place.
			c.connWindow = min(max(c.connWindow, 2*st.recv.window), c.cfg.MaxConnWindow)
		}
		max, _ := st.recv.maxDataOwed()
		pkt = AppendMaxStreamData(pkt, st.id, max)
		p.addChunk(chunk{kind: chunkMaxStreamData, id: st.id})
		st.recv.onMaxDataSent(max)
	}
	for {
		// The frame's overhead for this stream, not streamFrameRoom's
		// worst case, which left every full packet 11 bytes short: no
		// offset is beyond what was written, no length beyond the room.
		room := c.room(pkt, p)
		room -= 1 + VarintLen(st.id) + VarintLen(st.send.written) + VarintLen(uint64(room))
		if room <= 0 {
			return pkt
		}
		off, data, fin, newBytes, ok := st.send.next(room, c.peerMaxData-c.sentData)
		if !ok {
			return pkt
		}
		pkt = AppendStream(pkt, st.id, off, data, fin, true)
		p.addChunk(chunk{kind: chunkStream, id: st.id, offset: off, length: uint32(len(data)), fin: fin})
		c.sentData += newBytes
	}
}

// requeue makes what a chunk carried owed again: it was lost, or a probe
// repeats it.
func (c *Conn) requeue(ch *chunk) {
	switch ch.kind {
	case chunkMaxData:
		c.maxDataOwed = true
		return
	case chunkMaxStreams:
		c.maxStreamsOwed = true
		return
	case chunkPing, chunkMTUProbe:
		return
	}
	st, ok := c.streams[ch.id]
	if !ok {
		return // the stream is over: nothing of it is owed any more
	}
	switch ch.kind {
	case chunkStream:
		st.send.onLost(ch.offset, ch.length, ch.fin)
	case chunkResetStream:
		st.send.onResetLost()
	case chunkStopSending:
		st.recv.onStopLost()
	case chunkMaxStreamData:
		st.recv.onMaxDataLost()
	}
	c.activate(st)
}
