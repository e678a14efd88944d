package bridge

import (
	"context"
	"crypto/ed25519"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/swarmdb/swarmdb/secure"
)

// udpPeer is one end of a loopback UDP pair as a connected net.Conn.
type udpPeer struct {
	*net.UDPConn
	to *net.UDPAddr
}

func (u udpPeer) Write(p []byte) (int, error) { return u.WriteToUDP(p, u.to) }
func (u udpPeer) Read(p []byte) (int, error) {
	n, _, err := u.ReadFromUDP(p)
	return n, err
}
func (u udpPeer) RemoteAddr() net.Addr { return u.to }

// secureStreams opens a secure session over loopback UDP and returns both ends' stream 0: the
// transport package node attaches to the bridge.
func secureStreams(t *testing.T) (*secure.Stream, *secure.Stream) {
	t.Helper()
	listen := func() *net.UDPConn {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ua, ub := listen(), listen()
	pubA, _, _ := ed25519.GenerateKey(nil)
	pubB, _, _ := ed25519.GenerateKey(nil)
	var k1, k2 [secure.KeySize]byte
	copy(k1[:], "bridge test key one, 32 bytes!!!")
	copy(k2[:], "bridge test key two, 32 bytes!!!")
	ka := secure.Keys{Send: k1, Recv: k2, Remote: pubB, Initiator: true}
	kb := secure.Keys{Send: k2, Recv: k1, Remote: pubA}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	type res struct {
		s   *secure.Session
		err error
	}
	ch := make(chan res, 1)
	go func() {
		s, err := secure.Open(ctx, udpPeer{ub, ua.LocalAddr().(*net.UDPAddr)}, kb, secure.Config{})
		ch <- res{s, err}
	}()
	sa, err := secure.Open(ctx, udpPeer{ua, ub.LocalAddr().(*net.UDPAddr)}, ka, secure.Config{})
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { sa.Close(); r.s.Close() })
	return sa.Stream0(), r.s.Stream0()
}

// Two bridges over a real secure session's stream 0, one JSON message per stream message.
func TestStreamConnOverSecureSession(t *testing.T) {
	sa, sb := secureStreams(t)
	a := newBridge(t, Config{Server: true})
	b := newBridge(t, Config{Server: true})
	pb, err := b.Attach(NewStreamConn(sb, "peer-a", 0), AttachOptions{Kind: KindSwarm})
	if err != nil {
		t.Fatal(err)
	}
	pa, err := a.Attach(NewStreamConn(sa, "peer-b", 0), AttachOptions{Kind: KindSwarm, Initiator: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := pa.WaitIdentified(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pb.WaitIdentified(ctx); err != nil {
		t.Fatal(err)
	}
	r := record(t, testUser, "over-sctp", `{"big":"`+strings.Repeat("x", 20000)+`"}`)
	if _, err := a.Put(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	waitRecord(t, b.Store(), "over-sctp", r.Hash)
	if st := pb.Status(); st.Kind != KindSwarm || st.RemoteID != "peer-a" || st.ClientID != a.ClientID() {
		t.Fatalf("status %+v", st)
	}
}

// StreamConn refuses to write what the stream would split, and reports what it cannot take.
func TestStreamConnSizeLimit(t *testing.T) {
	sa, sb := secureStreams(t)
	ca, cb := NewStreamConn(sa, "b", 1000), NewStreamConn(sb, "a", 1000)
	ctx := context.Background()
	if err := ca.WriteMessage(ctx, make([]byte, 1001)); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("oversized write: %v", err)
	}
	if _, err := sa.Write(make([]byte, 1500)); err != nil { // bypassing the adapter
		t.Fatal(err)
	}
	if err := ca.WriteMessage(ctx, []byte(`{"ok":1}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := cb.ReadMessage(ctx); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("oversized read: %v", err)
	}
	m, err := cb.ReadMessage(ctx)
	if err != nil || string(m) != `{"ok":1}` {
		t.Fatalf("read after an oversized message: %q %v", m, err)
	}
	// Ending the context interrupts a blocked read.
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := cb.ReadMessage(cctx)
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled read: %v", err)
	}
}
