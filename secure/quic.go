package secure

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net"
	"sync"
	"time"

	quic "github.com/apernet/quic-go"
)

// The streams run on QUIC (quic-go) over the sealed DatagramConn: every QUIC
// packet is one sealed datagram, so relays and TURN servers see only Noise
// ciphertext and the Noise replay window still drops replays before QUIC sees
// them. QUIC brings what the issue asked of the transport (shared/reference/
// transport.md §2.1, §4): RFC 9002 loss detection with probe timeouts that a
// full window does not block and lost frames re-sent in new packets (so a lost
// retransmission is found like any loss; pion/sctp's T3 cliff is gone), many
// streams without head-of-line blocking between them, per-stream and
// per-connection flow control (back-pressure), and a congestion-control hook.
//
// Why the apernet fork (github.com/apernet/quic-go, pinned in go.mod): upstream
// quic-go ships only NewReno and has no pluggable congestion control (quic-go
// #776, #4565), and BBR is what keeps the rate under random loss at WAN RTT.
// The fork adds Conn.SetCongestionControl and a public congestion interface and
// otherwise tracks upstream (Hysteria and Xray build on it). The controller
// itself is ours (bbr.go).
//
// QUIC insists on TLS 1.3, whose authentication is redundant here: both ends
// already proved their identities in the Noise IK handshake, and only they hold
// the keys that seal the datagrams QUIC travels in, so no third party can
// reach the TLS handshake at all. The server presents a throwaway self-signed
// certificate and the client does not check it. The cost is a second AEAD per
// packet (measured in secure/README.md).

// quicALPN names the protocol inside the sealed datagrams.
const quicALPN = "swarmdb/1"

// Session protocol constants.
const (
	// sessionVersion is the first byte on stream 0, from client to server.
	sessionVersion = 2
	// streamOpen is the first byte on every other stream: it makes the stream
	// appear at the peer's AcceptStream at once (QUIC shows a stream only when
	// its first frame arrives).
	streamOpen = 0
	// goodbye travels on a unidirectional stream when a session closes
	// gracefully (see Session.Close).
	goodbye = 0x47
	// maxWireMessage bounds a message length read from the wire, whatever
	// the peer's MaxMessageSize, so a peer cannot make us allocate without
	// limit.
	maxWireMessage = 16 << 20
)

// QUIC application error codes.
const (
	codeClosed       quic.ApplicationErrorCode = 0 // graceful: the goodbye exchange finished or timed out
	codeAbort        quic.ApplicationErrorCode = 1 // the session failed (dead peer, local error)
	codeStreamClosed quic.StreamErrorCode      = 0 // Stream.Close stopped reading, or the backlog was full
)

// quicIdleTimeout is far above any DeadTimeout: liveness is the supervisor's
// job (keepalives below QUIC, in the DatagramConn), and a QUIC idle timeout
// firing first would end an idle but healthy session.
const quicIdleTimeout = 24 * time.Hour

func (c *Config) quicConfig() *quic.Config {
	return &quic.Config{
		MaxIdleTimeout:          quicIdleTimeout,
		InitialPacketSize:       uint16(c.MTU),
		DisablePathMTUDiscovery: true,
		// The whole window from the start: quic-go's auto-tuning grows a small
		// initial window too slowly on a lossy WAN path (1 MiB per 40 ms RTT
		// capped one stream at 20 MiB/s in TestWANThroughputNATLab). Windows
		// are limits, not allocations: only unread data takes memory.
		InitialStreamReceiveWindow:     uint64(c.MaxReceiveBufferSize),
		MaxStreamReceiveWindow:         uint64(c.MaxReceiveBufferSize),
		InitialConnectionReceiveWindow: uint64(c.MaxReceiveBufferSize) * 2,
		MaxConnectionReceiveWindow:     uint64(c.MaxReceiveBufferSize) * 2,
		MaxIncomingStreams:             1024,
		MaxIncomingUniStreams:          4,
	}
}

// serverTLS is the throwaway TLS identity servers present; see above.
var serverTLS = sync.OnceValue(func() *tls.Config {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Unix(0, 0), NotAfter: time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		panic(err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: priv}},
		NextProtos:   []string{quicALPN},
		MinVersion:   tls.VersionTLS13,
	}
})

func clientTLS() *tls.Config {
	return &tls.Config{
		InsecureSkipVerify: true, // the peer was authenticated by Noise; see above
		NextProtos:         []string{quicALPN},
		MinVersion:         tls.VersionTLS13,
		ServerName:         "swarmdb",
	}
}

// sealedPacketConn presents a DatagramConn (connected to one peer) as the
// net.PacketConn quic-go wants: every datagram comes from, and goes to, the
// peer.
type sealedPacketConn struct{ dc *DatagramConn }

var _ net.PacketConn = sealedPacketConn{}

func (c sealedPacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, err := c.dc.Read(p)
	return n, c.dc.RemoteAddr(), err
}

func (c sealedPacketConn) WriteTo(p []byte, _ net.Addr) (int, error) { return c.dc.Write(p) }
func (c sealedPacketConn) Close() error                              { return c.dc.Close() }
func (c sealedPacketConn) LocalAddr() net.Addr                       { return c.dc.LocalAddr() }
func (c sealedPacketConn) SetDeadline(t time.Time) error             { return c.dc.SetDeadline(t) }
func (c sealedPacketConn) SetReadDeadline(t time.Time) error         { return c.dc.SetReadDeadline(t) }
func (c sealedPacketConn) SetWriteDeadline(t time.Time) error        { return c.dc.SetWriteDeadline(t) }
