// Package secure owns the encrypted, authenticated transport between two swarmdb peers.
//
// It has three layers, bottom to top:
//
//   - The handshake core (handshake.go, envelope.go): a pure Noise IK state machine
//     (Noise_IK_25519_ChaChaPoly_BLAKE2b) that turns a peer's Ed25519 identity into
//     transport keys and negotiates the cipher of the datagrams. Messages 1 and 2 are
//     opaque bytes the caller carries in its signaling (through DHT relays); their
//     payloads carry ICE credentials and candidates.
//   - Sealed datagrams (datagram_conn.go, packet.go, cipher.go, rekey.go,
//     replay_window.go): a net.Conn over a datagram conn (an ice.Conn, a UDP socket)
//     that seals every datagram with AES-256-GCM (when both peers' CPUs have AES
//     instructions; its keys change every 2^23 datagrams) or ChaCha20-Poly1305 under an
//     explicit 64-bit counter nonce and drops forged, corrupted and replayed datagrams
//     behind a sliding replay window.
//   - Sessions (session.go, stream.go, transport.go, protocol.go): internal/reliable,
//     swarmdb's own stream transport (RFC 9000 streams and flow control, RFC 9002 loss
//     recovery, BBR v1 with pacing, path MTU discovery; a pure state machine), driven
//     over the sealed datagram conn without a goroutine of its own, giving reliable,
//     ordered, message-preserving streams without head-of-line blocking between them,
//     with stream 0 reserved for the database layer and keepalives that detect a dead
//     peer. Until issue 17 they ran on quic-go; internal/reliable's package comment says
//     why they no longer do.
//
// Identity: a peer is an Ed25519 public key. Its Noise static key is the X25519 form of the
// same key (identity.go), so the key that signs DHT records and the key that completes the
// handshake are provably the same party.
//
// Users: holepunch (which carries msg1/msg2 in its signaling and hands the connected
// ice.Conn to NewDatagramConn) and swarm (which owns Sessions). This package must not
// import any other swarmdb package but internal ones; it knows nothing about ICE, the
// DHT or the database.
package secure
