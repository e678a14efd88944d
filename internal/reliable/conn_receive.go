package reliable

import "fmt"

// Receiving packets: each frame's effect on the streams, the limits and the
// sender's record of what is in flight.

// Receive processes one packet that arrived at now. An error means the peer
// broke the protocol: the connection is closed (a CONNECTION_CLOSE is owed,
// see Send) and the error says why. Packets after the close are ignored.
func (c *Conn) Receive(now int64, pkt []byte) error {
	if c.closed != nil {
		return nil
	}
	pn, n, err := ParseVarint(pkt)
	if err != nil {
		return c.fail(fmt.Errorf("packet number: %w", err))
	}
	if n == len(pkt) {
		return c.fail(fmt.Errorf("%w: packet %d has no frames", ErrFrame, pn))
	}
	c.stats.PacketsReceived++
	c.stats.BytesReceived += uint64(len(pkt))
	b := pkt[n:]
	ackEliciting := false
	for len(b) > 0 {
		f := &c.frame
		n, err := ParseFrame(b, f)
		if err != nil {
			return c.fail(fmt.Errorf("packet %d: %w", pn, err))
		}
		b = b[n:]
		switch f.Type {
		case FramePadding, FrameAck, FrameConnectionClose:
		default:
			ackEliciting = true
		}
		if err := c.onFrame(now, f); err != nil {
			return c.fail(fmt.Errorf("packet %d: %w", pn, err))
		}
		if c.closed != nil {
			return nil // the peer closed: the rest does not matter
		}
	}
	c.ack.minRTT = int64(c.rec.rtt().min)
	c.ack.onReceived(now, pn, ackEliciting)
	return nil
}

func (c *Conn) onFrame(now int64, f *Frame) error {
	switch f.Type {
	case FramePadding, FramePing, FrameDataBlocked, FrameStreamDataBlocked:
		// PING only elicits an ACK; the BLOCKED frames only inform (we
		// advertise whole windows, so there is nothing to do about them).
		return nil
	case FrameAck:
		return c.onAck(now, f)
	case FrameStream:
		st, err := c.peerStream(f.StreamID)
		if st == nil || err != nil {
			return err
		}
		newBytes, err := st.recv.onData(f.Offset, f.Data, f.Fin)
		if err != nil {
			return fmt.Errorf("stream %d: %w", f.StreamID, err)
		}
		return c.received(st, newBytes)
	case FrameResetStream:
		st, err := c.peerStream(f.StreamID)
		if st == nil || err != nil {
			return err
		}
		newBytes, err := st.recv.onReset(f.Code, f.Offset)
		if err != nil {
			return fmt.Errorf("stream %d: %w", f.StreamID, err)
		}
		return c.received(st, newBytes)
	case FrameStopSending:
		// RFC 9000 §3.5: answer with RESET_STREAM, same code.
		st, err := c.peerStream(f.StreamID)
		if st == nil || err != nil {
			return err
		}
		st.send.reset(f.Code)
		c.activate(st)
		c.wakeStream(st)
		return nil
	case FrameMaxData:
		if f.Max > c.peerMaxData {
			c.peerMaxData = f.Max
			// Streams that waited for connection credit may send again.
			// Only those: queueing a stream of ours that was never used
			// would send its first MAX_STREAM_DATA, and the peer would
			// learn of it (newStream).
			for _, st := range c.streams {
				if st.send.waiting() {
					c.activate(st)
				}
			}
		}
		return nil
	case FrameMaxStreamData:
		st, err := c.peerStream(f.StreamID)
		if st == nil || err != nil {
			return err
		}
		full := st.send.writable() == 0
		st.send.setPeerMax(f.Max) // a grown window grows the send buffer
		c.wakeWriterIfRoom(st, full)
		c.activate(st)
		return nil
	case FrameMaxStreams:
		if f.Max > 1<<60 {
			return fmt.Errorf("%w: MAX_STREAMS %d", ErrFrame, f.Max)
		}
		c.peerMaxStreams = max(c.peerMaxStreams, f.Max)
		return nil
	case FrameConnectionClose:
		c.closed = &CloseError{Code: f.Code, Reason: string(f.Reason), Remote: true}
		c.closeErr = c.closed
		c.wakeAll()
		return nil
	}
	return fmt.Errorf("%w: frame type %#x", ErrFrame, f.Type)
}

// received accounts newBytes of stream data against the connection's window
// and wakes the stream's reader.
func (c *Conn) received(st *stream, newBytes uint64) error {
	c.recvData += newBytes
	if c.recvData > c.maxData {
		return fmt.Errorf("%w: %d bytes received, limit %d", ErrFlowControl, c.recvData, c.maxData)
	}
	c.syncConsumed(st) // a stopped stream drops what arrives
	c.forgetIfDone(st)
	if st.recv.readable() {
		c.wakeStream(st)
	}
	return nil
}

// peerStream finds the stream a frame from the peer is about, opening the
// peer's streams up to it (RFC 9000 §3.2: a stream's first frame opens the
// lower-numbered ones too). It returns nil and no error for a stream that is
// over and forgotten: late frames for it are ignored.
func (c *Conn) peerStream(id uint64) (*stream, error) {
	if st, ok := c.streams[id]; ok {
		return st, nil
	}
	if id&2 != 0 {
		return nil, fmt.Errorf("%w: unidirectional stream %d", ErrProtocol, id)
	}
	idx := id >> 2
	if c.isLocal(id) {
		if idx >= c.localOpened {
			return nil, fmt.Errorf("%w: stream %d is ours and not open", ErrProtocol, id)
		}
		return nil, nil
	}
	if idx < c.peerOpened {
		return nil, nil
	}
	if idx >= c.maxStreams {
		return nil, fmt.Errorf("%w: stream %d beyond the limit of %d", ErrProtocol, id, c.maxStreams)
	}
	for ; c.peerOpened <= idx; c.peerOpened++ {
		nid := c.peerOpened<<2 | id&3
		c.newStream(nid)
		c.acceptQueue = append(c.acceptQueue, nid)
	}
	return c.streams[id], nil
}

// onAck processes an ACK frame: what it acknowledges is done with, what it
// shows lost is sent again, and the congestion controller hears of both.
func (c *Conn) onAck(now int64, f *Frame) error {
	res, err := c.rec.onAck(now, f.AckRanges, f.AckDelay)
	if err != nil {
		return err
	}
	if len(res.acked) == 0 && len(res.lost) == 0 {
		return nil
	}
	c.ackedPNs, c.lost = c.ackedPNs[:0], c.lost[:0]
	for i := range res.acked {
		p := &res.acked[i]
		if size := mtuProbeSize(p); size > 0 {
			c.onMTUProbeAcked(size) // the controller never saw it sent
			continue
		}
		c.ackedPNs = append(c.ackedPNs, p.pn)
		for j := range p.chunks[:p.nchunks] {
			c.onChunkAcked(&p.chunks[j])
		}
	}
	for i := range res.lost {
		c.onPacketLost(&res.lost[i])
	}
	if len(res.acked) > 0 {
		c.probes = 0 // the path works: no probe is needed any more
	}
	c.cc.OnAck(now, c.ackedPNs, c.lost, res.rttSample)
	idle := c.rec.bytesInFlight() == 0
	c.ackedPNs, c.lost = trimScratch(c.ackedPNs, idle), trimScratch(c.lost, idle)
	return nil
}

// onPacketLost makes what a lost packet carried owed again; a lost MTU
// probe only narrows the search (pmtu.go).
func (c *Conn) onPacketLost(p *sentPacket) {
	if size := mtuProbeSize(p); size > 0 {
		c.onMTUProbeLost(size)
		return
	}
	c.stats.PacketsLost++
	c.stats.BytesLost += uint64(p.size)
	c.lost = append(c.lost, p.pn)
	for i := range p.chunks[:p.nchunks] {
		c.requeue(&p.chunks[i])
	}
}

// wakeWriterIfRoom wakes st's writer if its send buffer was full (wasFull,
// taken before the change) and has room now. Write takes all it can, so a
// writer waits only on a full buffer: every ACK or MAX_STREAM_DATA of a
// stream that was not full, or whose sending half is closed, would be a wake
// for nothing.
func (c *Conn) wakeWriterIfRoom(st *stream, wasFull bool) {
	if wasFull && st.send.writable() > 0 {
		c.wakeStream(st)
	}
}

// onChunkAcked is done with what an acknowledged packet carried.
func (c *Conn) onChunkAcked(ch *chunk) {
	st, ok := c.streams[ch.id]
	if !ok {
		return
	}
	switch ch.kind {
	case chunkStream:
		full := st.send.writable() == 0
		st.send.onAcked(ch.offset, ch.length, ch.fin)
		c.wakeWriterIfRoom(st, full)
	case chunkResetStream:
		st.send.onResetAcked()
	default:
		return
	}
	c.forgetIfDone(st)
}
