package bridge

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/swarmdb/swarmdb/internal/testutil"
)

func serveWS(t *testing.T, b *Bridge) (host string, port int) {
	t.Helper()
	srv := httptest.NewServer(b.Handler())
	t.Cleanup(func() {
		b.Close() // ends the peers, so the handlers return
		srv.Close()
	})
	h, p, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	port, _ = strconv.Atoi(p)
	return h, port
}

func TestWebSocketOriginRefused(t *testing.T) {
	b := newBridge(t, Config{Server: true, AllowedOrigins: []string{"app.example", "https://*.trusted.example"}})
	host, port := serveWS(t, b)
	url := ToolDbURL(host, port)
	for _, tc := range []struct {
		origin string
		ok     bool
	}{
		{"", true}, // not a browser
		{"https://app.example", true},
		{"https://x.trusted.example", true},
		{"https://evil.example", false},
		{"http://x.trusted.example", false},
	} {
		hdr := http.Header{}
		if tc.origin != "" {
			hdr.Set("Origin", tc.origin)
		}
		c, resp, err := websocket.Dial(context.Background(), url, &websocket.DialOptions{HTTPHeader: hdr})
		if tc.ok {
			if err != nil {
				t.Fatalf("origin %q refused: %v", tc.origin, err)
			}
			c.CloseNow()
			continue
		}
		if err == nil {
			c.CloseNow()
			t.Fatalf("origin %q accepted", tc.origin)
		}
		if resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("origin %q: want 403, got %v %v", tc.origin, resp, err)
		}
	}
}

// Two nodes over a real WebSocket on loopback: ConnectTo, replication, frames too large.
func TestWebSocketConnectToReplicates(t *testing.T) {
	a := newBridge(t, Config{Server: true, Limits: Limits{MaxMessageSize: 8192}})
	b := newBridge(t, Config{Server: true})
	host, port := serveWS(t, a)
	p, err := b.ConnectTo(context.Background(), host, port)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := p.WaitIdentified(ctx); err != nil {
		t.Fatal(err)
	}
	if st := p.Status(); st.Kind != KindWebSocket || !st.Swarmdb || st.ClientID != a.ClientID() {
		t.Fatalf("status %+v", st)
	}
	r := record(t, testUser, "ws", `"over websocket"`)
	if _, err := b.Put(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	waitRecord(t, a.Store(), "ws", r.Hash)
	r2 := record(t, testUser, "ws2", `"back"`)
	if _, err := a.Put(context.Background(), r2); err != nil {
		t.Fatal(err)
	}
	waitRecord(t, b.Store(), "ws2", r2.Hash)

	// A raw client: an oversized frame and a binary frame get errors, the socket stays open.
	c, _, err := websocket.Dial(ctx, ToolDbURL(host, port), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	wc := newWSConn(c, "test", 1<<20)
	f := &fakePeer{t: t, c: wc, user: testUser, id: ClientID(testUser.Address())}
	f.hello(DefaultTopic, false, false)
	f.send(`{"type":"get","id":"big","key":"` + strings.Repeat("x", 9000) + `"}`)
	f.expectError("TOO_LARGE", "")
	if err := c.Write(ctx, websocket.MessageBinary, []byte(`{"type":"query","id":"q","key":""}`)); err != nil {
		t.Fatal(err)
	}
	f.expectError("BAD_MESSAGE", "")
	f.usable()
}

// TestWebSocketBurstRateLimited is the case: a ToolDb client over a real WebSocket
// sends 5,000 gets at once, more than its rate allows (the issue used the default limits;
// here they are a quarter of those, so the burst exceeds them however slowly a loaded
// machine sends it). Every get is answered,
// with the record or with RATE_LIMITED naming it, and the connection stays usable (it was
// reset after about 4,100 answers, with neither RATE_LIMITED nor a close reason).
func TestWebSocketBurstRateLimited(t *testing.T) {
	const gets = 5000
	b := newBridge(t, Config{Server: true, Limits: Limits{MessagesPerSecond: 500, Burst: 1000}})
	if _, err := b.Put(context.Background(), record(t, testUser, "burst", `{"n":1}`)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitLimit)
	defer cancel()
	c, f := wsClient(ctx, t, b)

	ids := make([]string, gets)
	msgs := make([][]byte, gets)
	for i := range ids {
		ids[i] = newID()
		msgs[i] = AppendMessage(nil, &Message{Type: TypeGet, ID: ids[i], To: []string{f.id}, Key: "burst"})
	}
	sent := make(chan error, 1)
	go func() {
		for _, m := range msgs {
			if err := c.WriteMessage(ctx, m); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	answered := map[string]string{}
	limited := 0
	for len(answered) < gets {
		raw, err := c.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("after %d answers (%d rate-limited): %v", len(answered), limited, err)
		}
		m, err := ParseMessage(raw, 0)
		if err != nil {
			t.Fatal(err)
		}
		id := m.ID
		switch {
		case m.Type == TypePut && m.Data != nil && m.Data.Key == "burst":
		case m.Type == TypeError && m.Code == "RATE_LIMITED":
			id = m.Ref
			limited++
		default:
			t.Fatalf("unexpected %+v", m)
		}
		if prev, dup := answered[id]; dup {
			t.Fatalf("get %q answered twice (%s, then %s)", id, prev, m.Type)
		}
		answered[id] = m.Type
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if _, ok := answered[id]; !ok {
			t.Fatalf("get %s unanswered", id)
		}
	}
	if limited == 0 {
		t.Fatal("no get was rate-limited: the burst did not exceed the limit")
	}
	t.Logf("%d gets: %d answered with the record, %d with RATE_LIMITED", gets, gets-limited, limited)
	// Still connected, and served again once the bucket has refilled a little.
	var m Message
	served := testutil.Poll(waitLimit, 0, func() bool {
		g := &Message{Type: TypeGet, ID: newID(), Key: "burst"}
		f.sendMsg(g)
		m = f.next()
		if m.Type == TypePut && m.ID == g.ID {
			return true
		}
		if m.Type != TypeError || m.Code != "RATE_LIMITED" {
			t.Fatalf("after the burst: %+v", m)
		}
		return false
	})
	if !served {
		t.Fatalf("after the burst: %+v", m)
	}
}

// TestWebSocketFloodClosedWithReason: a client that keeps exceeding its rate is closed in
// the end, with a close frame saying why, not a bare reset. Going over the rate costs one
// strike a second, so with one strike that is the second second of flooding.
func TestWebSocketFloodClosedWithReason(t *testing.T) {
	b := newBridge(t, Config{Server: true, Limits: Limits{MessagesPerSecond: 10, Burst: 10, MaxStrikes: 1}})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c, _ := wsClient(ctx, t, b)
	go func() {
		for ctx.Err() == nil {
			q := AppendMessage(nil, &Message{Type: TypeQuery, ID: newID(), Key: "k"})
			if c.WriteMessage(ctx, q) != nil {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	for {
		_, err := c.ReadMessage(ctx)
		if err == nil {
			continue
		}
		if websocket.CloseStatus(err) != websocket.StatusPolicyViolation || !strings.Contains(err.Error(), "rate limit") {
			t.Fatalf("connection ended with %v, want a policy-violation close naming the rate limit", err)
		}
		return
	}
}

// wsClient serves b on a WebSocket and connects an identified ToolDb client to it.
func wsClient(ctx context.Context, t *testing.T, b *Bridge) (*WSConn, *fakePeer) {
	t.Helper()
	host, port := serveWS(t, b)
	c, err := Dial(ctx, ToolDbURL(host, port), DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	f := &fakePeer{t: t, c: c, user: testUser, id: ClientID(testUser.Address())}
	f.hello(DefaultTopic, false, false)
	return c, f
}

// TestWebSocketCrossedDials: two servers that dial each other at once end with one link, the
// connection the smaller client id dialled, at both ends; the other dial ends at once with
// ErrCrossedLink. Before, each end could keep a different connection and leave the other
// dial waiting for an identification that never came.
func TestWebSocketCrossedDials(t *testing.T) {
	for i := range 10 {
		a := newBridge(t, Config{Server: true})
		b := newBridge(t, Config{Server: true})
		ha, pa := serveWS(t, a)
		hb, pb := serveWS(t, b)
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		dials := make(chan error, 2)
		for _, d := range []struct {
			from *Bridge
			host string
			port int
		}{{a, hb, pb}, {b, ha, pa}} {
			go func() {
				p, err := d.from.ConnectTo(ctx, d.host, d.port)
				if err == nil {
					err = p.WaitIdentified(ctx)
				}
				if err == nil {
					// Identified first, it may still be displaced by the other dial.
					select {
					case <-p.Done():
						err = p.Err()
					case <-time.After(200 * time.Millisecond):
					}
				}
				dials <- err
			}()
		}
		for range 2 {
			if err := <-dials; err != nil && !errors.Is(err, ErrCrossedLink) {
				t.Fatalf("round %d: dial: %v", i, err)
			}
		}
		cancel()
		for _, side := range []struct{ self, other *Bridge }{{a, b}, {b, a}} {
			var kept []PeerStatus
			testutil.Eventually(t, waitLimit, func() bool {
				kept = kept[:0]
				for _, st := range side.self.Peers() {
					if st.Identified {
						kept = append(kept, st)
					}
				}
				return len(side.self.Peers()) == 1 && len(kept) == 1
			}, "round %d: one connection left", i)
			if want := side.self.ClientID() < side.other.ClientID(); kept[0].Initiator != want || kept[0].ClientID != side.other.ClientID() {
				t.Fatalf("round %d: kept %+v, want the connection the smaller id dialled (initiator %v)", i, kept[0], want)
			}
		}
	}
}
