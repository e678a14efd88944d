package dht

import (
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/internal/testutil"
)

// rawClient sends hand-made DHT requests from its own loopback socket, to
// test what a node does with hostile input.
type rawClient struct {
	t    *testing.T
	conn *net.UDPConn
}

func newRawClient(t *testing.T) *rawClient {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 9, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawClient{t: t, conn: conn}
}

// do sends m (or raw bytes when m is nil) and returns the reply, nil on
// silence, and the request's size.
func (c *rawClient) do(to netip.AddrPort, m *Message, raw []byte) (*Message, int) {
	c.t.Helper()
	if m != nil {
		m.Addr = to
		raw = AppendMessage(nil, m)
	}
	if _, err := c.conn.WriteToUDPAddrPort(raw, to); err != nil {
		c.t.Fatal(err)
	}
	c.conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, 2048)
	nr, err := c.conn.Read(buf)
	if err != nil {
		return nil, len(raw)
	}
	reply, err := ParseMessage(buf[:nr])
	if err != nil {
		c.t.Fatalf("unparseable reply: %v", err)
	}
	reply.Pad = nr // reuse: the reply's size on the wire
	return reply, len(raw)
}

func startNode(t *testing.T, cfg Config) *Node {
	t.Helper()
	cfg.Mode = ModePersistent
	cfg.ListenAddr = "127.9.0.2:0"
	n := New(cfg)
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// token asks n for a write token.
func (c *rawClient) token(n *Node) ID {
	reply, _ := c.do(n.LocalAddr(), &Message{Command: CmdPing, Pad: 64}, nil)
	if reply == nil || reply.Token == nil {
		c.t.Fatal("no token from ping")
	}
	return *reply.Token
}

func TestForgedAnnouncesRefused(t *testing.T) {
	n := startNode(t, Config{TokenInterval: 200 * time.Millisecond})
	c := newRawClient(t)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	topic := TopicKey("forgery")
	rec := PeerRecord{PublicKey: priv.Public().(ed25519.PublicKey)}
	self := n.ID()

	cases := []struct {
		name  string
		value func(tok ID) []byte
		tok   func(tok ID) ID
		want  ErrorCode
	}{
		{"signed by another key", func(tok ID) []byte {
			v := signAnnounce(other, topic, self, tok, PeerRecord{PublicKey: other.Public().(ed25519.PublicKey)})
			copy(v, rec.PublicKey) // claims priv's key, signed by other
			return v
		}, nil, CodeBadSignature},
		{"signed for another storing node", func(tok ID) []byte {
			return signAnnounce(priv, topic, NodeID(netip.MustParseAddrPort("127.9.9.9:1")), tok, rec)
		}, nil, CodeBadSignature},
		{"signed for another topic", func(tok ID) []byte {
			return signAnnounce(priv, TopicKey("other"), self, tok, rec)
		}, nil, CodeBadSignature},
		{"foreign token", func(tok ID) []byte { return signAnnounce(priv, topic, self, ID{1}, rec) },
			func(ID) ID { return ID{1} }, CodeBadToken},
		{"truncated record", func(tok ID) []byte { return signAnnounce(priv, topic, self, tok, rec)[:40] }, nil, CodeBadRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tok := c.token(n)
			if tc.tok != nil {
				tok = tc.tok(tok)
			}
			reply, _ := c.do(n.LocalAddr(), &Message{Command: CmdAnnounce, Target: &topic, Token: &tok, Value: tc.value(tok)}, nil)
			if reply == nil || reply.Error != tc.want {
				t.Fatalf("reply %+v, want error %s", reply, tc.want)
			}
			if recs, _ := n.Stats().Records, 0; recs != 0 {
				t.Fatalf("%d records stored", recs)
			}
		})
	}

	t.Run("stale token", func(t *testing.T) {
		tok := c.token(n)
		// Two rotations make a token stale (valid for one to two intervals).
		testutil.Eventually(t, 2*time.Second, func() bool { // waiting on the rotation clock
			return !n.tokenValid(tok, c.conn.LocalAddr().(*net.UDPAddr).AddrPort().Addr())
		}, "the token to go stale")
		reply, _ := c.do(n.LocalAddr(), &Message{Command: CmdAnnounce, Target: &topic, Token: &tok, Value: signAnnounce(priv, topic, self, tok, rec)}, nil)
		if reply == nil || reply.Error != CodeBadToken {
			t.Fatalf("stale token: reply %+v", reply)
		}
	})

	t.Run("valid announce is stored", func(t *testing.T) {
		tok := c.token(n)
		reply, _ := c.do(n.LocalAddr(), &Message{Command: CmdAnnounce, Target: &topic, Token: &tok, Value: signAnnounce(priv, topic, self, tok, rec)}, nil)
		if reply == nil || reply.Error != CodeOK || n.Stats().Records != 1 {
			t.Fatalf("reply %+v, records %d", reply, n.Stats().Records)
		}
	})
	st := n.Stats()
	if st.RefusedBadSignature < 3 || st.RefusedBadToken < 2 || st.RefusedBadRecord < 1 {
		t.Fatalf("refusals not counted: %+v", st)
	}
}

// TestNoAmplification checks that for every request type the reply to a
// source without a token is no larger than the request.
func TestNoAmplification(t *testing.T) {
	n := startNode(t, Config{OnTURN: (&turnHook{offer: true}).handle})
	// Fill the table and store so replies have something to grow with.
	for i := 0; i < 30; i++ {
		a := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 9, 1, byte(i + 1)}), 4000)
		n.mu.Lock()
		n.stacks[IPv4].table.seen(NodeID(a), a, time.Now())
		n.mu.Unlock()
	}
	topic := TopicKey("amp")
	for i := 0; i < 20; i++ {
		_, priv, _ := ed25519.GenerateKey(rand.Reader)
		n.mu.Lock()
		n.store.put(topic, PeerRecord{PublicKey: priv.Public().(ed25519.PublicKey), Relays: []netip.AddrPort{n.LocalAddr(), n.LocalAddr(), n.LocalAddr()}}, n.LocalAddr(), time.Now())
		n.mu.Unlock()
	}
	c := newRawClient(t)
	for cmd := CmdPing; cmd <= CmdTURN+1; cmd++ {
		m := &Message{Command: cmd, Target: &topic, Value: make([]byte, 40)}
		reply, reqLen := c.do(n.LocalAddr(), m, nil)
		if reply == nil {
			continue // silence is fine
		}
		if reply.Pad > reqLen {
			t.Errorf("%s: reply %d bytes to a %d-byte request", cmd, reply.Pad, reqLen)
		}
		t.Logf("%s: request %d bytes, reply %d bytes (ratio %.2f)", cmd, reqLen, reply.Pad, float64(reply.Pad)/float64(reqLen))
	}
}

func TestGarbageIsCountedNotFatal(t *testing.T) {
	n := startNode(t, Config{})
	c := newRawClient(t)
	inputs := [][]byte{
		{TagRequest},                         // truncated
		{TagRequest, 9, 0, 0, 0, 0, 0, 0, 0}, // wrong version
		append([]byte{TagRequest, Version, 0, 0xff, 0, 0, 0, 1}, make([]byte, 3)...), // all flags, no fields
		make([]byte, 1500),                          // oversized, STUN-looking zeroes
		{TagResponse, Version, 0, 0, 1, 2, 3, 4, 0}, // unexpected response
	}
	for _, in := range inputs {
		if reply, _ := c.do(n.LocalAddr(), nil, in); reply != nil {
			t.Fatalf("garbage %x answered", in)
		}
	}
	// Still alive.
	if reply, _ := c.do(n.LocalAddr(), &Message{Command: CmdPing}, nil); reply == nil {
		t.Fatal("node stopped answering")
	}
	st := n.Stats()
	if st.DroppedMalformed < 2 || st.DroppedBadVersion != 1 || st.DroppedUnexpectedReply != 1 {
		t.Fatalf("drops not counted: %+v", st)
	}
}

func TestWeakKeysRefused(t *testing.T) {
	// An all-zero key and signature pass crypto/ed25519.Verify; a record
	// under such a key must still be refused.
	if strongKey(make([]byte, 32)) {
		t.Fatal("small-order key accepted")
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	if !strongKey(priv.Public().(ed25519.PublicKey)) {
		t.Fatal("real key refused")
	}
	if _, err := verifyAnnounce(make([]byte, 97), ID{}, ID{}, ID{}); err == nil {
		t.Fatal("weak-key announce verified")
	}
}
