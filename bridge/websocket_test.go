package bridge

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/coder/websocket"
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
