package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/coder/websocket"
)

// wsHardLimitFactor: a WebSocket message up to this many times Limits.MaxMessageSize is read
// and discarded (the peer gets an error and the connection stays usable); anything larger makes
// the library close the connection, so one frame cannot keep us reading forever.
const wsHardLimitFactor = 16

// WSConn is a Conn over a WebSocket: one JSON text frame per message (ToolDb's browser client
// JSON.parses every frame, so we never send binary).
type WSConn struct {
	c       *websocket.Conn
	remote  string
	maxSize int
	rbuf    []byte // owned by the reader
	// closingFor is set once CloseFor has begun: from then on a cancelled read or write
	// context no longer tears the connection down (the library would, with a bare reset,
	// racing the close frame that says why); the closing handshake ends it instead.
	closingFor atomic.Bool
}

var _ Conn = (*WSConn)(nil)

func newWSConn(c *websocket.Conn, remote string, maxSize int) *WSConn {
	if maxSize <= 0 {
		maxSize = DefaultMaxMessageSize
	}
	c.SetReadLimit(int64(maxSize) * wsHardLimitFactor)
	return &WSConn{c: c, remote: remote, maxSize: maxSize}
}

// ReadMessage reads one frame. An oversized frame is drained and reported as
// ErrMessageTooLarge; a binary frame as ErrBadMessage. Both leave the connection usable.
func (w *WSConn) ReadMessage(ctx context.Context) ([]byte, error) {
	ctx, stop := w.unlessClosingFor(ctx)
	defer stop()
	typ, r, err := w.c.Reader(ctx)
	if err != nil {
		return nil, err
	}
	buf := w.rbuf[:0]
	lr := io.LimitReader(r, int64(w.maxSize)+1)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := lr.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if cap(buf) <= 1<<20 {
		w.rbuf = buf[:0]
	}
	if len(buf) > w.maxSize {
		if _, err := io.Copy(io.Discard, r); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: over %d bytes", ErrMessageTooLarge, w.maxSize)
	}
	if typ != websocket.MessageText {
		return nil, fmt.Errorf("%w: binary frame", ErrBadMessage)
	}
	return buf, nil
}

// WriteMessage sends msg as one text frame.
func (w *WSConn) WriteMessage(ctx context.Context, msg []byte) error {
	if len(msg) > w.maxSize {
		return fmt.Errorf("%w: %d bytes", ErrMessageTooLarge, len(msg))
	}
	ctx, stop := w.unlessClosingFor(ctx)
	defer stop()
	return w.c.Write(ctx, websocket.MessageText, msg)
}

// unlessClosingFor is ctx, except that its cancellation is ignored once CloseFor has begun.
// The library closes the connection outright when a read or write context ends, and a peer
// cancels its contexts the moment it closes, so without this the close frame of CloseFor
// loses the race about as often as it wins (seen: a flooding client got EOF, not the reason).
func (w *WSConn) unlessClosingFor(ctx context.Context) (context.Context, func()) {
	if ctx.Done() == nil {
		return ctx, func() {}
	}
	inner, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		if !w.closingFor.Load() {
			cancel()
		}
	})
	return inner, func() { stop(); cancel() }
}

// Close closes the WebSocket without waiting for the peer's close frame.
func (w *WSConn) Close() error {
	err := w.c.CloseNow()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// CloseFor starts closing the WebSocket with a close frame saying why (policy violation, the
// reason truncated to what a close frame holds), so the client is not left with a bare reset,
// and returns at once: the closing handshake (at most a few seconds) runs in the background.
// From this call on a read or write ends with the connection, whatever its context does (see
// unlessClosingFor), so the caller may cancel them right after.
func (w *WSConn) CloseFor(why error) {
	w.closingFor.Store(true)
	reason := truncate(why.Error(), maxCloseReason)
	go func() { _ = w.c.Close(websocket.StatusPolicyViolation, reason) }()
}

// maxCloseReason: a close frame's reason is at most 123 bytes.
const maxCloseReason = 120

// RemoteID returns the remote address.
func (w *WSConn) RemoteID() string { return w.remote }

// DialOptions configures Dial. The zero value works.
type DialOptions struct {
	// HTTPClient makes the upgrade request; zero means http.DefaultClient. Inject one whose
	// Transport dials through the node's network to keep every socket on one seam.
	HTTPClient *http.Client
	// MaxMessageSize bounds messages both ways; zero means DefaultMaxMessageSize.
	MaxMessageSize int
}

// Dial opens a WebSocket to url (ws:// or wss://) and returns it as a Conn.
func Dial(ctx context.Context, url string, opts DialOptions) (*WSConn, error) {
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: opts.HTTPClient})
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("bridge: dial %s: %w", url, err)
	}
	return newWSConn(c, url, opts.MaxMessageSize), nil
}

// ToolDbURL is the URL ToolDb's websocket adapter dials for host and port: wss:// (no port)
// when port is 443, ws://host:port otherwise.
func ToolDbURL(host string, port int) string {
	if port == 443 {
		return "wss://" + host
	}
	return "ws://" + net.JoinHostPort(host, strconv.Itoa(port))
}

// originAllowed reports whether a WebSocket upgrade may proceed. No Origin header means a
// non-browser client (ToolDb in Node, another node), which origin checks do not concern. A nil
// or empty allow list allows every origin, as ToolDb's server does; otherwise each pattern is
// matched case-insensitively with path.Match against the origin's host, or against
// "scheme://host" when the pattern contains "://".
func originAllowed(origin string, allowed []string) bool {
	if origin == "" || len(allowed) == 0 {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	host := strings.ToLower(u.Host)
	full := strings.ToLower(u.Scheme) + "://" + host
	for _, p := range allowed {
		p = strings.ToLower(p)
		target := host
		if strings.Contains(p, "://") {
			target = full
		}
		if ok, err := path.Match(p, target); err == nil && ok {
			return true
		}
	}
	return false
}

// Handler returns the WebSocket endpoint: every upgrade on any path (ToolDb's client dials "/")
// becomes a peer. Origins outside Config.AllowedOrigins get 403. TLS is the http.Server's
// business. ServeHTTP returns when the peer ends.
func (b *Bridge) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !originAllowed(r.Header.Get("Origin"), b.cfg.AllowedOrigins) {
			b.log.Info("websocket origin refused", "addr", r.RemoteAddr, "origin", r.Header.Get("Origin"))
			http.Error(w, ErrOriginRefused.Error(), http.StatusForbidden)
			return
		}
		if !b.running() {
			http.Error(w, ErrClosed.Error(), http.StatusServiceUnavailable)
			return
		}
		// Origins were checked above, so the library's own same-host check is off.
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
		if err != nil {
			b.log.Debug("websocket upgrade failed", "addr", r.RemoteAddr, "err", err)
			return
		}
		p, err := b.Attach(newWSConn(c, r.RemoteAddr, b.cfg.Limits.MaxMessageSize), AttachOptions{Kind: KindWebSocket})
		if err != nil {
			_ = c.CloseNow()
			return
		}
		<-p.Done()
	})
}

// ConnectTo dials a ToolDb (or swarmdb) WebSocket server at host:port as ToolDb's adapter
// would, attaches it, and sends our ping. It returns once the connection is attached; the
// peer identifies itself asynchronously (see Peer.Identified).
func (b *Bridge) ConnectTo(ctx context.Context, host string, port int) (*Peer, error) {
	if !b.running() {
		return nil, ErrNotStarted
	}
	c, err := Dial(ctx, ToolDbURL(host, port), DialOptions{HTTPClient: b.cfg.HTTPClient, MaxMessageSize: b.cfg.Limits.MaxMessageSize})
	if err != nil {
		return nil, err
	}
	p, err := b.Attach(c, AttachOptions{Initiator: true, Kind: KindWebSocket})
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	return p, nil
}
