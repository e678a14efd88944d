package dht

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/internal/testutil"
)

func testOffer() TURNOffer {
	return TURNOffer{
		Server:   netip.MustParseAddrPort("203.0.113.7:49738"),
		Username: "1700000600:x",
		Password: "pw",
		Expires:  time.Unix(1700000600, 0),
	}
}

func TestTURNOfferGolden(t *testing.T) {
	got := hex.EncodeToString(AppendTURNOffer(nil, testOffer()))
	want := "04cb007107c24a" + // 203.0.113.7:49738
		"000000006553f358" + // expires 1700000600
		"0c" + hex.EncodeToString([]byte("1700000600:x")) +
		"02" + hex.EncodeToString([]byte("pw"))
	if got != want {
		t.Fatalf("encoding changed:\n got %s\nwant %s", got, want)
	}
	back, err := ParseTURNOffer(AppendTURNOffer(nil, testOffer()))
	if err != nil || back != testOffer() {
		t.Fatalf("round trip: %+v %v", back, err)
	}
	if back.URL() != "turn:203.0.113.7:49738?transport=udp" {
		t.Fatalf("url %s", back.URL())
	}
	b := AppendTURNOffer(nil, testOffer())
	for _, bad := range [][]byte{nil, b[:len(b)-1], append(b, 0), AppendTURNOffer(nil, TURNOffer{Username: "u"}),
		AppendTURNOffer(nil, TURNOffer{Server: testOffer().Server})} {
		if _, err := ParseTURNOffer(bad); err == nil {
			t.Errorf("%x parsed", bad)
		}
	}
}

func FuzzParseTURNOffer(f *testing.F) {
	f.Add(AppendTURNOffer(nil, testOffer()))
	o := testOffer()
	o.Server = netip.MustParseAddrPort("[2001:db8::1]:3478")
	f.Add(AppendTURNOffer(nil, o))
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := ParseTURNOffer(b)
		if err != nil {
			return
		}
		if !bytes.Equal(AppendTURNOffer(nil, o), b) {
			t.Fatal("offer does not round-trip")
		}
	})
}

// turnHook is an OnTURN hook that records who asked.
type turnHook struct {
	mu    sync.Mutex
	asked []netip.AddrPort
	offer bool
}

func (h *turnHook) handle(from netip.AddrPort) (TURNOffer, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.asked = append(h.asked, from)
	o := testOffer()
	o.Username = "1700000600:" + from.Addr().String()
	return o, h.offer
}

func (h *turnHook) calls() []netip.AddrPort {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]netip.AddrPort(nil), h.asked...)
}

func startClient(t *testing.T, cfg Config) *Node {
	t.Helper()
	cfg.Mode = ModeEphemeral
	cfg.ListenAddr = "127.9.0.3:0"
	n := New(cfg)
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func TestTURNOfferOverDHT(t *testing.T) {
	hook := &turnHook{offer: true}
	srv := startNode(t, Config{OnTURN: hook.handle, TokenInterval: 100 * time.Millisecond})
	c := startClient(t, Config{TokenInterval: time.Hour}) // caches tokens past the server's rotation
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	o, err := c.TURNOffer(ctx, srv.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	want := testOffer()
	want.Username = "1700000600:127.9.0.3"
	if o != want {
		t.Fatalf("offer %+v, want %+v", o, want)
	}
	if calls := hook.calls(); len(calls) != 1 || calls[0] != c.LocalAddr() {
		t.Fatalf("hook saw %v, client is %s", calls, c.LocalAddr())
	}

	t.Run("stale cached token is renewed", func(t *testing.T) {
		tok := c.cachedTokenFor(srv.LocalAddr())
		if tok == nil {
			t.Fatal("no cached token")
		}
		testutil.Eventually(t, 5*time.Second, func() bool { // waiting on the rotation clock
			return !srv.tokenValid(*tok, c.LocalAddr().Addr())
		}, "the cached token to go stale")
		if _, err := c.TURNOffer(ctx, srv.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("declined", func(t *testing.T) {
		hook.mu.Lock()
		hook.offer = false
		hook.mu.Unlock()
		defer func() { hook.mu.Lock(); hook.offer = true; hook.mu.Unlock() }()
		if _, err := c.TURNOffer(ctx, srv.LocalAddr()); !errors.Is(err, ErrNoTURN) {
			t.Fatalf("declined offer: %v", err)
		}
	})
	t.Run("node without relay", func(t *testing.T) {
		plain := startNode(t, Config{})
		if _, err := c.TURNOffer(ctx, plain.LocalAddr()); !errors.Is(err, ErrNoTURN) || !strings.Contains(err.Error(), "unknown command") {
			t.Fatalf("plain node: %v", err)
		}
	})
}

// TestTURNOfferOnlyToVerifiedSources: without a valid token (a spoofed
// source could not have one) the node answers with a bare error no larger
// than the request, and the hook is never asked.
func TestTURNOfferOnlyToVerifiedSources(t *testing.T) {
	hook := &turnHook{offer: true}
	srv := startNode(t, Config{OnTURN: hook.handle})
	c := newRawClient(t)
	foreign := ID{7}
	for _, tok := range []*ID{nil, &foreign} {
		for _, pad := range []int{0, 64} {
			reply, reqLen := c.do(srv.LocalAddr(), &Message{Command: CmdTURN, Token: tok, Pad: pad}, nil)
			if reply == nil && pad == 0 {
				continue // even the bare error is larger than a tiny request: silence
			}
			if reply == nil || reply.Error != CodeBadToken || reply.Value != nil {
				t.Fatalf("token %v pad %d: reply %+v", tok, pad, reply)
			}
			if reply.Pad > reqLen {
				t.Fatalf("reply %d bytes to a %d-byte unverified request", reply.Pad, reqLen)
			}
		}
	}
	if calls := hook.calls(); len(calls) != 0 {
		t.Fatalf("hook asked for unverified sources: %v", calls)
	}
	tok := c.token(srv)
	reply, _ := c.do(srv.LocalAddr(), &Message{Command: CmdTURN, Token: &tok}, nil)
	if reply == nil || reply.Error != CodeOK {
		t.Fatalf("verified: %+v", reply)
	}
	o, err := ParseTURNOffer(reply.Value)
	src := c.conn.LocalAddr().(*net.UDPAddr).AddrPort()
	if err != nil || o.Username != "1700000600:"+src.Addr().String() {
		t.Fatalf("offer %+v %v", o, err)
	}
	if st := srv.Stats(); st.RefusedBadToken < 2 {
		t.Fatalf("refusals not counted: %+v", st)
	}
}
