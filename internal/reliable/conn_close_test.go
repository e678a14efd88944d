package reliable

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

// The ends of a connection: Close by the application, and the close that
// answers a peer breaking the protocol.

// Close sends CONNECTION_CLOSE once; the peer's Err is a *CloseError with
// the code, the reason and Remote set. What the peer received stays
// readable: to EOF on a stream whose FIN had arrived, then the close error
// on one whose had not. Both sides go quiet.
func TestConnClose(t *testing.T) {
	n := newConnPair(t, netPath{delay: 5 * time.Millisecond}, 1, Config{})
	a, b := n.conns[0], n.conns[1]
	whole, _ := a.OpenStream()
	a.Write(whole, []byte("all of it"))
	a.CloseWrite(whole)
	part, _ := a.OpenStream()
	a.Write(part, []byte("part"))
	n.run(time.Second, func() bool {
		st, ok := b.streams[part]
		return ok && st.recv.contig == 4 && b.streams[whole].recv.allReceived()
	})
	b.Wake(nil)
	sentBefore := n.sent
	a.Close(42, "bye")
	if a.Closed() {
		t.Error("Closed before the CONNECTION_CLOSE went out")
	}
	a.Close(43, "again") // no effect
	n.settle(time.Second)
	if d := [2]int{n.sent[0] - sentBefore[0], n.sent[1] - sentBefore[1]}; d != [2]int{1, 0} {
		t.Errorf("packets sent after Close: %v, want one CONNECTION_CLOSE and no answer", d)
	}
	want := CloseError{Code: 42, Reason: "bye"}
	var ce *CloseError
	if !errors.As(a.Err(), &ce) || *ce != want {
		t.Errorf("closing side: Err %v, want %+v", a.Err(), want)
	}
	want.Remote = true
	if !errors.As(b.Err(), &ce) || *ce != want {
		t.Errorf("peer: Err %v, want %+v", b.Err(), want)
	}
	for side, c := range n.conns {
		if !c.Closed() || c.Timer() != 0 || c.Send(n.now, nil) != nil {
			t.Errorf("side %d: Closed %t, Timer %d after the close", side, c.Closed(), c.Timer())
		}
		if _, err := c.OpenStream(); err != c.Err() {
			t.Errorf("side %d: OpenStream after the close: %v", side, err)
		}
		if _, err := c.Write(part, []byte("x")); err != c.Err() {
			t.Errorf("side %d: Write after the close: %v", side, err)
		}
	}
	if wake := b.Wake(nil); len(wake) != 2 {
		t.Errorf("the close woke %v, want both streams", wake)
	}
	b.AcceptStream()
	b.AcceptStream()
	if got, err := readAll(b, whole); string(got) != "all of it" || err != io.EOF {
		t.Errorf("stream with its FIN: %q, %v", got, err)
	}
	if got, err := readAll(b, part); string(got) != "part" || err != b.Err() {
		t.Errorf("stream without its FIN: %q, %v", got, err)
	}
}

// A reason longer than a packet is cut to fit.
func TestConnCloseLongReason(t *testing.T) {
	c := NewConn(Config{Client: true, Congestion: NewBBR(DefaultPacketSize, 0, 1)})
	c.Close(1, strings.Repeat("why ", 1000))
	pkt := c.Send(0, nil)
	if len(pkt) == 0 || len(pkt) > DefaultPacketSize {
		t.Fatalf("CONNECTION_CLOSE of %d bytes", len(pkt))
	}
	_, frames := packetFrames(t, pkt)
	if len(frames) != 1 || frames[0].Type != FrameConnectionClose || !bytes.HasPrefix([]byte(strings.Repeat("why ", 1000)), frames[0].Reason) {
		t.Fatalf("frames %+v", frames)
	}
}

// A peer that breaks the protocol gets the connection closed with
// CodeProtocolError, and Receive and Err say why.
func TestConnProtocolViolations(t *testing.T) {
	manyStreams := func() []byte {
		// Each frame uses a fresh stream's whole initial limit; together
		// they pass the connection's limit (16 MiB, the default
		// ConnWindow).
		var b []byte
		for i := range uint64(65) {
			b = AppendStream(b, i*4, InitialMaxStreamData-1, []byte("x"), false, true)
		}
		return b
	}
	for _, tc := range []struct {
		name   string
		frames []byte
		want   error
	}{
		{"no frames", nil, ErrFrame},
		{"unknown frame type", []byte{0x1e}, ErrFrame},
		{"transport CONNECTION_CLOSE", []byte{0x1c, 0, 0, 0}, ErrFrame},
		{"truncated MAX_DATA", []byte{byte(FrameMaxData)}, ErrFrame},
		{"stream of the receiver never opened", AppendStream(nil, 1, 0, []byte("x"), false, true), ErrProtocol},
		{"MAX_STREAM_DATA for a stream of the receiver never opened", AppendMaxStreamData(nil, 5, 1<<20), ErrProtocol},
		{"STOP_SENDING for a stream of the receiver never opened", AppendStopSending(nil, 9, 1), ErrProtocol},
		{"unidirectional stream of the client", AppendStream(nil, 2, 0, []byte("x"), false, true), ErrProtocol},
		{"unidirectional stream of the server", AppendResetStream(nil, 3, 0, 0), ErrProtocol},
		{"stream beyond the limit", AppendStream(nil, 4*DefaultMaxIncomingStreams, 0, []byte("x"), false, true), ErrProtocol},
		{"ACK of a packet never sent", AppendAck(nil, []AckRange{{Smallest: 0, Largest: 1000}}, 0), ErrProtocol},
		{"stream data beyond its limit", AppendStream(nil, 0, InitialMaxStreamData, []byte("x"), false, true), ErrFlowControl},
		{"stream data beyond the connection's limit", manyStreams(), ErrFlowControl},
		{"final size changed", AppendStream(AppendStream(nil, 0, 0, []byte("ab"), true, true), 0, 0, []byte("abc"), true, true), ErrFinalSize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newConnPair(t, netPath{delay: 5 * time.Millisecond}, 1, Config{})
			n.allowErrors = true
			a, b := n.conns[0], n.conns[1]
			err := n.inject(0, tc.frames)
			if !errors.Is(err, tc.want) || !errors.Is(b.Err(), tc.want) {
				t.Fatalf("Receive: %v; Err: %v; want %v", err, b.Err(), tc.want)
			}
			n.settle(time.Second)
			var ce *CloseError
			if !errors.As(a.Err(), &ce) || ce.Code != CodeProtocolError || !ce.Remote || ce.Reason == "" {
				t.Fatalf("the peer's Err: %v, want a remote close with CodeProtocolError", a.Err())
			}
			t.Logf("closed: %v", ce)
			if !b.Closed() || !a.Closed() {
				t.Fatal("not closed")
			}
		})
	}
}
