package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/swarmdb/swarmdb/node/web"
)

// listenWebSocket opens the WebSocket listener (before the message layer
// is made, whose descriptor carries the listener's port).
func (n *Node) listenWebSocket() error {
	if n.cfg.TLSCertFile != "" {
		r, err := newCertReloader(n.cfg.TLSCertFile, n.cfg.TLSKeyFile, n.log)
		if err != nil {
			return fmt.Errorf("node: tls: %w", err)
		}
		n.tlsConfig = &tls.Config{GetCertificate: r.getCertificate, MinVersion: tls.VersionTLS12}
	}
	ln, err := n.listenTCP(n.cfg.WebSocketAddr)
	if err != nil {
		return fmt.Errorf("node: websocket listen: %w", err)
	}
	n.wsLn, n.wsAddr = ln, ln.Addr()
	return nil
}

// listenTCP opens the WebSocket's listener through Config.Net when one is
// set (a lab host's namespace), else on the system network.
func (n *Node) listenTCP(addr string) (net.Listener, error) {
	if n.cfg.Net == nil {
		return net.Listen("tcp", addr)
	}
	ta, err := n.cfg.Net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return nil, err
	}
	return n.cfg.Net.ListenTCP("tcp", ta)
}

// serveWebSocket serves, on the listener's one port, the message layer
// (every WebSocket upgrade), the node's page at / and its JSON endpoints
// (see package web); over TLS when a certificate is set.
func (n *Node) serveWebSocket() {
	ln := n.wsLn
	if n.tlsConfig != nil {
		ln = tls.NewListener(ln, n.tlsConfig)
	}
	n.http = &http.Server{
		Handler: web.Handler(web.Config{
			WebSocket: n.bridge.Handler(),
			Status:    func() any { return n.Status() },
			Peers:     func() any { return n.PeersDoc() },
		}),
		ReadHeaderTimeout: 10 * time.Second,
		// Failed TLS handshakes (scanners, expired certificates) go to
		// the node's log at debug level, not to stderr.
		ErrorLog: slog.NewLogLogger(n.log.Handler(), slog.LevelDebug),
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Warn("websocket server stopped", "err", err)
		}
	}()
}

// closeHTTP stops the WebSocket server: new connections first, then the
// open ones (WebSocket peers are ended by the bridge's Close).
func (n *Node) closeHTTP() {
	if n.http == nil {
		if n.wsLn != nil {
			_ = n.wsLn.Close() // Start failed between listen and serve
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), httpShutdownTimeout)
	_ = n.http.Shutdown(ctx)
	cancel()
	_ = n.http.Close()
}

// httpShutdownTimeout bounds the graceful stop of the WebSocket server;
// open WebSocket connections do not count as idle, so it usually runs out
// and Close ends them.
const httpShutdownTimeout = 2 * time.Second

// WebSocketURL is the URL of the node's WebSocket listener as seen from
// this machine (ws:// or wss://), empty when it does not run.
func (n *Node) WebSocketURL() string {
	if n.wsAddr == nil {
		return ""
	}
	scheme := "ws://"
	if n.cfg.TLSCertFile != "" {
		scheme = "wss://"
	}
	return scheme + n.wsAddr.String()
}

// advertisedHostPort is the host and port the node's ToolDb descriptor
// carries (ping, pong, pong.servers): where other ToolDb peers can dial it.
// ToolDb's client builds its URL from host and port alone, wss://host when
// the port is 443 and ws://host:port otherwise, so only a URL of that
// shape can be advertised: the public URL when it has it, else the
// listener when it has a specific address and no TLS (a LAN or loopback
// node). Anything else advertises none ("" and 0), which ToolDb skips;
// ToolDb's default, 127.0.0.1:8080, would send peers to their own host.
func advertisedHostPort(public string, listen net.Addr, tlsOn bool) (string, int) {
	if public != "" {
		u, err := url.Parse(public)
		if err != nil || (u.Path != "" && u.Path != "/") {
			return "", 0
		}
		port, _ := strconv.Atoi(u.Port())
		switch {
		case u.Scheme == "wss" && (port == 443 || u.Port() == ""):
			return u.Hostname(), 443
		case u.Scheme == "ws" && port > 0 && port != 443:
			return u.Hostname(), port
		}
		return "", 0
	}
	ta, ok := listen.(*net.TCPAddr)
	if !ok || tlsOn || ta.IP.IsUnspecified() || ta.Port == 443 {
		return "", 0
	}
	return ta.IP.String(), ta.Port
}
