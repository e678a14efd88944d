package secure

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net"
	"sync"
	"sync/atomic"
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

func (c *Config) quicConfig(dc *DatagramConn) *quic.Config {
	return &quic.Config{
		MaxIdleTimeout:    quicIdleTimeout,
		InitialPacketSize: uint16(c.MTU),
		// quic-go probes up to MaxMTU whatever we say, so a DatagramConn that cannot
		// carry that much gets no probes: a Write it refused would end the connection.
		// (quic-go believes the DF bit set: sealedPacketConn has no SyscallConn.)
		DisablePathMTUDiscovery: !c.PathMTUDiscovery || dc.cfg.MaxPayload < MaxMTU,
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
//
// It also keeps quic-go from throwing away what arrived. quic-go reads packets
// in one goroutine and processes them in the connection's, and drops every
// packet that arrives while 256 wait (protocol.MaxConnUnprocessedPackets),
// silently. On a CPU-starved receiver that is most of the loss there is: in
// the NAT lab with no loss at all, 64 MiB over 40 ms cost 35 MB of
// retransmissions, and BBR, which rightly does not slow down for random loss,
// never learned of it. So ReadFrom hands quic-go nothing more while
// maxUnprocessed bytes wait: unread datagrams stay in the DatagramConn's queue
// and the socket buffer, and if those fill, the kernel drops, as for any slow
// UDP reader. Progress is quic-go's count of bytes its connection has taken up
// (ConnectionStats.BytesReceived); no event announces it, so a waiting ReadFrom
// polls it.
type sealedPacketConn struct {
	dc *DatagramConn
	// peer is the address quic-go is shown for every datagram: the inner conn's
	// at the start. The inner conn may move to another address of the same peer
	// (holepunch's early ICE path follows ICE's nomination); quic-go must not see
	// that as a migration, the peer being the key, not the address.
	peer net.Addr

	progress   atomic.Value  // quicProgress, once the connection exists
	handed     atomic.Uint64 // bytes ReadFrom returned
	stuckAfter time.Duration // awaitStuck; tests change it
}

// quicProgress is what awaitQUIC needs of a *quic.Conn.
type quicProgress interface {
	ConnectionStats() quic.ConnectionStats
	Context() context.Context
}

const (
	// maxUnprocessed is what ReadFrom lets wait in quic-go: 132 to 160
	// full-size packets, well below the 256 it drops at.
	maxUnprocessed = 160 * DefaultMTU
	// awaitPoll is how often a waiting ReadFrom looks at quic-go's progress.
	awaitPoll = 50 * time.Microsecond
	// awaitStuck: with no progress for this long, ReadFrom takes quic-go's
	// count as the truth and goes on. Packets quic-go discards before its
	// connection sees them (an unknown connection ID, a closing connection)
	// are never counted, so without this the gap could only grow.
	awaitStuck = 20 * time.Millisecond
)

var _ net.PacketConn = (*sealedPacketConn)(nil)

func newSealedPacketConn(dc *DatagramConn) *sealedPacketConn {
	return &sealedPacketConn{dc: dc, peer: dc.RemoteAddr(), stuckAfter: awaitStuck}
}

// attach starts the back-pressure on qc's progress.
func (c *sealedPacketConn) attach(qc quicProgress) { c.progress.Store(qc) }

func (c *sealedPacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	c.awaitQUIC()
	n, err := c.dc.Read(p)
	c.handed.Add(uint64(n))
	return n, c.peer, err
}

// awaitQUIC returns once quic-go's connection has taken up all but
// maxUnprocessed of the bytes handed to it (or it is stuck, or closed).
func (c *sealedPacketConn) awaitQUIC() {
	qc, _ := c.progress.Load().(quicProgress)
	if qc == nil {
		return
	}
	var last uint64
	var since time.Time
	for {
		done := qc.ConnectionStats().BytesReceived
		if c.handed.Load() <= done+maxUnprocessed {
			return
		}
		now := time.Now()
		if since.IsZero() || done != last {
			last, since = done, now
		} else if now.Sub(since) >= c.stuckAfter {
			c.handed.Store(done)
			return
		}
		select {
		case <-qc.Context().Done():
			return
		case <-c.dc.closing:
			return
		case <-time.After(awaitPoll):
		}
	}
}

func (c *sealedPacketConn) WriteTo(p []byte, _ net.Addr) (int, error) { return c.dc.Write(p) }
func (c *sealedPacketConn) Close() error                              { return c.dc.Close() }
func (c *sealedPacketConn) LocalAddr() net.Addr                       { return c.dc.LocalAddr() }
func (c *sealedPacketConn) SetDeadline(t time.Time) error             { return c.dc.SetDeadline(t) }
func (c *sealedPacketConn) SetReadDeadline(t time.Time) error         { return c.dc.SetReadDeadline(t) }
func (c *sealedPacketConn) SetWriteDeadline(t time.Time) error        { return c.dc.SetWriteDeadline(t) }
